//! `GET /data/{id}`: one stored entry, where `POST /data`'s `Location`
//! points. Every waiting read shares one `WHERE id = ANY(…)`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use domain::{DataRecord, Problem};
use sqlx::postgres::PgConnection;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Batched, Receipt};

/// Returns one stored entry: where `POST /data`'s `Location` points.
#[utoipa::path(
    get,
    path = "/data/{id}",
    tag = "data",
    params(("id" = i64, Path, description = "Identifier of a stored entry, from `POST /data`")),
    responses(
        (status = 200, description = "The entry", body = DataRecord),
        (status = 404, description = "No entry has this id (or the id is not an integer)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this client address (on Elastic Beanstalk, from the platform's nginx, per instance: 50 reads a second, bursts of 100, and 32 requests at once); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
        (status = 500, description = "Unexpected server failure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable (type `/problems/database-unavailable`), or the request took longer than the server's limit (`/problems/timed-out`); retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
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
    let record = state.store.batch(EntryById(number)).await?;
    record.map(Json).ok_or_else(missing)
}

/// The entry with this id, if any.
#[derive(Debug)]
pub struct EntryById(pub i64);

impl Batched for EntryById {
    type Reply = Option<DataRecord>;

    const RESEND: bool = true;

    async fn run(
        connection: &mut PgConnection,
        batch: &[EntryById],
        _: &Receipt,
    ) -> Result<Vec<Option<DataRecord>>, sqlx::Error> {
        let mut ids: Vec<i64> = batch.iter().map(|EntryById(id)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = sqlx::query_as!(
            DataRecord,
            "SELECT id, notes, greeting, created_at FROM data WHERE id = ANY($1)",
            &ids[..],
        )
        .fetch_all(connection)
        .await?;
        let by_id: HashMap<i64, DataRecord> = found
            .into_iter()
            .map(|record| (record.id, record))
            .collect();
        Ok(batch
            .iter()
            .map(|EntryById(id)| by_id.get(id).cloned())
            .collect())
    }
}
