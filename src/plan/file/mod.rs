//! The plan file (`plan --out PLAN_FILE`, `run --plan PLAN_FILE`): a reviewed, approvable
//! record of exactly which tasks a run will execute, against which endpoint and with which
//! access key, and the checks a run makes before it trusts one.
//!
//! This module owns the file format (`document`: the JSON shape, its content hash, writing it),
//! loading it back into checked types (`load`), and the two-person rule (`two_person`). It
//! reads no configuration, opens no database and talks to no network: the caller passes the
//! endpoint and access key id it resolved, and turns the plan's tasks into a run.
//!
//! # Format
//!
//! A JSON object (pretty-printed when written):
//!
//! ```json
//! {
//!   "format": "qc-offboard-plan/1",
//!   "created_at": "2026-11-28T09:00:00Z",
//!   "endpoint": "https://api.qingcloud.com/iaas/",
//!   "access_key_id": "QYACCESSKEYIDEXAMPLE",
//!   "manifests": [{"path": "hr-4711.yaml", "sha256": "…"}],
//!   "ticket": "HR-4711", "requested_by": "alice@example.com", "reason": "…",
//!   "due_by": "2026-11-28T12:00:00Z",
//!   "tasks": [{"cluster": "cl-abc12345", "zone": "sh1a", "user": "bob", "host": "%",
//!              "state": "pending", "not_before": null, "due_by": "2026-11-28T12:00:00Z"}],
//!   "content_hash": "sha256:…"
//! }
//! ```
//!
//! # Content hash
//!
//! `content_hash` is `"sha256:"` followed by the lower-case hex SHA-256 of the canonical form of
//! the document *without* the `content_hash` member. The canonical form is RFC 8785 (JCS)
//! JSON: no whitespace, object members sorted by key, strings escaped as JSON requires and
//! nothing more (non-ASCII stays UTF-8, control characters use `\b \t \n \f \r` or `\u00xx`),
//! no numbers (a plan holds only ASCII keys, strings, `null`s, arrays and objects), so any JCS
//! implementation recomputes it: `jq -cS 'del(.content_hash)' plan.json | tr -d '\n' |
//! sha256sum` gives the same digest for plans whose strings are plain ASCII.
//!
//! The hash detects a plan edited after it was made (a task added, an endpoint changed) and
//! names the exact content an approver saw; it is not a signature — someone who edits the file
//! can recompute it. The run records the hash in its `run_started` audit record, so the
//! approved content and the executed content can be compared later.
//!
//! # Approval
//!
//! A name typed with `--approved-by` is recorded as unsigned. A signed approval is an SSH
//! signature over the file's bytes ([`crate::plan::approval`]); [`PlanFile::load_approved`] reads the
//! file once and checks the hash, the target, the signature over those same bytes and the
//! two-person rule.

mod document;
mod load;
mod two_person;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::manifest::{ClusterId, HostSpec, UserName, Zone};
use crate::plan::approval::ApprovalError;
use crate::plan::PlanState;
use crate::store::{NewTask, TaskState};

pub use document::{canonical, content_hash};
pub use two_person::{check_approval, check_signed_approval, ApprovalArgs, RunApproval};

/// The `format` member of every plan file this version writes and reads.
pub const FORMAT: &str = "qc-offboard-plan/1";
/// Plan files larger than this are refused unread (about a million tasks).
pub const MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;

/// A plan file, loaded and checked (or about to be written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFile {
    /// (path, SHA-256 hex of the file's bytes) of each manifest, in the order given.
    pub manifests: Vec<(String, String)>,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    /// The earliest `due_by` of the manifests.
    pub due_by: Option<DateTime<Utc>>,
    /// The endpoint the plan was made for, as the run records it.
    pub endpoint: String,
    pub access_key_id: String,
    /// The QingCloud account (config profile) the plan is for; `None` is the default account
    /// (and a plan file without the member).
    pub account: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The exact task list, in plan order.
    pub tasks: Vec<PlannedTask>,
    /// What the manifests' `discover:` selectors found when the plan was made (`found` and
    /// `passed_over`, see `crate::discover`): pinned, so the run executes exactly the clusters
    /// reviewed; `None` (no member) when they have none.
    pub discovered: Option<Value>,
    /// `sha256:` and 64 hex digits (see the module documentation).
    pub content_hash: String,
}

/// One task of a plan. Its fields are the checked domain types: a plan cannot name a protected
/// account, a malformed cluster id or host, whatever its hash says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTask {
    pub cluster: ClusterId,
    pub zone: Zone,
    pub user: UserName,
    pub host: HostSpec,
    /// What the plan said the run would do: `pending`, `not_due` or `skipped`.
    pub state: PlanState,
    pub not_before: Option<NaiveDate>,
    pub due_by: Option<DateTime<Utc>>,
}

/// Why a plan file cannot be used (exit 65: nothing was sent), or cannot be written (exit 78).
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("plan file {}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("plan file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "plan file {}: its content does not match its content_hash (recorded {recorded}, computed {computed}); \
         it was edited after it was made: make and approve a new plan",
        path.display()
    )]
    Tampered { path: PathBuf, recorded: String, computed: String },
    #[error(
        "plan file {}: it was made for {what} {planned:?}, but this run would use {actual:?}; \
         make a plan for this {what}",
        path.display()
    )]
    WrongTarget { path: PathBuf, what: &'static str, planned: String, actual: String },
    #[error("two-person rule: {0}")]
    Approval(String),
    #[error("plan signature: {0}")]
    Signature(#[from] ApprovalError),
    #[error("cannot write the plan file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

impl PlanFileError {
    /// 65 for a plan that cannot be used (nothing was sent); 78 when `--out` cannot be written.
    pub fn exit(&self) -> crate::exit::Exit {
        match self {
            PlanFileError::Write { .. } => crate::exit::Exit::Config,
            _ => crate::exit::Exit::DataErr,
        }
    }
}

fn invalid(path: &Path, reason: String) -> PlanFileError {
    PlanFileError::Invalid { path: path.to_path_buf(), reason }
}

impl PlanFile {
    /// The run's tasks: exactly the plan's, in its order, with the plan's state — except that a
    /// `pending` task whose account `is_done` reports removed since the plan was made becomes
    /// `skipped` (never sent twice). A `not_due` task stays `not_due`: the approver did not
    /// approve sending it in this run.
    pub fn new_tasks(&self, is_done: impl Fn(&str, &str, &str) -> bool) -> Vec<NewTask> {
        self.tasks
            .iter()
            .map(|t| {
                let state = match t.state {
                    PlanState::Pending if is_done(t.cluster.as_str(), t.user.as_str(), t.host.as_str()) => {
                        TaskState::Skipped
                    }
                    PlanState::Pending => TaskState::Pending,
                    PlanState::NotDue => TaskState::NotDue,
                    PlanState::Skipped => TaskState::Skipped,
                };
                NewTask {
                    cluster: t.cluster.to_string(),
                    zone: t.zone.to_string(),
                    user: t.user.to_string(),
                    host: t.host.to_string(),
                    state,
                    not_before: t.not_before,
                    due_by: t.due_by,
                }
            })
            .collect()
    }

    /// Task counts by planned state.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.tasks.iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(t.state.as_str()).or_default() += 1;
            m
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> PlanFile {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut p = PlanFile {
            manifests: vec![("hr-4711.yaml".into(), "ab".repeat(32))],
            ticket: Some("HR-4711".into()),
            requested_by: Some("alice@example.com".into()),
            reason: Some("bob left".into()),
            due_by: Some(t("2026-11-28T12:00:00Z")),
            endpoint: "https://api.qingcloud.com/iaas/".into(),
            access_key_id: "QYACCESSKEYIDEXAMPLE".into(),
            account: None,
            created_at: t("2026-11-28T09:00:00Z"),
            tasks: vec![PlannedTask {
                cluster: ClusterId::parse("cl-abc12345").unwrap(),
                zone: Zone::parse("sh1a").unwrap(),
                user: UserName::parse("bob").unwrap(),
                host: HostSpec::parse("%").unwrap(),
                state: PlanState::Pending,
                not_before: None,
                due_by: Some(t("2026-11-28T12:00:00Z")),
            }],
            discovered: None,
            content_hash: String::new(),
        };
        p.content_hash = content_hash(&p.doc_value(false));
        p
    }

    #[test]
    fn tasks_done_since_the_plan_are_skipped() {
        let p = sample();
        assert_eq!(p.new_tasks(|_, _, _| false)[0].state, TaskState::Pending);
        assert_eq!(p.new_tasks(|c, u, h| (c, u, h) == ("cl-abc12345", "bob", "%"))[0].state, TaskState::Skipped);
    }
}
