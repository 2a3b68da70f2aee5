//! `/data`: store an entry, list the newest ones, read one. Each operation
//! is one file: its handler, its OpenAPI annotation and its statement.

pub mod create;
pub mod list;
pub mod read;
