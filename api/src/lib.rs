//! The notes and greetings API: configuration, routes, database access and
//! serving, behind a thin `main`.

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod lease;
pub mod openapi;
pub mod rds;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod web;
