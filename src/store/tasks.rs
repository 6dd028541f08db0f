//! Tasks and API calls: reading tasks, guarded state transitions (each with its audit record
//! in the same transaction), and the record of every API call.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::audit::{self, Entry, Tickets};
use super::details;
use super::{ts, ApiCallRow, Attempts, Store, StoreError, TaskRow, TaskState};
use crate::runner::state::{self, Event, Transition};

/// Transitions per UPDATE (23 parameters each, far below SQLite's 32766).
const TRANSITION_CHUNK: usize = 500;

pub(crate) const TASK_COLUMNS: &str = "id, run_id, cluster, zone, user, host, state, not_before, due_by, attempts, \
    job_id, last_ret_code, last_message, started_at, intent_at, submitted_at, next_attempt_at, finished_at, updated_at, adopted_from, unresolved";

impl Store {
    /// The tasks of a run, in creation order.
    pub async fn tasks(&self, run_id: i64) -> Result<Vec<TaskRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ? ORDER BY id"))
            .bind(run_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    pub async fn task(&self, task_id: i64) -> Result<Option<TaskRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
            .bind(task_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Apply `event` to a task, guarded by the table: the task moves, `change` is applied and a
    /// `task_state` audit record is appended in the same transaction, if and only if its state
    /// is one the event may leave. `None`, with nothing written, otherwise (or when the task does
    /// not exist).
    pub async fn step(
        &self,
        task_id: i64,
        event: Event,
        change: &super::TaskChange,
        detail: Value,
    ) -> Result<Option<TaskRow>, StoreError> {
        let t = state::from_any(task_id, event, change.clone(), detail);
        Ok(self.steps(std::slice::from_ref(&t)).await?.pop().flatten())
    }

    /// Several guarded steps (each built by the state table) in one transaction, applied in
    /// order; one result per step (`None` where the guard did not match). A later step of the
    /// same task sees the earlier one.
    pub async fn steps(&self, transitions: &[Transition]) -> Result<Vec<Option<TaskRow>>, StoreError> {
        let mut tx = self.write().await?;
        let results = apply_transitions(&mut tx, transitions).await?;
        tx.commit().await?;
        Ok(results)
    }

    /// Record one API call (parameters without the signature).
    pub async fn record_call(&self, run_id: i64, task_id: Option<i64>, call: &ApiCallRow) -> Result<(), StoreError> {
        self.record_calls(&[(run_id, task_id, call.clone())]).await
    }

    /// Record several API calls in one transaction, each with its `api_call` audit record (every
    /// column of the row, so the chain proves what a report shows about the call).
    pub async fn record_calls(&self, calls: &[(i64, Option<i64>, ApiCallRow)]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let mut entries = Vec::with_capacity(calls.len());
        let mut tickets = Tickets::default();
        for (run_id, task_id, c) in calls {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO api_calls (run_id, task_id, action, params, http_status, ret_code, message, job_id, \
                 started_at, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(&c.action)
            .bind(&c.params_json)
            .bind(c.http_status)
            .bind(c.ret_code)
            .bind(&c.message)
            .bind(&c.job_id)
            .bind(ts(c.started_at))
            .bind(c.latency_ms)
            .fetch_one(&mut *tx)
            .await?;
            let ticket = tickets.of(&mut tx, *run_id).await?;
            entries.push(Entry::new(Some(*run_id), *task_id, "api_call", &details::api_call(id, c, ticket.as_deref())));
        }
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The API calls recorded for a run, oldest first.
    pub async fn calls(&self, run_id: i64) -> Result<Vec<(Option<i64>, ApiCallRow)>, StoreError> {
        let rows = sqlx::query(
            "SELECT task_id, action, params, http_status, ret_code, message, job_id, started_at, latency_ms \
             FROM api_calls WHERE run_id = ? ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("task_id")?, ApiCallRow::from_row(r)?))).collect()
    }
}

/// Apply guarded transitions inside the caller's write transaction, with their audit records;
/// one result per transition (`None` where the guard did not match). The caller commits.
pub(crate) async fn apply_transitions(
    tx: &mut SqliteConnection,
    transitions: &[Transition],
) -> Result<Vec<Option<TaskRow>>, StoreError> {
    let mut results = Vec::with_capacity(transitions.len());
    let mut entries = Vec::with_capacity(transitions.len());
    let mut tickets = Tickets::default();
    let now = ts(Utc::now());
    let mut start = 0;
    while start < transitions.len() {
        // A segment names each task at most once, so one UPDATE can apply it.
        let mut seen = HashSet::new();
        let mut end = start;
        while end < transitions.len() && end - start < TRANSITION_CHUNK && seen.insert(transitions[end].task_id()) {
            end += 1;
        }
        let segment = &transitions[start..end];
        let mut updated = update_segment(tx, segment, &now).await?;
        for t in segment {
            let Some((row, from)) = updated.remove(&t.task_id()) else {
                results.push(None);
                continue;
            };
            let ticket = tickets.of(tx, row.run_id).await?;
            entries.push(details::task_state(t.change(), t.detail(), &row, from, None, ticket.as_deref()));
            results.push(Some(row));
        }
        start = end;
    }
    if !entries.is_empty() {
        audit::append(tx, &entries).await?;
    }
    Ok(results)
}

impl ApiCallRow {
    /// An `api_calls` row read by any query selecting its columns under their own names.
    pub(super) fn from_row(r: &SqliteRow) -> Result<ApiCallRow, StoreError> {
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
}

/// Apply transitions of distinct tasks with one `UPDATE … FROM v`, where `v` is a named table
/// of values: each row carries its task id, its guard (the states the task must be in, as a
/// JSON array), the new state and the change. Returns, per task updated, the new row and the
/// state it left (from `prev_state`, which the UPDATE sets to the old `state`). Tasks whose
/// state is not in their guard are left alone and absent.
async fn update_segment(
    conn: &mut SqliteConnection,
    segment: &[Transition],
    now: &str,
) -> Result<HashMap<i64, (TaskRow, TaskState)>, StoreError> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "WITH v(task_id, guard, to_state, attempts_mode, attempts_value, job_id_set, job_id, \
         ret_code_set, ret_code, message_set, message, intent_set, intent_at, submitted_set, submitted_at, \
         next_set, next_attempt_at, finished_set, finished_at, adopted_set, adopted_from, \
         unresolved_set, unresolved) AS (",
    );
    q.push_values(segment, |mut row, t| {
        let c = t.change();
        let guard = Value::from(t.from().iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string();
        // 0: leave `attempts` alone; 1: add one; 2: set it to `attempts_value`.
        let (attempts_mode, attempts_value) = match c.attempts {
            None => (0, None),
            Some(Attempts::Increment) => (1, None),
            Some(Attempts::Set(n)) => (2, Some(n)),
        };
        let time = |v: &Option<Option<DateTime<Utc>>>| (v.is_some(), v.flatten().map(ts));
        let (intent_set, intent) = time(&c.intent_at);
        let (submitted_set, submitted) = time(&c.submitted_at);
        let (next_set, next) = time(&c.next_attempt_at);
        let (finished_set, finished) = time(&c.finished_at);
        row.push_bind(t.task_id())
            .push_bind(guard)
            .push_bind(t.to().as_str())
            .push_bind(attempts_mode)
            .push_bind(attempts_value)
            .push_bind(c.job_id.is_some())
            .push_bind(c.job_id.clone().flatten())
            .push_bind(c.last_ret_code.is_some())
            .push_bind(c.last_ret_code.flatten())
            .push_bind(c.last_message.is_some())
            .push_bind(c.last_message.clone().flatten())
            .push_bind(intent_set)
            .push_bind(intent)
            .push_bind(submitted_set)
            .push_bind(submitted)
            .push_bind(next_set)
            .push_bind(next)
            .push_bind(finished_set)
            .push_bind(finished)
            .push_bind(c.adopted_from.is_some())
            .push_bind(c.adopted_from.flatten())
            .push_bind(c.unresolved.is_some())
            .push_bind(c.unresolved.clone().flatten());
    });
    q.push(
        ") UPDATE tasks SET prev_state = tasks.state, state = v.to_state, \
         attempts = CASE v.attempts_mode WHEN 1 THEN tasks.attempts + 1 WHEN 2 THEN v.attempts_value ELSE tasks.attempts END, \
         job_id = CASE WHEN v.job_id_set THEN v.job_id ELSE tasks.job_id END, \
         last_ret_code = CASE WHEN v.ret_code_set THEN v.ret_code ELSE tasks.last_ret_code END, \
         last_message = CASE WHEN v.message_set THEN v.message ELSE tasks.last_message END, \
         intent_at = CASE WHEN v.intent_set THEN v.intent_at ELSE tasks.intent_at END, \
         started_at = CASE WHEN v.intent_set THEN COALESCE(tasks.started_at, v.intent_at) ELSE tasks.started_at END, \
         submitted_at = CASE WHEN v.submitted_set THEN v.submitted_at ELSE tasks.submitted_at END, \
         next_attempt_at = CASE WHEN v.next_set THEN v.next_attempt_at ELSE tasks.next_attempt_at END, \
         finished_at = CASE WHEN v.finished_set THEN v.finished_at ELSE tasks.finished_at END, \
         adopted_from = CASE WHEN v.adopted_set THEN v.adopted_from ELSE tasks.adopted_from END, \
         unresolved = CASE WHEN v.unresolved_set THEN v.unresolved ELSE tasks.unresolved END, \
         updated_at = ",
    );
    q.push_bind(now.to_owned());
    q.push(format!(
        " FROM v WHERE tasks.id = v.task_id AND tasks.state IN (SELECT value FROM json_each(v.guard)) \
         RETURNING {TASK_COLUMNS}, prev_state"
    ));
    let rows = q.build().fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            let prev_state: String = row.try_get("prev_state")?;
            let from: TaskState = prev_state.parse().map_err(StoreError::Corrupt)?;
            let row = task_from_row(row)?;
            Ok((row.id, (row, from)))
        })
        .collect()
}

pub(crate) fn task_from_row(row: &SqliteRow) -> Result<TaskRow, StoreError> {
    super::rows::task_row_from!(row)
}
