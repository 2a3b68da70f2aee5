//! Test fixtures shared by `cargo xtask` (its tasks, the benchmark), the
//! rehearsal and the integration tests, so that each exists once: the
//! project's folders ([`paths`]), other programs run, found and stopped
//! ([`process`]), progress lines ([`progress`]), free ports ([`ports`]), the
//! one wait loop ([`wait`]), the api as a process on port 0
//! ([`api_server`]), PostgreSQL clusters ([`postgres`]), test certificates
//! ([`tls`]), hosts in network namespaces ([`network`]), the HTTP client
//! ([`http`]), write load ([`load`]), CloudWatch's metric lines ([`emf`]), and the pinned Python tools with moto,
//! the AWS emulator ([`moto`]).

pub mod api_server;
pub mod emf;
pub mod http;
pub mod load;
pub mod moto;
pub mod network;
pub mod paths;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod tls;
pub mod wait;
