//! The run lock (SPEC §4): one run at a time per database.
//!
//! The lock is a single row with a fixed primary key, read and written inside one
//! `BEGIN IMMEDIATE` transaction, so two processes can never both believe they hold it. A holder
//! on this host whose process no longer exists is taken over, and the takeover is audited. A
//! holder on another host is never taken over: its liveness cannot be checked from here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{Row, SqliteConnection};

use super::audit::{self, run_ticket, with_ticket, Entry};
use super::{ts, Store, StoreError};

/// Who holds the run lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    pub run_id: i64,
    pub pid: i64,
    pub host: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// The lock was free (or already ours) and is now held.
    Acquired,
    /// The lock was held by a process of this host that no longer exists; it is now ours.
    TakenOver { previous: LockHolder },
    /// Another live (or unverifiable) process holds it; nothing changed.
    Held(LockHolder),
}

/// This machine's host name, as recorded in the lock and in runs.
impl LockHolder {
    /// Could the holder still be running: a process of this host that exists, or one of
    /// another host (which this host cannot look at)?
    pub fn may_be_running(&self) -> bool {
        self.host != this_host() || process_exists(self.pid)
    }
}

pub fn this_host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// Does process `pid` exist on this host? A process we may not signal still exists.
fn process_exists(pid: i64) -> bool {
    let Some(pid) = i32::try_from(pid).ok().filter(|&p| p > 0).and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

impl Store {
    /// Take the run lock for `run_id` on behalf of process `pid` on `host`.
    ///
    /// A holder on the same host is stale when its pid no longer exists, or when its pid is this
    /// very process's (an earlier process that had the same pid, as after a container restart)
    /// while it names another run.
    pub async fn acquire_lock(&self, run_id: i64, pid: i64, host: &str) -> Result<LockOutcome, StoreError> {
        let mut tx = self.write().await?;
        let outcome = lock_in(&mut tx, run_id, pid, host).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Release the lock if `run_id` holds it; `false` when it did not.
    pub async fn release_lock(&self, run_id: i64) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let done =
            sqlx::query("DELETE FROM run_lock WHERE id = 1 AND run_id = ?").bind(run_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The current holder of the lock, if any.
    pub async fn lock_holder(&self) -> Result<Option<LockHolder>, StoreError> {
        let row = sqlx::query("SELECT run_id, pid, host, started_at FROM run_lock WHERE id = 1")
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| {
            Ok(LockHolder {
                run_id: r.try_get("run_id")?,
                pid: r.try_get("pid")?,
                host: r.try_get("host")?,
                started_at: r.try_get("started_at")?,
            })
        })
        .transpose()
    }
}

/// What taking the lock for `run_id` (process `pid` on `host`) comes to, given its holder, and
/// whether the lock row must be written: free (written), already ours (not), a stale holder of
/// this host (taken over: written, and audited with [`taken_over`]), or held (not). Shared by
/// both backends.
pub(crate) fn decide(holder: Option<LockHolder>, run_id: i64, pid: i64, host: &str) -> (LockOutcome, bool) {
    match holder {
        None => (LockOutcome::Acquired, true),
        Some(h) if h.run_id == run_id && h.pid == pid && h.host == host => (LockOutcome::Acquired, false),
        Some(h) if h.host == host && (!process_exists(h.pid) || h.pid == i64::from(std::process::id())) => {
            (LockOutcome::TakenOver { previous: h }, true)
        }
        Some(h) => (LockOutcome::Held(h), false),
    }
}

/// The detail of a `lock_taken_over` record (the run's ticket is added by the caller).
pub(crate) fn taken_over(previous: &LockHolder, pid: i64, host: &str) -> serde_json::Value {
    json!({"previous": previous, "pid": pid, "host": host})
}

/// The summary of a run refused because `holder` holds the lock (it ends with exit code 73).
pub(crate) fn refused(holder: &LockHolder) -> serde_json::Value {
    json!({ "refused": "another run holds the run lock", "holder": holder })
}

/// Take the run lock for `run_id` inside the caller's write transaction (see
/// [`Store::acquire_lock`]); on `Held` nothing was written. The caller commits.
pub(crate) async fn lock_in(
    tx: &mut SqliteConnection,
    run_id: i64,
    pid: i64,
    host: &str,
) -> Result<LockOutcome, StoreError> {
    let row =
        sqlx::query("SELECT run_id, pid, host, started_at FROM run_lock WHERE id = 1").fetch_optional(&mut *tx).await?;
    let holder = row
        .map(|r| -> Result<LockHolder, StoreError> {
            Ok(LockHolder {
                run_id: r.try_get("run_id")?,
                pid: r.try_get("pid")?,
                host: r.try_get("host")?,
                started_at: r.try_get("started_at")?,
            })
        })
        .transpose()?;
    let (outcome, write) = decide(holder, run_id, pid, host);
    if !write {
        return Ok(outcome);
    }
    sqlx::query("INSERT OR REPLACE INTO run_lock (id, run_id, pid, host, started_at) VALUES (1, ?, ?, ?, ?)")
        .bind(run_id)
        .bind(pid)
        .bind(host)
        .bind(ts(Utc::now()))
        .execute(&mut *tx)
        .await?;
    if let LockOutcome::TakenOver { previous } = &outcome {
        let ticket = run_ticket(&mut *tx, run_id).await?;
        let detail = taken_over(previous, pid, host);
        audit::append(
            &mut *tx,
            &[Entry::new(Some(run_id), None, "lock_taken_over", &with_ticket(detail, ticket.as_deref()))],
        )
        .await?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_of_processes() {
        assert!(process_exists(i64::from(std::process::id())));
        assert!(!process_exists(0));
        assert!(!process_exists(-5));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i64::from(child.id());
        child.wait().unwrap();
        assert!(!process_exists(pid));
    }
}
