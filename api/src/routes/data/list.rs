//! `GET /data?n=`: the newest entries. Every waiting request shares one
//! `SELECT … LIMIT` of the largest `n` among them, each answered with its
//! own prefix of the rows.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use domain::{DataList, DataRecord, FieldError, ListLimit, Problem};
use sqlx::postgres::PgConnection;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Batched;

/// Query parameters of `GET /data`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DataQuery {
    /// How many of the most recently stored entries to return.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub n: Option<u32>,
}

/// The body of `GET /data` ([`DataList`]) over borrowed records.
#[derive(serde::Serialize)]
struct ListBody<'a> {
    items: &'a [DataRecord],
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
    let listing = state.store.batch(NewestEntries(limit.get())).await?;
    // `DataList` on the wire, serialized from the batch's shared records.
    Ok(Json(ListBody {
        items: listing.records(),
    })
    .into_response())
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

/// The `n` newest entries, newest first.
#[derive(Debug)]
pub struct NewestEntries(pub u32);

/// The newest entries one request asked for: a prefix of what its batch's
/// statement read, shared with its batch-mates rather than copied.
#[derive(Debug, Clone)]
pub struct Listing {
    records: Arc<[DataRecord]>,
    shown: usize,
}

impl Listing {
    /// The entries, newest first.
    pub fn records(&self) -> &[DataRecord] {
        &self.records[..self.shown]
    }
}

impl Batched for NewestEntries {
    type Reply = Listing;

    const RESEND: bool = true;

    async fn run(
        connection: &mut PgConnection,
        batch: &[NewestEntries],
    ) -> Result<Vec<Listing>, sqlx::Error> {
        let largest = batch.iter().map(|NewestEntries(n)| *n).max().unwrap_or(1);
        let records: Arc<[DataRecord]> = sqlx::query_as!(
            DataRecord,
            "SELECT id, notes, greeting, created_at FROM data ORDER BY id DESC LIMIT $1",
            i64::from(largest),
        )
        .fetch_all(connection)
        .await?
        .into();
        Ok(batch
            .iter()
            .map(|NewestEntries(n)| Listing {
                shown: (*n as usize).min(records.len()),
                records: Arc::clone(&records),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
