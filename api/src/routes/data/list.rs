//! `GET /data?n=&before=`: the newest entries, a page at a time.
//!
//! The first page (no `before`) is what most requests ask for, many at
//! once: every waiting request shares one `SELECT … LIMIT` of the largest
//! `n` among them (plus one, to tell whether older entries exist), each
//! answered with its own prefix of the rows ([`NewestEntries`]). Older pages
//! are an ordinary query on the pool ([`older`]): rarer, each with its own
//! `before`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use domain::{Cursor, DataList, DataRecord, FieldError, ListLimit, Problem};
use sqlx::postgres::PgConnection;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Batched, Receipt, Store, StoreError};

/// Query parameters of `GET /data`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DataQuery {
    /// How many of the most recently stored entries to return.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub n: Option<u32>,
    /// Only entries with an id below this: the `next_before` of the
    /// previous page. Absent, the list starts at the newest entry.
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// The body of `GET /data` ([`DataList`]) over borrowed records.
#[derive(serde::Serialize)]
struct ListBody<'a> {
    items: &'a [DataRecord],
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

impl<'a> ListBody<'a> {
    /// The page `items`; `more` when older entries exist beyond it.
    fn new(items: &'a [DataRecord], more: bool) -> ListBody<'a> {
        let next_before = if more {
            items.last().map(|record| record.id)
        } else {
            None
        };
        ListBody { items, next_before }
    }
}

/// Lists the most recently stored entries, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/data",
    tag = "data",
    params(DataQuery),
    responses(
        (status = 200, description = "The newest entries (below `before`, when given), newest first; `next_before` names the next page when older entries exist", body = DataList),
        (status = 400, description = "`n` is not an integer from 1 to 100, `before` not a positive integer, or either given twice", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this client address (on Elastic Beanstalk, from the platform's nginx, per instance: 50 reads a second, bursts of 100, and 32 requests at once); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
        (status = 500, description = "Unexpected server failure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable (type `/problems/database-unavailable`), or the request took longer than the server's limit (`/problems/timed-out`); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn list_data(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (limit, before) = parse_query(query.as_deref().unwrap_or_default())?;
    let n = limit.get();
    let response = match before {
        None => {
            let listing = state.store.batch(NewestEntries(n)).await?;
            // `DataList` on the wire, serialized from the batch's shared records.
            Json(ListBody::new(listing.records(), listing.more)).into_response()
        }
        Some(before) => {
            let (records, more) = older(&state.store, n, before).await?;
            Json(ListBody::new(&records, more)).into_response()
        }
    };
    Ok(response)
}

/// Reads `n` and `before` from a raw query string, reporting every bad
/// one. Other parameters are ignored, but one given twice is refused
/// rather than guessed at.
fn parse_query(query: &str) -> Result<(ListLimit, Option<Cursor>), ApiError> {
    let refused = |field: &str, message: String| FieldError {
        field: field.to_owned(),
        message,
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
        ApiError::InvalidQuery(vec![refused(
            "n",
            "the query string is not valid URL encoding".to_owned(),
        )])
    })?;
    let mut errors = Vec::new();
    let limit = match single(&pairs, "n") {
        Ok(None) => Some(ListLimit::default()),
        Ok(Some(value)) => ListLimit::parse(value)
            .map_err(|error| errors.push(refused("n", error.to_string())))
            .ok(),
        Err(message) => {
            errors.push(refused("n", message));
            None
        }
    };
    let before = match single(&pairs, "before") {
        Ok(None) => Some(None),
        Ok(Some(value)) => Cursor::parse(value)
            .map(Some)
            .map_err(|error| errors.push(refused("before", error.to_string())))
            .ok(),
        Err(message) => {
            errors.push(refused("before", message));
            None
        }
    };
    match (limit, before) {
        (Some(limit), Some(before)) if errors.is_empty() => Ok((limit, before)),
        _ => Err(ApiError::InvalidQuery(errors)),
    }
}

/// The one value of `name` in `pairs`, if given; given twice is an error.
fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, String> {
    let mut values = pairs
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err("must be given at most once".to_owned());
    }
    Ok(first)
}

/// The `n` newest entries, newest first.
#[derive(Debug)]
pub struct NewestEntries(pub u32);

/// The newest entries one request asked for: a prefix of what its batch's
/// statement read, shared with its batch-mates rather than copied.
#[derive(Debug, Clone)]
pub struct Listing {
    records: Arc<[DataRecord]>,
    shown: usize,
    /// Whether older entries exist beyond the shown ones.
    more: bool,
}

impl Listing {
    /// The entries, newest first.
    pub fn records(&self) -> &[DataRecord] {
        &self.records[..self.shown]
    }

    /// Whether older entries exist beyond [`Listing::records`].
    pub fn more(&self) -> bool {
        self.more
    }
}

impl Batched for NewestEntries {
    type Reply = Listing;

    const RESEND: bool = true;

    async fn run(
        connection: &mut PgConnection,
        batch: &[NewestEntries],
        _: &Receipt,
    ) -> Result<Vec<Listing>, sqlx::Error> {
        let largest = batch.iter().map(|NewestEntries(n)| *n).max().unwrap_or(1);
        // One more than asked for: its presence says older entries exist.
        let records: Arc<[DataRecord]> = sqlx::query_as!(
            DataRecord,
            "SELECT id, notes, greeting, created_at FROM data ORDER BY id DESC LIMIT $1",
            i64::from(largest) + 1,
        )
        .fetch_all(connection)
        .await?
        .into();
        Ok(batch
            .iter()
            .map(|NewestEntries(n)| {
                let n = *n as usize;
                Listing {
                    shown: n.min(records.len()),
                    more: records.len() > n,
                    records: Arc::clone(&records),
                }
            })
            .collect())
    }
}

/// The `n` newest entries with an id below `before`, newest first, and
/// whether older ones exist beyond them.
pub async fn older(
    store: &Store,
    n: u32,
    before: Cursor,
) -> Result<(Vec<DataRecord>, bool), StoreError> {
    let before = before.get();
    let mut records = store
        .run(move |connection| {
            Box::pin(async move {
                sqlx::query_as!(
                    DataRecord,
                    "SELECT id, notes, greeting, created_at FROM data WHERE id < $1 \
                     ORDER BY id DESC LIMIT $2",
                    before,
                    i64::from(n) + 1,
                )
                .fetch_all(connection)
                .await
            })
        })
        .await?;
    let more = records.len() > n as usize;
    records.truncate(n as usize);
    Ok((records, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value `parse_query` read for parameter `name` from `query`.
    fn parsed(query: &str, name: &str) -> Result<Option<u64>, ()> {
        let (limit, before) = parse_query(query).map_err(|_| ())?;
        Ok(match name {
            "n" => Some(u64::from(limit.get())),
            "before" => before.map(|cursor| u64::try_from(cursor.get()).expect("positive")),
            other => panic!("the handler reads no parameter {other}"),
        })
    }

    /// The document is written from `DataQuery`, the handler reads the raw
    /// query with `parse_query`: each parameter the document describes must
    /// be one the handler reads, with the bounds and default it enforces.
    #[test]
    fn the_documented_query_parameters_are_the_ones_the_handler_parses() {
        let document = serde_json::to_value(crate::openapi::document()).expect("serializes");
        let parameters = document["paths"]["/data"]["get"]["parameters"]
            .as_array()
            .expect("GET /data documents its query parameters");
        let names: Vec<&str> = parameters
            .iter()
            .map(|parameter| parameter["name"].as_str().expect("a parameter has a name"))
            .collect();
        assert_eq!(names, ["n", "before"]);
        for parameter in parameters {
            let name = parameter["name"].as_str().expect("a parameter has a name");
            assert_eq!(parameter["in"], "query", "{name}");
            let schema = &parameter["schema"];
            let minimum = schema["minimum"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: the document gives no minimum"));
            let at = |value: u64| parsed(&format!("{name}={value}"), name);
            assert_eq!(
                at(minimum),
                Ok(Some(minimum)),
                "{name}={minimum} (documented minimum)"
            );
            assert_eq!(
                at(minimum - 1),
                Err(()),
                "{name} below the documented minimum"
            );
            if let Some(maximum) = schema["maximum"].as_u64() {
                assert_eq!(
                    at(maximum),
                    Ok(Some(maximum)),
                    "{name}={maximum} (documented maximum)"
                );
                assert_eq!(
                    at(maximum + 1),
                    Err(()),
                    "{name} above the documented maximum"
                );
            }
            let absent = parsed("", name).expect("no parameter is required");
            assert_eq!(
                absent,
                schema["default"].as_u64(),
                "{name} absent: the documented default, or none"
            );
        }
    }

    #[test]
    fn the_limit_defaults_and_ignores_other_parameters() {
        let limit = |query: &str| parse_query(query).map(|(limit, _)| limit.get()).ok();
        assert_eq!(limit(""), Some(10));
        assert_eq!(limit("x=1&n=3"), Some(3));
        assert_eq!(limit("n=3&n=3"), None);
        assert_eq!(limit("n="), None);
    }

    #[test]
    fn every_bad_parameter_is_reported_by_name() {
        let Err(ApiError::InvalidQuery(errors)) = parse_query("n=0&before=x&before=2") else {
            panic!("refused");
        };
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["n", "before"]);
        assert_eq!(errors[1].message, "must be given at most once");
    }
}
