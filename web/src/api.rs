//! Calls to the JSON API and what can go wrong with them.

use domain::{DataList, DataRecord, NewDataRequest, Problem};
use gloo_net::http::{Request, Response};
use serde::de::DeserializeOwned;

/// Why a call did not give the expected answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiFailure {
    /// The API answered with a problem document (4xx or 5xx).
    Problem(Problem),
    /// No answer: the network or the server is down.
    Network,
    /// An answer that is neither the expected body nor a problem.
    Unexpected(u16),
}

impl ApiFailure {
    /// A sentence for the page-level message.
    pub(crate) fn message(&self) -> String {
        match self {
            ApiFailure::Problem(problem) => match &problem.detail {
                Some(detail) => format!("{}: {detail}", problem.title),
                None => problem.title.clone(),
            },
            ApiFailure::Network => {
                "The server could not be reached. Check your connection and try again.".to_owned()
            }
            ApiFailure::Unexpected(status) => {
                format!("The server gave an unexpected answer (HTTP {status}). Please try again.")
            }
        }
    }

    /// Whether trying the same request again may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            // 409: the same write is still being served.
            ApiFailure::Problem(problem) => problem.status >= 500 || problem.status == 409,
            ApiFailure::Network | ApiFailure::Unexpected(_) => true,
        }
    }
}

/// A fresh `Idempotency-Key`: a random UUID (version 4), from
/// `crypto.getRandomValues`, which works on plain HTTP too (where
/// `crypto.randomUUID` does not exist). `None` without Web Crypto (no
/// browser that runs this WASM lacks it): a guessable key is worse than
/// none.
pub(crate) fn new_idempotency_key() -> Option<String> {
    let crypto = web_sys::window()?.crypto().ok()?;
    let mut bytes = [0_u8; 16];
    crypto.get_random_values_with_u8_array(&mut bytes).ok()?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// `POST /data` with the submission's `Idempotency-Key`: sent again with
/// the same key, the entry is stored once.
pub(crate) async fn create_entry(
    entry: &NewDataRequest,
    key: Option<&str>,
) -> Result<DataRecord, ApiFailure> {
    let mut request = Request::post("/data");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let request = request.json(entry).map_err(|_| ApiFailure::Unexpected(0))?;
    let response = request.send().await.map_err(|_| ApiFailure::Network)?;
    read(response, 201).await
}

/// `GET /data?n=`, or with `before` the page of older entries below it.
pub(crate) async fn list_entries(n: u32, before: Option<i64>) -> Result<DataList, ApiFailure> {
    // Parameters through `query`: gloo joins a query written into the path
    // and its own (empty) one with a stray `&`.
    let mut request = Request::get("/data").query([("n", n.to_string())]);
    if let Some(before) = before {
        request = request.query([("before", before.to_string())]);
    }
    let response = request.send().await.map_err(|_| ApiFailure::Network)?;
    read(response, 200).await
}

/// The expected body when the status is `expected`, else the failure.
async fn read<T: DeserializeOwned>(response: Response, expected: u16) -> Result<T, ApiFailure> {
    let status = response.status();
    if status == expected {
        return response
            .json::<T>()
            .await
            .map_err(|_| ApiFailure::Unexpected(status));
    }
    let is_problem = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.starts_with("application/problem+json"));
    if is_problem && let Ok(problem) = response.json::<Problem>().await {
        return Err(ApiFailure::Problem(problem));
    }
    Err(ApiFailure::Unexpected(status))
}
