//! The account across runs on PostgreSQL (SPEC §8), as the SQLite store asks it: the runs of
//! an identity, where each account stands, preparing a run (skipping what another run did,
//! adopting another run's live attempt), the jobs known per account, recent job durations, a
//! task's lineage and the last check before a request is signed. The decisions are
//! `store::adoption`'s, shared with SQLite; this module holds the SQL only.
//!
//! The SQLite store's `prepare_run` reads and writes inside one `BEGIN IMMEDIATE`. Here it
//! locks every row it reads (`FOR UPDATE` of this run's open tasks and of the other runs' tasks
//! at their accounts) before planning, so no other host moves them until it commits; the
//! transitions then take the audit chain's lock as every step does (`steps`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::lease::Lease;
use super::runs::{task_from_row, TASK_COLUMNS};
use super::steps::apply_transitions;
use super::write::ONE_JOB_PER_CLUSTER;
use super::PgStore;
use crate::store::accounts::{DONE_SQL, LIVE_SQL, SLOTS_SQL};
use crate::store::adoption;
use crate::store::{
    endpoint_identity, AccountKey, Adopted, Prepared, Refusal, Standing, StoreError, TaskRow, TaskState,
};

/// The tasks a task carries on, `$1` and its `adopted_from` ancestors, as the CTE `chain(id)`.
const LINEAGE: &str = "WITH RECURSIVE chain(id) AS (SELECT $1::bigint UNION SELECT t.adopted_from FROM tasks t \
                       JOIN chain c ON t.id = c.id WHERE t.adopted_from IS NOT NULL)";

impl PgStore {
    /// The runs made against this endpoint identity with this access key.
    pub async fn identity_runs(&self, endpoint: &str, access_key_id: &str) -> Result<Vec<i64>, StoreError> {
        let want = endpoint_identity(endpoint);
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, endpoint FROM runs WHERE access_key_id = $1 ORDER BY id")
                .bind(access_key_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().filter(|(_, e)| endpoint_identity(e) == want).map(|(id, _)| id).collect())
    }

    /// Accounts done against this endpoint identity with this access key.
    pub async fn done_keys(&self, endpoint: &str, access_key_id: &str) -> Result<HashSet<AccountKey>, StoreError> {
        Ok(self
            .standings(endpoint, access_key_id)
            .await?
            .into_iter()
            .filter(|(_, s)| matches!(s, Standing::Done { .. }))
            .map(|(k, _)| k)
            .collect())
    }

    /// Every account with a standing (done, or in flight) in the runs of this identity.
    pub async fn standings(
        &self,
        endpoint: &str,
        access_key_id: &str,
    ) -> Result<HashMap<AccountKey, Standing>, StoreError> {
        let runs = self.identity_runs(endpoint, access_key_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT t.run_id, t.cluster, t.\"user\", t.host, t.state FROM tasks t \
             WHERE ({DONE_SQL} OR {LIVE_SQL}) AND t.run_id = ANY($1) ORDER BY t.id"
        ))
        .bind(&runs)
        .fetch_all(&self.pool)
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in rows {
            let key = (r.try_get("cluster")?, r.try_get("user")?, r.try_get("host")?);
            let state: String = r.try_get("state")?;
            found.push((key, r.try_get("run_id")?, state.parse().map_err(StoreError::Corrupt)?));
        }
        Ok(adoption::standings(found))
    }

    /// Before a run's work starts: its open tasks done by another run of `identity_runs` become
    /// `skipped`, and another run's live attempt at one of its accounts is adopted (or, when its
    /// cluster's job slot is taken, deferred). All in one transaction, audited in both runs.
    pub async fn prepare_run(&self, run_id: i64, identity_runs: &[i64]) -> Result<Prepared, StoreError> {
        let mut tx = self.write().await?;
        let (prepared, _) = prepare_in(&mut tx, run_id, None, identity_runs, &[]).await?;
        tx.commit().await?;
        Ok(prepared)
    }

    /// The deferred adoption of one task, when the run hands it out: [`PgStore::prepare_run`]
    /// for that task alone. With `fence`, the task is written only while that lease is still
    /// the holder's ([`Adopted::NotHeld`] otherwise); without, only while no host holds it.
    pub async fn adopt_deferred(
        &self,
        run_id: i64,
        task_id: i64,
        identity_runs: &[i64],
        fence: Option<&Lease>,
    ) -> Result<Adopted, StoreError> {
        let mut tx = self.write().await?;
        let fenced = match fence {
            None => Vec::new(),
            Some(lease) => {
                let held: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM tasks WHERE id = $1 AND owner = $2 AND epoch = $3 \
                     AND lease_until > clock_timestamp() FOR UPDATE",
                )
                .bind(lease.task_id)
                .bind(&lease.owner)
                .bind(lease.epoch)
                .fetch_optional(&mut *tx)
                .await?;
                if held != Some(task_id) {
                    return Ok(Adopted::NotHeld);
                }
                vec![task_id]
            }
        };
        let (prepared, moved) = prepare_in(&mut tx, run_id, Some(task_id), identity_runs, &fenced).await?;
        tx.commit().await?;
        Ok(Adopted::of(task_id, &prepared, moved))
    }

    /// Every job id any run of `identity_runs` has seen for each account: tasks' job ids and the
    /// jobs `RunClusterCustomService` answers returned.
    pub async fn known_jobs(&self, identity_runs: &[i64]) -> Result<HashMap<AccountKey, HashSet<String>>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.cluster, t.\"user\", t.host, t.job_id FROM tasks t \
             WHERE t.job_id IS NOT NULL AND t.run_id = ANY($1) \
             UNION \
             SELECT t.cluster, t.\"user\", t.host, c.job_id FROM api_calls c JOIN tasks t ON t.id = c.task_id \
             WHERE c.job_id IS NOT NULL AND c.action = 'RunClusterCustomService' AND t.run_id = ANY($1)",
        )
        .bind(identity_runs)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<AccountKey, HashSet<String>> = HashMap::new();
        for r in rows {
            let key = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            out.entry(key).or_default().insert(r.try_get(3)?);
        }
        Ok(out)
    }

    /// The median time from submission to being seen done over the last 101 deleted tasks of
    /// `identity_runs` (`None` without any).
    pub async fn recent_job_duration(&self, identity_runs: &[i64]) -> Result<Option<Duration>, StoreError> {
        let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT submitted_at, finished_at FROM tasks \
             WHERE state = 'deleted' AND submitted_at IS NOT NULL AND finished_at IS NOT NULL \
             AND run_id = ANY($1) ORDER BY id DESC LIMIT 101",
        )
        .bind(identity_runs)
        .fetch_all(&self.pool)
        .await?;
        Ok(adoption::median(rows))
    }

    /// The tasks whose attempts a task carries on: itself and, through `adopted_from`, the
    /// tasks of earlier runs it adopted (and theirs).
    pub async fn lineage(&self, task_id: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(&format!("{LINEAGE} SELECT id FROM chain")).bind(task_id).fetch_all(&self.pool).await?)
    }

    /// The last check before a `del_user` for `task_id` is signed: the task is still
    /// `submitting`, the chain does not record it (or one it adopted) as done, and no other run
    /// of `identity_runs` has done the account or holds a live attempt at it.
    pub async fn last_check(&self, task_id: i64, identity_runs: &[i64]) -> Result<Result<(), Refusal>, StoreError> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        let state: TaskState = match state {
            Some(s) => s.parse().map_err(StoreError::Corrupt)?,
            None => return Err(StoreError::Corrupt(format!("task {task_id} does not exist"))),
        };
        if state != TaskState::Submitting {
            return Ok(Err(Refusal::NotOpen(state)));
        }
        // The chain, not only the row: an edited row cannot make a removed account pending again.
        let recorded: Option<i64> = sqlx::query_scalar(&format!(
            "{LINEAGE} SELECT seq FROM audit_log WHERE task_id IN (SELECT id FROM chain) AND kind = 'task_state' \
             AND (detail::json ->> 'to') IN ('deleted', 'absent') ORDER BY seq LIMIT 1"
        ))
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(seq) = recorded {
            return Ok(Err(Refusal::RecordedDone { seq }));
        }
        let row = sqlx::query(&format!(
            "SELECT t.run_id, t.state FROM tasks m \
             JOIN tasks t ON t.cluster = m.cluster AND t.\"user\" = m.\"user\" AND t.host = m.host AND t.id != m.id \
             WHERE m.id = $1 AND ({DONE_SQL} OR {LIVE_SQL}) AND t.run_id = ANY($2) \
             ORDER BY ({DONE_SQL}) DESC, t.id LIMIT 1"
        ))
        .bind(task_id)
        .bind(identity_runs)
        .fetch_optional(&self.pool)
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

/// Prepare run `run_id` (or only its task `only`) inside the caller's transaction: what was
/// done and the rows of the run's tasks that moved. Every row read is locked first (`FOR
/// UPDATE` of this run's open tasks and of the other runs' tasks at their accounts), so no other
/// host moves them until the caller commits. Each adoption is applied under a savepoint, all of
/// it or none: one the one-job-per-cluster index refuses (a slot taken since the count), or
/// whose task another host holds, waits (`deferred`).
async fn prepare_in(
    tx: &mut sqlx::PgConnection,
    run_id: i64,
    only: Option<i64>,
    identity_runs: &[i64],
    fenced: &[i64],
) -> Result<(Prepared, Vec<TaskRow>), StoreError> {
    let others: HashSet<i64> = identity_runs.iter().copied().filter(|&r| r != run_id).collect();
    let columns = TASK_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
    let rows = sqlx::query(&format!(
        "SELECT m.id AS mine, {columns} FROM tasks m \
         JOIN tasks t ON t.cluster = m.cluster AND t.\"user\" = m.\"user\" AND t.host = m.host \
           AND t.run_id != m.run_id \
         WHERE m.run_id = $1 AND ($2::bigint IS NULL OR m.id = $2) AND m.state IN ('pending', 'retry_wait') \
         AND (t.state IN ('deleted', 'absent') OR {LIVE_SQL}) \
         ORDER BY m.id, t.id FOR UPDATE OF m, t"
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
    let mut moved: Vec<TaskRow> =
        apply_transitions(&mut *tx, &plan.skips, fenced).await?.into_iter().flatten().collect();
    prepared.skipped = moved.len() as u64;
    for a in plan.adoptions {
        sqlx::query("SAVEPOINT adoption").execute(&mut *tx).await?;
        let applied = match apply_transitions(&mut *tx, &a.transitions, fenced).await {
            Err(StoreError::Sql(sqlx::Error::Database(e))) if e.constraint() == Some(ONE_JOB_PER_CLUSTER) => None,
            other => Some(other?),
        };
        match applied {
            Some(applied) if applied.iter().all(Option::is_some) => {
                sqlx::query("RELEASE SAVEPOINT adoption").execute(&mut *tx).await?;
                moved.extend(applied.into_iter().flatten().filter(|r| r.id == a.mine));
                prepared.adopted.push((a.mine, a.from_run));
            }
            _ => {
                sqlx::query("ROLLBACK TO SAVEPOINT adoption").execute(&mut *tx).await?;
                sqlx::query("RELEASE SAVEPOINT adoption").execute(&mut *tx).await?;
                prepared.deferred.push(a.mine);
            }
        }
    }
    Ok((prepared, moved))
}
