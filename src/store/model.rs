//! The rows of the database and the values written into it. Plain data: no SQL here.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// Where a task stands (SPEC §4). Stored as the lower-case text of [`TaskState::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting to be submitted.
    Pending,
    /// `not_before` lies in the future; a later run of the manifest picks it up.
    NotDue,
    /// Already deleted by an earlier run against the same endpoint and access key.
    Skipped,
    /// The intent to submit is recorded; the request may or may not have reached the API.
    Submitting,
    /// The API accepted the request; the job id is recorded.
    Submitted,
    /// An attempt failed transiently; the next one is due at `next_attempt_at`.
    RetryWait,
    /// The job succeeded: the account is gone.
    Deleted,
    /// Given up: a permanent error, or `--max-attempts` used.
    Failed,
    /// The account did not exist on the cluster: nothing to delete. Final after one attempt,
    /// and done like `deleted` (exit 0; later runs skip it).
    Absent,
    /// The task's live attempt (a submission in doubt or a job in flight) was adopted by a later
    /// run, which follows it to its end; the audit record names that run.
    HandedOver,
    /// The cluster was not ready at preflight (stopped, suspended, in transition…): nothing was
    /// sent; a later run of the manifest tries the account again.
    NotReady,
}

impl TaskState {
    pub const ALL: [TaskState; 11] = [
        TaskState::Pending,
        TaskState::NotDue,
        TaskState::Skipped,
        TaskState::Submitting,
        TaskState::Submitted,
        TaskState::RetryWait,
        TaskState::Deleted,
        TaskState::Failed,
        TaskState::Absent,
        TaskState::HandedOver,
        TaskState::NotReady,
    ];

    /// States in which a task still has work to do in its run.
    pub const OPEN: [TaskState; 4] =
        [TaskState::Pending, TaskState::Submitting, TaskState::Submitted, TaskState::RetryWait];

    /// States in which a request for the account may exist that nobody has seen the end of: a
    /// second `del_user` for the account must wait for these.
    pub const LIVE: [TaskState; 2] = [TaskState::Submitting, TaskState::Submitted];

    /// Outcomes that leave nothing to do for the account: a later run skips it.
    pub const DONE: [TaskState; 3] = [TaskState::Deleted, TaskState::Absent, TaskState::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::NotDue => "not_due",
            TaskState::Skipped => "skipped",
            TaskState::Submitting => "submitting",
            TaskState::Submitted => "submitted",
            TaskState::RetryWait => "retry_wait",
            TaskState::Deleted => "deleted",
            TaskState::Failed => "failed",
            TaskState::Absent => "absent",
            TaskState::HandedOver => "handed_over",
            TaskState::NotReady => "not_ready",
        }
    }

    /// Nothing more will happen to the task in its run: every state but the [`OPEN`] ones
    /// (`not_due` included: a later run of the manifest creates a new task once the date has
    /// come).
    ///
    /// [`OPEN`]: TaskState::OPEN
    pub fn is_final(self) -> bool {
        !self.is_open()
    }

    pub fn is_open(self) -> bool {
        TaskState::OPEN.contains(&self)
    }

    /// Done for the exit code and for later runs: `deleted`, `absent`, `skipped`.
    pub fn is_done(self) -> bool {
        TaskState::DONE.contains(&self)
    }

    /// The states as an SQL list, `('a', 'b')`, for queries kept in `store`.
    pub fn sql_list(states: &[TaskState]) -> String {
        let quoted: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        format!("({})", quoted.join(", "))
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| format!("unknown task state {s:?}"))
    }
}

/// A run to record: where its work came from, who asked, and against what.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// (path, SHA-256 hex of the file's bytes), in the order given.
    pub manifests: Vec<(String, String)>,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub due_by: Option<DateTime<Utc>>,
    /// Who ran it (the login name).
    pub operator: String,
    /// Where it ran (the host name).
    pub host: String,
    pub endpoint: String,
    pub access_key_id: String,
    /// The effective options (rate, limits…), as JSON. Never the secret key.
    pub options: serde_json::Value,
    /// The run whose failed tasks this one retries.
    pub retry_of: Option<i64>,
    pub simulated: bool,
    /// What the manifests' `discover:` selectors found (`crate::discover::Discovery::to_json`),
    /// recorded in `run_started`; `None` when they have none.
    pub discovered: Option<serde_json::Value>,
}

/// A task to create with its run. `state` is `pending`, `not_due` or `skipped`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub cluster: String,
    pub zone: String,
    pub user: String,
    pub host: String,
    pub state: TaskState,
    pub not_before: Option<NaiveDate>,
    pub due_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub manifests: Vec<(String, String)>,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub due_by: Option<DateTime<Utc>>,
    pub operator: String,
    pub host: String,
    pub endpoint: String,
    pub access_key_id: String,
    pub options: serde_json::Value,
    pub summary: Option<serde_json::Value>,
    pub retry_of: Option<i64>,
    pub simulated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    pub id: i64,
    pub run_id: i64,
    pub cluster: String,
    pub zone: String,
    pub user: String,
    pub host: String,
    pub state: TaskState,
    pub not_before: Option<NaiveDate>,
    pub due_by: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub job_id: Option<String>,
    pub last_ret_code: Option<i64>,
    pub last_message: Option<String>,
    /// The first submission intent: when work on the task began.
    pub started_at: Option<DateTime<Utc>>,
    /// The latest submission intent.
    pub intent_at: Option<DateTime<Utc>>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The task of an earlier run whose live attempt this task adopted.
    pub adopted_from: Option<i64>,
    /// For a `failed` task whose last request may still take effect: `job` or `in_doubt`.
    pub unresolved: Option<String>,
}

/// How a transition changes `attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    Increment,
    Set(i64),
}

/// The columns a transition changes besides `state`. `None` leaves a column alone;
/// `Some(None)` clears it; `Some(Some(v))` sets it. The builder methods set values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskChange {
    pub attempts: Option<Attempts>,
    pub job_id: Option<Option<String>>,
    pub last_ret_code: Option<Option<i64>>,
    pub last_message: Option<Option<String>>,
    /// Setting it also sets `started_at` when that is still empty.
    pub intent_at: Option<Option<DateTime<Utc>>>,
    pub submitted_at: Option<Option<DateTime<Utc>>>,
    pub next_attempt_at: Option<Option<DateTime<Utc>>>,
    pub finished_at: Option<Option<DateTime<Utc>>>,
    pub adopted_from: Option<Option<i64>>,
    pub unresolved: Option<Option<String>>,
}

impl TaskChange {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn increment_attempts(mut self) -> Self {
        self.attempts = Some(Attempts::Increment);
        self
    }
    pub fn attempts(mut self, n: i64) -> Self {
        self.attempts = Some(Attempts::Set(n));
        self
    }
    pub fn job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(Some(id.into()));
        self
    }
    pub fn ret_code(mut self, code: i64) -> Self {
        self.last_ret_code = Some(Some(code));
        self
    }
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.last_message = Some(Some(message.into()));
        self
    }
    pub fn intent_at(mut self, t: DateTime<Utc>) -> Self {
        self.intent_at = Some(Some(t));
        self
    }
    pub fn submitted_at(mut self, t: DateTime<Utc>) -> Self {
        self.submitted_at = Some(Some(t));
        self
    }
    pub fn next_attempt_at(mut self, t: DateTime<Utc>) -> Self {
        self.next_attempt_at = Some(Some(t));
        self
    }
    pub fn clear_next_attempt_at(mut self) -> Self {
        self.next_attempt_at = Some(None);
        self
    }
    pub fn finished_at(mut self, t: DateTime<Utc>) -> Self {
        self.finished_at = Some(Some(t));
        self
    }
    pub fn adopted_from(mut self, task_id: i64) -> Self {
        self.adopted_from = Some(Some(task_id));
        self
    }
    /// Mark a failure whose last request may still take effect (`job` or `in_doubt`).
    pub fn unresolved(mut self, why: &str) -> Self {
        self.unresolved = Some(Some(why.to_owned()));
        self
    }
}

/// One API call as sent and answered. `params_json` is the request's parameters as JSON
/// without `signature`; the caller strips it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCallRow {
    pub action: String,
    pub params_json: String,
    pub http_status: Option<i64>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
    pub job_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i64,
}

/// Which tasks `report` shows. Every field narrows; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFilter {
    pub run_id: Option<i64>,
    pub user: Option<String>,
    pub cluster: Option<String>,
    /// Tasks whose work started at or after this instant; a task never started counts from its
    /// run's start.
    pub since: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        assert!("done".parse::<TaskState>().is_err());
        assert!(TaskState::Deleted.is_final() && TaskState::NotDue.is_final());
        assert!(!TaskState::RetryWait.is_final() && !TaskState::Submitting.is_final());
    }
}
