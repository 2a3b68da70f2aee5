//! The "Add an entry" form: validates with the server's rules, stores the
//! entry, confirms what was stored.

use domain::{DataRecord, Field, NewData, NewDataRequest};
use leptos::ev::SubmitEvent;
use leptos::html::Input;
use leptos::prelude::*;

use crate::api::{self, ApiFailure};
use crate::components::text_field::TextField;

/// The two fields of an entry, with their state.
#[derive(Clone, Copy)]
struct FieldState {
    /// The text being edited.
    value: RwSignal<String>,
    /// The message shown while the field is invalid.
    error: RwSignal<Option<String>>,
    /// The input element.
    input: NodeRef<Input>,
}

impl FieldState {
    fn new() -> Self {
        FieldState {
            value: RwSignal::new(String::new()),
            error: RwSignal::new(None),
            input: NodeRef::new(),
        }
    }

    fn focus(&self) {
        if let Some(input) = self.input.get_untracked() {
            let _ = input.focus();
        }
    }
}

/// Capitalised field label for messages such as "Notes is required".
fn label(field: &str) -> &str {
    match field {
        "notes" => "Notes",
        "greeting" => "Greeting",
        other => other,
    }
}

/// The form that adds an entry.
#[component]
pub fn EntryForm() -> impl IntoView {
    let notes = FieldState::new();
    let greeting = FieldState::new();
    let field = move |name: &str| match name {
        "notes" => Some(notes),
        "greeting" => Some(greeting),
        _ => None,
    };
    let confirmation = RwSignal::new(None::<DataRecord>);
    let failure = RwSignal::new(None::<ApiFailure>);
    let last_sent = StoredValue::new(None::<NewDataRequest>);
    let save = Action::new_unsync(|entry: &NewDataRequest| {
        let entry = entry.clone();
        async move { api::create_entry(&entry).await }
    });

    // Shows each field's error and moves focus to the first invalid field.
    let show_errors = move |errors: Vec<domain::FieldError>| {
        let mut first = None;
        for error in errors {
            match field(&error.field) {
                Some(state) => {
                    state
                        .error
                        .set(Some(format!("{} {}.", label(&error.field), error.message)));
                    first.get_or_insert(state);
                }
                None => failure.set(Some(ApiFailure::Problem(domain::Problem {
                    kind: "about:blank".to_owned(),
                    title: "Invalid entry".to_owned(),
                    status: 422,
                    detail: Some(format!("{} {}", error.field, error.message)),
                    errors: Vec::new(),
                }))),
            }
        }
        if let Some(state) = first {
            state.focus();
        }
    };

    Effect::new(move |_| {
        let Some(result) = save.value().get() else {
            return;
        };
        match result {
            Ok(record) => {
                confirmation.set(Some(record));
                notes.value.set(String::new());
                greeting.value.set(String::new());
                notes.focus();
            }
            Err(ApiFailure::Problem(problem)) if !problem.errors.is_empty() => {
                show_errors(problem.errors);
            }
            Err(other) => failure.set(Some(other)),
        }
    });

    let send = move |entry: NewDataRequest| {
        confirmation.set(None);
        failure.set(None);
        last_sent.set_value(Some(entry.clone()));
        save.dispatch(entry);
    };
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        let entry = NewDataRequest {
            notes: notes.value.get_untracked(),
            greeting: greeting.value.get_untracked(),
        };
        for name in Field::ALL {
            if let Some(state) = field(name.name()) {
                state.error.set(None);
            }
        }
        match NewData::parse(Ok(entry.notes.clone()), Ok(entry.greeting.clone())) {
            Ok(_) => send(entry),
            Err(errors) => {
                confirmation.set(None);
                show_errors(errors);
            }
        }
    };
    let retry = move |_| {
        if let Some(entry) = last_sent.get_value() {
            send(entry);
        }
    };

    view! {
        <section class="card" aria-labelledby="add-heading">
            <h2 id="add-heading">"Add an entry"</h2>
            <form on:submit=submit novalidate>
                <TextField id="notes" label="Notes" value=notes.value error=notes.error node_ref=notes.input/>
                <TextField
                    id="greeting"
                    label="Greeting"
                    value=greeting.value
                    error=greeting.error
                    node_ref=greeting.input
                />
                <button type="submit" disabled=move || save.pending().get()>
                    {move || if save.pending().get() { "Saving…" } else { "Add entry" }}
                </button>
            </form>
            <div class="status" role="status" aria-live="polite">
                {move || {
                    confirmation
                        .get()
                        .map(|record| {
                            view! {
                                <p class="confirmation">
                                    "You added this to the database: "
                                    <strong>{record.notes}</strong>
                                    " — "
                                    <strong>{record.greeting}</strong>
                                </p>
                            }
                        })
                }}
            </div>
            <div class="alert-region" aria-live="assertive">
                {move || {
                    failure
                        .get()
                        .map(|failure| {
                            let retryable = failure.is_retryable();
                            view! {
                                <div class="error-banner" role="alert">
                                    <p>{failure.message()}</p>
                                    <Show when=move || retryable>
                                        <button type="button" class="secondary" on:click=retry>
                                            "Try again"
                                        </button>
                                    </Show>
                                </div>
                            }
                        })
                }}
            </div>
        </section>
    }
}
