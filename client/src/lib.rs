//! A typed client of the notes API, over the `domain` wire types and
//! without a transport of its own.
//!
//! Each operation of `openapi.json` is a method of [`Client`] that returns
//! a [`Call`]: the HTTP request to send ([`Call::request`]) and the reader
//! of its answer ([`Call::read`]), which gives the operation's typed result
//! or a [`Failure`] holding the server's problem document. Send the
//! request with whatever HTTP client the program already has (ureq,
//! hyper, reqwest, blocking or not):
//!
//! ```
//! let client = client::Client::new("http://127.0.0.1:5000");
//! let call = client.list_entries(Some(10), None);
//! assert_eq!(call.request().uri(), "http://127.0.0.1:5000/data?n=10");
//! // … send it, then:
//! let list = call.read(200, &http::HeaderMap::new(), br#"{"items":[]}"#);
//! assert!(list.is_ok_and(|list| list.items.is_empty()));
//! ```
//!
//! Writes are safe to send again: [`Client::create_entry`] takes an
//! `Idempotency-Key` ([`idempotency_key`] makes one); send the same call
//! again when the answer was lost or [`Failure::is_retryable`] says so, and
//! the entry is stored once.

use domain::{DataList, DataRecord, NewDataRequest, Problem};
use http::{HeaderMap, HeaderValue, Request, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Every operation of the API: `operationId`, method and path template, as
/// in `openapi.json` (a test holds the two together).
pub const OPERATIONS: [(&str, &str, &str); 5] = [
    ("create_data", "POST", "/data"),
    ("list_data", "GET", "/data"),
    ("get_data", "GET", "/data/{id}"),
    ("health", "GET", "/health"),
    ("ready", "GET", "/health/ready"),
];

/// The header that makes a write safe to send again.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A fresh `Idempotency-Key`: a random UUID (version 4).
pub fn idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The API at one base URL (`http://127.0.0.1:5000`, a load balancer's).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
}

/// The answer of the health checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// What `POST /data` gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The stored entry.
    pub record: DataRecord,
    /// Whether the answer repeats an earlier request's with the same key
    /// (`Idempotent-Replayed: true`): nothing was stored this time.
    pub replayed: bool,
    /// The entry's path (`Location`).
    pub location: String,
}

/// Why a call did not give its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server's problem document (RFC 9457).
    Problem(Problem),
    /// An answer that is neither the result nor a problem (a proxy's error
    /// page, say), with its status and body.
    Unexpected {
        /// The status.
        status: u16,
        /// The body, as text.
        body: String,
    },
}

impl Failure {
    /// The answer's status.
    pub fn status(&self) -> u16 {
        match self {
            Failure::Problem(problem) => problem.status,
            Failure::Unexpected { status, .. } => *status,
        }
    }

    /// The problem's `type`, when the server sent a problem.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Failure::Problem(problem) => Some(&problem.kind),
            Failure::Unexpected { .. } => None,
        }
    }

    /// Whether the same call may succeed when sent again (with the same
    /// `Idempotency-Key`, for a write): the server could not serve it
    /// (5xx), or the same write is still being served (409).
    pub fn is_retryable(&self) -> bool {
        self.status() >= 500 || self.status() == 409
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Problem(problem) => {
                write!(f, "{} {} ({})", problem.status, problem.title, problem.kind)?;
                if let Some(detail) = &problem.detail {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Failure::Unexpected { status, body } if body.is_empty() => {
                write!(f, "{status}, with no problem document")
            }
            Failure::Unexpected { status, body } => {
                write!(f, "{status}, not a problem document: {body}")
            }
        }
    }
}

impl std::error::Error for Failure {}

/// One operation: the request to send, and how to read its answer.
#[derive(Debug)]
pub struct Call<T> {
    request: Request<Vec<u8>>,
    success: u16,
    read: fn(&HeaderMap, &[u8]) -> Option<T>,
}

impl<T> Call<T> {
    /// The request to send.
    pub fn request(&self) -> &Request<Vec<u8>> {
        &self.request
    }

    /// The status of success.
    pub fn success(&self) -> u16 {
        self.success
    }

    /// The typed result of an answer with `status`, `headers` and `body`.
    ///
    /// # Errors
    /// The server's problem document for any other status, or
    /// [`Failure::Unexpected`] for an answer that is neither.
    pub fn read(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> Result<T, Failure> {
        if status == self.success
            && let Some(result) = (self.read)(headers, body)
        {
            return Ok(result);
        }
        let is_problem = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
        if is_problem
            && let Ok(problem) = serde_json::from_slice::<Problem>(body)
            && problem.status == status
        {
            return Err(Failure::Problem(problem));
        }
        Err(Failure::Unexpected {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        })
    }
}

/// The JSON body as `T`.
fn json<T: DeserializeOwned>(_: &HeaderMap, body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

impl Client {
    /// The API at `base` (a trailing `/` is ignored).
    pub fn new(base: impl Into<String>) -> Client {
        let mut base = base.into();
        while base.ends_with('/') {
            base.pop();
        }
        Client { base }
    }

    fn get<T>(&self, path: &str, read: fn(&HeaderMap, &[u8]) -> Option<T>) -> Call<T> {
        let request = Request::get(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json, application/problem+json")
            .body(Vec::new())
            .expect("a request from a valid base and path");
        Call {
            request,
            success: 200,
            read,
        }
    }

    /// `POST /data`: stores `entry`. With `key`, the same call sent again
    /// stores it once.
    ///
    /// # Panics
    /// When `key` cannot be a header value (a control character).
    pub fn create_entry(&self, entry: &NewDataRequest, key: Option<&str>) -> Call<Created> {
        let mut request = Request::post(format!("{}/data", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, application/problem+json");
        if let Some(key) = key {
            request = request.header(
                IDEMPOTENCY_KEY,
                HeaderValue::from_str(key).expect("an Idempotency-Key is printable ASCII"),
            );
        }
        let body = serde_json::to_vec(entry).expect("an entry serializes");
        Call {
            request: request.body(body).expect("a request from a valid base"),
            success: 201,
            read: |headers, body| {
                let record: DataRecord = serde_json::from_slice(body).ok()?;
                let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
                Some(Created {
                    replayed: text("idempotent-replayed") == Some("true"),
                    location: text("location")
                        .map_or_else(|| format!("/data/{}", record.id), str::to_owned),
                    record,
                })
            },
        }
    }

    /// `GET /data`: up to `n` entries (10 when `None`), newest first, below
    /// `before` when given.
    pub fn list_entries(&self, n: Option<u32>, before: Option<i64>) -> Call<DataList> {
        let query: Vec<String> = n
            .map(|n| format!("n={n}"))
            .into_iter()
            .chain(before.map(|before| format!("before={before}")))
            .collect();
        let path = if query.is_empty() {
            "/data".to_owned()
        } else {
            format!("/data?{}", query.join("&"))
        };
        self.get(&path, json::<DataList>)
    }

    /// `GET /data/{id}`.
    pub fn get_entry(&self, id: i64) -> Call<DataRecord> {
        self.get(&format!("/data/{id}"), json::<DataRecord>)
    }

    /// `GET /health`: the process serves.
    pub fn health(&self) -> Call<Health> {
        self.get("/health", json::<Health>)
    }

    /// `GET /health/ready`: the process serves and its database answers.
    pub fn ready(&self) -> Call<Health> {
        self.get("/health/ready", json::<Health>)
    }
}
