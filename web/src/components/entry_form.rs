//! The "Add an entry" form: validates with the server's rules, stores the
//! entry, confirms what was stored.

use domain::{DataRecord, Field, FieldError, NewData, NewDataRequest};
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

/// Both fields of an entry.
#[derive(Clone, Copy)]
struct Fields {
    notes: FieldState,
    greeting: FieldState,
}

impl Fields {
    fn new() -> Self {
        Fields {
            notes: FieldState::new(),
            greeting: FieldState::new(),
        }
    }

    /// The field a problem's `field` names, if it is one of the form's.
    fn named(&self, name: &str) -> Option<FieldState> {
        match name {
            "notes" => Some(self.notes),
            "greeting" => Some(self.greeting),
            _ => None,
        }
    }

    /// What the fields hold now.
    fn entry(&self) -> NewDataRequest {
        NewDataRequest {
            notes: self.notes.value.get_untracked(),
            greeting: self.greeting.value.get_untracked(),
        }
    }

    fn clear_errors(&self) {
        for name in Field::ALL {
            if let Some(state) = self.named(name.name()) {
                state.error.set(None);
            }
        }
    }

    /// Empties the form for the next entry.
    fn reset(&self) {
        self.notes.value.set(String::new());
        self.greeting.value.set(String::new());
        self.notes.focus();
    }

    /// Shows each error next to its field and moves focus to the first
    /// invalid one; an error about a field the form lacks comes back as a
    /// page-level failure.
    fn show_errors(&self, errors: Vec<FieldError>) -> Option<ApiFailure> {
        let mut first = None;
        let mut unknown = None;
        for error in errors {
            match self.named(&error.field) {
                Some(state) => {
                    state
                        .error
                        .set(Some(format!("{} {}.", label(&error.field), error.message)));
                    first.get_or_insert(state);
                }
                None => {
                    unknown = Some(ApiFailure::Problem(domain::Problem {
                        kind: "about:blank".to_owned(),
                        title: "Invalid entry".to_owned(),
                        status: 422,
                        detail: Some(format!("{} {}", error.field, error.message)),
                        errors: Vec::new(),
                    }));
                }
            }
        }
        if let Some(state) = first {
            state.focus();
        }
        unknown
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
#[allow(
    unreachable_pub,
    reason = "#[component] expands to `pub` items of its own"
)]
pub(crate) fn EntryForm() -> impl IntoView {
    let fields = Fields::new();
    let confirmation = RwSignal::new(None::<DataRecord>);
    let failure = RwSignal::new(None::<ApiFailure>);
    // The entry last sent and its Idempotency-Key: "Try again" sends both
    // again, so an entry whose answer was lost is stored once.
    let last_sent = StoredValue::new(None::<(NewDataRequest, Option<String>)>);
    let save = Action::new_unsync(|(entry, key): &(NewDataRequest, Option<String>)| {
        let (entry, key) = (entry.clone(), key.clone());
        async move { api::create_entry(&entry, key.as_deref()).await }
    });

    Effect::new(move |_| {
        if let Some(result) = save.value().get() {
            show_result(result, fields, confirmation, failure);
        }
    });

    let send = move |sent: (NewDataRequest, Option<String>)| {
        confirmation.set(None);
        failure.set(None);
        last_sent.set_value(Some(sent.clone()));
        save.dispatch(sent);
    };
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        let entry = fields.entry();
        fields.clear_errors();
        match NewData::parse(Ok(entry.notes.clone()), Ok(entry.greeting.clone())) {
            Ok(_) => send((entry, api::new_idempotency_key())),
            Err(errors) => {
                confirmation.set(None);
                if let Some(unknown) = fields.show_errors(errors) {
                    failure.set(Some(unknown));
                }
            }
        }
    };
    let retry = move || {
        if let Some(sent) = last_sent.get_value() {
            send(sent);
        }
    };

    view! {
        <section class="card" aria-labelledby="add-heading">
            <h2 id="add-heading">"Add an entry"</h2>
            <form on:submit=submit novalidate>
                <TextField
                    id="notes"
                    label="Notes"
                    value=fields.notes.value
                    error=fields.notes.error
                    node_ref=fields.notes.input
                />
                <TextField
                    id="greeting"
                    label="Greeting"
                    value=fields.greeting.value
                    error=fields.greeting.error
                    node_ref=fields.greeting.input
                />
                <button type="submit" disabled=move || save.pending().get()>
                    {move || if save.pending().get() { "Saving…" } else { "Add entry" }}
                </button>
            </form>
            <Confirmation stored=confirmation/>
            <SaveFailure failure=failure retry=retry/>
        </section>
    }
}

/// Shows what a save answered: the stored entry (and an empty form for the
/// next), each field's error, or a page-level failure.
fn show_result(
    result: Result<DataRecord, ApiFailure>,
    fields: Fields,
    confirmation: RwSignal<Option<DataRecord>>,
    failure: RwSignal<Option<ApiFailure>>,
) {
    match result {
        Ok(record) => {
            confirmation.set(Some(record));
            fields.reset();
        }
        Err(ApiFailure::Problem(problem)) if !problem.errors.is_empty() => {
            if let Some(unknown) = fields.show_errors(problem.errors) {
                failure.set(Some(unknown));
            }
        }
        Err(other) => failure.set(Some(other)),
    }
}

/// What was stored, announced politely.
#[component]
fn Confirmation(
    /// The entry the server stored, once it has.
    stored: RwSignal<Option<DataRecord>>,
) -> impl IntoView {
    view! {
        <div class="status" role="status" aria-live="polite">
            {move || {
                stored
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
    }
}

/// Why the entry was not stored, with "Try again" when trying again can
/// help.
#[component]
fn SaveFailure(
    /// The failure of the last attempt, if it failed.
    failure: RwSignal<Option<ApiFailure>>,
    /// Sends the same entry again.
    retry: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    view! {
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
                                    <button type="button" class="secondary" on:click=move |_| retry()>
                                        "Try again"
                                    </button>
                                </Show>
                            </div>
                        }
                    })
            }}
        </div>
    }
}
