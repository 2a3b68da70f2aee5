//! Pages of the app.

pub mod home;
