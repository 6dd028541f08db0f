//! Claiming tasks across hosts: a host claims free tasks with `FOR UPDATE SKIP LOCKED` (two
//! claimers never get the same task, and neither waits for the other), under a lease (`owner`,
//! `lease_until` on the database's clock) that it extends while it works, and a new `epoch` per
//! claim. A task whose lease has expired is free again; taking it over is audited, and the old
//! holder's writes, which name the old epoch, then change nothing (see `write`).
//!
//! This module hands out and extends leases; it does not decide which states are worth claiming
//! or what happens to a task taken over in doubt (the runner reconciles it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use super::audit::{append, run_ticket};
use super::runs::{task_from_row, TASK_COLUMNS};
use super::{micros, PgStore};
use crate::store::audit::{with_ticket, Entry};
use crate::store::{StoreError, TaskRow, TaskState};

/// A host's hold on one task: every write of the holder names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub task_id: i64,
    pub owner: String,
    pub epoch: i64,
    /// When the lease ends unless extended (the database's clock).
    pub until: DateTime<Utc>,
}

/// A task claimed: its row and the lease on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub task: TaskRow,
    pub lease: Lease,
    /// The holder whose lease ran out before this claim took the task over (this owner itself,
    /// when its own lease lapsed), if one was still named.
    pub taken_from: Option<(String, i64)>,
}

impl PgStore {
    /// Claim up to `limit` tasks in one of `states` (of run `run_id`, or of any run) that nobody
    /// holds, or whose lease has expired, and that are due (`next_attempt_at` passed or unset),
    /// oldest first. Each claimed task gets `owner`, a lease of `lease` from now and its epoch
    /// plus one. Tasks other transactions are claiming at this moment are skipped, not waited
    /// for. A takeover from another owner is audited (`lease_taken_over`) in the same
    /// transaction.
    pub async fn claim(
        &self,
        run_id: Option<i64>,
        states: &[TaskState],
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        let free = "free AS ( \
                SELECT id, owner AS old_owner, epoch AS old_epoch FROM tasks \
                WHERE ($1::bigint IS NULL OR run_id = $1) AND state = ANY($2) \
                  AND (owner IS NULL OR lease_until IS NULL OR lease_until <= clock_timestamp()) \
                  AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp()) \
                ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)";
        self.claim_free(free, run_id, states, owner, lease, limit).await
    }

    /// Claim the due, free tasks in `states` of run `run_id` (a `not_due` task only once its date
    /// has come) on up to `clusters` clusters that no
    /// other host holds a live lease on, oldest cluster first: a host works on whole clusters,
    /// so the hosts of a run rarely meet on one (and when two claim one cluster at the same
    /// instant, the one-job-per-cluster index still lets only one of them submit). A cluster
    /// where another run's request or job is still under a live lease (a host that died in the
    /// middle of a `del_user`) waits until that lease runs out: its job slot is taken until then,
    /// and claiming would only hand the tasks back, round after round. Tasks this
    /// owner already holds are not claimed again (their epoch would change under its writes).
    /// Takeovers are audited as [`PgStore::claim`] does.
    pub async fn claim_clusters(
        &self,
        run_id: i64,
        states: &[TaskState],
        owner: &str,
        lease: Duration,
        clusters: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        let free = "claimable AS ( \
                SELECT t.id, t.cluster, t.zone FROM tasks t \
                WHERE t.run_id = $1 AND t.state = ANY($2) \
                  AND (t.owner IS NULL OR t.lease_until IS NULL OR t.lease_until <= clock_timestamp()) \
                  AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= clock_timestamp()) \
                  AND (t.state <> 'not_due' OR t.not_before <= (clock_timestamp() AT TIME ZONE 'UTC')::date) \
                  AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.run_id = t.run_id AND o.cluster = t.cluster \
                      AND o.zone = t.zone AND o.owner IS NOT NULL AND o.owner <> $4 \
                      AND o.lease_until > clock_timestamp()) \
                  AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.run_id <> t.run_id AND o.cluster = t.cluster \
                      AND o.zone = t.zone AND o.state IN ('submitting', 'submitted') \
                      AND o.lease_until > clock_timestamp())), \
             picked AS ( \
                SELECT cluster, zone FROM claimable GROUP BY cluster, zone ORDER BY min(id) LIMIT $3), \
             free AS ( \
                SELECT t.id, t.owner AS old_owner, t.epoch AS old_epoch FROM tasks t \
                JOIN claimable c ON c.id = t.id JOIN picked p ON p.cluster = c.cluster AND p.zone = c.zone \
                ORDER BY t.id FOR UPDATE OF t SKIP LOCKED)";
        self.claim_free(free, Some(run_id), states, owner, lease, clusters).await
    }

    /// Claim the tasks the common table expressions `ctes` select as `free` (`id`, `old_owner`,
    /// `old_epoch`, rows locked), with `$1` the run, `$2` the states and `$3` the limit: each
    /// gets `owner`, a lease of `lease` from now and its epoch plus one; takeovers are audited.
    async fn claim_free(
        &self,
        ctes: &str,
        run_id: Option<i64>,
        states: &[TaskState],
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let mut tx = self.write().await?;
        let rows = sqlx::query(&format!(
            "WITH {ctes} \
             UPDATE tasks SET owner = $4, epoch = tasks.epoch + 1, \
                lease_until = clock_timestamp() + $5 * interval '1 microsecond' \
             FROM free WHERE tasks.id = free.id \
               AND (tasks.owner IS NULL OR tasks.lease_until IS NULL OR tasks.lease_until <= clock_timestamp()) \
             RETURNING {cols}, tasks.owner, tasks.epoch, tasks.lease_until, free.old_owner, free.old_epoch",
            cols = qualified(TASK_COLUMNS)
        ))
        .bind(run_id)
        .bind(&states)
        .bind(limit)
        .bind(owner)
        .bind(micros(lease))
        .fetch_all(&mut *tx)
        .await?;
        let claims = claims_of(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(claims)
    }

    /// Extend every lease `owner` holds on `task_ids` to `by` from now (never shortening one a
    /// request lengthened), in one statement, where it is still the owner's and has not run
    /// out; the ids still held.
    pub async fn extend_leases(&self, owner: &str, task_ids: &[i64], by: Duration) -> Result<Vec<i64>, StoreError> {
        let ids = sqlx::query_scalar(
            "UPDATE tasks SET lease_until = GREATEST(lease_until, clock_timestamp() + $3 * interval '1 microsecond') \
             WHERE id = ANY($2) AND owner = $1 AND lease_until > clock_timestamp() RETURNING id",
        )
        .bind(owner)
        .bind(task_ids)
        .bind(micros(by))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// How many tasks of run `run_id` still have work ahead (pending, waiting for a retry, or
    /// with a request or a job in flight), whoever holds them.
    pub async fn unfinished(&self, run_id: i64) -> Result<i64, StoreError> {
        let states: Vec<&str> = TaskState::OPEN.iter().map(|s| s.as_str()).collect();
        Ok(sqlx::query_scalar("SELECT count(*) FROM tasks WHERE run_id = $1 AND state = ANY($2)")
            .bind(run_id)
            .bind(&states)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Extend a lease to `lease` from now, if it is still the holder's (same owner and epoch)
    /// and has not expired. `None`, with nothing written, when it is not: the task was taken
    /// over or released, or its lease ran out (an expired lease is not brought back: another
    /// host may be about to take the task over; claim it again instead).
    pub async fn extend_lease(&self, lease: &Lease, by: Duration) -> Result<Option<Lease>, StoreError> {
        let until: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE tasks SET lease_until = clock_timestamp() + $4 * interval '1 microsecond' \
             WHERE id = $1 AND owner = $2 AND epoch = $3 AND lease_until > clock_timestamp() \
             RETURNING lease_until",
        )
        .bind(lease.task_id)
        .bind(&lease.owner)
        .bind(lease.epoch)
        .bind(micros(by))
        .fetch_optional(&self.pool)
        .await?;
        Ok(until.map(|until| Lease { until, ..lease.clone() }))
    }

    /// Give a task back (its work is finished, or the host stops): free for any host at once.
    /// The epoch stays, so writes under the released lease still change nothing. `false` when
    /// the lease was no longer the holder's.
    pub async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(lease.task_id)
        .bind(&lease.owner)
        .bind(lease.epoch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Give back every task of `task_ids` that `owner` holds, whatever the epoch (a task it
    /// claimed again is its own too); the epochs stay, so writes under the old leases still
    /// change nothing.
    pub async fn release_all(&self, owner: &str, task_ids: &[i64]) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE tasks SET owner = NULL, lease_until = NULL WHERE owner = $1 AND id = ANY($2)")
            .bind(owner)
            .bind(task_ids)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The lease on a task as the database holds it now (`None` when nobody holds it).
    pub async fn lease_of(&self, task_id: i64) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query("SELECT owner, epoch, lease_until FROM tasks WHERE id = $1 AND owner IS NOT NULL")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Lease {
                task_id,
                owner: r.try_get("owner")?,
                epoch: r.try_get("epoch")?,
                until: r.try_get("lease_until")?,
            })
        })
        .transpose()
    }
}

/// `a, b, "c"` → `tasks.a, tasks.b, tasks."c"`: the task's columns in a statement that joins.
pub(super) fn qualified(columns: &str) -> String {
    columns.split(',').map(|c| format!("tasks.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// The claims of a claiming statement's rows, with a `lease_taken_over` record appended for each
/// task taken over from another owner (in the caller's transaction, which commits).
async fn claims_of(tx: &mut sqlx::PgConnection, rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Claim>, StoreError> {
    let mut claims = Vec::with_capacity(rows.len());
    let mut entries = Vec::new();
    for row in rows {
        let task = task_from_row(row)?;
        let lease = Lease {
            task_id: task.id,
            owner: row.try_get("owner")?,
            epoch: row.try_get("epoch")?,
            until: row.try_get("lease_until")?,
        };
        let old_owner: Option<String> = row.try_get("old_owner")?;
        let old_epoch: i64 = row.try_get("old_epoch")?;
        // A task claimed only when its lease was released or ran out: an owner still named means
        // the lease ran out, this owner's own included (a host that stalled), and is on record.
        let taken_from = old_owner.map(|o| (o, old_epoch));
        if let Some((from, from_epoch)) = &taken_from {
            let detail = json!({
                "cluster": task.cluster, "user": task.user, "host": task.host, "state": task.state,
                "from_owner": from, "from_epoch": from_epoch, "owner": lease.owner, "epoch": lease.epoch,
            });
            let ticket = run_ticket(&mut *tx, task.run_id).await?;
            let detail = with_ticket(detail, ticket.as_deref());
            entries.push(Entry::new(Some(task.run_id), Some(task.id), "lease_taken_over", &detail));
        }
        claims.push(Claim { task, lease, taken_from });
    }
    claims.sort_by_key(|c| c.task.id);
    append(&mut *tx, &entries).await?;
    Ok(claims)
}
