//! The request a thread is serving, for the log lines written meanwhile.
//!
//! Every line logged while a request is served carries its method, path,
//! request id and trace id. A `tracing` span would carry them too, but
//! creating one formats its fields into a buffer of its own on every
//! request, logged inside or not: 5,600 of the 41,700 instructions a `GET
//! /health` cost (docs/performance.md). Here the edge layer
//! lends the request's fields to the thread while it polls the request
//! ([`within`]), and the JSON format writes them into a line only when
//! one is logged ([`with_current`]). The pretty format of local runs
//! gets a span as well, which its lines show as tracing-subscriber does.
//!
//! Like a span entered around each poll, the fields reach lines logged by
//! the request's own future; a task it spawns does not carry them.

use std::cell::RefCell;

use axum::http::{HeaderValue, Method, Uri};

use crate::trace::Trace;

/// What the log lines of a request carry.
#[derive(Debug)]
pub struct RequestFields {
    /// The request's method.
    pub method: Method,
    /// Its URI; the lines show the path.
    pub uri: Uri,
    /// Its request id (the client's, or a new one).
    pub request_id: HeaderValue,
    /// Its trace id, and the load balancer's beside it.
    pub trace: Trace,
}

impl RequestFields {
    /// The request id as text (`-` if it were not: it always is).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

thread_local! {
    /// The fields of the request this thread is polling, if any.
    static CURRENT: RefCell<Option<RequestFields>> = const { RefCell::new(None) };
}

/// Runs `poll` with `fields` lent to the thread as its current request,
/// and puts them back afterwards (also when `poll` panics).
pub fn within<T>(fields: &mut Option<RequestFields>, poll: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|current| current.replace(fields.take()));
    let _give_back = GiveBack {
        slot: fields,
        previous,
    };
    poll()
}

/// Puts the lent fields back where they came from, and the thread's
/// earlier ones (none, unless requests nest) back on the thread.
struct GiveBack<'a> {
    slot: &'a mut Option<RequestFields>,
    previous: Option<RequestFields>,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        *self.slot = CURRENT.with(|current| current.replace(previous));
    }
}

/// Calls `write` with the fields of the request this thread is serving.
pub fn with_current<T>(write: impl FnOnce(Option<&RequestFields>) -> T) -> T {
    CURRENT.with(|current| match current.try_borrow() {
        Ok(fields) => write(fields.as_ref()),
        // Only while `within` swaps them, which logs nothing.
        Err(_) => write(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(id: &'static str) -> RequestFields {
        RequestFields {
            method: Method::GET,
            uri: Uri::from_static("/health"),
            request_id: HeaderValue::from_static(id),
            trace: Trace::of(&axum::http::HeaderMap::new()),
        }
    }

    fn current_id() -> Option<String> {
        with_current(|fields| fields.map(|fields| fields.request_id().to_owned()))
    }

    #[test]
    fn the_fields_are_the_threads_while_polling_and_given_back_after() {
        let mut outer = Some(fields("outer"));
        let mut inner = Some(fields("inner"));
        assert_eq!(current_id(), None);
        within(&mut outer, || {
            assert_eq!(current_id().as_deref(), Some("outer"));
            within(&mut inner, || {
                assert_eq!(current_id().as_deref(), Some("inner"));
            });
            assert_eq!(current_id().as_deref(), Some("outer"));
        });
        assert_eq!(current_id(), None);
        assert_eq!(
            outer
                .map(|fields| fields.request_id().to_owned())
                .as_deref(),
            Some("outer")
        );
        assert_eq!(
            inner
                .map(|fields| fields.request_id().to_owned())
                .as_deref(),
            Some("inner")
        );
    }

    #[test]
    fn a_panic_while_polling_gives_the_fields_back() {
        let mut lent = Some(fields("lent"));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            within(&mut lent, || panic!("the handler panicked"));
        }));
        assert!(caught.is_err());
        assert_eq!(
            current_id(),
            None,
            "the thread kept a finished request's fields"
        );
        assert!(lent.is_some(), "the request lost its fields");
    }
}
