//! The plan file's types: the plan file loaded and checked (or about to be written), its tasks
//! in the checked domain types, and why a plan file cannot be used or written.
//!
//! Data and errors only: writing, loading and approving are the other files'.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::manifest::{ClusterId, HostSpec, UserName, Zone};
use crate::plan::approval::ApprovalError;
use crate::plan::PlanState;

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
    pub tasks: Vec<PinnedTask>,
    /// What the manifests' `discover:` selectors found when the plan was made (`found` and
    /// `passed_over`, see `crate::discover`): pinned, so the run executes exactly the clusters
    /// reviewed; `None` (no member) when they have none.
    pub discovered: Option<Value>,
    /// `sha256:` and 64 hex digits (see the module documentation).
    pub content_hash: String,
}

/// One task as the plan file pins it (the plan's own is `plan::PlannedTask`). Its fields are the
/// checked domain types: a plan cannot name a protected account, a malformed cluster id or
/// host, whatever its hash says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedTask {
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

pub(super) fn invalid(path: &Path, reason: String) -> PlanFileError {
    PlanFileError::Invalid { path: path.to_path_buf(), reason }
}
