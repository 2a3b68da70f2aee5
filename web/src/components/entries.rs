//! The "Retrieve entries" form and the table of the newest entries, with
//! "Show older" to page back through the rest.

use domain::{DEFAULT_LIMIT, DataList, DataRecord, ListLimit};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use wasm_bindgen::JsValue;

use crate::api::{self, ApiFailure};

/// One request for a page: how many entries, and below which id (none for
/// the newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    n: u32,
    before: Option<i64>,
}

/// What the panel shows below its form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    /// Nothing asked yet.
    Hint,
    /// The entries loaded so far, newest first, and the cursor of the next
    /// page when older entries exist.
    Entries {
        items: Vec<DataRecord>,
        next_before: Option<i64>,
    },
}

/// The form asking for N entries, and the result.
#[component]
#[allow(
    unreachable_pub,
    reason = "#[component] expands to `pub` items of its own"
)]
pub(crate) fn EntriesPanel() -> impl IntoView {
    let count = RwSignal::new(DEFAULT_LIMIT.to_string());
    let count_error = RwSignal::new(None::<String>);
    let shown = RwSignal::new(Shown::Hint);
    let last_page = StoredValue::new(Page {
        n: DEFAULT_LIMIT,
        before: None,
    });
    let load = Action::new_unsync(move |page: &Page| {
        let page = *page;
        async move {
            let list = api::list_entries(page.n, page.before).await?;
            shown.update(|shown| *shown = merged(shown, page, list));
            Ok::<(), ApiFailure>(())
        }
    });
    let fetch = move |page: Page| {
        last_page.set_value(page);
        load.dispatch(page);
    };
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        match ListLimit::parse(count.get_untracked().trim()) {
            Ok(limit) => {
                count_error.set(None);
                fetch(Page {
                    n: limit.get(),
                    before: None,
                });
            }
            Err(error) => count_error.set(Some(format!("Number of entries {error}."))),
        }
    };
    let older = move || {
        if let Shown::Entries {
            next_before: Some(before),
            ..
        } = shown.get_untracked()
        {
            let n = last_page.get_value().n;
            fetch(Page {
                n,
                before: Some(before),
            });
        }
    };
    let result = move || -> AnyView {
        let loading_first = load.pending().get() && last_page.get_value().before.is_none();
        if loading_first {
            return view! { <p class="loading">"Loading entries…"</p> }.into_any();
        }
        let failure = match load.value().get() {
            Some(Err(failure)) => Some(failure),
            _ => None,
        };
        let retry = move || fetch(last_page.get_value());
        if let Some(failure) = &failure
            && last_page.get_value().before.is_none()
        {
            // The first page failed: nothing else to show.
            return view! { <LoadFailure failure=failure.clone() retry=retry/> }.into_any();
        }
        view! {
            <ShownEntries shown=shown.get() loading_older=load.pending().get() older=older/>
            {failure.map(|failure| view! { <LoadFailure failure=failure retry=retry/> })}
        }
        .into_any()
    };

    view! {
        <section class="card" aria-labelledby="get-heading">
            <h2 id="get-heading">"Retrieve entries"</h2>
            <CountForm count=count error=count_error busy=load.pending() on_submit=submit/>
            <div class="results" aria-live="polite" aria-busy=move || load.pending().get().to_string()>
                {result}
            </div>
        </section>
    }
}

/// What is shown after `page` answered `list`: a first page replaces what
/// was there, an older page is added below it.
fn merged(shown: &Shown, page: Page, list: DataList) -> Shown {
    match (shown, page.before) {
        (Shown::Entries { items, .. }, Some(_)) => {
            let mut items = items.clone();
            items.extend(list.items);
            Shown::Entries {
                items,
                next_before: list.next_before,
            }
        }
        _ => Shown::Entries {
            items: list.items,
            next_before: list.next_before,
        },
    }
}

/// The "Number of entries to get" field and its button.
#[component]
fn CountForm(
    /// The field's text.
    count: RwSignal<String>,
    /// Why the field's value was refused, if it was.
    error: RwSignal<Option<String>>,
    /// Whether a request is under way (the button waits).
    busy: Memo<bool>,
    /// Called when the form is sent.
    on_submit: impl Fn(SubmitEvent) + 'static,
) -> impl IntoView {
    view! {
        <form on:submit=on_submit novalidate class="inline-form">
            <div class="field">
                <label for="count">"Number of entries to get"</label>
                <input
                    id="count"
                    name="n"
                    type="number"
                    min="1"
                    max="100"
                    step="1"
                    inputmode="numeric"
                    prop:value=move || count.get()
                    on:input=move |event| {
                        count.set(event_target_value(&event));
                        error.set(None);
                    }
                    aria-invalid=move || if error.with(Option::is_some) { "true" } else { "false" }
                    aria-describedby="count-error"
                />
                <span id="count-error" class="field-error">{move || error.get()}</span>
            </div>
            <button type="submit" disabled=move || busy.get()>"Get entries"</button>
        </form>
    }
}

/// The hint, the empty state, or the table with "Show older" below it
/// while older entries exist.
#[component]
fn ShownEntries(
    /// What to show.
    shown: Shown,
    /// Whether an older page is being loaded.
    loading_older: bool,
    /// Loads the next older page.
    older: impl Fn() + Copy + 'static,
) -> impl IntoView {
    match shown {
        Shown::Hint => view! {
            <p class="hint">"Choose how many entries to see, then press “Get entries”."</p>
        }
        .into_any(),
        Shown::Entries { items, .. } if items.is_empty() => view! {
            <p class="empty">"No entries yet. Add the first one with the form."</p>
        }
        .into_any(),
        Shown::Entries { items, next_before } => view! {
            <EntriesTable items=items/>
            {next_before.map(|_| view! {
                <button type="button" class="secondary" disabled=loading_older on:click=move |_| older()>
                    {if loading_older { "Loading older entries…" } else { "Show older" }}
                </button>
            })}
        }
        .into_any(),
    }
}

/// A failed load, with a way to try again.
#[component]
fn LoadFailure(
    /// What went wrong.
    failure: ApiFailure,
    /// Repeats the last request.
    retry: impl Fn() + Copy + 'static,
) -> impl IntoView {
    view! {
        <div class="error-banner" role="alert">
            <p>{failure.message()}</p>
            <button type="button" class="secondary" on:click=move |_| retry()>"Try again"</button>
        </div>
    }
}

/// The entries loaded so far, newest first.
#[component]
fn EntriesTable(
    /// The entries to show, newest first.
    items: Vec<DataRecord>,
) -> impl IntoView {
    let heading = match items.len() {
        1 => "1 most recent entry".to_owned(),
        n => format!("{n} most recent entries"),
    };
    view! {
        <h3 id="results-heading">{heading}</h3>
        <div class="table-wrap">
            <table aria-labelledby="results-heading">
                <thead>
                    <tr>
                        <th scope="col">"Notes"</th>
                        <th scope="col">"Greeting"</th>
                        <th scope="col">"Added"</th>
                    </tr>
                </thead>
                <tbody>
                    {items
                        .into_iter()
                        .map(|item| {
                            let stamp = item.created_at.to_rfc3339();
                            let local = local_time(item.created_at.timestamp_millis());
                            view! {
                                <tr>
                                    <td>{item.notes}</td>
                                    <td>{item.greeting}</td>
                                    <td>
                                        <time datetime=stamp>{local}</time>
                                    </td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// A timestamp in the browser's locale and time zone.
fn local_time(millis: i64) -> String {
    // JavaScript dates are f64 milliseconds; exact for any realistic date.
    #[allow(clippy::cast_precision_loss, reason = "exact below 2^53 ms")]
    let date = js_sys::Date::new(&JsValue::from_f64(millis as f64));
    date.to_locale_string("default", &JsValue::UNDEFINED).into()
}
