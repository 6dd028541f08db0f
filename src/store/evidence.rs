//! The questions an auditor asks of the database, beyond the report's rows: which API calls
//! stand behind a task, which audit records describe it, and how a run did against its
//! deadlines.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{ts, ApiCallRow, Store, StoreError};

/// An API call recorded for a task: its row id, the task it was recorded for (`None` for a
/// `DescribeJobs` round that asked about the task's job among others), and the call.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCall {
    pub id: i64,
    pub recorded_for: Option<i64>,
    pub call: ApiCallRow,
}

/// The audit records about one task or run: the first and last `seq`, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeqRange {
    pub first: i64,
    pub last: i64,
    pub records: i64,
}

/// Tasks of a run by how they stand against their `due_by` at some instant. The rules are
/// those of `report::is_late`, written in SQL so `status` can count millions of tasks without
/// reading them (a test checks that both agree):
/// - `late`: a `deleted` task that finished after `due_by`; a `failed`, `not_due` or
///   in-progress task whose `due_by` has passed;
/// - `on_time`: a `deleted` task that finished by `due_by`, or a `skipped` one;
/// - `open`: not finished yet (or `failed`), with `due_by` still ahead;
/// - `no_deadline`: no `due_by`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeadlineCounts {
    pub on_time: i64,
    pub late: i64,
    pub open: i64,
    pub no_deadline: i64,
}

/// A JSON array of ids, bound as one parameter and read with `json_each` (no limit on how many).
fn id_list(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("integers are JSON")
}

impl Store {
    /// For each task, the API calls behind it, oldest first: those recorded for it (its
    /// submissions, reconciliation lookups), and the `DescribeJobs` calls of its run that asked
    /// about one of its job ids (`jobs.N`).
    pub async fn task_calls(&self, task_ids: &[i64]) -> Result<HashMap<i64, Vec<TaskCall>>, StoreError> {
        if task_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "WITH wanted(id) AS (SELECT value FROM json_each(?1)), \
             runs_of(run_id) AS (SELECT DISTINCT run_id FROM tasks WHERE id IN (SELECT id FROM wanted)), \
             task_jobs(task_id, job_id) AS ( \
                 SELECT id, job_id FROM tasks WHERE id IN (SELECT id FROM wanted) AND job_id IS NOT NULL \
                 UNION \
                 SELECT task_id, job_id FROM api_calls \
                 WHERE run_id IN (SELECT run_id FROM runs_of) AND task_id IN (SELECT id FROM wanted) \
                 AND job_id IS NOT NULL) \
             SELECT c.task_id AS for_task, c.task_id AS recorded_for, c.id, c.action, c.params, c.http_status, \
                    c.ret_code, c.message, c.job_id, c.started_at, c.latency_ms \
             FROM api_calls c \
             WHERE c.run_id IN (SELECT run_id FROM runs_of) AND c.task_id IN (SELECT id FROM wanted) \
             UNION \
             SELECT tj.task_id, NULL, c.id, c.action, c.params, c.http_status, c.ret_code, c.message, c.job_id, \
                    c.started_at, c.latency_ms \
             FROM api_calls c, json_each(c.params) p, task_jobs tj \
             WHERE c.run_id IN (SELECT run_id FROM runs_of) AND c.task_id IS NULL AND c.action = 'DescribeJobs' \
             AND json_valid(c.params) AND p.key LIKE 'jobs.%' AND p.value = tj.job_id \
             ORDER BY 1, 3",
        )
        .bind(id_list(task_ids))
        .fetch_all(&self.reader)
        .await?;
        let mut out: HashMap<i64, Vec<TaskCall>> = HashMap::new();
        for r in rows {
            let call = TaskCall {
                id: r.try_get("id")?,
                recorded_for: r.try_get("recorded_for")?,
                call: ApiCallRow::from_row(&r)?,
            };
            out.entry(r.try_get("for_task")?).or_default().push(call);
        }
        Ok(out)
    }

    /// For each task, the range of audit records naming it.
    pub async fn task_audit_ranges(&self, task_ids: &[i64]) -> Result<HashMap<i64, SeqRange>, StoreError> {
        self.audit_ranges("task_id", task_ids).await
    }

    /// For each run, the range of audit records naming it (its tasks' records included).
    pub async fn run_audit_ranges(&self, run_ids: &[i64]) -> Result<HashMap<i64, SeqRange>, StoreError> {
        self.audit_ranges("run_id", run_ids).await
    }

    async fn audit_ranges(&self, column: &'static str, ids: &[i64]) -> Result<HashMap<i64, SeqRange>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {column} AS id, MIN(seq) AS first, MAX(seq) AS last, COUNT(*) AS n FROM audit_log \
             WHERE {column} IN (SELECT value FROM json_each(?)) GROUP BY {column}"
        ))
        .bind(id_list(ids))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    SeqRange { first: r.try_get("first")?, last: r.try_get("last")?, records: r.try_get("n")? },
                ))
            })
            .collect()
    }

    /// Deadline counts per run (every run, or only `run_id`) as they stand at `now`.
    pub async fn deadline_counts(
        &self,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<i64, DeadlineCounts>, StoreError> {
        // Times are fixed-width text, so text comparison is time comparison.
        let rows = sqlx::query(
            "SELECT run_id, \
               SUM(due_by IS NOT NULL AND ((state = 'deleted' AND COALESCE(finished_at, updated_at) <= due_by) \
                   OR state = 'skipped')) AS on_time, \
               SUM(due_by IS NOT NULL AND ((state = 'deleted' AND COALESCE(finished_at, updated_at) > due_by) \
                   OR (state NOT IN ('deleted', 'skipped') AND ?2 > due_by))) AS late, \
               SUM(due_by IS NOT NULL AND state NOT IN ('deleted', 'skipped') AND ?2 <= due_by) AS open, \
               SUM(due_by IS NULL) AS no_deadline \
             FROM tasks WHERE ?1 IS NULL OR run_id = ?1 GROUP BY run_id",
        )
        .bind(run_id)
        .bind(ts(now))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("run_id")?,
                    DeadlineCounts {
                        on_time: r.try_get("on_time")?,
                        late: r.try_get("late")?,
                        open: r.try_get("open")?,
                        no_deadline: r.try_get("no_deadline")?,
                    },
                ))
            })
            .collect()
    }
}
