//! Black-box tests of the API through its real router, each on a fresh
//! PostgreSQL database (`#[sqlx::test]` needs `DATABASE_URL`; `cargo xtask
//! test` provides one). Set `TEST_LOG=1` to see the service's logs.

mod binary;
mod chaos;
mod data;
mod helpers;
mod openapi;
mod rds;
mod routing;
mod startup;
mod store;
mod tls;
mod web;
