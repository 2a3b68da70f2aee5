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
use crate::idempotency::{IDEMPOTENT_REPLAYED, IdempotencyKey, KeyHeader};
use crate::state::AppState;
use crate::store::{Batched, Receipt, Recovered};

/// Largest accepted `POST /data` body, in bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Stores an entry.
///
/// Send an `Idempotency-Key` (a fresh UUID for each new entry) to make the
/// request safe to send again: when the answer is lost, a 503 says the
/// outcome is unknown, or the request timed out, send it again with the
/// same key and body; the entry is stored once, and the repeat answers what
/// the first one stored, with `Idempotent-Replayed: true`.
///
/// The `Idempotency-Key` header: a key the client makes up for this entry
/// (a UUID v4), 16 to 255 printable ASCII characters, not starting or
/// ending with a space, bare or as a quoted Structured Field string; kept
/// at least 24 hours.
// Described here, not declared as a parameter: declared, schemathesis sends
// one key with other bodies and counts the draft's 422 as a wrong refusal
// of valid data.
#[utoipa::path(
    post,
    path = "/data",
    tag = "data",
    request_body(content = NewDataRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored; `Location` names the new entry. A repeat of an `Idempotency-Key` gets the same answer with `Idempotent-Replayed: true`", body = DataRecord,
            headers(
                ("Location" = String, description = "Path of the stored entry"),
                ("Idempotent-Replayed" = Option<String>, description = "`true` when this answers an earlier request with the same `Idempotency-Key`; absent otherwise"),
            )),
        (status = 400, description = "The body is not a JSON object or not valid UTF-8, or the `Idempotency-Key` is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this `Idempotency-Key` is still being served; send it again after `Retry-After` seconds (type `/problems/idempotency-key-in-use`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
        (status = 413, description = "The body is larger than 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Fields missing, unknown or breaking the rules, `errors` listing each (type `/problems/invalid-fields`); or the `Idempotency-Key` was first sent with a different entry (type `/problems/idempotency-key-reused`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this client address (on Elastic Beanstalk, from the platform's nginx, per instance: 10 writes a second, bursts of 20, and 32 requests at once); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
        (status = 500, description = "Unexpected server failure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not stored, retry after `Retry-After` seconds: the database is unavailable (type `/problems/database-unavailable`). Or the outcome is unknown: the connection was lost after the write was sent (`/problems/write-outcome-unknown`) or the request took longer than the server's limit (`/problems/timed-out`); send it again with the same `Idempotency-Key` to store it exactly once", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn create_data(
    State(state): State<AppState>,
    KeyHeader(key): KeyHeader,
    EntryBody(entry): EntryBody,
) -> Result<Response, ApiError> {
    let _claim = match key {
        Some(key) => Some(
            state
                .keys_in_flight
                .claim(key)
                .ok_or(ApiError::IdempotencyKeyInUse)?,
        ),
        None => None,
    };
    let (record, replayed) = match state.store.batch(InsertEntry { entry, key }).await? {
        Inserted::Stored(record) => (record, false),
        Inserted::Replayed(record) => (record, true),
        Inserted::KeyReused => return Err(ApiError::IdempotencyKeyReused),
    };
    let location = HeaderValue::from_str(&format!("/data/{}", record.id))
        .expect("a path made of digits is a valid header value");
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// One entry to store, with the client's `Idempotency-Key` when it sent
/// one. A batch is one statement: a multi-row `INSERT … SELECT … FROM
/// UNNEST` of the entries whose key it has not seen, ids in the order the
/// requests arrived, each key recorded with its entry; the entries whose
/// key it has seen are read back instead. It records a receipt with its
/// rows, so a batch whose connection the server closed is answered from
/// what it stored, or sent again when it stored nothing.
#[derive(Debug)]
pub struct InsertEntry {
    /// The entry.
    pub entry: NewData,
    /// Its `Idempotency-Key`.
    pub key: Option<IdempotencyKey>,
}

impl InsertEntry {
    /// An entry sent without a key.
    pub fn new(entry: NewData) -> InsertEntry {
        InsertEntry { entry, key: None }
    }
}

/// What became of one [`InsertEntry`].
#[derive(Debug)]
pub enum Inserted {
    /// Stored now.
    Stored(DataRecord),
    /// Its key was seen with the same entry: what that request stored.
    Replayed(DataRecord),
    /// Its key was seen with a different entry: nothing stored.
    KeyReused,
}

impl Inserted {
    /// The entry stored for this request, now or by an earlier request
    /// with its key.
    ///
    /// # Panics
    /// When its key was reused: a test helper.
    pub fn into_record(self) -> DataRecord {
        match self {
            Inserted::Stored(record) | Inserted::Replayed(record) => record,
            Inserted::KeyReused => panic!("the key was first used with another entry"),
        }
    }
}

/// A row of the insert's answer: a new entry (no key), or the entry an
/// earlier request with `key` stored.
#[derive(Debug)]
struct Row {
    key: Option<Vec<u8>>,
    id: i64,
    notes: String,
    greeting: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// The unique index a concurrent first use of a key fails on.
const KEYS_PRIMARY_KEY: &str = "idempotency_keys_pkey";

impl Batched for InsertEntry {
    type Reply = Inserted;

    /// Never sent again unasked: only when its receipt says it did not
    /// commit.
    const RESEND: bool = false;

    async fn run(
        connection: &mut PgConnection,
        batch: &[InsertEntry],
        receipt: &Receipt,
    ) -> Result<Vec<Inserted>, sqlx::Error> {
        let notes: Vec<&str> = batch.iter().map(|item| item.entry.notes()).collect();
        let greetings: Vec<&str> = batch.iter().map(|item| item.entry.greeting()).collect();
        let keys: Vec<Option<&[u8]>> = batch
            .iter()
            .map(|item| item.key.as_ref().map(IdempotencyKey::digest))
            .collect();
        if keys.iter().all(Option::is_none) {
            return replies(
                batch,
                insert_unkeyed(connection, &notes, &greetings, receipt).await?,
            );
        }
        // A key another instance stored while this statement ran fails it
        // on the key's index, having stored nothing: sent once more, it
        // finds the key and answers with that request's entry.
        let mut attempts = 0;
        let rows = loop {
            attempts += 1;
            let rows = sqlx::query_as!(
                Row,
                r#"WITH entry AS (
                     SELECT * FROM UNNEST($1::text[], $2::text[], $4::bytea[])
                       WITH ORDINALITY AS entry(notes, greeting, key, position)
                   ), earlier AS (
                     SELECT idempotency_keys.key, data.id, data.notes, data.greeting, data.created_at
                     FROM idempotency_keys JOIN data ON data.id = idempotency_keys.data_id
                     WHERE idempotency_keys.key IN (SELECT entry.key FROM entry)
                   ), fresh AS (
                     SELECT entry.*, row_number() OVER (ORDER BY entry.position) AS rank
                     FROM entry
                     WHERE entry.key IS NULL OR entry.key NOT IN (SELECT earlier.key FROM earlier)
                   ), inserted AS (
                     INSERT INTO data (notes, greeting)
                     SELECT fresh.notes, fresh.greeting FROM fresh ORDER BY fresh.position
                     RETURNING id, notes, greeting, created_at
                   ), keyed AS (
                     INSERT INTO idempotency_keys (key, data_id)
                     SELECT fresh.key, numbered.id
                     FROM fresh JOIN (
                       SELECT inserted.id, row_number() OVER (ORDER BY inserted.id) AS rank
                       FROM inserted
                     ) AS numbered USING (rank)
                     WHERE fresh.key IS NOT NULL
                   ), receipt AS (
                     INSERT INTO store_receipts (token, ids)
                     SELECT $3::text::uuid, COALESCE(array_agg(id), '{}') FROM inserted
                   )
                   SELECT NULL::bytea AS key, id AS "id!", notes AS "notes!",
                          greeting AS "greeting!", created_at AS "created_at!"
                   FROM inserted
                   UNION ALL
                   SELECT key, id, notes, greeting, created_at FROM earlier"#,
                &notes[..] as &[&str],
                &greetings[..] as &[&str],
                receipt.token(),
                &keys[..] as &[Option<&[u8]>],
            )
            .fetch_all(&mut *connection)
            .await;
            match rows {
                Err(sqlx::Error::Database(error))
                    if attempts == 1 && error.constraint() == Some(KEYS_PRIMARY_KEY) => {}
                rows => break rows?,
            }
        };
        replies(batch, rows)
    }

    async fn recover(
        connection: &mut PgConnection,
        batch: &[InsertEntry],
        receipt: &Receipt,
    ) -> Result<Recovered<Inserted>, sqlx::Error> {
        let ids: Option<Vec<i64>> = sqlx::query_scalar!(
            "SELECT ids FROM store_receipts WHERE token = $1::text::uuid",
            receipt.token(),
        )
        .fetch_optional(&mut *connection)
        .await?;
        let Some(ids) = ids else {
            return Ok(Recovered::NotCommitted);
        };
        let keys: Vec<&[u8]> = batch
            .iter()
            .filter_map(|item| item.key.as_ref().map(IdempotencyKey::digest))
            .collect();
        let rows = sqlx::query_as!(
            Row,
            r#"SELECT NULL::bytea AS key, id AS "id!", notes AS "notes!",
                      greeting AS "greeting!", created_at AS "created_at!"
               FROM data WHERE id = ANY($1)
               UNION ALL
               SELECT idempotency_keys.key, data.id, data.notes, data.greeting, data.created_at
               FROM idempotency_keys JOIN data ON data.id = idempotency_keys.data_id
               WHERE idempotency_keys.key = ANY($2) AND NOT idempotency_keys.data_id = ANY($1)"#,
            &ids[..],
            &keys[..] as &[&[u8]],
        )
        .fetch_all(connection)
        .await?;
        replies(batch, rows).map(Recovered::Committed)
    }
}

/// The insert of a batch in which no request sent a key: the entries and
/// the receipt, without the keys' lookups (measured: the keyed statement
/// costs writes about a seventh of their rate on the 2-core bench).
async fn insert_unkeyed(
    connection: &mut PgConnection,
    notes: &[&str],
    greetings: &[&str],
    receipt: &Receipt,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as!(
        Row,
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
           SELECT NULL::bytea AS key, id AS "id!", notes AS "notes!",
                  greeting AS "greeting!", created_at AS "created_at!"
           FROM inserted"#,
        notes as &[&str],
        greetings as &[&str],
        receipt.token(),
    )
    .fetch_all(connection)
    .await
}

/// Each request's reply from the rows a batch returned: a request whose
/// key came back gets that entry (or is told its key was reused); the
/// others get the new rows in order. Identity values are drawn in the
/// order rows are inserted, which `ORDER BY position` fixes, so sorted by
/// id the new rows line up with the requests. Checked, entry by entry.
fn replies(batch: &[InsertEntry], rows: Vec<Row>) -> Result<Vec<Inserted>, sqlx::Error> {
    let mut earlier = std::collections::HashMap::new();
    let mut fresh = Vec::with_capacity(rows.len());
    for row in rows {
        let record = DataRecord {
            id: row.id,
            notes: row.notes,
            greeting: row.greeting,
            created_at: row.created_at,
        };
        match row.key {
            Some(key) => {
                earlier.insert(key, record);
            }
            None => fresh.push(record),
        }
    }
    fresh.sort_unstable_by_key(|record| record.id);
    let mut fresh = fresh.into_iter();
    let same = |record: &DataRecord, entry: &NewData| {
        record.notes == entry.notes() && record.greeting == entry.greeting()
    };
    let mut replies = Vec::with_capacity(batch.len());
    for item in batch {
        let seen = item.key.as_ref().and_then(|key| earlier.get(key.digest()));
        let reply = match seen {
            Some(record) if same(record, &item.entry) => Inserted::Replayed(record.clone()),
            Some(_) => Inserted::KeyReused,
            None => match fresh.next() {
                Some(record) if same(&record, &item.entry) => Inserted::Stored(record),
                _ => return Err(out_of_order()),
            },
        };
        replies.push(reply);
    }
    if fresh.next().is_some() {
        return Err(out_of_order());
    }
    Ok(replies)
}

fn out_of_order() -> sqlx::Error {
    sqlx::Error::Protocol(
        "the inserted rows did not come back in the order they were sent".to_owned(),
    )
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
