//! HTTP handlers, one module per resource.

pub mod data;
pub mod health;
