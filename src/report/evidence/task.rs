//! What the evidence says of one task besides its row: the API calls behind it, every attempt
//! that did not delete the account (with the API's message and the job's error codes), and its
//! audit records.
//!
//! It builds from what it is given; deciding what is verified is the gathering's.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::report::instant::{parse_time, ser_instant, time};
use crate::report::row::ReportRow;
use crate::store::{ChainRow, ChainTask, TaskCall};

/// One API call behind a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvidence {
    /// The call's row id in the database.
    pub id: i64,
    #[serde(serialize_with = "ser_instant")]
    pub at: DateTime<Utc>,
    pub action: String,
    pub http_status: Option<i64>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
    pub job_id: Option<String>,
    pub latency_ms: i64,
    /// The request's parameters as sent, without the signature.
    pub params: serde_json::Value,
}

impl CallEvidence {
    pub(super) fn of(c: &TaskCall) -> CallEvidence {
        CallEvidence {
            id: c.id,
            at: c.call.started_at,
            action: c.call.action.clone(),
            http_status: c.call.http_status,
            ret_code: c.call.ret_code,
            message: c.call.message.clone(),
            job_id: c.call.job_id.clone(),
            latency_ms: c.call.latency_ms,
            params: serde_json::from_str(&c.call.params_json)
                .unwrap_or_else(|_| serde_json::Value::String(c.call.params_json.clone())),
        }
    }

    /// The call as the chain proves it.
    pub(super) fn from_chain(id: i64, row: &ChainRow) -> CallEvidence {
        let params = row.text("params").unwrap_or_default();
        CallEvidence {
            id,
            at: row.text("started_at").and_then(parse_time).unwrap_or_default(),
            action: row.text("action").unwrap_or_default().to_string(),
            http_status: row.int("http_status"),
            ret_code: row.int("ret_code"),
            message: row.text("message").map(str::to_owned),
            job_id: row.text("job_id").map(str::to_owned),
            latency_ms: row.int("latency_ms").unwrap_or_default(),
            params: serde_json::from_str(params).unwrap_or_else(|_| Value::String(params.to_string())),
        }
    }

    /// `#ID ACTION AT http H ret R job J`, for one-line listings.
    pub fn summary(&self) -> String {
        let mut s = format!("#{} {} {}", self.id, self.action, time(self.at));
        match self.http_status {
            Some(h) => s.push_str(&format!(" http {h}")),
            None => s.push_str(" no answer"),
        }
        if let Some(r) = self.ret_code {
            s.push_str(&format!(" ret {r}"));
        }
        if let Some(j) = &self.job_id {
            s.push_str(&format!(" job {j}"));
        }
        s
    }
}

/// An attempt that did not delete the account, from its transition record: why, in the API's
/// words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedAttempt {
    /// The audit record telling it.
    pub seq: i64,
    #[serde(serialize_with = "ser_instant")]
    pub at: DateTime<Utc>,
    /// Attempts used so far, when the record says.
    pub attempt: Option<i64>,
    /// The state the task went to (`retry_wait`, `failed`, `pending`…).
    pub to: String,
    pub job_id: Option<String>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
    /// The job's `error_codes`, when the job itself failed.
    pub error_codes: Option<String>,
}

impl FailedAttempt {
    /// One line for people.
    pub fn summary(&self) -> String {
        let mut s = format!("{} → {}", time(self.at), self.to);
        if let Some(n) = self.attempt {
            s.push_str(&format!(" (attempt {n})"));
        }
        if let Some(c) = self.ret_code {
            s.push_str(&format!(", ret_code {c}"));
        }
        if let Some(e) = &self.error_codes {
            s.push_str(&format!(", error_codes {e}"));
        }
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {m}"));
        }
        s
    }
}

/// `error_codes` as the runner writes them into a failed job's message: `(error_codes X)`.
fn error_codes(message: &str) -> Option<String> {
    let start = message.find("(error_codes ")? + "(error_codes ".len();
    let end = message[start..].find(')')?;
    Some(message[start..start + end].to_string()).filter(|c| !c.is_empty())
}

pub(super) fn failed_attempts(task: &ChainTask) -> Vec<FailedAttempt> {
    task.transitions
        .iter()
        .filter(|t| t.message.as_deref().is_some_and(|m| !m.is_empty()) || t.ret_code.is_some_and(|c| c != 0))
        .map(|t| FailedAttempt {
            seq: t.seq,
            at: parse_time(&t.at).unwrap_or_default(),
            attempt: t.attempts,
            to: t.to.clone(),
            job_id: t.job_id.clone(),
            ret_code: t.ret_code,
            error_codes: t.message.as_deref().and_then(error_codes),
            message: t.message.clone(),
        })
        .collect()
}

/// The audit records of a task and whether the chain vouches for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaskAudit {
    pub first_seq: i64,
    pub last_seq: i64,
    pub records: i64,
    pub verified: bool,
}

/// A report row with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceRow {
    #[serde(flatten)]
    pub row: ReportRow,
    pub requested_by: Option<String>,
    pub approved_by: Option<String>,
    /// Whether the approval was a signed plan (see [`RunEvidence::approval_signed`](super::RunEvidence::approval_signed)).
    pub approval_signed: Option<bool>,
    pub operator: Option<String>,
    /// When the first `del_user` request for the task was sent (its first submission intent
    /// when no call was recorded).
    #[serde(serialize_with = "crate::report::instant::ser_time")]
    pub requested_at: Option<DateTime<Utc>>,
    pub api_calls: Vec<CallEvidence>,
    /// Every attempt that did not delete the account, with the API's message and error codes.
    pub failed_attempts: Vec<FailedAttempt>,
    /// The audit record the row's `pre_state` comes from.
    pub pre_state_record: Option<i64>,
    pub audit: Option<TaskAudit>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_a_failed_jobs_message() {
        assert_eq!(
            error_codes("job j-1 ended 'failed' (error_codes 5000) (after 5 attempts)").as_deref(),
            Some("5000")
        );
        assert_eq!(error_codes("job j-1 ended 'failed'"), None);
        assert_eq!(error_codes("(error_codes )"), None);
    }
}
