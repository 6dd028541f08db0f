//! One task as the report shows it ([`ReportRow`]), built from the tables for a task the audit
//! chain does not know (the evidence builds the others from the chain), and its JSON form.
//!
//! A row is data: whether it is verified is decided by `evidence`, not here.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::TaskRow;

use super::instant::ser_time;
use super::outcome::{is_late, Outcome};

/// One task as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    pub run_id: i64,
    pub task_id: i64,
    pub ticket: Option<String>,
    pub cluster: String,
    pub zone: String,
    pub user: String,
    pub host: String,
    /// What preflight saw of the cluster before the first `del_user` ([`pre_state`](super::pre_state)); `None`
    /// when the run had no preflight.
    pub pre_state: Option<String>,
    pub outcome: Outcome,
    /// The state as stored (`outcome` folds the in-progress states into `pending`).
    pub state: String,
    pub attempts: i64,
    pub job_id: Option<String>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_time")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_time")]
    pub due_by: Option<DateTime<Utc>>,
    pub late: bool,
    /// Every value of the row is proven by the intact audit chain and the tables agree with it.
    pub verified: bool,
    /// Why not, when not: where the chain breaks, or which stored value disagrees with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_verified: Vec<String>,
}

impl ReportRow {
    /// A row from a task as the tables hold it (a task the audit chain does not know).
    pub fn new(task: TaskRow, ticket: Option<String>, now: DateTime<Utc>) -> ReportRow {
        let late = is_late(&task, now);
        ReportRow {
            run_id: task.run_id,
            task_id: task.id,
            ticket,
            outcome: Outcome::of(task.state),
            state: task.state.as_str().to_string(),
            attempts: task.attempts,
            ret_code: task.last_ret_code,
            message: task.last_message,
            job_id: task.job_id,
            started_at: task.started_at,
            finished_at: task.finished_at,
            due_by: task.due_by,
            late,
            cluster: task.cluster,
            zone: task.zone,
            user: task.user,
            host: task.host,
            pre_state: None,
            verified: false,
            not_verified: Vec::new(),
        }
    }
}

/// A JSON array of rows, pretty-printed.
pub fn write_json(mut w: impl Write, rows: &[ReportRow]) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, rows)?;
    writeln!(w)
}
