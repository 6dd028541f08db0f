//! The questions an auditor asks on PostgreSQL, as the SQLite store answers them: the API calls
//! behind each task, the range of audit records naming a task or run, and how runs stand against
//! their deadlines. Reads only; nothing here writes or decides.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::calls::call_from_row;
use super::PgStore;
use crate::store::{DeadlineCounts, SeqRange, StoreError, TaskCall};

impl PgStore {
    /// For each task, the API calls behind it, oldest first: those recorded for it, and the
    /// `DescribeJobs` calls of its run that asked about one of its job ids (`jobs.N`).
    pub async fn task_calls(&self, task_ids: &[i64]) -> Result<HashMap<i64, Vec<TaskCall>>, StoreError> {
        if task_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "WITH wanted(id) AS (SELECT unnest($1::bigint[])), \
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
             FROM api_calls c \
             CROSS JOIN LATERAL jsonb_each_text(CASE WHEN jsonb_typeof(json_or_null(c.params)) = 'object' \
                 THEN json_or_null(c.params) ELSE '{}'::jsonb END) p \
             JOIN task_jobs tj ON p.value = tj.job_id \
             WHERE c.run_id IN (SELECT run_id FROM runs_of) AND c.task_id IS NULL AND c.action = 'DescribeJobs' \
             AND p.key LIKE 'jobs.%' \
             ORDER BY 1, 3",
        )
        .bind(task_ids)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<i64, Vec<TaskCall>> = HashMap::new();
        for r in rows {
            let call =
                TaskCall { id: r.try_get("id")?, recorded_for: r.try_get("recorded_for")?, call: call_from_row(&r)? };
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
             WHERE {column} = ANY($1) GROUP BY {column}"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
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

    /// Deadline counts per run (every run, or only `run_id`) as they stand at `now`, by the
    /// rules of [`DeadlineCounts`].
    pub async fn deadline_counts(
        &self,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<i64, DeadlineCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, \
               COUNT(*) FILTER (WHERE due_by IS NOT NULL AND ((state = 'deleted' \
                   AND COALESCE(finished_at, updated_at) <= due_by) OR state = 'skipped')) AS on_time, \
               COUNT(*) FILTER (WHERE due_by IS NOT NULL AND ((state = 'deleted' \
                   AND COALESCE(finished_at, updated_at) > due_by) \
                   OR (state NOT IN ('deleted', 'skipped') AND $2 > due_by))) AS late, \
               COUNT(*) FILTER (WHERE due_by IS NOT NULL AND state NOT IN ('deleted', 'skipped') \
                   AND $2 <= due_by) AS open, \
               COUNT(*) FILTER (WHERE due_by IS NULL) AS no_deadline \
             FROM tasks WHERE $1::bigint IS NULL OR run_id = $1 GROUP BY run_id",
        )
        .bind(run_id)
        .bind(now)
        .fetch_all(&self.pool)
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
