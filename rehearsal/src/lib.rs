//! The Elastic Beanstalk rehearsal's model of AWS, built from the AWS
//! documentation so that what would fail on AWS fails here, naming the
//! cause. `tests/rehearsal.rs` deploys the bundle `cargo xtask rehearse`
//! builds on it.
//!
//! - [`bundle`]: what Elastic Beanstalk expects of a source bundle, and
//!   reading one; [`ebextensions`]: its `.ebextensions` options, files and
//!   container commands;
//! - [`platform`]: an instance of the Amazon Linux 2023 platform (a network
//!   namespace with its own loopback, the platform's nginx with the
//!   bundle's `.platform/nginx` over it) and the platform engine's
//!   deployment order;
//! - [`alb`]: a load balancer that reads the bundle's process settings,
//!   health-checks `instance:Port` and drains on deregistration;
//! - [`rds`]: PostgreSQL 16 with RDS's role model, found through the RDS
//!   API (moto) by the app's own code;
//! - [`health`]: enhanced health as the bundle's rules decide it, from the
//!   instances' `healthd` logs.

pub mod alb;
pub mod bundle;
pub mod ebextensions;
pub mod health;
pub mod platform;
pub mod rds;
