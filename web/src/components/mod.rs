//! Reusable pieces of the page.

pub(crate) mod entries;
pub(crate) mod entry_form;
pub(crate) mod text_field;
