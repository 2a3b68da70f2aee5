//! The only page: add an entry, retrieve the newest ones.

use leptos::prelude::*;

use crate::components::entries::EntriesPanel;
use crate::components::entry_form::EntryForm;

/// Both forms, side by side on wide screens.
#[component]
#[allow(
    unreachable_pub,
    reason = "#[component] expands to `pub` items of its own"
)]
pub(crate) fn HomePage() -> impl IntoView {
    view! {
        <div class="panels">
            <EntryForm/>
            <EntriesPanel/>
        </div>
    }
}
