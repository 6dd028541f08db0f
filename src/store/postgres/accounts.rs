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

use super::runs::{task_from_row, TASK_COLUMNS};
use super::steps::apply_transitions;
use super::PgStore;
use crate::store::accounts::{DONE_SQL, LIVE_SQL};
use crate::store::adoption;
use crate::store::{endpoint_identity, AccountKey, Prepared, Refusal, Standing, StoreError, TaskState};

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
    /// `skipped`, and another run's live attempt at one of its accounts is adopted. All in one
    /// transaction, audited in both runs.
    pub async fn prepare_run(&self, run_id: i64, identity_runs: &[i64]) -> Result<Prepared, StoreError> {
        let others: HashSet<i64> = identity_runs.iter().copied().filter(|&r| r != run_id).collect();
        let mut tx = self.write().await?;
        let columns = TASK_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(&format!(
            "SELECT m.id AS mine, {columns} FROM tasks m \
             JOIN tasks t ON t.cluster = m.cluster AND t.\"user\" = m.\"user\" AND t.host = m.host \
               AND t.run_id != m.run_id \
             WHERE m.run_id = $1 AND m.state IN ('pending', 'retry_wait') \
             AND (t.state IN ('deleted', 'absent') OR {LIVE_SQL}) \
             ORDER BY m.id, t.id FOR UPDATE OF m, t"
        ))
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in &rows {
            found.push((r.try_get("mine")?, task_from_row(r)?));
        }
        let (prepared, transitions) = adoption::plan(run_id, &others, found)?;
        apply_transitions(&mut tx, &transitions).await?;
        tx.commit().await?;
        Ok(prepared)
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
