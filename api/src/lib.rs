//! The notes and greetings API: configuration, routes, database access and
//! serving, behind a thin `main`.

#[cfg(feature = "aws")]
pub mod aws;
pub mod cli;
pub mod config;
pub mod db;
pub mod edge;
pub mod error;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod web;
