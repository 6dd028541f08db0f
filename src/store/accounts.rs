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

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;
use sqlx::Row;

use super::tasks::{apply_transitions, task_from_row, TASK_COLUMNS};
use super::{Store, StoreError, TaskChange, TaskRow, TaskState};
use crate::runner::state::{self, Event};

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
const LIVE_SQL: &str = "(t.state IN ('submitting', 'submitted') OR (t.state = 'failed' AND t.unresolved IS NOT NULL))";

/// Done for good: `deleted`, `absent`, or `skipped` because so. SQL over `tasks` as `t`.
const DONE_SQL: &str = "t.state IN ('deleted', 'absent', 'skipped')";

/// Is this row a live attempt (see [`LIVE_SQL`])?
fn is_live(t: &TaskRow) -> bool {
    TaskState::LIVE.contains(&t.state) || (t.state == TaskState::Failed && t.unresolved.is_some())
}

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
        let mut out: HashMap<AccountKey, Standing> = HashMap::new();
        for r in rows {
            let key = (r.try_get("cluster")?, r.try_get("user")?, r.try_get("host")?);
            let state: String = r.try_get("state")?;
            let state: TaskState = state.parse().map_err(StoreError::Corrupt)?;
            let run_id: i64 = r.try_get("run_id")?;
            let standing = if state.is_done() { Standing::Done { run_id } } else { Standing::InFlight { run_id } };
            match out.get(&key) {
                Some(Standing::Done { .. }) => {}
                _ => {
                    out.insert(key, standing);
                }
            }
        }
        Ok(out)
    }

    /// Before a run's work starts (it holds the run lock, so no other run of this database is
    /// alive): its open tasks whose account another run of `identity_runs` has done become
    /// `skipped`; a live attempt of another run at one of its accounts is adopted — the other
    /// task becomes `handed_over`, this one takes its state, intent, job and attempts — so it is
    /// reconciled or followed and never sent again blindly. All in one transaction, audited in
    /// both runs.
    pub async fn prepare_run(&self, run_id: i64, identity_runs: &[i64]) -> Result<Prepared, StoreError> {
        let others: HashSet<i64> = identity_runs.iter().copied().filter(|&r| r != run_id).collect();
        let mut tx = self.write().await?;
        let columns = TASK_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ");
        let columns = columns.replace("o.", "t.");
        let rows = sqlx::query(&format!(
            "SELECT m.id AS mine, m.state AS mine_state, {columns} FROM tasks m \
             JOIN tasks t ON t.cluster = m.cluster AND t.user = m.user AND t.host = m.host AND t.run_id != m.run_id \
             WHERE m.run_id = ? AND m.state IN ('pending', 'retry_wait') \
             AND (t.state IN ('deleted', 'absent') OR {LIVE_SQL}) \
             ORDER BY m.id, t.id"
        ))
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await?;
        // Per task of this run: the other runs' tasks at its account, oldest first.
        let mut by_mine: BTreeMap<i64, Vec<TaskRow>> = BTreeMap::new();
        for r in &rows {
            let other = task_from_row(r)?;
            if others.contains(&other.run_id) {
                by_mine.entry(r.try_get("mine")?).or_default().push(other);
            }
        }
        let mut prepared = Prepared::default();
        let mut transitions = Vec::new();
        for (mine, found) in by_mine {
            let open = [TaskState::Pending, TaskState::RetryWait];
            if let Some(done) = found.iter().find(|o| o.state.is_done()) {
                transitions.push(state::transition(
                    mine,
                    &open,
                    Event::DoneElsewhere,
                    TaskChange::new().message(format!("already done by run {}", done.run_id)),
                    json!({ "reason": "done by another run", "by_run": done.run_id, "by_task": done.id }),
                )?);
                prepared.skipped += 1;
                continue;
            }
            // The newest live attempt is adopted; older live ones (a database written before this
            // rule existed) are handed over too, their jobs known to the adopting task.
            let found: Vec<&TaskRow> = found.iter().filter(|o| is_live(o)).collect();
            let Some(newest) = found.iter().copied().max_by_key(|o| (o.intent_at, o.id)) else { continue };
            for o in &found {
                transitions.push(state::from_any(
                    o.id,
                    Event::HandOver,
                    TaskChange::new().message(format!("handed over to run {run_id}")),
                    json!({ "reason": "adopted by a later run", "to_run": run_id, "to_task": mine }),
                ));
            }
            let mut change = TaskChange::new().attempts(newest.attempts).adopted_from(newest.id);
            if let Some(t) = newest.intent_at {
                change = change.intent_at(t);
            }
            if let Some(j) = &newest.job_id {
                change = change.job_id(j.clone());
            }
            if let Some(t) = newest.submitted_at {
                change = change.submitted_at(t);
            }
            // A failed attempt whose job may still take effect is followed again (`job`) or
            // reconciled again (`in_doubt`); a live one continues as it was.
            let adopt = match (newest.state, newest.unresolved.as_deref()) {
                (TaskState::Failed, Some("job")) if newest.job_id.is_some() => Event::AdoptJob,
                (TaskState::Failed | TaskState::Submitting, _) => Event::AdoptInDoubt,
                _ => Event::AdoptJob,
            };
            if adopt == Event::AdoptInDoubt && newest.state == TaskState::Failed {
                // The stale job id of an earlier attempt must not be followed as this one's.
                change.job_id = None;
                change.submitted_at = None;
            }
            transitions.push(state::transition(
                mine,
                &open,
                adopt,
                change,
                json!({
                    "reason": "adopted the live attempt of an earlier run",
                    "from_run": newest.run_id,
                    "from_task": newest.id,
                    "handed_over": found.iter().map(|o| o.id).collect::<Vec<_>>(),
                }),
            )?);
            prepared.adopted.push((mine, newest.run_id));
        }
        apply_transitions(&mut tx, &transitions).await?;
        tx.commit().await?;
        Ok(prepared)
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
        let mut took: Vec<std::time::Duration> =
            rows.into_iter().filter_map(|(from, to)| (to - from).to_std().ok()).collect();
        if took.is_empty() {
            return Ok(None);
        }
        took.sort_unstable();
        Ok(Some(took[took.len() / 2]))
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
        let Some(row) = row else { return Ok(Ok(())) };
        let run_id: i64 = row.try_get("run_id")?;
        let other: String = row.try_get("state")?;
        let other: TaskState = other.parse().map_err(StoreError::Corrupt)?;
        Ok(Err(if other.is_done() { Refusal::DoneElsewhere { run_id } } else { Refusal::InFlightElsewhere { run_id } }))
    }
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
