//! Amazon Web Services, behind the `aws` feature (on by default): finding
//! and connecting to an RDS instance with IAM tokens, and the `api db`
//! commands that provision it (`provision`, `status`) and prepare it for
//! the service (`bootstrap`). The serving path asks only
//! [`connection`]; a build without the feature has none of this and no
//! AWS SDK.

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod connect;
pub mod rds;

pub use connect::connection;
