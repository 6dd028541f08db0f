//! The evidence export (`report`): one row per task with its outcome, as a table for people,
//! JSON, or CSV (RFC 4180).
//!
//! A row's `outcome` folds the task states into what an auditor asks about: `deleted`, `failed`,
//! `skipped` (already removed by an earlier run), `not_due`, and `pending` for everything still in
//! progress (`pending`, `submitting`, `submitted`, `retry_wait`).
//!
//! `late` answers "was the account not removed by `due_by`?": a `deleted` task is late when it
//! finished after `due_by`; a `skipped` task never is (nothing was left to do); a `failed`,
//! `pending` or `not_due` task is late once `due_by` has passed, since the account still exists.
//! A task without `due_by` is never late.
//!
//! With `--user`, and always in HTML, each row comes with its evidence ([`evidence`]): the
//! requester, approver and operator, when the request went out, the API calls behind it, and
//! its audit records with the verdict of the hash chain. [`html`] renders the auditor's page.
//!
//! This module reads through `store` and formats; it holds no SQL.

pub mod evidence;
pub mod html;

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::store::{ReportFilter, Store, StoreError, TaskRow, TaskState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deleted,
    Failed,
    Skipped,
    Pending,
    NotDue,
    /// The account did not exist on the cluster ("account not found").
    Absent,
    /// The attempt was adopted by a later run, whose row shows the outcome.
    HandedOver,
}

impl Outcome {
    pub fn of(state: TaskState) -> Outcome {
        match state {
            TaskState::Deleted => Outcome::Deleted,
            TaskState::Failed => Outcome::Failed,
            TaskState::Skipped => Outcome::Skipped,
            TaskState::NotDue => Outcome::NotDue,
            TaskState::Absent => Outcome::Absent,
            TaskState::HandedOver => Outcome::HandedOver,
            TaskState::Pending | TaskState::Submitting | TaskState::Submitted | TaskState::RetryWait => {
                Outcome::Pending
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Pending => "pending",
            Outcome::NotDue => "not_due",
            Outcome::Absent => "absent",
            Outcome::HandedOver => "handed_over",
        }
    }

    /// The outcome as a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Absent => "account not found",
            Outcome::NotDue => "not due",
            Outcome::HandedOver => "handed over",
            other => other.as_str(),
        }
    }
}

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
    pub outcome: Outcome,
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
}

/// An instant as the report writes it (RFC 3339, UTC, fractional seconds only when present).
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn ser_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&time(*t)),
        None => s.serialize_none(),
    }
}

/// Was the account not removed by `due_by`? (See the module documentation.)
pub fn is_late(task: &TaskRow, now: DateTime<Utc>) -> bool {
    let Some(due) = task.due_by else { return false };
    match Outcome::of(task.state) {
        Outcome::Deleted | Outcome::Absent => task.finished_at.unwrap_or(task.updated_at) > due,
        Outcome::Skipped | Outcome::HandedOver => false,
        Outcome::Failed | Outcome::Pending | Outcome::NotDue => now > due,
    }
}

impl ReportRow {
    pub fn new(task: TaskRow, ticket: Option<String>, now: DateTime<Utc>) -> ReportRow {
        let late = is_late(&task, now);
        ReportRow {
            run_id: task.run_id,
            task_id: task.id,
            ticket,
            outcome: Outcome::of(task.state),
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
        }
    }
}

/// The report's rows for `filter`, with `late` judged at `now`.
pub async fn rows(store: &Store, filter: &ReportFilter, now: DateTime<Utc>) -> Result<Vec<ReportRow>, StoreError> {
    Ok(store.report_tasks(filter).await?.into_iter().map(|(task, ticket)| ReportRow::new(task, ticket, now)).collect())
}

/// The columns of the CSV export, in order.
pub const CSV_HEADER: [&str; 16] = [
    "run_id",
    "task_id",
    "ticket",
    "cluster",
    "zone",
    "user",
    "host",
    "outcome",
    "attempts",
    "job_id",
    "ret_code",
    "message",
    "started_at",
    "finished_at",
    "due_by",
    "late",
];

pub(crate) fn fields(r: &ReportRow) -> [String; 16] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let opt_t = |t: Option<DateTime<Utc>>| t.map(time).unwrap_or_default();
    [
        r.run_id.to_string(),
        r.task_id.to_string(),
        opt(&r.ticket),
        r.cluster.clone(),
        r.zone.clone(),
        r.user.clone(),
        r.host.clone(),
        r.outcome.as_str().to_string(),
        r.attempts.to_string(),
        opt(&r.job_id),
        r.ret_code.map(|c| c.to_string()).unwrap_or_default(),
        opt(&r.message),
        opt_t(r.started_at),
        opt_t(r.finished_at),
        opt_t(r.due_by),
        r.late.to_string(),
    ]
}

/// One RFC 4180 field: quoted when it holds a comma, a quote, CR or LF; quotes doubled.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// RFC 4180: a header line, then one record per row, every line ending in CRLF.
pub fn write_csv(mut w: impl Write, rows: &[ReportRow]) -> io::Result<()> {
    write!(w, "{}\r\n", CSV_HEADER.join(","))?;
    for r in rows {
        let line: Vec<String> = fields(r).iter().map(|f| csv_field(f)).collect();
        write!(w, "{}\r\n", line.join(","))?;
    }
    Ok(())
}

/// A JSON array of rows, pretty-printed.
pub fn write_json(mut w: impl Write, rows: &[ReportRow]) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, rows)?;
    writeln!(w)
}

/// Aligned columns for people; long messages are cut and line breaks flattened.
pub fn write_table(mut w: impl Write, rows: &[ReportRow]) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(w, "no tasks match");
    }
    const MESSAGE_WIDTH: usize = 60;
    let header =
        ["RUN", "TASK", "CLUSTER", "USER", "HOST", "OUTCOME", "TRIES", "JOB", "RET", "FINISHED", "LATE", "MESSAGE"];
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let cells: Vec<[String; 12]> = rows
        .iter()
        .map(|r| {
            let message: String = r.message.as_deref().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
            let message = if message.chars().count() > MESSAGE_WIDTH {
                format!("{}…", message.chars().take(MESSAGE_WIDTH - 1).collect::<String>())
            } else {
                message
            };
            [
                r.run_id.to_string(),
                r.task_id.to_string(),
                r.cluster.clone(),
                r.user.clone(),
                r.host.clone(),
                r.outcome.as_str().to_string(),
                r.attempts.to_string(),
                dash(r.job_id.clone().unwrap_or_default()),
                dash(r.ret_code.map(|c| c.to_string()).unwrap_or_default()),
                dash(r.finished_at.map(time).unwrap_or_default()),
                if r.late { "late".into() } else { "-".into() },
                dash(message),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    writeln!(w, "{}", line(&header.map(String::from)))?;
    for row in &cells {
        writeln!(w, "{}", line(row))?;
    }
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for r in rows {
        *counts.entry(r.outcome.as_str()).or_default() += 1;
    }
    let late = rows.iter().filter(|r| r.late).count();
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    writeln!(w, "\n{} tasks: {}; {late} late", rows.len(), summary.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: TaskState, due: Option<&str>, finished: Option<&str>) -> TaskRow {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        TaskRow {
            id: 1,
            run_id: 1,
            cluster: "cl-a".into(),
            zone: "sh1a".into(),
            user: "bob".into(),
            host: "%".into(),
            state,
            not_before: None,
            due_by: due.map(t),
            attempts: 1,
            job_id: None,
            last_ret_code: None,
            last_message: None,
            started_at: None,
            intent_at: None,
            submitted_at: None,
            next_attempt_at: None,
            finished_at: finished.map(t),
            updated_at: t("2026-01-01T00:00:00Z"),
            adopted_from: None,
        }
    }

    #[test]
    fn lateness() {
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let due = Some("2026-05-01T00:00:00Z");
        assert!(!is_late(&task(TaskState::Deleted, due, Some("2026-04-30T00:00:00Z")), now));
        assert!(is_late(&task(TaskState::Deleted, due, Some("2026-05-02T00:00:00Z")), now));
        assert!(!is_late(&task(TaskState::Skipped, due, Some("2026-05-02T00:00:00Z")), now));
        assert!(is_late(&task(TaskState::Failed, due, Some("2026-04-02T00:00:00Z")), now));
        assert!(is_late(&task(TaskState::RetryWait, due, None), now));
        assert!(!is_late(&task(TaskState::Pending, Some("2026-07-01T00:00:00Z"), None), now));
        assert!(!is_late(&task(TaskState::Pending, None, None), now));
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn in_progress_states_report_as_pending() {
        for s in [TaskState::Pending, TaskState::Submitting, TaskState::Submitted, TaskState::RetryWait] {
            assert_eq!(Outcome::of(s), Outcome::Pending);
        }
        assert_eq!(Outcome::of(TaskState::NotDue).as_str(), "not_due");
    }
}
