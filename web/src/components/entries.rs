//! The "Retrieve entries" form and the table of the newest entries.

use domain::{DEFAULT_LIMIT, DataList, DataRecord, ListLimit};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use wasm_bindgen::JsValue;

use crate::api::{self, ApiFailure};

/// The form asking for N entries, and the result.
#[component]
pub fn EntriesPanel() -> impl IntoView {
    let count = RwSignal::new(DEFAULT_LIMIT.to_string());
    let count_error = RwSignal::new(None::<String>);
    let last_n = StoredValue::new(DEFAULT_LIMIT);
    let load = Action::new_unsync(|n: &u32| {
        let n = *n;
        async move { api::list_entries(n).await }
    });
    let fetch = move |n: u32| {
        last_n.set_value(n);
        load.dispatch(n);
    };
    let submit = move |event: SubmitEvent| {
        event.prevent_default();
        match ListLimit::parse(count.get_untracked().trim()) {
            Ok(limit) => {
                count_error.set(None);
                fetch(limit.get());
            }
            Err(error) => count_error.set(Some(format!("Number of entries {error}."))),
        }
    };
    let result = move || -> AnyView {
        if load.pending().get() {
            return view! { <p class="loading">"Loading entries…"</p> }.into_any();
        }
        match load.value().get() {
            None => view! {
                <p class="hint">"Choose how many entries to see, then press “Get entries”."</p>
            }
            .into_any(),
            Some(Ok(DataList { items })) if items.is_empty() => view! {
                <p class="empty">"No entries yet. Add the first one with the form."</p>
            }
            .into_any(),
            Some(Ok(DataList { items })) => view! { <EntriesTable items=items/> }.into_any(),
            Some(Err(failure)) => {
                view! { <LoadFailure failure=failure retry=move || fetch(last_n.get_value())/> }
                    .into_any()
            }
        }
    };

    view! {
        <section class="card" aria-labelledby="get-heading">
            <h2 id="get-heading">"Retrieve entries"</h2>
            <form on:submit=submit novalidate class="inline-form">
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
                            count_error.set(None);
                        }
                        aria-invalid=move || if count_error.with(Option::is_some) { "true" } else { "false" }
                        aria-describedby="count-error"
                    />
                    <span id="count-error" class="field-error">{move || count_error.get()}</span>
                </div>
                <button type="submit" disabled=move || load.pending().get()>"Get entries"</button>
            </form>
            <div class="results" aria-live="polite" aria-busy=move || load.pending().get().to_string()>
                {result}
            </div>
        </section>
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

/// The newest entries, newest first.
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
