//! Pages of the app.

pub(crate) mod home;
