//! `POST /data`: store an entry. The body is checked here, then the entry
//! joins every other waiting one in one multi-row insert.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{DataRecord, FieldError, NewData, NewDataRequest, Problem, TextError};
use serde_json::{Map, Value};
use sqlx::postgres::PgConnection;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Batched, Receipt, Recovered};

/// Largest accepted `POST /data` body, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

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
        (status = 429, description = "Too many requests from this client address (on Elastic Beanstalk, from the platform's nginx, per instance: 10 writes a second, bursts of 20, and 32 requests at once); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
        (status = 500, description = "Unexpected server failure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_data(
    State(state): State<AppState>,
    EntryBody(entry): EntryBody,
) -> Result<Response, ApiError> {
    let record = state.store.batch(InsertEntry(entry)).await?;
    let location = HeaderValue::from_str(&format!("/data/{}", record.id))
        .expect("a path made of digits is a valid header value");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

/// One entry to store. A batch is one multi-row `INSERT … SELECT … FROM
/// UNNEST`: each request gets exactly its own row, and ids follow the
/// order the requests arrived in. It records a receipt with its rows, so a
/// batch whose connection the server closed is answered from what it
/// stored, or sent again when it stored nothing.
#[derive(Debug)]
pub struct InsertEntry(pub NewData);

impl Batched for InsertEntry {
    type Reply = DataRecord;

    /// Never sent again unasked: only when its receipt says it did not
    /// commit.
    const RESEND: bool = false;

    async fn run(
        connection: &mut PgConnection,
        batch: &[InsertEntry],
        receipt: &Receipt,
    ) -> Result<Vec<DataRecord>, sqlx::Error> {
        let (notes, greetings): (Vec<&str>, Vec<&str>) = batch
            .iter()
            .map(|InsertEntry(entry)| (entry.notes(), entry.greeting()))
            .unzip();
        let records = sqlx::query_as!(
            DataRecord,
            r#"WITH inserted AS (
                 INSERT INTO data (notes, greeting)
                 SELECT entry.notes, entry.greeting
                 FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS entry(notes, greeting, position)
                 ORDER BY entry.position
                 RETURNING id, notes, greeting, created_at
               ), receipt AS (
                 INSERT INTO store_receipts (token, ids)
                 SELECT $3::text::uuid, array_agg(id) FROM inserted
               )
               SELECT id AS "id!", notes AS "notes!", greeting AS "greeting!",
                      created_at AS "created_at!"
               FROM inserted"#,
            &notes[..] as &[&str],
            &greetings[..] as &[&str],
            receipt.token(),
        )
        .fetch_all(connection)
        .await?;
        in_arrival_order(batch, records)
    }

    async fn recover(
        connection: &mut PgConnection,
        batch: &[InsertEntry],
        receipt: &Receipt,
    ) -> Result<Recovered<DataRecord>, sqlx::Error> {
        let ids: Option<Vec<i64>> = sqlx::query_scalar!(
            "SELECT ids FROM store_receipts WHERE token = $1::text::uuid",
            receipt.token(),
        )
        .fetch_optional(&mut *connection)
        .await?;
        let Some(ids) = ids else {
            return Ok(Recovered::NotCommitted);
        };
        let records = sqlx::query_as!(
            DataRecord,
            "SELECT id, notes, greeting, created_at FROM data WHERE id = ANY($1)",
            &ids[..],
        )
        .fetch_all(connection)
        .await?;
        in_arrival_order(batch, records).map(Recovered::Committed)
    }
}

/// `records`, stored for `batch`, put in the batch's order: identity values
/// are drawn in the order rows are inserted, which `ORDER BY position`
/// fixes, so sorted by id they line up with the requests. Checked, entry
/// by entry.
fn in_arrival_order(
    batch: &[InsertEntry],
    mut records: Vec<DataRecord>,
) -> Result<Vec<DataRecord>, sqlx::Error> {
    records.sort_unstable_by_key(|record| record.id);
    let lined_up = records.len() == batch.len()
        && records
            .iter()
            .zip(batch)
            .all(|(record, InsertEntry(entry))| {
                record.notes == entry.notes() && record.greeting == entry.greeting()
            });
    if !lined_up {
        return Err(sqlx::Error::Protocol(
            "the inserted rows did not come back in the order they were sent".to_owned(),
        ));
    }
    Ok(records)
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
}
