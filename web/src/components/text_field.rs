//! A labelled text input with a live character count and its error.

use domain::MAX_CHARS;
use leptos::html::Input;
use leptos::prelude::*;

/// One text field of the entry form.
#[component]
#[allow(
    unreachable_pub,
    reason = "#[component] expands to `pub` items of its own"
)]
pub(crate) fn TextField(
    /// Element id; the label, count and error hang off it.
    id: &'static str,
    /// The visible label.
    label: &'static str,
    /// The text being edited.
    value: RwSignal<String>,
    /// The message shown under the field while it is invalid.
    error: RwSignal<Option<String>>,
    /// The input element, so the form can move focus to it.
    node_ref: NodeRef<Input>,
) -> impl IntoView {
    let count = move || value.with(|text| text.chars().count());
    let over_limit = move || count() > MAX_CHARS;
    let count_id = format!("{id}-count");
    let error_id = format!("{id}-error");
    view! {
        <div class="field">
            <label for=id>{label}</label>
            <input
                id=id
                name=id
                type="text"
                autocomplete="off"
                node_ref=node_ref
                prop:value=move || value.get()
                on:input=move |event| {
                    value.set(event_target_value(&event));
                    error.set(None);
                }
                aria-invalid=move || if error.with(Option::is_some) { "true" } else { "false" }
                aria-describedby=format!("{count_id} {error_id}")
            />
            <div class="field-meta">
                <span id=error_id class="field-error">{move || error.get()}</span>
                <span id=count_id class="char-count" class:over=over_limit>
                    {move || format!("{} / {MAX_CHARS}", count())}
                </span>
            </div>
        </div>
    }
}
