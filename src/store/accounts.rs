//! The account is the unit of safety (SPEC §8): the questions asked about one (endpoint, access
//! key id, cluster, user, host) across every run of the database.
//!
//! - Which accounts are done (deleted, absent, or skipped because done) — a new run skips them.
//! - Which accounts have a live attempt (`submitting`/`submitted`) in another run — a run that
//!   starts adopts it instead of sending a second `del_user` ([`Store::prepare_run`]).
//! - The last check before a request is signed ([`Store::last_check`]).
//!
//! Runs are compared by their *identity*: the endpoint normalised by [`endpoint_identity`] and the
//! access key id. This module owns those SQL queries; it decides nothing about the API.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::adoption;
use super::tasks::{apply_transitions, task_from_row, TASK_COLUMNS};
use super::{Store, StoreError, TaskRow, TaskState};

/// (cluster, user, host)
pub type AccountKey = (String, String, String);

/// The endpoint as an identity: scheme and host in lower case, the default port dropped, the
/// path with exactly one trailing slash, no query. `https://API.qingcloud.com:443/iaas` and
/// `https://api.qingcloud.com/iaas/` are one endpoint. A value that is not a URL (the
/// simulator's fixed name) is kept as it is, trimmed.
pub fn endpoint_identity(endpoint: &str) -> String {
    let trimmed = endpoint.trim();
    match url::Url::parse(trimmed) {
        Ok(mut u) if u.has_host() => {
            // `Url` already lower-cases scheme and host and drops a default port; repeated
            // slashes are one (a gateway merges them).
            let mut path = String::new();
            for part in u.path().split('/').filter(|p| !p.is_empty()) {
                path.push('/');
                path.push_str(part);
            }
            path.push('/');
            u.set_path(&path);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        _ => trimmed.to_owned(),
    }
}

/// A task whose request may exist that nobody has seen the end of: `submitting`, `submitted`,
/// or `failed` with `unresolved` set (its job may still take effect). SQL over `tasks` as `t`.
pub(crate) const LIVE_SQL: &str =
    "(t.state IN ('submitting', 'submitted') OR (t.state = 'failed' AND t.unresolved IS NOT NULL))";

/// The job slots taken, as (cluster, zone, tasks): tasks `submitting` or `submitted`, in any run
/// (the states PostgreSQL's one-job-per-cluster index covers).
pub(crate) const SLOTS_SQL: &str =
    "SELECT cluster, zone, COUNT(*) FROM tasks WHERE state IN ('submitting', 'submitted') GROUP BY cluster, zone";

/// Done for good: `deleted`, `absent`, or `skipped` because so. SQL over `tasks` as `t`.
pub(crate) const DONE_SQL: &str = "t.state IN ('deleted', 'absent', 'skipped')";

/// Where an account stands in the other runs of the same identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Deleted or absent (or skipped as such) by this run.
    Done { run_id: i64 },
    /// A request may exist that nobody has seen the end of, in this run.
    InFlight { run_id: i64 },
}

/// What [`Store::prepare_run`] did before a run's work started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Open tasks another run had already done: now `skipped`.
    pub skipped: u64,
    /// Live attempts of other (dead) runs now followed by this run: (this task, the other run).
    pub adopted: Vec<(i64, i64)>,
    /// Open tasks whose account another run left a live attempt at, on a cluster whose one job
    /// slot is taken (by another adoption, or a task in flight): they are adopted when the run
    /// hands them out ([`Store::adopt_deferred`]), never sent before.
    pub deferred: Vec<i64>,
}

/// What [`Store::adopt_deferred`] did to a task whose adoption waited for its cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Adopted {
    /// The task moved: it adopted the other run's attempt (`submitting` or `submitted`), or was
    /// skipped because another run had done the account. Its row now.
    Moved(Box<TaskRow>),
    /// No other run holds a live attempt at the account any more: the task goes as usual.
    Nothing,
    /// The cluster's job slot is still taken: the adoption waits.
    Waits,
    /// The task is not this process's to write (a shared run's lease is gone).
    NotHeld,
}

impl Adopted {
    /// The outcome for `task_id` of preparing that task alone.
    pub(crate) fn of(task_id: i64, prepared: &Prepared, moved: Vec<TaskRow>) -> Adopted {
        if prepared.deferred.contains(&task_id) {
            return Adopted::Waits;
        }
        match moved.into_iter().find(|r| r.id == task_id) {
            Some(row) => Adopted::Moved(Box::new(row)),
            None => Adopted::Nothing,
        }
    }
}

/// Why [`Store::last_check`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The task is no longer `submitting` in this run.
    NotOpen(TaskState),
    /// Another run deleted the account (or found it absent).
    DoneElsewhere { run_id: i64 },
    /// Another run holds a live attempt at the account.
    InFlightElsewhere { run_id: i64 },
    /// The audit log records this task (or one it adopted) as done, whatever its row says now.
    RecordedDone { seq: i64 },
    /// The run is shared with other hosts and this host's lease on the task is gone (another
    /// host took it over, or it ran out): that host decides, and reconciles first.
    LeaseLost,
}

impl Refusal {
    pub fn describe(&self) -> String {
        match self {
            Refusal::NotOpen(s) => format!("the task is {s}, not submitting"),
            Refusal::DoneElsewhere { run_id } => format!("run {run_id} already removed this account"),
            Refusal::InFlightElsewhere { run_id } => format!("run {run_id} holds a live attempt at this account"),
            Refusal::RecordedDone { seq } => {
                format!("audit record {seq} says this account was already removed; the task row disagrees (edited?)")
            }
            Refusal::LeaseLost => "this host's lease on the task is gone: another host works on it".to_owned(),
        }
    }
}

impl Store {
    /// The runs made against this endpoint identity with this access key.
    pub async fn identity_runs(&self, endpoint: &str, access_key_id: &str) -> Result<Vec<i64>, StoreError> {
        let want = endpoint_identity(endpoint);
        let rows =
            sqlx::query("SELECT id, endpoint, access_key_id FROM runs ORDER BY id").fetch_all(&self.reader).await?;
        let mut ids = Vec::new();
        for r in rows {
            let e: String = r.try_get("endpoint")?;
            let k: String = r.try_get("access_key_id")?;
            if k == access_key_id && endpoint_identity(&e) == want {
                ids.push(r.try_get("id")?);
            }
        }
        Ok(ids)
    }

    /// Accounts done against this endpoint identity with this access key: tasks of any run that
    /// ended `deleted` or `absent`, or `skipped` because such a task existed. A new run skips
    /// these without an API call.
    pub async fn done_keys(&self, endpoint: &str, access_key_id: &str) -> Result<HashSet<AccountKey>, StoreError> {
        Ok(self
            .standings(endpoint, access_key_id)
            .await?
            .into_iter()
            .filter(|(_, s)| matches!(s, Standing::Done { .. }))
            .map(|(k, _)| k)
            .collect())
    }

    /// Every account with a standing (done, or in flight) in the runs of this identity. An
    /// account done anywhere is `Done`, whatever else holds it.
    pub async fn standings(
        &self,
        endpoint: &str,
        access_key_id: &str,
    ) -> Result<HashMap<AccountKey, Standing>, StoreError> {
        let runs = self.identity_runs(endpoint, access_key_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT t.run_id, t.cluster, t.user, t.host, t.state FROM tasks t \
             WHERE ({DONE_SQL} OR {LIVE_SQL}) AND t.run_id IN (SELECT value FROM json_each(?)) ORDER BY t.id"
        ))
        .bind(serde_json::to_string(&runs).unwrap_or_else(|_| "[]".into()))
        .fetch_all(&self.reader)
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in rows {
            let key = (r.try_get("cluster")?, r.try_get("user")?, r.try_get("host")?);
            let state: String = r.try_get("state")?;
            found.push((key, r.try_get("run_id")?, state.parse().map_err(StoreError::Corrupt)?));
        }
        Ok(adoption::standings(found))
    }

    /// Before a run's work starts (it holds the run lock, so no other run of this database is
    /// alive): its open tasks whose account another run of `identity_runs` has done become
    /// `skipped`; a live attempt of another run at one of its accounts is adopted — the other
    /// task becomes `handed_over`, this one takes its state, intent, job and attempts — so it is
    /// reconciled or followed and never sent again blindly. An adoption on a cluster whose job
    /// slot is taken waits (`deferred`). All in one transaction, audited in both runs.
    pub async fn prepare_run(&self, run_id: i64, identity_runs: &[i64]) -> Result<Prepared, StoreError> {
        let mut tx = self.write().await?;
        let (prepared, _) = prepare_in(&mut tx, run_id, None, identity_runs).await?;
        tx.commit().await?;
        Ok(prepared)
    }

    /// The deferred adoption of one task, when the run hands it out: [`Store::prepare_run`]
    /// for that task alone.
    pub async fn adopt_deferred(
        &self,
        run_id: i64,
        task_id: i64,
        identity_runs: &[i64],
    ) -> Result<Adopted, StoreError> {
        let mut tx = self.write().await?;
        let (prepared, moved) = prepare_in(&mut tx, run_id, Some(task_id), identity_runs).await?;
        tx.commit().await?;
        Ok(Adopted::of(task_id, &prepared, moved))
    }

    /// Every job id any run of `identity_runs` has seen for each account: tasks' job ids and the
    /// jobs `RunClusterCustomService` answers returned. Reconciliation never takes one of these
    /// for the job of a later submission (an earlier run's failed job is not this one's).
    pub async fn known_jobs(&self, identity_runs: &[i64]) -> Result<HashMap<AccountKey, HashSet<String>>, StoreError> {
        let rows = sqlx::query(
            "WITH scope(run_id) AS (SELECT value FROM json_each(?1)) \
             SELECT t.cluster, t.user, t.host, t.job_id FROM tasks t \
             WHERE t.job_id IS NOT NULL AND t.run_id IN (SELECT run_id FROM scope) \
             UNION \
             SELECT t.cluster, t.user, t.host, c.job_id FROM api_calls c JOIN tasks t ON t.id = c.task_id \
             WHERE c.job_id IS NOT NULL AND c.action = 'RunClusterCustomService' AND t.run_id IN (SELECT run_id FROM scope)",
        )
        .bind(serde_json::to_string(identity_runs).unwrap_or_else(|_| "[]".into()))
        .fetch_all(&self.reader)
        .await?;
        let mut out: HashMap<AccountKey, HashSet<String>> = HashMap::new();
        for r in rows {
            let key = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            out.entry(key).or_default().insert(r.try_get(3)?);
        }
        Ok(out)
    }

    /// How long the account's jobs took in its recent runs: the median time from submission to
    /// being seen done over the last 101 deleted tasks of `identity_runs` (`None` without any).
    /// The poll scheduler starts from it until a run has timed jobs of its own.
    pub async fn recent_job_duration(&self, identity_runs: &[i64]) -> Result<Option<std::time::Duration>, StoreError> {
        let rows: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "WITH scope(run_id) AS (SELECT value FROM json_each(?1)) \
             SELECT submitted_at, finished_at FROM tasks \
             WHERE state = 'deleted' AND submitted_at IS NOT NULL AND finished_at IS NOT NULL \
             AND run_id IN (SELECT run_id FROM scope) ORDER BY id DESC LIMIT 101",
        )
        .bind(serde_json::to_string(identity_runs).unwrap_or_else(|_| "[]".into()))
        .fetch_all(&self.reader)
        .await?;
        Ok(adoption::median(rows))
    }

    /// The tasks whose attempts a task carries on: itself and, through `adopted_from`, the
    /// tasks of earlier runs it adopted (and theirs). Their calls and job ids are its own.
    pub async fn lineage(&self, task_id: i64) -> Result<Vec<i64>, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "WITH RECURSIVE chain(id) AS (SELECT ? UNION SELECT t.adopted_from FROM tasks t JOIN chain c ON t.id = c.id \
             WHERE t.adopted_from IS NOT NULL) SELECT id FROM chain",
        )
        .bind(task_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(ids)
    }

    /// The last check before a `del_user` for `task_id` is signed: the task is still
    /// `submitting`, and no other run of `identity_runs` has done the account or holds a live
    /// attempt at it (handed-over tasks are this task's own past).
    pub async fn last_check(&self, task_id: i64, identity_runs: &[i64]) -> Result<Result<(), Refusal>, StoreError> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = ?")
            .bind(task_id)
            .fetch_optional(&self.reader)
            .await?;
        let state: TaskState = match state {
            Some(s) => s.parse().map_err(StoreError::Corrupt)?,
            None => return Err(StoreError::Corrupt(format!("task {task_id} does not exist"))),
        };
        if state != TaskState::Submitting {
            return Ok(Err(Refusal::NotOpen(state)));
        }
        // The chain, not only the row: an edited row cannot make a removed account pending again.
        let recorded: Option<i64> = sqlx::query_scalar(
            "WITH RECURSIVE chain(id) AS (SELECT ? UNION SELECT t.adopted_from FROM tasks t JOIN chain c ON t.id = c.id \
             WHERE t.adopted_from IS NOT NULL) \
             SELECT seq FROM audit_log WHERE task_id IN (SELECT id FROM chain) AND kind = 'task_state' \
             AND json_extract(detail, '$.to') IN ('deleted', 'absent') ORDER BY seq LIMIT 1",
        )
        .bind(task_id)
        .fetch_optional(&self.reader)
        .await?;
        if let Some(seq) = recorded {
            return Ok(Err(Refusal::RecordedDone { seq }));
        }
        let row = sqlx::query(&format!(
            "SELECT t.run_id, t.state FROM tasks m \
             JOIN tasks t ON t.cluster = m.cluster AND t.user = m.user AND t.host = m.host AND t.id != m.id \
             WHERE m.id = ? AND ({DONE_SQL} OR {LIVE_SQL}) AND t.run_id IN (SELECT value FROM json_each(?)) \
             ORDER BY {DONE_SQL} DESC, t.id LIMIT 1"
        ))
        .bind(task_id)
        .bind(serde_json::to_string(identity_runs).unwrap_or_else(|_| "[]".into()))
        .fetch_optional(&self.reader)
        .await?;
        let other = match row {
            None => None,
            Some(row) => {
                let state: String = row.try_get("state")?;
                Some((row.try_get("run_id")?, state.parse().map_err(StoreError::Corrupt)?))
            }
        };
        Ok(adoption::refusal(other))
    }
}

/// Prepare run `run_id` (or only its task `only`) inside the caller's write transaction: what
/// was done and the rows of the run's tasks that moved. Each adoption is applied under a
/// savepoint, all of it or none.
async fn prepare_in(
    tx: &mut sqlx::SqliteConnection,
    run_id: i64,
    only: Option<i64>,
    identity_runs: &[i64],
) -> Result<(Prepared, Vec<TaskRow>), StoreError> {
    let others: HashSet<i64> = identity_runs.iter().copied().filter(|&r| r != run_id).collect();
    let columns = TASK_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
    let rows = sqlx::query(&format!(
        "SELECT m.id AS mine, {columns} FROM tasks m \
         JOIN tasks t ON t.cluster = m.cluster AND t.user = m.user AND t.host = m.host AND t.run_id != m.run_id \
         WHERE m.run_id = ?1 AND (?2 IS NULL OR m.id = ?2) AND m.state IN ('pending', 'retry_wait') \
         AND (t.state IN ('deleted', 'absent') OR {LIVE_SQL}) \
         ORDER BY m.id, t.id"
    ))
    .bind(run_id)
    .bind(only)
    .fetch_all(&mut *tx)
    .await?;
    let mut found = Vec::with_capacity(rows.len());
    for r in &rows {
        found.push((r.try_get("mine")?, task_from_row(r)?));
    }
    if found.is_empty() {
        return Ok((Prepared::default(), Vec::new()));
    }
    let slots: Vec<(String, String, i64)> = sqlx::query_as(SLOTS_SQL).fetch_all(&mut *tx).await?;
    let (plan, deferred) = adoption::plan(run_id, &others, found, adoption::occupied(slots))?;
    let mut prepared = Prepared { deferred, ..Prepared::default() };
    let mut moved: Vec<TaskRow> = apply_transitions(&mut *tx, &plan.skips).await?.into_iter().flatten().collect();
    prepared.skipped = moved.len() as u64;
    for a in plan.adoptions {
        sqlx::query("SAVEPOINT adoption").execute(&mut *tx).await?;
        let applied = apply_transitions(&mut *tx, &a.transitions).await?;
        if applied.iter().all(Option::is_some) {
            sqlx::query("RELEASE SAVEPOINT adoption").execute(&mut *tx).await?;
            moved.extend(applied.into_iter().flatten().filter(|r| r.id == a.mine));
            prepared.adopted.push((a.mine, a.from_run));
        } else {
            sqlx::query("ROLLBACK TO SAVEPOINT adoption").execute(&mut *tx).await?;
            sqlx::query("RELEASE SAVEPOINT adoption").execute(&mut *tx).await?;
            prepared.deferred.push(a.mine);
        }
    }
    Ok((prepared, moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_one_identity_whatever_their_spelling() {
        let canonical = "https://api.qingcloud.com/iaas/";
        for e in [
            "https://api.qingcloud.com/iaas/",
            "https://api.qingcloud.com/iaas",
            "HTTPS://API.QingCloud.com/iaas",
            "https://api.qingcloud.com:443/iaas//",
            "https://api.qingcloud.com//iaas",
            " https://api.qingcloud.com/iaas/ ",
        ] {
            assert_eq!(endpoint_identity(e), canonical, "{e}");
        }
        assert_ne!(endpoint_identity("https://api.qingcloud.com:8443/iaas"), canonical);
        assert_ne!(endpoint_identity("http://api.qingcloud.com/iaas"), canonical);
        assert_eq!(endpoint_identity("http://127.0.0.1:80/iaas"), "http://127.0.0.1/iaas/");
        assert_eq!(endpoint_identity("simulator"), "simulator");
    }
}
