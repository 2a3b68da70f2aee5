//! Reusable pieces of the page.

pub mod entries;
pub mod entry_form;
pub mod text_field;
