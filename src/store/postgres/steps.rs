//! Guarded state transitions of tasks on PostgreSQL without a lease (`step`, `steps`, and the
//! transitions `prepare_run` plans): each applies only while the task is in one of the states
//! the runner's state table (`runner::state`) put in its guard and no host holds a live lease
//! on it (a task another host works on is written by that host alone, see `write`), with its
//! `task_state` audit record in the same transaction. This module applies what it is given; it decides nothing
//! about legality.
//!
//! The SQLite store serialises these writes with `BEGIN IMMEDIATE`. Here the transaction first
//! locks the rows of the tasks it names (`FOR UPDATE`, in id order, so two batches never wait
//! for each other in a circle), then takes the audit chain's advisory lock and reads
//! `updated_at` from the database's clock under it, so every record appended before lies before
//! that time (the replay's window). A batch is applied in order, several distinct tasks per
//! `UPDATE`; a step into `submitting` or `submitted` from elsewhere gets an `UPDATE` of its own,
//! so the one-job-per-cluster index sees the steps before it applied and the ones after not yet.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::audit::{append, lock_chain, Tickets};
use super::lease::qualified;
use super::runs::{task_from_row, TASK_COLUMNS};
use super::PgStore;
use crate::runner::state::{self, Event};
use crate::store::details;
use crate::store::{Attempts, StoreError, TaskChange, TaskRow, TaskState, Transition};

/// Transitions per UPDATE (one array per column, so a matter of memory only).
const TRANSITION_CHUNK: usize = 1_000;

impl PgStore {
    /// Apply `event` to a task, guarded by the table: the task moves, `change` is applied and a
    /// `task_state` audit record is appended in the same transaction, if and only if its state
    /// is one the event may leave. `None`, with nothing written, otherwise (or when the task does
    /// not exist).
    pub async fn step(
        &self,
        task_id: i64,
        event: Event,
        change: &TaskChange,
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
        let results = apply_transitions(&mut tx, transitions, &[]).await?;
        tx.commit().await?;
        Ok(results)
    }
}

/// Does this transition make a task take a job slot of its cluster it did not hold?
fn enters_live(t: &Transition) -> bool {
    TaskState::LIVE.contains(&t.to()) && t.from().iter().any(|s| !TaskState::LIVE.contains(s))
}

/// Apply guarded transitions inside the caller's transaction, with their audit records; one
/// result per transition (`None` where the guard did not match). The caller commits. `fenced`
/// names tasks whose lease the caller has checked as its own and locked in this transaction:
/// their lease does not stop the write.
pub(super) async fn apply_transitions(
    tx: &mut PgConnection,
    transitions: &[Transition],
    fenced: &[i64],
) -> Result<Vec<Option<TaskRow>>, StoreError> {
    if transitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = transitions.iter().map(Transition::task_id).collect();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query("SELECT id FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE").bind(&ids).execute(&mut *tx).await?;
    let now = lock_chain(&mut *tx).await?;
    let mut results = Vec::with_capacity(transitions.len());
    let mut entries = Vec::with_capacity(transitions.len());
    let mut tickets = Tickets::default();
    let mut start = 0;
    while start < transitions.len() {
        // A segment names each task at most once, so one UPDATE can apply it; a step taking a
        // job slot is a segment of its own.
        let mut seen = HashSet::new();
        let mut end = start;
        while end < transitions.len()
            && end - start < TRANSITION_CHUNK
            && !(end > start && enters_live(&transitions[end]))
            && seen.insert(transitions[end].task_id())
        {
            end += 1;
            if enters_live(&transitions[end - 1]) {
                break;
            }
        }
        let segment = &transitions[start..end];
        let mut updated = update_segment(tx, segment, now, fenced).await?;
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
    append(tx, &entries).await?;
    Ok(results)
}

/// The values of a segment, one array per column of `UPDATE … FROM unnest(…) AS v`.
#[derive(Default)]
struct Values {
    task_id: Vec<i64>,
    guard: Vec<String>,
    to_state: Vec<&'static str>,
    attempts_mode: Vec<i32>,
    attempts_value: Vec<Option<i64>>,
    job_id_set: Vec<bool>,
    job_id: Vec<Option<String>>,
    ret_code_set: Vec<bool>,
    ret_code: Vec<Option<i64>>,
    message_set: Vec<bool>,
    message: Vec<Option<String>>,
    times_set: [Vec<bool>; 4],
    times: [Vec<Option<DateTime<Utc>>>; 4],
    adopted_set: Vec<bool>,
    adopted_from: Vec<Option<i64>>,
    unresolved_set: Vec<bool>,
    unresolved: Vec<Option<String>>,
}

impl Values {
    fn push(&mut self, t: &Transition) {
        let c = t.change();
        self.task_id.push(t.task_id());
        self.guard.push(t.from().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
        self.to_state.push(t.to().as_str());
        // 0: leave `attempts` alone; 1: add one; 2: set it to `attempts_value`.
        let (mode, value) = match c.attempts {
            None => (0, None),
            Some(Attempts::Increment) => (1, None),
            Some(Attempts::Set(n)) => (2, Some(n)),
        };
        self.attempts_mode.push(mode);
        self.attempts_value.push(value);
        self.job_id_set.push(c.job_id.is_some());
        self.job_id.push(c.job_id.clone().flatten());
        self.ret_code_set.push(c.last_ret_code.is_some());
        self.ret_code.push(c.last_ret_code.flatten());
        self.message_set.push(c.last_message.is_some());
        self.message.push(c.last_message.clone().flatten());
        for (i, v) in [&c.intent_at, &c.submitted_at, &c.next_attempt_at, &c.finished_at].into_iter().enumerate() {
            self.times_set[i].push(v.is_some());
            self.times[i].push(v.flatten());
        }
        self.adopted_set.push(c.adopted_from.is_some());
        self.adopted_from.push(c.adopted_from.flatten());
        self.unresolved_set.push(c.unresolved.is_some());
        self.unresolved.push(c.unresolved.clone().flatten());
    }
}

/// Apply transitions of distinct tasks with one `UPDATE`; per task updated, the new row and the
/// state it left. Tasks whose state is not in their guard are left alone and absent.
async fn update_segment(
    conn: &mut PgConnection,
    segment: &[Transition],
    now: DateTime<Utc>,
    fenced: &[i64],
) -> Result<HashMap<i64, (TaskRow, TaskState)>, StoreError> {
    let mut v = Values::default();
    for t in segment {
        v.push(t);
    }
    let [intent_set, submitted_set, next_set, finished_set] = v.times_set;
    let [intent, submitted, next, finished] = v.times;
    let rows = sqlx::query(&format!(
        "UPDATE tasks SET prev_state = tasks.state, state = v.to_state, \
         attempts = CASE v.attempts_mode WHEN 1 THEN tasks.attempts + 1 WHEN 2 THEN v.attempts_value \
                    ELSE tasks.attempts END, \
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
         updated_at = $1 \
         FROM unnest($2::bigint[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::bool[], $8::text[], \
              $9::bool[], $10::bigint[], $11::bool[], $12::text[], $13::bool[], $14::timestamptz[], \
              $15::bool[], $16::timestamptz[], $17::bool[], $18::timestamptz[], $19::bool[], $20::timestamptz[], \
              $21::bool[], $22::bigint[], $23::bool[], $24::text[]) \
           AS v(task_id, guard, to_state, attempts_mode, attempts_value, job_id_set, job_id, ret_code_set, \
                ret_code, message_set, message, intent_set, intent_at, submitted_set, submitted_at, next_set, \
                next_attempt_at, finished_set, finished_at, adopted_set, adopted_from, unresolved_set, unresolved) \
         WHERE tasks.id = v.task_id AND tasks.state = ANY(string_to_array(v.guard, ',')) \
           AND (tasks.owner IS NULL OR tasks.lease_until IS NULL OR tasks.lease_until <= clock_timestamp() \
                OR tasks.id = ANY($25)) \
         RETURNING {cols}, tasks.prev_state",
        cols = qualified(TASK_COLUMNS)
    ))
    .bind(now)
    .bind(v.task_id)
    .bind(v.guard)
    .bind(v.to_state)
    .bind(v.attempts_mode)
    .bind(v.attempts_value)
    .bind(v.job_id_set)
    .bind(v.job_id)
    .bind(v.ret_code_set)
    .bind(v.ret_code)
    .bind(v.message_set)
    .bind(v.message)
    .bind(intent_set)
    .bind(intent)
    .bind(submitted_set)
    .bind(submitted)
    .bind(next_set)
    .bind(next)
    .bind(finished_set)
    .bind(finished)
    .bind(v.adopted_set)
    .bind(v.adopted_from)
    .bind(v.unresolved_set)
    .bind(v.unresolved)
    .bind(fenced)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let prev_state: String = row.try_get("prev_state")?;
            let from: TaskState = prev_state.parse().map_err(StoreError::Corrupt)?;
            let row = task_from_row(row)?;
            Ok((row.id, (row, from)))
        })
        .collect()
}
