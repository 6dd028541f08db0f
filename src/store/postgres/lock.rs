//! The run lock on PostgreSQL (SPEC §4): one run at a time per database where a run takes it,
//! as the SQLite store offers it, until per-host leases replace it. The single row of
//! `run_lock` is read and written under the audit chain's advisory lock (the SQLite store uses
//! `BEGIN IMMEDIATE`), so two hosts can never both believe they hold it. Who may take it over is
//! `store::lock`'s decision, shared with SQLite: only a holder of this same host whose process is
//! gone. This module holds the SQL; it does not decide.

use sqlx::{PgConnection, Row};

use super::audit::{append, lock_chain, run_ticket};
use super::runs::{close_run, insert_run};
use super::PgStore;
use crate::store::audit::{with_ticket, Entry};
use crate::store::lock::{decide, refused, taken_over};
use crate::store::{LockHolder, LockOutcome, NewRun, NewTask, StoreError};

impl PgStore {
    /// Take the run lock for `run_id` on behalf of process `pid` on `host`.
    pub async fn acquire_lock(&self, run_id: i64, pid: i64, host: &str) -> Result<LockOutcome, StoreError> {
        let mut tx = self.write().await?;
        let outcome = lock_in(&mut tx, run_id, pid, host).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Release the lock if `run_id` holds it; `false` when it did not.
    pub async fn release_lock(&self, run_id: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM run_lock WHERE id = 1 AND run_id = $1").bind(run_id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// The current holder of the lock, if any.
    pub async fn lock_holder(&self) -> Result<Option<LockHolder>, StoreError> {
        let row = sqlx::query("SELECT run_id, pid, host, started_at FROM run_lock WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| holder_from_row(&r)).transpose()
    }

    /// Record a run and take the run lock for it in one transaction. When another live run
    /// holds the lock, the run is recorded without its tasks, finished with exit code 73 and
    /// audited as refused.
    pub async fn create_run_locked(
        &self,
        run: &NewRun,
        tasks: &[NewTask],
        pid: i64,
        host: &str,
    ) -> Result<(i64, LockOutcome), StoreError> {
        let mut tx = self.write().await?;
        let run_id = insert_run(&mut tx, run, tasks).await?;
        let outcome = lock_in(&mut tx, run_id, pid, host).await?;
        if let LockOutcome::Held(holder) = &outcome {
            // Nothing of the refused run's work is kept; only the refusal is.
            tx.rollback().await?;
            let mut tx = self.write().await?;
            let run_id = insert_run(&mut tx, run, &[]).await?;
            close_run(&mut tx, run_id, 73, &refused(holder)).await?;
            tx.commit().await?;
            return Ok((run_id, outcome));
        }
        tx.commit().await?;
        Ok((run_id, outcome))
    }
}

fn holder_from_row(r: &sqlx::postgres::PgRow) -> Result<LockHolder, StoreError> {
    Ok(LockHolder {
        run_id: r.try_get("run_id")?,
        pid: r.try_get("pid")?,
        host: r.try_get("host")?,
        started_at: r.try_get("started_at")?,
    })
}

/// Take the run lock inside the caller's transaction; on `Held` nothing was written. The caller
/// commits.
async fn lock_in(tx: &mut PgConnection, run_id: i64, pid: i64, host: &str) -> Result<LockOutcome, StoreError> {
    let now = lock_chain(&mut *tx).await?;
    let row =
        sqlx::query("SELECT run_id, pid, host, started_at FROM run_lock WHERE id = 1").fetch_optional(&mut *tx).await?;
    let (outcome, write) = decide(row.as_ref().map(holder_from_row).transpose()?, run_id, pid, host);
    if !write {
        return Ok(outcome);
    }
    sqlx::query(
        "INSERT INTO run_lock (id, run_id, pid, host, started_at) VALUES (1, $1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET run_id = $1, pid = $2, host = $3, started_at = $4",
    )
    .bind(run_id)
    .bind(pid)
    .bind(host)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if let LockOutcome::TakenOver { previous } = &outcome {
        let ticket = run_ticket(&mut *tx, run_id).await?;
        let detail = with_ticket(taken_over(previous, pid, host), ticket.as_deref());
        append(&mut *tx, &[Entry::new(Some(run_id), None, "lock_taken_over", &detail)]).await?;
    }
    Ok(outcome)
}
