//! Runs: creating one with all its tasks, finishing it, and the questions asked about runs
//! (the newest unfinished one, counts by state, work already done, the report's rows).

use crate::store::rows::RUN_COLUMNS;
use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::audit::{self, run_ticket, with_ticket, Entry};
use super::details;
use super::lock::{self, lock_in};
use super::tasks::{task_from_row, TASK_COLUMNS};
use super::{opt_ts, ts, LockOutcome, NewRun, NewTask, ReportFilter, RunRow, Store, StoreError, TaskRow, TaskState};

/// Task rows per multi-row INSERT (10 parameters each).
const TASK_CHUNK: usize = 500;

impl Store {
    /// Record a run, all its tasks and their audit records in one transaction. Returns the run id.
    ///
    /// The audit log gets one `run_started` record with the run's metadata (manifests and their
    /// SHA-256, ticket, requester, reason, due_by, operator, host, endpoint, access key id,
    /// options) and one `task_created` record per task.
    pub async fn create_run(&self, run: &NewRun, tasks: &[NewTask]) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let run_id = insert_run(&mut tx, run, tasks).await?;
        tx.commit().await?;
        Ok(run_id)
    }

    /// Record a run and take the run lock for it in one transaction (so no other process can
    /// slip in between). When another live run holds the lock, the run is recorded without its
    /// tasks, finished with exit code 73 and audited as refused: nothing a later `resume` would
    /// pick up, and the refusal itself is on record.
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
            let summary = lock::refused(holder);
            close_run(&mut tx, run_id, 73, &summary).await?;
            tx.commit().await?;
            return Ok((run_id, outcome));
        }
        tx.commit().await?;
        Ok((run_id, outcome))
    }
}

/// Insert a run with its manifests and tasks and their audit records; the caller commits.
async fn insert_run(tx: &mut SqliteConnection, run: &NewRun, tasks: &[NewTask]) -> Result<i64, StoreError> {
    {
        let started_at = Utc::now();
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (started_at, ticket, requested_by, reason, due_by, operator, host, endpoint, \
             access_key_id, options, retry_of, simulated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
        )
        .bind(ts(started_at))
        .bind(&run.ticket)
        .bind(&run.requested_by)
        .bind(&run.reason)
        .bind(opt_ts(run.due_by))
        .bind(&run.operator)
        .bind(&run.host)
        .bind(&run.endpoint)
        .bind(&run.access_key_id)
        .bind(run.options.to_string())
        .bind(run.retry_of)
        .bind(run.simulated)
        .fetch_one(&mut *tx)
        .await?;
        for (ord, (path, sha256)) in run.manifests.iter().enumerate() {
            sqlx::query("INSERT INTO run_manifests (run_id, ord, path, sha256) VALUES (?,?,?,?)")
                .bind(run_id)
                .bind(ord as i64)
                .bind(path)
                .bind(sha256)
                .execute(&mut *tx)
                .await?;
        }

        let mut entries = Vec::with_capacity(tasks.len() + 1);
        let started = details::run_started(run, tasks);
        entries.push(Entry::new(Some(run_id), None, "run_started", &started));

        // Ids are assigned here (inside the write lock) so that the audit records can name them
        // without a round trip per task.
        let first_id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM tasks").fetch_one(&mut *tx).await?;
        let now = ts(started_at);
        for (chunk_no, chunk) in tasks.chunks(TASK_CHUNK).enumerate() {
            let mut sql = String::from(
                "INSERT INTO tasks (id, run_id, cluster, zone, user, host, state, not_before, due_by, \
                 updated_at) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "(?,?,?,?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?,?,?,?)" });
            }
            let mut q = sqlx::query(&sql);
            for (i, t) in chunk.iter().enumerate() {
                let id = first_id + (chunk_no * TASK_CHUNK + i) as i64;
                q = q
                    .bind(id)
                    .bind(run_id)
                    .bind(&t.cluster)
                    .bind(&t.zone)
                    .bind(&t.user)
                    .bind(&t.host)
                    .bind(t.state.as_str())
                    .bind(t.not_before.map(|d| d.format("%F").to_string()))
                    .bind(opt_ts(t.due_by))
                    .bind(&now);
                let detail = details::task_created(t, run.ticket.as_deref());
                entries.push(Entry::new(Some(run_id), Some(id), "task_created", &detail));
            }
            q.execute(&mut *tx).await?;
        }
        audit::append(&mut *tx, &entries).await?;
        Ok(run_id)
    }
}

impl Store {
    /// Close a run: its end time, exit code and summary, audited as `run_finished`.
    pub async fn finish_run(&self, run_id: i64, exit_code: i64, summary: serde_json::Value) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        close_run(&mut tx, run_id, exit_code, &summary).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Several audit records of one `kind` for one run, in one transaction: (task, detail) each.
    /// The run's ticket is added to each detail.
    pub async fn audit_events(
        &self,
        run_id: i64,
        kind: &'static str,
        events: &[(Option<i64>, serde_json::Value)],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        let ticket = run_ticket(&mut tx, run_id).await?;
        let entries: Vec<Entry> = events
            .iter()
            .map(|(task_id, detail)| {
                Entry::new(Some(run_id), *task_id, kind, &with_ticket(detail.clone(), ticket.as_deref()))
            })
            .collect();
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record a notable event (lock taken over, rate lowered after 2500, reconciliation found or
    /// did not find a job…). The run's ticket is added to `detail`.
    pub async fn audit_event(
        &self,
        run_id: Option<i64>,
        task_id: Option<i64>,
        kind: &'static str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let ticket = match run_id {
            Some(id) => run_ticket(&mut tx, id).await?,
            None => None,
        };
        audit::append(&mut tx, &[Entry::new(run_id, task_id, kind, &with_ticket(detail, ticket.as_deref()))]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn run(&self, run_id: i64) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let mut run = run_from_row(&row)?;
                run.manifests = self.manifests(Some(run_id)).await?.remove(&run_id).unwrap_or_default();
                Ok(Some(run))
            }
        }
    }

    /// All runs, newest first.
    pub async fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let rows =
            sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC")).fetch_all(&self.reader).await?;
        let mut manifests = self.manifests(None).await?;
        rows.iter()
            .map(|row| {
                let mut run = run_from_row(row)?;
                run.manifests = manifests.remove(&run.id).unwrap_or_default();
                Ok(run)
            })
            .collect()
    }

    /// The newest run that has not finished (`finish_run` never called) or that still has tasks
    /// with work to do (`pending`, `submitting`, `submitted`, `retry_wait`): what `resume`
    /// continues by default.
    pub async fn newest_unfinished_run(&self) -> Result<Option<RunRow>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM runs r WHERE finished_at IS NULL \
             OR EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.id AND t.state IN {}) \
             ORDER BY id DESC LIMIT 1",
            TaskState::sql_list(&TaskState::OPEN)
        ))
        .fetch_optional(&self.reader)
        .await?;
        match id {
            Some(id) => self.run(id).await,
            None => Ok(None),
        }
    }

    /// Task counts by state for one run (states without tasks are absent).
    pub async fn counts(&self, run_id: i64) -> Result<BTreeMap<TaskState, i64>, StoreError> {
        Ok(self.counts_where(Some(run_id)).await?.remove(&run_id).unwrap_or_default())
    }

    /// Task counts by state for every run.
    pub async fn counts_by_run(&self) -> Result<HashMap<i64, BTreeMap<TaskState, i64>>, StoreError> {
        self.counts_where(None).await
    }

    async fn counts_where(&self, run_id: Option<i64>) -> Result<HashMap<i64, BTreeMap<TaskState, i64>>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, state, COUNT(*) AS n FROM tasks WHERE ?1 IS NULL OR run_id = ?1 GROUP BY run_id, state",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?;
        let mut out: HashMap<i64, BTreeMap<TaskState, i64>> = HashMap::new();
        for row in rows {
            let state: String = row.try_get("state")?;
            let state = state.parse().map_err(StoreError::Corrupt)?;
            out.entry(row.try_get("run_id")?).or_default().insert(state, row.try_get("n")?);
        }
        Ok(out)
    }

    /// The tasks of a run that ended `failed`, for `retry`.
    pub async fn failed_tasks(&self, run_id: i64) -> Result<Vec<TaskRow>, StoreError> {
        let rows =
            sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ? AND state = 'failed' ORDER BY id"))
                .bind(run_id)
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The tasks `report` shows, with their run's ticket, ordered by run and creation.
    pub async fn report_tasks(&self, filter: &ReportFilter) -> Result<Vec<(TaskRow, Option<String>)>, StoreError> {
        let columns = TASK_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns}, r.ticket AS run_ticket FROM tasks t JOIN runs r ON r.id = t.run_id \
             WHERE (?1 IS NULL OR t.run_id = ?1) AND (?2 IS NULL OR t.user = ?2) \
             AND (?3 IS NULL OR t.cluster = ?3) AND (?4 IS NULL OR COALESCE(t.started_at, r.started_at) >= ?4) \
             ORDER BY t.run_id, t.id"
        ))
        .bind(filter.run_id)
        .bind(&filter.user)
        .bind(&filter.cluster)
        .bind(opt_ts(filter.since))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok((task_from_row(r)?, r.try_get("run_ticket")?))).collect()
    }

    async fn manifests(&self, run_id: Option<i64>) -> Result<HashMap<i64, Vec<(String, String)>>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, path, sha256 FROM run_manifests WHERE ?1 IS NULL OR run_id = ?1 ORDER BY run_id, ord",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?;
        let mut out: HashMap<i64, Vec<(String, String)>> = HashMap::new();
        for r in rows {
            out.entry(r.try_get(0)?).or_default().push((r.try_get(1)?, r.try_get(2)?));
        }
        Ok(out)
    }
}

/// Set a run's end, exit code and summary, audited as `run_finished`; the caller commits.
async fn close_run(
    tx: &mut SqliteConnection,
    run_id: i64,
    exit_code: i64,
    summary: &serde_json::Value,
) -> Result<(), StoreError> {
    let ticket: Option<Option<String>> =
        sqlx::query_scalar("UPDATE runs SET finished_at = ?, exit_code = ?, summary = ? WHERE id = ? RETURNING ticket")
            .bind(ts(Utc::now()))
            .bind(exit_code)
            .bind(summary.to_string())
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(ticket) = ticket else { return Err(StoreError::NoSuchRun(run_id)) };
    let detail = details::run_finished(exit_code, summary, ticket.as_deref());
    audit::append(&mut *tx, &[Entry::new(Some(run_id), None, "run_finished", &detail)]).await?;
    Ok(())
}

fn run_from_row(row: &SqliteRow) -> Result<RunRow, StoreError> {
    super::rows::run_row_from!(row)
}
