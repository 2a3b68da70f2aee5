//! Black-box tests of the API through its real router, each on a fresh
//! PostgreSQL database (`#[sqlx::test]` needs `DATABASE_URL`; `cargo xtask
//! test` provides one). Set `TEST_LOG=1` to see the service's logs.
//!
//! With only `DATABASE_URL` set, `cargo test -p api` runs every test that
//! needs nothing but PostgreSQL; the few that need moto, a TLS-enabled server
//! or password checks are `#[ignore]`d with the reason, and `cargo xtask
//! test` starts those services and runs them too (`--include-ignored`).

mod binary;
mod chaos;
mod concurrency;
mod data;
mod helpers;
mod idempotency;
mod metrics;
mod openapi;
#[cfg(feature = "aws")]
mod rds;
mod routing;
mod startup;
mod store;
mod tls;
mod web;
