//! Runs and their tasks on PostgreSQL: recording a run with all its tasks (the queue the hosts
//! share) and its audit records, and reading tasks back as the SQLite store's [`TaskRow`].
//!
//! The `run_started` and `task_created` records carry the same detail as the SQLite store's, so
//! one evidence reader reads both (a test compares them). Leases are not set here: a new task
//! is free for any host to claim.
//!
//! Where the SQLite store relies on `BEGIN IMMEDIATE` to serialise writers, creating and
//! finishing a run take the audit chain's advisory lock first and only then read the database's
//! clock for `started_at` / `finished_at`: no record can be appended between that instant and
//! the run's own records, so the replay's window for the time holds (see `store::replay`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use super::audit::{append, lock_chain};
use super::PgStore;
use crate::store::audit::Entry;
use crate::store::details;
use crate::store::{NewRun, NewTask, StoreError, TaskRow};

/// The columns of a [`TaskRow`], `user` quoted (a reserved word in PostgreSQL).
pub(super) const TASK_COLUMNS: &str = "id, run_id, cluster, zone, \"user\", host, state, not_before, due_by, \
    attempts, job_id, last_ret_code, last_message, started_at, intent_at, submitted_at, next_attempt_at, \
    finished_at, updated_at, adopted_from, unresolved";

impl PgStore {
    /// Record a run, all its tasks and their audit records in one transaction. Returns the run id.
    pub async fn create_run(&self, run: &NewRun, tasks: &[NewTask]) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let run_id = insert_run(&mut tx, run, tasks).await?;
        tx.commit().await?;
        Ok(run_id)
    }

    /// The tasks of a run, in creation order.
    pub async fn tasks(&self, run_id: i64) -> Result<Vec<TaskRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = $1 ORDER BY id"))
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    pub async fn task(&self, task_id: i64) -> Result<Option<TaskRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }
}

impl PgStore {
    /// Close a run: its end time (the database's clock), exit code and summary, audited as
    /// `run_finished`.
    pub async fn finish_run(&self, run_id: i64, exit_code: i64, summary: Value) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        close_run(&mut tx, run_id, exit_code, &summary).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Set a run's end (the database's clock, under the chain's lock), exit code and summary,
/// audited as `run_finished`; the caller commits.
pub(super) async fn close_run(
    tx: &mut PgConnection,
    run_id: i64,
    exit_code: i64,
    summary: &Value,
) -> Result<(), StoreError> {
    let finished_at = lock_chain(&mut *tx).await?;
    let ticket: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE runs SET finished_at = $1, exit_code = $2, summary = $3 WHERE id = $4 RETURNING ticket",
    )
    .bind(finished_at)
    .bind(exit_code)
    .bind(summary.to_string())
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(ticket) = ticket else { return Err(StoreError::NoSuchRun(run_id)) };
    let detail = details::run_finished(exit_code, summary, ticket.as_deref());
    append(&mut *tx, &[Entry::new(Some(run_id), None, "run_finished", &detail)]).await?;
    Ok(())
}

/// Insert a run with its manifests and tasks and their audit records; the caller commits.
pub(super) async fn insert_run(tx: &mut PgConnection, run: &NewRun, tasks: &[NewTask]) -> Result<i64, StoreError> {
    let started_at: DateTime<Utc> = lock_chain(&mut *tx).await?;
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (started_at, ticket, requested_by, reason, due_by, operator, host, endpoint, \
         access_key_id, options, retry_of, simulated) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) RETURNING id",
    )
    .bind(started_at)
    .bind(&run.ticket)
    .bind(&run.requested_by)
    .bind(&run.reason)
    .bind(run.due_by)
    .bind(&run.operator)
    .bind(&run.host)
    .bind(&run.endpoint)
    .bind(&run.access_key_id)
    .bind(run.options.to_string())
    .bind(run.retry_of)
    .bind(run.simulated)
    .fetch_one(&mut *tx)
    .await?;
    let (paths, hashes): (Vec<&str>, Vec<&str>) = run.manifests.iter().map(|(p, h)| (p.as_str(), h.as_str())).unzip();
    sqlx::query(
        "INSERT INTO run_manifests (run_id, ord, path, sha256) \
         SELECT $1, m.ord - 1, m.path, m.sha256 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS m(path, sha256, ord)",
    )
    .bind(run_id)
    .bind(paths)
    .bind(hashes)
    .execute(&mut *tx)
    .await?;

    let started = details::run_started(run, tasks);
    let mut entries = Vec::with_capacity(tasks.len() + 1);
    entries.push(Entry::new(Some(run_id), None, "run_started", &started));

    // Ids are drawn first so that the audit records can name them; they need not be
    // consecutive (other hosts draw too), only unique.
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('tasks', 'id')) FROM generate_series(1, $1)")
            .bind(tasks.len() as i64)
            .fetch_all(&mut *tx)
            .await?;
    let mut cols = TaskColumns::default();
    for (id, t) in ids.iter().zip(tasks) {
        cols.push(*id, t);
        let detail = details::task_created(t, run.ticket.as_deref());
        entries.push(Entry::new(Some(run_id), Some(*id), "task_created", &detail));
    }
    sqlx::query(
        "INSERT INTO tasks (id, run_id, cluster, zone, \"user\", host, state, not_before, due_by, updated_at) \
         SELECT t.id, $1, t.cluster, t.zone, t.u, t.host, t.state, t.not_before, t.due_by, $2 \
         FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::date[], \
         $10::timestamptz[]) AS t(id, cluster, zone, u, host, state, not_before, due_by)",
    )
    .bind(run_id)
    .bind(started_at)
    .bind(cols.id)
    .bind(cols.cluster)
    .bind(cols.zone)
    .bind(cols.user)
    .bind(cols.host)
    .bind(cols.state)
    .bind(cols.not_before)
    .bind(cols.due_by)
    .execute(&mut *tx)
    .await?;
    append(&mut *tx, &entries).await?;
    Ok(run_id)
}

/// New tasks as one array per column.
#[derive(Default)]
struct TaskColumns {
    id: Vec<i64>,
    cluster: Vec<String>,
    zone: Vec<String>,
    user: Vec<String>,
    host: Vec<String>,
    state: Vec<&'static str>,
    not_before: Vec<Option<chrono::NaiveDate>>,
    due_by: Vec<Option<DateTime<Utc>>>,
}

impl TaskColumns {
    fn push(&mut self, id: i64, t: &NewTask) {
        self.id.push(id);
        self.cluster.push(t.cluster.clone());
        self.zone.push(t.zone.clone());
        self.user.push(t.user.clone());
        self.host.push(t.host.clone());
        self.state.push(t.state.as_str());
        self.not_before.push(t.not_before);
        self.due_by.push(t.due_by);
    }
}

/// A task read by a query selecting [`TASK_COLUMNS`].
pub(super) fn task_from_row(row: &PgRow) -> Result<TaskRow, StoreError> {
    crate::store::rows::task_row_from!(row)
}
