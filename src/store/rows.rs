//! How a `tasks` or `runs` row is read, written once for both backends: each backend's row type
//! decodes on its own (sqlx has no row type common to SQLite and PostgreSQL short of the `Any`
//! driver), so the field lists are macros that each backend expands over its own row. The
//! column lists the queries select are here too where both backends spell them alike.
//!
//! It maps columns to fields; it runs no SQL.

/// The `runs` columns a [`RunRow`](super::RunRow) is read from (manifests come from their table).
pub(crate) const RUN_COLUMNS: &str = "id, started_at, finished_at, exit_code, ticket, requested_by, reason, \
                                      due_by, operator, host, endpoint, access_key_id, options, summary, retry_of, \
                                      simulated";

/// A [`TaskRow`](super::TaskRow) from a row selecting the task columns, as
/// `Result<TaskRow, StoreError>`.
macro_rules! task_row_from {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        (|| -> Result<$crate::store::TaskRow, $crate::store::StoreError> {
            let state: String = row.try_get("state")?;
            Ok($crate::store::TaskRow {
                id: row.try_get("id")?,
                run_id: row.try_get("run_id")?,
                cluster: row.try_get("cluster")?,
                zone: row.try_get("zone")?,
                user: row.try_get("user")?,
                host: row.try_get("host")?,
                state: state.parse().map_err($crate::store::StoreError::Corrupt)?,
                not_before: row.try_get("not_before")?,
                due_by: row.try_get("due_by")?,
                attempts: row.try_get("attempts")?,
                job_id: row.try_get("job_id")?,
                last_ret_code: row.try_get("last_ret_code")?,
                last_message: row.try_get("last_message")?,
                started_at: row.try_get("started_at")?,
                intent_at: row.try_get("intent_at")?,
                submitted_at: row.try_get("submitted_at")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                finished_at: row.try_get("finished_at")?,
                updated_at: row.try_get("updated_at")?,
                adopted_from: row.try_get("adopted_from")?,
                unresolved: row.try_get("unresolved")?,
            })
        })()
    }};
}

/// A [`RunRow`](super::RunRow) (without its manifests) from a row selecting [`RUN_COLUMNS`], as
/// `Result<RunRow, StoreError>`; `options` and `summary` are JSON text.
macro_rules! run_row_from {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        (|| -> Result<$crate::store::RunRow, $crate::store::StoreError> {
            let json = |col: &str| -> Result<Option<serde_json::Value>, $crate::store::StoreError> {
                let text: Option<String> = row.try_get(col)?;
                text.map(|t| {
                    serde_json::from_str(&t).map_err(|e| $crate::store::StoreError::Corrupt(format!("runs.{col}: {e}")))
                })
                .transpose()
            };
            Ok($crate::store::RunRow {
                id: row.try_get("id")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                exit_code: row.try_get("exit_code")?,
                manifests: Vec::new(),
                ticket: row.try_get("ticket")?,
                requested_by: row.try_get("requested_by")?,
                reason: row.try_get("reason")?,
                due_by: row.try_get("due_by")?,
                operator: row.try_get("operator")?,
                host: row.try_get("host")?,
                endpoint: row.try_get("endpoint")?,
                access_key_id: row.try_get("access_key_id")?,
                options: json("options")?.unwrap_or_default(),
                summary: json("summary")?,
                retry_of: row.try_get("retry_of")?,
                simulated: row.try_get("simulated")?,
            })
        })()
    }};
}

pub(crate) use run_row_from;
pub(crate) use task_row_from;
