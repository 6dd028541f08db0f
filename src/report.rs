//! The evidence export (`report`): one row per task with its outcome, as a table for people,
//! JSON, or CSV (RFC 4180).
//!
//! A row's `outcome` folds the task states into what an auditor asks about: `deleted`, `absent`
//! (the account did not exist), `failed`, `skipped` (already removed by an earlier run),
//! `not_due`, `handed_over`, and `pending` for everything still in progress (`pending`,
//! `submitting`, `submitted`, `retry_wait`).
//!
//! `late` answers "was the account not removed by `due_by`?": a `deleted` task is late when it
//! finished after `due_by`; a `skipped` task never is (nothing was left to do); a `failed`,
//! `pending` or `not_due` task is late once `due_by` has passed, since the account still exists;
//! `absent` and `handed_over` tasks are never late (nothing was left to do in their run).
//! A task without `due_by` is never late.
//!
//! Every format reads its rows from the audit chain replayed and checked against the tables
//! ([`evidence::gather`]): a row is `verified` only when the chain proves every value it shows,
//! and `not_verified` says why otherwise. State names are carried as text, so a state this
//! version does not know is reported under its own name.
//!
//! `pre_state` is the status preflight saw of the task's cluster before the first `del_user`
//! (`active`, `stopped`, `active (updating)`, `not found`, `unchecked`…), read from the audit
//! chain like every other value ([`pre_state`]); empty for a run started with `--no-preflight`.
//!
//! With `--user`, and always in HTML, each row comes with its evidence ([`evidence`]): the
//! requester, approver (signed or not) and operator, when the request went out, every failed
//! attempt, the API calls behind it, and its audit records. [`latest`] rolls the rows up into
//! one standing per account across runs (`--latest`); [`html`] renders the auditor's page.
//!
//! This module reads through `store` and formats; it holds no SQL.

pub mod evidence;
pub mod html;
pub mod latest;
pub mod pre_state;

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::store::{ReportFilter, Store, StoreError, TaskRow, TaskState};

/// Where a task ended, as the report names it. Built from the state's name, so a state this
/// version does not know is shown under its own name instead of breaking the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    /// The account did not exist: counts as done.
    Absent,
    Failed,
    Skipped,
    Pending,
    NotDue,
    /// The task's live attempt was adopted by a later run.
    HandedOver,
    /// The cluster was not ready at preflight; a later run tries again.
    NotReady,
    /// A state this version does not know.
    Other(String),
}

impl Outcome {
    pub fn of(state: TaskState) -> Outcome {
        Outcome::of_state(state.as_str())
    }

    /// The outcome of a state named as the database stores it.
    pub fn of_state(state: &str) -> Outcome {
        match state {
            "deleted" => Outcome::Deleted,
            "absent" => Outcome::Absent,
            "failed" => Outcome::Failed,
            "skipped" => Outcome::Skipped,
            "not_due" => Outcome::NotDue,
            "handed_over" => Outcome::HandedOver,
            "not_ready" => Outcome::NotReady,
            other if other.parse::<TaskState>().is_ok_and(TaskState::is_open) => Outcome::Pending,
            other => Outcome::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Pending => "pending",
            Outcome::NotDue => "not_due",
            Outcome::HandedOver => "handed_over",
            Outcome::NotReady => "not_ready",
            Outcome::Other(s) => s,
        }
    }

    /// The outcome in words for people (tables and HTML).
    pub fn label(&self) -> &str {
        match self {
            Outcome::Absent => "account not found",
            Outcome::NotReady => "cluster not ready",
            other => other.as_str(),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which tasks a report shows. Every field narrows; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub run_id: Option<i64>,
    pub user: Option<String>,
    pub cluster: Option<String>,
    /// The ticket of the task's run.
    pub ticket: Option<String>,
    /// Tasks whose work started at or after this instant (a task never started counts from its
    /// run's start).
    pub since: Option<DateTime<Utc>>,
    /// Tasks whose work started at or before this instant (counted the same way).
    pub until: Option<DateTime<Utc>>,
}

impl From<&ReportFilter> for Filter {
    fn from(f: &ReportFilter) -> Filter {
        Filter {
            run_id: f.run_id,
            user: f.user.clone(),
            cluster: f.cluster.clone(),
            since: f.since,
            ..Filter::default()
        }
    }
}

impl Filter {
    /// Does a task of run `run_id` with these values pass? `started` is when its work started,
    /// else when its run started.
    pub fn admits(
        &self,
        run_id: i64,
        user: &str,
        cluster: &str,
        ticket: Option<&str>,
        started: Option<DateTime<Utc>>,
    ) -> bool {
        self.run_id.is_none_or(|r| r == run_id)
            && self.user.as_deref().is_none_or(|u| u == user)
            && self.cluster.as_deref().is_none_or(|c| c == cluster)
            && self.ticket.as_deref().is_none_or(|t| Some(t) == ticket)
            && self.since.is_none_or(|s| started.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| started.is_some_and(|t| t <= u))
    }

    /// The parts of the filter that `store::ReportFilter` can apply in SQL.
    pub fn store_filter(&self) -> ReportFilter {
        ReportFilter { run_id: self.run_id, user: self.user.clone(), cluster: self.cluster.clone(), since: self.since }
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
    /// What preflight saw of the cluster before the first `del_user` ([`pre_state`]); `None`
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

/// Was the account not removed by `due_by`? (See the module documentation.) `updated_at` stands
/// in for a `deleted` task's missing `finished_at`.
pub fn late(
    outcome: &Outcome,
    due_by: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let Some(due) = due_by else { return false };
    match outcome {
        Outcome::Deleted => finished_at.unwrap_or(updated_at) > due,
        Outcome::Skipped | Outcome::Absent | Outcome::HandedOver => false,
        Outcome::Failed | Outcome::Pending | Outcome::NotDue | Outcome::NotReady | Outcome::Other(_) => now > due,
    }
}

/// Was the account not removed by `due_by`? (See the module documentation.)
pub fn is_late(task: &TaskRow, now: DateTime<Utc>) -> bool {
    late(&Outcome::of(task.state), task.due_by, task.finished_at, task.updated_at, now)
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

/// The report's rows for `filter`, with `late` judged at `now`: read from the audit chain and
/// checked against the tables (see [`evidence::gather`]).
pub async fn rows(store: &Store, filter: &ReportFilter, now: DateTime<Utc>) -> Result<Vec<ReportRow>, StoreError> {
    rows_where(store, &Filter::from(filter), now).await
}

/// [`rows`] with the full filter.
pub async fn rows_where(store: &Store, filter: &Filter, now: DateTime<Utc>) -> Result<Vec<ReportRow>, StoreError> {
    Ok(evidence::gather_where(store, filter, now).await?.rows())
}

/// The columns of the CSV export, in order (`pre_state` came last, so that the columns before it
/// kept their places).
pub const CSV_HEADER: [&str; 19] = [
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
    "verified",
    "not_verified",
    "pre_state",
];

pub(crate) fn fields(r: &ReportRow) -> [String; 19] {
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
        r.verified.to_string(),
        r.not_verified.join("; "),
        opt(&r.pre_state),
    ]
}

/// RFC 4180 through the `csv` crate: a header line, then one record per row, every line ending
/// in CRLF, a field quoted only when it holds a comma, a quote, CR or LF (quotes doubled).
pub fn write_csv_records<W: Write>(
    w: W,
    header: &[&str],
    records: impl IntoIterator<Item = Vec<String>>,
) -> io::Result<()> {
    let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(w);
    out.write_record(header).map_err(csv_io)?;
    for r in records {
        out.write_record(&r).map_err(csv_io)?;
    }
    out.flush()
}

/// A CSV writer's error as the I/O error it wraps (a closed pipe stays a closed pipe).
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// RFC 4180: a header line, then one record per row (see [`write_csv_records`]).
pub fn write_csv(w: impl Write, rows: &[ReportRow]) -> io::Result<()> {
    write_csv_records(w, &CSV_HEADER, rows.iter().map(|r| fields(r).to_vec()))
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
    let header = [
        "RUN",
        "TASK",
        "CLUSTER",
        "PRE-STATE",
        "USER",
        "HOST",
        "OUTCOME",
        "TRIES",
        "JOB",
        "RET",
        "FINISHED",
        "LATE",
        "PROVEN",
        "MESSAGE",
    ];
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let cells: Vec<[String; 14]> = rows
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
                dash(r.pre_state.clone().unwrap_or_default()),
                r.user.clone(),
                r.host.clone(),
                r.outcome.label().to_string(),
                r.attempts.to_string(),
                dash(r.job_id.clone().unwrap_or_default()),
                dash(r.ret_code.map(|c| c.to_string()).unwrap_or_default()),
                dash(r.finished_at.map(time).unwrap_or_default()),
                if r.late { "late".into() } else { "-".into() },
                if r.verified { "yes".into() } else { "NO".into() },
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
        *counts.entry(r.outcome.label()).or_default() += 1;
    }
    let late = rows.iter().filter(|r| r.late).count();
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let unproven: Vec<&ReportRow> = rows.iter().filter(|r| !r.verified).collect();
    write!(w, "\n{} tasks: {}; {late} late", rows.len(), summary.join(", "))?;
    if unproven.is_empty() {
        return writeln!(w, "; every row proven by the audit chain");
    }
    writeln!(w, "; {} NOT proven by the audit chain:", unproven.len())?;
    for r in unproven {
        writeln!(w, "  task {}: {}", r.task_id, r.not_verified.join("; "))?;
    }
    Ok(())
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
            unresolved: None,
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
        let csv_field = |f: &str| {
            let mut out = Vec::new();
            write_csv_records(&mut out, &["h", "x"], [vec![f.to_string(), "x".to_string()]]).unwrap();
            let text = String::from_utf8(out).unwrap();
            let record = text.strip_prefix("h,x\r\n").unwrap().strip_suffix(",x\r\n").unwrap();
            record.to_string()
        };
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

    #[test]
    fn states_this_version_does_not_know_keep_their_name() {
        assert_eq!(Outcome::of_state("absent"), Outcome::Absent);
        assert_eq!(Outcome::of_state("absent").label(), "account not found");
        assert_eq!(Outcome::of_state("handed_over").as_str(), "handed_over");
        let other = Outcome::of_state("parked");
        assert_eq!(other.as_str(), "parked");
        assert_eq!(serde_json::to_value(&other).unwrap(), serde_json::json!("parked"));
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let (due, now) = (Some(t("2026-01-01T00:00:00Z")), t("2026-02-01T00:00:00Z"));
        assert!(late(&other, due, None, now, now), "an unknown state is still open");
        assert!(!late(&Outcome::Absent, due, None, now, now));
    }
}
