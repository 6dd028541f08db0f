//! Tasks and API calls: reading tasks, guarded state transitions (each with its audit record
//! in the same transaction), and the record of every API call.

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use serde_json::{json, Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::audit::{self, with_ticket, Entry};
use super::runs::run_ticket;
use super::{opt_ts, ts, ApiCallRow, Attempts, Store, StoreError, TaskRow, TaskState, Transition};

pub(crate) const TASK_COLUMNS: &str = "id, run_id, cluster, zone, user, host, state, not_before, due_by, attempts, \
    job_id, last_ret_code, last_message, started_at, intent_at, submitted_at, next_attempt_at, finished_at, updated_at";

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

    /// Move a task to `to` if, and only if, it is in one of `from`; apply `change` and append a
    /// `task_state` audit record in the same transaction. `None`, with nothing written, when the
    /// task is in another state (or does not exist).
    pub async fn transition(
        &self,
        task_id: i64,
        from: &[TaskState],
        to: TaskState,
        change: &super::TaskChange,
        detail: Value,
    ) -> Result<Option<TaskRow>, StoreError> {
        let t = Transition { task_id, from: from.to_vec(), to, change: change.clone(), detail };
        Ok(self.transition_many(std::slice::from_ref(&t)).await?.pop().flatten())
    }

    /// Several guarded transitions in one transaction, applied in order; one result per
    /// transition (`None` where the guard did not match).
    pub async fn transition_many(&self, transitions: &[Transition]) -> Result<Vec<Option<TaskRow>>, StoreError> {
        let mut tx = self.write().await?;
        let mut results = Vec::with_capacity(transitions.len());
        let mut entries = Vec::with_capacity(transitions.len());
        let mut tickets = HashMap::new();
        for t in transitions {
            match apply(&mut tx, t, &mut tickets).await? {
                Some((row, entry)) => {
                    results.push(Some(row));
                    entries.push(entry);
                }
                None => results.push(None),
            }
        }
        if entries.is_empty() {
            tx.rollback().await?;
        } else {
            audit::append(&mut tx, &entries).await?;
            tx.commit().await?;
        }
        Ok(results)
    }

    /// Record one API call (parameters without the signature).
    pub async fn record_call(&self, run_id: i64, task_id: Option<i64>, call: &ApiCallRow) -> Result<(), StoreError> {
        self.record_calls(&[(run_id, task_id, call.clone())]).await
    }

    /// Record several API calls in one transaction.
    pub async fn record_calls(&self, calls: &[(i64, Option<i64>, ApiCallRow)]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        for (run_id, task_id, c) in calls {
            sqlx::query(
                "INSERT INTO api_calls (run_id, task_id, action, params, http_status, ret_code, message, job_id, \
                 started_at, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
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
            .execute(&mut *tx)
            .await?;
        }
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
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("task_id")?,
                    ApiCallRow {
                        action: r.try_get("action")?,
                        params_json: r.try_get("params")?,
                        http_status: r.try_get("http_status")?,
                        ret_code: r.try_get("ret_code")?,
                        message: r.try_get("message")?,
                        job_id: r.try_get("job_id")?,
                        started_at: r.try_get("started_at")?,
                        latency_ms: r.try_get("latency_ms")?,
                    },
                ))
            })
            .collect()
    }
}

/// One guarded update inside a write transaction, and the audit record describing it.
/// `tickets` caches each run's ticket for the length of the transaction.
async fn apply(
    conn: &mut SqliteConnection,
    t: &Transition,
    tickets: &mut HashMap<i64, Option<String>>,
) -> Result<Option<(TaskRow, Entry)>, StoreError> {
    if t.from.is_empty() {
        return Ok(None);
    }
    let c = &t.change;
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
    let guard = (0..t.from.len()).map(|i| format!("?{}", 20 + i)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "UPDATE tasks SET state = ?1, \
         attempts = CASE ?2 WHEN 1 THEN attempts + 1 WHEN 2 THEN ?3 ELSE attempts END, \
         job_id = CASE WHEN ?4 THEN ?5 ELSE job_id END, \
         last_ret_code = CASE WHEN ?6 THEN ?7 ELSE last_ret_code END, \
         last_message = CASE WHEN ?8 THEN ?9 ELSE last_message END, \
         intent_at = CASE WHEN ?10 THEN ?11 ELSE intent_at END, \
         started_at = CASE WHEN ?10 THEN COALESCE(started_at, ?11) ELSE started_at END, \
         submitted_at = CASE WHEN ?12 THEN ?13 ELSE submitted_at END, \
         next_attempt_at = CASE WHEN ?14 THEN ?15 ELSE next_attempt_at END, \
         finished_at = CASE WHEN ?16 THEN ?17 ELSE finished_at END, \
         updated_at = ?18, \
         prev_state = state \
         WHERE id = ?19 AND state IN ({guard}) RETURNING {TASK_COLUMNS}, prev_state"
    );
    let mut update = sqlx::query(&sql)
        .bind(t.to.as_str())
        .bind(attempts_mode)
        .bind(attempts_value)
        .bind(c.job_id.is_some())
        .bind(c.job_id.clone().flatten())
        .bind(c.last_ret_code.is_some())
        .bind(c.last_ret_code.flatten())
        .bind(c.last_message.is_some())
        .bind(c.last_message.clone().flatten())
        .bind(intent_set)
        .bind(intent)
        .bind(submitted_set)
        .bind(submitted)
        .bind(next_set)
        .bind(next)
        .bind(finished_set)
        .bind(finished)
        .bind(ts(Utc::now()))
        .bind(t.task_id);
    for s in &t.from {
        update = update.bind(s.as_str());
    }
    let Some(row) = update.fetch_optional(&mut *conn).await? else { return Ok(None) };
    let prev_state: String = row.try_get("prev_state")?;
    let from: TaskState = prev_state.parse().map_err(StoreError::Corrupt)?;
    let row = task_from_row(&row)?;
    let ticket = match tickets.get(&row.run_id) {
        Some(ticket) => ticket.clone(),
        None => {
            let ticket = run_ticket(&mut *conn, row.run_id).await?;
            tickets.insert(row.run_id, ticket.clone());
            ticket
        }
    };

    // The record names the account and the resulting values of every column the change set,
    // so the log alone answers "when was bob removed from cl-x, and by which job".
    let mut detail = match &t.detail {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => Map::from_iter([("value".to_string(), other.clone())]),
    };
    let facts = json!({
        "cluster": row.cluster, "user": row.user, "host": row.host,
        "from": from, "to": row.state,
    });
    detail.extend(facts.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
    let mut put = |set: bool, key: &str, value: Value| {
        if set {
            detail.insert(key.to_string(), value);
        }
    };
    put(c.attempts.is_some(), "attempts", json!(row.attempts));
    put(c.job_id.is_some(), "job_id", json!(row.job_id));
    put(c.last_ret_code.is_some(), "ret_code", json!(row.last_ret_code));
    put(c.last_message.is_some(), "message", json!(row.last_message));
    put(intent_set, "intent_at", json!(opt_ts(row.intent_at)));
    put(submitted_set, "submitted_at", json!(opt_ts(row.submitted_at)));
    put(next_set, "next_attempt_at", json!(opt_ts(row.next_attempt_at)));
    put(finished_set, "finished_at", json!(opt_ts(row.finished_at)));
    let detail = with_ticket(Value::Object(detail), ticket.as_deref());
    let entry = Entry::new(Some(row.run_id), Some(row.id), "task_state", &detail);
    Ok(Some((row, entry)))
}

pub(crate) fn task_from_row(row: &SqliteRow) -> Result<TaskRow, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(TaskRow {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        cluster: row.try_get("cluster")?,
        zone: row.try_get("zone")?,
        user: row.try_get("user")?,
        host: row.try_get("host")?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        not_before: row.try_get("not_before")?,
        due_by: row.try_get("due_by")?,
        attempts: row.try_get("attempts")?,
        job_id: row.try_get("job_id")?,
        last_ret_code: row.try_get("last_ret_code")?,
        last_message: row.try_get("last_message")?,
        started_at: row.try_get("started_at")?,
        intent_at: row.try_get("intent_at")?,
        submitted_at: row.try_get("submitted_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
