//! `/data`: store an entry and list the newest ones.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{
    DataList, DataRecord, FieldError, ListLimit, NewData, NewDataRequest, Problem, TextError,
};
use serde_json::{Map, Value};
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;

/// The body of `GET /data` ([`DataList`]) over borrowed records.
#[derive(serde::Serialize)]
struct ListBody<'a> {
    items: &'a [DataRecord],
}

/// Largest accepted `POST /data` body, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Query parameters of `GET /data`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DataQuery {
    /// How many of the most recently stored entries to return.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub n: Option<u32>,
}

/// Stores an entry.
#[utoipa::path(
    post,
    path = "/data",
    tag = "data",
    request_body(content = NewDataRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored; `Location` names the new entry", body = DataRecord,
            headers(("Location" = String, description = "Path of the stored entry"))),
        (status = 400, description = "The body is not a JSON object or not valid UTF-8", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The request took longer than the server's timeout", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Fields missing, unknown or breaking the rules; `errors` lists each", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many writes from this client address (on Elastic Beanstalk, from the platform's nginx: 10 a second, bursts of 20, per instance); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
        (status = 500, description = "Unexpected server failure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_data(
    State(state): State<AppState>,
    EntryBody(entry): EntryBody,
) -> Result<Response, ApiError> {
    let record = state.store.insert(entry).await?;
    let location = HeaderValue::from_str(&format!("/data/{}", record.id))
        .expect("a path made of digits is a valid header value");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

/// Lists the most recently stored entries, newest first.
#[utoipa::path(
    get,
    path = "/data",
    tag = "data",
    params(DataQuery),
    responses(
        (status = 200, description = "The newest entries, newest first", body = DataList),
        (status = 400, description = "`n` is not an integer from 1 to 100, or given twice", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The request took longer than the server's timeout", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected server failure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_data(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let limit = parse_limit(query.as_deref().unwrap_or_default())?;
    let listing = state.store.list(limit.get()).await?;
    // `DataList` on the wire, serialized from the batch's shared records.
    Ok(Json(ListBody {
        items: listing.records(),
    })
    .into_response())
}

/// Returns one stored entry: where `POST /data`'s `Location` points.
#[utoipa::path(
    get,
    path = "/data/{id}",
    tag = "data",
    params(("id" = i64, Path, description = "Identifier of a stored entry, from `POST /data`")),
    responses(
        (status = 200, description = "The entry", body = DataRecord),
        (status = 404, description = "No entry has this id (or the id is not an integer)", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The request took longer than the server's timeout", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected server failure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_data(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DataRecord>, ApiError> {
    let missing = || ApiError::NotFound(format!("No entry has the id {id:?}."));
    let Ok(number) = id.parse::<i64>() else {
        return Err(missing());
    };
    let record = state.store.get(number).await?;
    record.map(Json).ok_or_else(missing)
}

/// Reads `n` from a raw query string. Other parameters are ignored, but `n`
/// given twice is refused rather than guessed at.
fn parse_limit(query: &str) -> Result<ListLimit, ApiError> {
    let refuse = |message: String| {
        ApiError::InvalidQuery(vec![FieldError {
            field: "n".to_owned(),
            message,
        }])
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| refuse("the query string is not valid URL encoding".to_owned()))?;
    let mut values = pairs
        .into_iter()
        .filter(|(key, _)| key == "n")
        .map(|(_, value)| value);
    let Some(value) = values.next() else {
        return Ok(ListLimit::default());
    };
    if values.next().is_some() {
        return Err(refuse("must be given at most once".to_owned()));
    }
    ListLimit::parse(&value).map_err(|error| refuse(error.to_string()))
}

/// The body of `POST /data`, checked: declared as JSON, within the size
/// limit, valid JSON, an object with exactly the two fields, each valid.
#[derive(Debug)]
pub struct EntryBody(pub NewData);

impl<S: Send + Sync> FromRequest<S> for EntryBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        // Refuse a declared oversized body at once, rather than waiting for
        // bytes that will be refused anyway.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > BODY_LIMIT as u64) {
            return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit: BODY_LIMIT }
                } else {
                    ApiError::MalformedBody("the request body could not be read".to_owned())
                }
            })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::MalformedBody(format!("the body is not valid JSON: {error}"))
        })?;
        let Value::Object(object) = value else {
            return Err(ApiError::MalformedBody(
                "the body must be a JSON object".to_owned(),
            ));
        };
        parse_entry(object)
            .map(EntryBody)
            .map_err(ApiError::InvalidFields)
    }
}

/// Validates the members of a JSON object as an entry, listing every problem.
fn parse_entry(mut object: Map<String, Value>) -> Result<NewData, Vec<FieldError>> {
    let mut take = |name: &str| match object.remove(name) {
        None => Err(TextError::Missing),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(TextError::NotAString),
    };
    let notes = take("notes");
    let greeting = take("greeting");
    let unknown = unknown_fields(object.keys());
    match NewData::parse(notes, greeting) {
        Ok(entry) if unknown.is_empty() => Ok(entry),
        Ok(_) => Err(unknown),
        Err(mut errors) => {
            errors.extend(unknown);
            Err(errors)
        }
    }
}

/// Unknown members listed in a problem at most; the rest are counted.
/// Without a cap, 16 KiB of one-letter keys would answer about 140 KB.
const MAX_UNKNOWN_LISTED: usize = 5;

/// Characters of an unknown member's name echoed back at most.
const MAX_ECHOED_NAME: usize = 64;

/// The errors for unknown members: the first few by name (shortened), then
/// one entry counting the others.
fn unknown_fields<'a>(names: impl ExactSizeIterator<Item = &'a String>) -> Vec<FieldError> {
    let total = names.len();
    let mut errors: Vec<FieldError> = names
        .take(MAX_UNKNOWN_LISTED)
        .map(|name| FieldError {
            field: match name.char_indices().nth(MAX_ECHOED_NAME) {
                Some((cut, _)) => format!("{}…", &name[..cut]),
                None => name.clone(),
            },
            message: "is not a known field".to_owned(),
        })
        .collect();
    if total > MAX_UNKNOWN_LISTED {
        errors.push(FieldError {
            field: "(more)".to_owned(),
            message: format!("and {} more unknown fields", total - MAX_UNKNOWN_LISTED),
        });
    }
    errors
}

/// Whether the request declares a JSON body (`application/json`, or
/// `application/<anything>+json`, with any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(Ok(value)) = headers.get(header::CONTENT_TYPE).map(HeaderValue::to_str) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("valid"),
        );
        headers
    }

    #[test]
    fn json_media_types_are_recognised() {
        for accepted in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(&json_headers(accepted)), "{accepted}");
        }
        for refused in [
            "text/plain",
            "application/jsonx",
            "multipart/form-data",
            "json",
        ] {
            assert!(!is_json(&json_headers(refused)), "{refused}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn unknown_fields_are_listed_up_to_a_cap_and_counted_beyond_it() {
        let names: Vec<String> = (0..1800).map(|i| format!("k{i}")).collect();
        let errors = unknown_fields(names.iter());
        assert_eq!(errors.len(), MAX_UNKNOWN_LISTED + 1);
        assert_eq!(errors[0].field, "k0");
        assert_eq!(
            errors[MAX_UNKNOWN_LISTED].message,
            "and 1795 more unknown fields"
        );

        let long = ["é".repeat(1000)];
        let errors = unknown_fields(long.iter());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.chars().count(), MAX_ECHOED_NAME + 1);
    }

    /// The document is written from `DataQuery`, the handler reads the raw
    /// query with `parse_limit`: each parameter the document describes must
    /// be one the handler reads, with the bounds and default it enforces.
    #[test]
    fn the_documented_query_parameters_are_the_ones_the_handler_parses() {
        let document = serde_json::to_value(crate::openapi::document()).expect("serializes");
        let parameters = document["paths"]["/data"]["get"]["parameters"]
            .as_array()
            .expect("GET /data documents its query parameters");
        assert!(!parameters.is_empty(), "GET /data documents no parameter");
        for parameter in parameters {
            let name = parameter["name"].as_str().expect("a parameter has a name");
            assert_eq!(parameter["in"], "query", "{name}");
            let bound = |key: &str| {
                parameter["schema"][key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}: the document gives no integer {key}"))
            };
            let (minimum, maximum, default) =
                (bound("minimum"), bound("maximum"), bound("default"));
            let parsed = |value: u64| {
                parse_limit(&format!("{name}={value}"))
                    .map(|limit| u64::from(limit.get()))
                    .ok()
            };
            assert_eq!(
                parsed(minimum),
                Some(minimum),
                "{name}={minimum} (documented minimum)"
            );
            assert_eq!(
                parsed(maximum),
                Some(maximum),
                "{name}={maximum} (documented maximum)"
            );
            assert_eq!(
                parsed(minimum - 1),
                None,
                "{name} below the documented minimum"
            );
            assert_eq!(
                parsed(maximum + 1),
                None,
                "{name} above the documented maximum"
            );
            assert_eq!(
                parse_limit("").map(|limit| u64::from(limit.get())).ok(),
                Some(default),
                "{name} absent: the documented default"
            );
        }
    }

    #[test]
    fn the_limit_defaults_and_ignores_other_parameters() {
        assert_eq!(parse_limit("").map(ListLimit::get).ok(), Some(10));
        assert_eq!(parse_limit("x=1&n=3").map(ListLimit::get).ok(), Some(3));
        assert!(parse_limit("n=3&n=3").is_err());
        assert!(parse_limit("n=").is_err());
    }
}
