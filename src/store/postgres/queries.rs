//! The questions asked about runs on PostgreSQL, as the SQLite store answers them: a run and
//! its manifests, all runs, the newest unfinished one, task counts by state, the failed tasks a
//! `retry` takes, and the rows `report` shows. Reads only, each one statement (or one per
//! table) on the pool; nothing here writes or decides.

use crate::store::rows::RUN_COLUMNS;
use std::collections::{BTreeMap, HashMap};

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::runs::{task_from_row, TASK_COLUMNS};
use super::PgStore;
use crate::store::{ReportFilter, RunRow, StoreError, TaskRow, TaskState};

impl PgStore {
    pub async fn run(&self, run_id: i64) -> Result<Option<RunRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
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
            sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC")).fetch_all(&self.pool).await?;
        let mut manifests = self.manifests(None).await?;
        rows.iter()
            .map(|row| {
                let mut run = run_from_row(row)?;
                run.manifests = manifests.remove(&run.id).unwrap_or_default();
                Ok(run)
            })
            .collect()
    }

    /// The newest run that has not finished or that still has tasks with work to do: what
    /// `resume` continues by default.
    pub async fn newest_unfinished_run(&self) -> Result<Option<RunRow>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM runs r WHERE finished_at IS NULL \
             OR EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.id AND t.state IN {}) \
             ORDER BY id DESC LIMIT 1",
            TaskState::sql_list(&TaskState::OPEN)
        ))
        .fetch_optional(&self.pool)
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
            "SELECT run_id, state, COUNT(*) AS n FROM tasks WHERE $1::bigint IS NULL OR run_id = $1 \
             GROUP BY run_id, state",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
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
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = $1 AND state = 'failed' ORDER BY id"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The tasks `report` shows, with their run's ticket, ordered by run and creation.
    pub async fn report_tasks(&self, filter: &ReportFilter) -> Result<Vec<(TaskRow, Option<String>)>, StoreError> {
        let columns = TASK_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns}, r.ticket AS run_ticket FROM tasks t JOIN runs r ON r.id = t.run_id \
             WHERE ($1::bigint IS NULL OR t.run_id = $1) AND ($2::text IS NULL OR t.\"user\" = $2) \
             AND ($3::text IS NULL OR t.cluster = $3) \
             AND ($4::timestamptz IS NULL OR COALESCE(t.started_at, r.started_at) >= $4) \
             ORDER BY t.run_id, t.id"
        ))
        .bind(filter.run_id)
        .bind(&filter.user)
        .bind(&filter.cluster)
        .bind(filter.since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((task_from_row(r)?, r.try_get("run_ticket")?))).collect()
    }

    async fn manifests(&self, run_id: Option<i64>) -> Result<HashMap<i64, Vec<(String, String)>>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, path, sha256 FROM run_manifests WHERE $1::bigint IS NULL OR run_id = $1 \
             ORDER BY run_id, ord",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<i64, Vec<(String, String)>> = HashMap::new();
        for r in rows {
            out.entry(r.try_get(0)?).or_default().push((r.try_get(1)?, r.try_get(2)?));
        }
        Ok(out)
    }
}

fn run_from_row(row: &PgRow) -> Result<RunRow, StoreError> {
    crate::store::rows::run_row_from!(row)
}
