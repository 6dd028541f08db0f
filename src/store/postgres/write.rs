//! A lease holder's writes: a guarded state transition of one task that applies only while the
//! task is still the holder's (`owner` and `epoch` unchanged, the lease not expired on the
//! database's clock — an expired lease nobody has taken yet writes nothing either, or a host
//! waking from a stall could send while another takes the task over) and in one of the guard's states,
//! with its `task_state` audit record in the same transaction. A holder whose lease was taken
//! over writes nothing and learns so; a transition into `submitting` that the database's
//! one-job-per-cluster index refuses says so too, with nothing written.
//!
//! The holder's row is locked first, then the audit chain's advisory lock is taken and
//! `updated_at` read from the database's clock under it: no other host appends between that
//! instant and this write's record, so the time lies in the window the replay checks (the SQLite
//! store gets the same from `BEGIN IMMEDIATE`).
//!
//! Every write is built by the runner's state table (`runner::state`), as the SQLite store's are:
//! this module applies the guard and change it is given and decides nothing about legality.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use super::audit::{append, lock_chain, Tickets};
use super::lease::{qualified, Lease};
use super::runs::{task_from_row, TASK_COLUMNS};
use super::PgStore;
use crate::runner::state::{self, Event};
use crate::store::details;
use crate::store::{Attempts, StoreError, TaskChange, TaskRow, TaskState, Transition};

/// The index that allows one job per cluster (migrations/postgres/0001_initial.sql).
pub(super) const ONE_JOB_PER_CLUSTER: &str = "tasks_one_job_per_cluster";

/// What a lease holder's write came to.
#[derive(Debug, Clone, PartialEq)]
pub enum LeasedWrite {
    /// Written: the task's row after the change.
    Applied(Box<TaskRow>),
    /// Nothing written: the lease is no longer the holder's (taken over after it expired, or
    /// released) or is not on the transition's task, or the task is in none of the guard's
    /// states.
    NotHeld,
    /// Nothing written: another task of the cluster has a job `submitting` or `submitted`.
    ClusterBusy,
}

impl LeasedWrite {
    /// The row written, if the write was applied.
    pub fn applied(self) -> Option<TaskRow> {
        match self {
            LeasedWrite::Applied(row) => Some(*row),
            LeasedWrite::NotHeld | LeasedWrite::ClusterBusy => None,
        }
    }
}

impl PgStore {
    /// Apply `event` to the leased task, guarded by the state table and by the lease: the task
    /// moves, `change` is applied and a `task_state` audit record (naming the owner and epoch) is
    /// appended in the same transaction, if and only if the lease is still the holder's and the
    /// task is in a state the event may leave.
    pub async fn step_leased(
        &self,
        lease: &Lease,
        event: Event,
        change: &TaskChange,
        detail: Value,
    ) -> Result<LeasedWrite, StoreError> {
        self.transition_leased(lease, &state::from_any(lease.task_id, event, change.clone(), detail)).await
    }

    /// Apply a transition built by the state table to the leased task, under the lease.
    pub async fn transition_leased(&self, lease: &Lease, t: &Transition) -> Result<LeasedWrite, StoreError> {
        self.transition_leased_renewing(lease, t, None).await
    }

    /// [`PgStore::transition_leased`], also setting the lease to `renew` from now when given (a
    /// lease lengthened for a request is brought back to its usual length once the request's
    /// outcome is written).
    pub async fn transition_leased_renewing(
        &self,
        lease: &Lease,
        t: &Transition,
        renew: Option<std::time::Duration>,
    ) -> Result<LeasedWrite, StoreError> {
        let mut results = self.transitions_leased(&[LeasedTransition { lease, t, renew }]).await?;
        Ok(results.pop().unwrap_or(LeasedWrite::NotHeld))
    }

    /// Several lease holders' writes in one transaction, applied in order; one result per write,
    /// each as [`PgStore::transition_leased_renewing`] would give it. A write the
    /// one-job-per-cluster index refuses is undone alone (a savepoint), not the batch.
    pub async fn transitions_leased(&self, writes: &[LeasedTransition<'_>]) -> Result<Vec<LeasedWrite>, StoreError> {
        let mut tx = self.write().await?;
        // The rows first, in id order, then the chain's lock and the clock under it (see the
        // module's notes). Only rows still held under the named lease are locked.
        let owners: Vec<&str> = writes.iter().map(|w| w.lease.owner.as_str()).collect();
        let epochs: Vec<i64> = writes.iter().map(|w| w.lease.epoch).collect();
        let tasks: Vec<i64> = writes.iter().map(|w| w.lease.task_id).collect();
        let held: HashSet<i64> = sqlx::query_scalar(
            "SELECT t.id FROM tasks t JOIN unnest($1::bigint[], $2::text[], $3::bigint[]) AS l(id, owner, epoch) \
                 ON t.id = l.id AND t.owner = l.owner AND t.epoch = l.epoch \
             WHERE t.lease_until > clock_timestamp() ORDER BY t.id FOR UPDATE OF t",
        )
        .bind(&tasks)
        .bind(&owners)
        .bind(&epochs)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let now = lock_chain(&mut tx).await?;
        let mut results = Vec::with_capacity(writes.len());
        let mut entries = Vec::new();
        let mut tickets = Tickets::default();
        for w in writes {
            if w.t.task_id() != w.lease.task_id || !held.contains(&w.lease.task_id) {
                results.push(LeasedWrite::NotHeld);
                continue;
            }
            let live = TaskState::LIVE.contains(&w.t.to());
            if live {
                sqlx::query("SAVEPOINT leased_write").execute(&mut *tx).await?;
            }
            let row = match update_leased(&mut tx, w, now).await {
                Err(StoreError::Sql(sqlx::Error::Database(e))) if e.constraint() == Some(ONE_JOB_PER_CLUSTER) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT leased_write").execute(&mut *tx).await?;
                    results.push(LeasedWrite::ClusterBusy);
                    continue;
                }
                other => other?,
            };
            if live {
                sqlx::query("RELEASE SAVEPOINT leased_write").execute(&mut *tx).await?;
            }
            let Some((row, from)) = row else {
                results.push(LeasedWrite::NotHeld);
                continue;
            };
            let ticket = tickets.of(&mut tx, row.run_id).await?;
            let owner = Some((w.lease.owner.as_str(), w.lease.epoch));
            entries.push(details::task_state(w.t.change(), w.t.detail(), &row, from, owner, ticket.as_deref()));
            results.push(LeasedWrite::Applied(Box::new(row)));
        }
        append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(results)
    }
}

/// One lease holder's write: the transition, the lease it is made under, and the lease's new
/// length when it is to be reset (see [`PgStore::transition_leased_renewing`]).
#[derive(Debug, Clone, Copy)]
pub struct LeasedTransition<'a> {
    pub lease: &'a Lease,
    pub t: &'a Transition,
    pub renew: Option<std::time::Duration>,
}

/// Apply one leased write inside the caller's transaction, whose row lock it holds: the new
/// row and the state it left, or `None` when the guard (state, owner, epoch) does not match.
async fn update_leased(
    tx: &mut sqlx::PgConnection,
    w: &LeasedTransition<'_>,
    now: DateTime<Utc>,
) -> Result<Option<(TaskRow, TaskState)>, StoreError> {
    let (lease, t) = (w.lease, w.t);
    let (from, to, change) = (t.from(), t.to(), t.change());
    let guard: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let (attempts_mode, attempts_value) = match change.attempts {
        None => (0i32, None),
        Some(Attempts::Increment) => (1, None),
        Some(Attempts::Set(n)) => (2, Some(n)),
    };
    let time = |v: &Option<Option<DateTime<Utc>>>| (v.is_some(), v.flatten());
    let (intent_set, intent) = time(&change.intent_at);
    let (submitted_set, submitted) = time(&change.submitted_at);
    let (next_set, next) = time(&change.next_attempt_at);
    let (finished_set, finished) = time(&change.finished_at);
    let updated = sqlx::query(&format!(
        "UPDATE tasks SET prev_state = state, state = $5, \
         attempts = CASE $6 WHEN 1 THEN attempts + 1 WHEN 2 THEN $7 ELSE attempts END, \
         job_id = CASE WHEN $8 THEN $9 ELSE job_id END, \
         last_ret_code = CASE WHEN $10 THEN $11 ELSE last_ret_code END, \
         last_message = CASE WHEN $12 THEN $13 ELSE last_message END, \
         intent_at = CASE WHEN $14 THEN $15 ELSE intent_at END, \
         started_at = CASE WHEN $14 THEN COALESCE(started_at, $15) ELSE started_at END, \
         submitted_at = CASE WHEN $16 THEN $17 ELSE submitted_at END, \
         next_attempt_at = CASE WHEN $18 THEN $19 ELSE next_attempt_at END, \
         finished_at = CASE WHEN $20 THEN $21 ELSE finished_at END, \
         adopted_from = CASE WHEN $22 THEN $23 ELSE adopted_from END, \
         unresolved = CASE WHEN $24 THEN $25 ELSE unresolved END, \
         updated_at = $26, \
         lease_until = CASE WHEN $27::bigint IS NULL THEN lease_until \
                       ELSE clock_timestamp() + $27 * interval '1 microsecond' END \
         WHERE id = $1 AND owner = $2 AND epoch = $3 AND state = ANY($4) \
         RETURNING {cols}, tasks.prev_state",
        cols = qualified(TASK_COLUMNS)
    ))
    .bind(lease.task_id)
    .bind(&lease.owner)
    .bind(lease.epoch)
    .bind(&guard)
    .bind(to.as_str())
    .bind(attempts_mode)
    .bind(attempts_value)
    .bind(change.job_id.is_some())
    .bind(change.job_id.clone().flatten())
    .bind(change.last_ret_code.is_some())
    .bind(change.last_ret_code.flatten())
    .bind(change.last_message.is_some())
    .bind(change.last_message.clone().flatten())
    .bind(intent_set)
    .bind(intent)
    .bind(submitted_set)
    .bind(submitted)
    .bind(next_set)
    .bind(next)
    .bind(finished_set)
    .bind(finished)
    .bind(change.adopted_from.is_some())
    .bind(change.adopted_from.flatten())
    .bind(change.unresolved.is_some())
    .bind(change.unresolved.clone().flatten())
    .bind(now)
    .bind(w.renew.map(super::micros))
    .fetch_optional(&mut *tx)
    .await;
    let Some(row) = updated? else { return Ok(None) };
    let prev_state: String = row.try_get("prev_state")?;
    let from: TaskState = prev_state.parse().map_err(StoreError::Corrupt)?;
    Ok(Some((task_from_row(&row)?, from)))
}
