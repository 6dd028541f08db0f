//! The record of every API call on PostgreSQL: calls written with their `api_call` audit
//! records (the detail built by `store::details`, as the SQLite store's), and read back per run.
//! Parameters arrive without the signature; this module must never be given a secret.
//!
//! A call's row takes no lock another writer waits for; the audit append serialises the records
//! across hosts (the chain's advisory lock), which is all the SQLite store's `BEGIN IMMEDIATE`
//! gives these writes.

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::audit::{append, Tickets};
use super::PgStore;
use crate::store::audit::Entry;
use crate::store::details;
use crate::store::{ApiCallRow, StoreError};

impl PgStore {
    /// Record one API call (parameters without the signature).
    pub async fn record_call(&self, run_id: i64, task_id: Option<i64>, call: &ApiCallRow) -> Result<(), StoreError> {
        self.record_calls(&[(run_id, task_id, call.clone())]).await
    }

    /// Record several API calls in one transaction, each with its `api_call` audit record.
    pub async fn record_calls(&self, calls: &[(i64, Option<i64>, ApiCallRow)]) -> Result<(), StoreError> {
        if calls.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        let mut entries = Vec::with_capacity(calls.len());
        let mut tickets = Tickets::default();
        for (run_id, task_id, c) in calls {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO api_calls (run_id, task_id, action, params, http_status, ret_code, message, job_id, \
                 started_at, latency_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING id",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(&c.action)
            .bind(&c.params_json)
            .bind(c.http_status)
            .bind(c.ret_code)
            .bind(&c.message)
            .bind(&c.job_id)
            .bind(c.started_at)
            .bind(c.latency_ms)
            .fetch_one(&mut *tx)
            .await?;
            let ticket = tickets.of(&mut tx, *run_id).await?;
            entries.push(Entry::new(Some(*run_id), *task_id, "api_call", &details::api_call(id, c, ticket.as_deref())));
        }
        append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The API calls recorded for a run, oldest first.
    pub async fn calls(&self, run_id: i64) -> Result<Vec<(Option<i64>, ApiCallRow)>, StoreError> {
        let rows = sqlx::query(
            "SELECT task_id, action, params, http_status, ret_code, message, job_id, started_at, latency_ms \
             FROM api_calls WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("task_id")?, call_from_row(r)?))).collect()
    }
}

/// An `api_calls` row read by any query selecting its columns under their own names.
pub(super) fn call_from_row(r: &PgRow) -> Result<ApiCallRow, StoreError> {
    Ok(ApiCallRow {
        action: r.try_get("action")?,
        params_json: r.try_get("params")?,
        http_status: r.try_get("http_status")?,
        ret_code: r.try_get("ret_code")?,
        message: r.try_get("message")?,
        job_id: r.try_get("job_id")?,
        started_at: r.try_get("started_at")?,
        latency_ms: r.try_get("latency_ms")?,
    })
}
