//! Per-host leases of a live run (`run_hosts`), PostgreSQL's replacement for the single run
//! lock: every runner process working on a run holds one row, extends it while it works and
//! deletes it when it leaves. A run is live while one of its rows has `lease_until` ahead of
//! the database's clock, so a host that died stops counting once its lease runs out, whatever
//! host it ran on (the SQLite lock can only tell a dead process on its own host).
//!
//! Joining reads the live rows and writes its own under the audit chain's advisory lock, so two
//! hosts can never both see "no other run is live" and start two runs. A run may have any number
//! of live hosts; another run may not be live at the same time (as with the SQLite lock: two
//! runs that name one account would race for it). This module holds the SQL and the audit
//! records; whether a joiner prepares the run is the caller's decision.

use std::time::Duration;

use serde_json::json;
use sqlx::{PgConnection, Row};

use super::audit::{append, lock_chain, run_ticket};
use super::runs::{close_run, insert_run};
use super::{micros, PgStore};
use crate::store::audit::{with_ticket, Entry};
use crate::store::lock::refused;
use crate::store::{LockHolder, LockOutcome, NewRun, NewTask, StoreError};

/// One process's hold on a live run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLease {
    pub run_id: i64,
    /// Unique per process: the host, the pid and a random part.
    pub owner: String,
    pub host: String,
    pub pid: i64,
}

/// What joining a run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Acquired, or Held by another live run (nothing written).
    pub outcome: LockOutcome,
    /// Other hosts of the same run whose leases are live: more than zero means the run is being
    /// worked on, and the joiner shares its tasks without preparing it again.
    pub peers: usize,
}

impl PgStore {
    /// Join run `lease.run_id` as `lease.owner` for `by` from now, unless another run is live.
    pub async fn join_run(&self, lease: &HostLease, by: Duration) -> Result<Joined, StoreError> {
        let mut tx = self.write().await?;
        let joined = join_in(&mut tx, lease, by).await?;
        tx.commit().await?;
        Ok(joined)
    }

    /// Record a run and join it in one transaction. When another run is live, the new run is
    /// recorded without its tasks, finished with 73 and audited as refused (as
    /// `create_run_locked` does). `lease.run_id` is ignored: the new run's id is returned.
    pub async fn create_run_joined(
        &self,
        run: &NewRun,
        tasks: &[NewTask],
        lease: &HostLease,
        by: Duration,
    ) -> Result<(i64, LockOutcome), StoreError> {
        let mut tx = self.write().await?;
        let run_id = insert_run(&mut tx, run, tasks).await?;
        let lease = HostLease { run_id, ..lease.clone() };
        let joined = join_in(&mut tx, &lease, by).await?;
        if let LockOutcome::Held(holder) = &joined.outcome {
            tx.rollback().await?;
            let mut tx = self.write().await?;
            let run_id = insert_run(&mut tx, run, &[]).await?;
            close_run(&mut tx, run_id, 73, &refused(holder)).await?;
            tx.commit().await?;
            return Ok((run_id, joined.outcome));
        }
        tx.commit().await?;
        Ok((run_id, joined.outcome))
    }

    /// Extend this host's lease on its run to `by` from now; `false` when it is gone (it ran out
    /// and another host's join removed it, or it was never there).
    pub async fn extend_host(&self, owner: &str, by: Duration) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE run_hosts SET lease_until = clock_timestamp() + $2 * interval '1 microsecond' WHERE owner = $1",
        )
        .bind(owner)
        .bind(micros(by))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Leave the run: this host's lease is deleted and every task lease it holds released (free
    /// for the other hosts at once), with a `host_left` record.
    pub async fn leave_run(&self, lease: &HostLease) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        lock_chain(&mut tx).await?;
        let released = sqlx::query("UPDATE tasks SET owner = NULL, lease_until = NULL WHERE owner = $1")
            .bind(&lease.owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM run_hosts WHERE owner = $1").bind(&lease.owner).execute(&mut *tx).await?;
        let ticket = run_ticket(&mut tx, lease.run_id).await?;
        let detail = with_ticket(
            json!({ "owner": lease.owner, "host": lease.host, "pid": lease.pid, "released": released }),
            ticket.as_deref(),
        );
        append(&mut tx, &[Entry::new(Some(lease.run_id), None, "host_left", &detail)]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live hosts of a run, oldest first.
    pub async fn live_hosts(&self, run_id: i64) -> Result<Vec<HostLease>, StoreError> {
        let rows = sqlx::query(
            "SELECT owner, run_id, host, pid FROM run_hosts WHERE run_id = $1 AND lease_until > clock_timestamp() \
             ORDER BY joined_at, owner",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HostLease {
                    owner: r.try_get("owner")?,
                    run_id: r.try_get("run_id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                })
            })
            .collect()
    }
}

/// Join inside the caller's transaction (which commits); on `Held` nothing was written.
async fn join_in(tx: &mut PgConnection, lease: &HostLease, by: Duration) -> Result<Joined, StoreError> {
    let now = lock_chain(&mut *tx).await?;
    let other = sqlx::query(
        "SELECT run_id, pid, host, joined_at FROM run_hosts \
         WHERE run_id <> $1 AND lease_until > $2 ORDER BY joined_at LIMIT 1",
    )
    .bind(lease.run_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(r) = other {
        let holder = LockHolder {
            run_id: r.try_get("run_id")?,
            pid: r.try_get("pid")?,
            host: r.try_get("host")?,
            started_at: r.try_get("joined_at")?,
        };
        return Ok(Joined { outcome: LockOutcome::Held(holder), peers: 0 });
    }
    // Leases that ran out are gone: their hosts are dead or cut off, and their tasks' leases
    // have run out with them (a task lease is never longer than its host's).
    let expired = sqlx::query("DELETE FROM run_hosts WHERE lease_until <= $1 RETURNING owner, run_id, host, pid")
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
    let peers: i64 = sqlx::query_scalar("SELECT count(*) FROM run_hosts WHERE run_id = $1 AND owner <> $2")
        .bind(lease.run_id)
        .bind(&lease.owner)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO run_hosts (owner, run_id, host, pid, joined_at, lease_until) \
         VALUES ($1, $2, $3, $4, $5, $5 + $6 * interval '1 microsecond') \
         ON CONFLICT (owner) DO UPDATE SET lease_until = EXCLUDED.lease_until",
    )
    .bind(&lease.owner)
    .bind(lease.run_id)
    .bind(&lease.host)
    .bind(lease.pid)
    .bind(now)
    .bind(micros(by))
    .execute(&mut *tx)
    .await?;
    let mut entries = Vec::new();
    for r in &expired {
        let run_id: i64 = r.try_get("run_id")?;
        let detail = json!({
            "owner": r.try_get::<String, _>("owner")?, "host": r.try_get::<String, _>("host")?,
            "pid": r.try_get::<i64, _>("pid")?, "noticed_by": lease.owner,
        });
        let ticket = run_ticket(&mut *tx, run_id).await?;
        entries.push(Entry::new(Some(run_id), None, "host_lease_expired", &with_ticket(detail, ticket.as_deref())));
    }
    let ticket = run_ticket(&mut *tx, lease.run_id).await?;
    let detail = json!({ "owner": lease.owner, "host": lease.host, "pid": lease.pid, "peers": peers });
    entries.push(Entry::new(Some(lease.run_id), None, "host_joined", &with_ticket(detail, ticket.as_deref())));
    append(&mut *tx, &entries).await?;
    Ok(Joined { outcome: LockOutcome::Acquired, peers: usize::try_from(peers).unwrap_or(0) })
}
