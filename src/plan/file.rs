//! The plan file (`plan --out PLAN_FILE`, `run --plan PLAN_FILE`): a reviewed, approvable
//! record of exactly which tasks a run will execute, against which endpoint and with which
//! access key, and the checks a run makes before it trusts one.
//!
//! This module owns the file format, writing it, loading it back into checked types, and the
//! two-person rule. It reads no configuration, opens no database and talks to no network: the
//! caller passes the endpoint and access key id it resolved, and turns the plan's tasks into a
//! run.
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

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::manifest::{ClusterId, HostSpec, ManifestSet, UserName, Zone};
use crate::plan::approval::{self, Approval, ApprovalError};
use crate::plan::{Plan, PlanState};
use crate::store::{NewTask, TaskState};

/// The `format` member of every plan file this version writes and reads.
pub const FORMAT: &str = "qc-offboard-plan/1";
/// Plan files larger than this are refused unread (about a million tasks).
pub const MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;
/// The prefix of `content_hash`.
const HASH_PREFIX: &str = "sha256:";

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

/// The document as written; field order is the order people read it in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    format: String,
    created_at: String,
    endpoint: String,
    access_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    manifests: Vec<DocManifest>,
    ticket: Option<String>,
    requested_by: Option<String>,
    reason: Option<String>,
    due_by: Option<String>,
    tasks: Vec<DocTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    discovered: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_hash: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocManifest {
    path: String,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocTask {
    cluster: String,
    zone: String,
    user: String,
    host: String,
    state: String,
    not_before: Option<String>,
    due_by: Option<String>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl PlanFile {
    /// The plan file of `plan` (built from `set`) for `endpoint` and `access_key_id`, made at
    /// `created_at`, with its content hash computed.
    pub fn new(
        set: &ManifestSet,
        plan: &Plan,
        endpoint: &str,
        access_key_id: &str,
        created_at: DateTime<Utc>,
    ) -> PlanFile {
        let first = set.files.first();
        let mut file = PlanFile {
            manifests: set.files.iter().map(|f| (f.path.display().to_string(), f.sha256.clone())).collect(),
            ticket: first.and_then(|f| f.ticket.clone()),
            requested_by: first.and_then(|f| f.requested_by.clone()),
            reason: first.and_then(|f| f.reason.clone()),
            due_by: set.files.iter().filter_map(|f| f.due_by).min(),
            endpoint: endpoint.to_owned(),
            access_key_id: access_key_id.to_owned(),
            account: None,
            // The file keeps whole seconds; keep the value equal to what a load returns.
            created_at: DateTime::from_timestamp(created_at.timestamp(), 0).unwrap_or(created_at),
            tasks: plan
                .tasks
                .iter()
                .map(|p| PlannedTask {
                    cluster: p.task.cluster.clone(),
                    zone: p.task.zone.clone(),
                    user: p.task.user.clone(),
                    host: p.task.host.clone(),
                    state: p.state,
                    not_before: p.task.not_before,
                    due_by: p.task.due_by,
                })
                .collect(),
            discovered: None,
            content_hash: String::new(),
        };
        file.content_hash = content_hash(&file.doc_value(false));
        file
    }

    /// The same plan pinning what discovery found (the hash covers it).
    pub fn with_discovered(mut self, discovered: Option<Value>) -> PlanFile {
        self.discovered = discovered;
        self.content_hash = content_hash(&self.doc_value(false));
        self
    }

    /// The same plan for a named account (the hash covers the account).
    pub fn for_account(mut self, account: &crate::manifest::AccountName) -> PlanFile {
        self.account = (!account.is_default()).then(|| account.to_string());
        self.content_hash = content_hash(&self.doc_value(false));
        self
    }

    fn doc(&self, with_hash: bool) -> Doc {
        Doc {
            format: FORMAT.to_owned(),
            created_at: time(self.created_at),
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            account: self.account.clone(),
            manifests: self
                .manifests
                .iter()
                .map(|(path, sha256)| DocManifest { path: path.clone(), sha256: sha256.clone() })
                .collect(),
            ticket: self.ticket.clone(),
            requested_by: self.requested_by.clone(),
            reason: self.reason.clone(),
            due_by: self.due_by.map(time),
            tasks: self
                .tasks
                .iter()
                .map(|t| DocTask {
                    cluster: t.cluster.to_string(),
                    zone: t.zone.to_string(),
                    user: t.user.to_string(),
                    host: t.host.to_string(),
                    state: t.state.as_str().to_owned(),
                    not_before: t.not_before.map(|d| d.format("%F").to_string()),
                    due_by: t.due_by.map(time),
                })
                .collect(),
            discovered: self.discovered.clone(),
            content_hash: with_hash.then(|| self.content_hash.clone()),
        }
    }

    fn doc_value(&self, with_hash: bool) -> Value {
        serde_json::to_value(self.doc(with_hash)).expect("a plan document is plain JSON")
    }

    /// The file's text: pretty JSON and a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.doc(true)).expect("a plan document is plain JSON");
        text.push('\n');
        text
    }

    /// Write the file: to a temporary file beside `path`, then renamed over it, so a reader
    /// never sees half a plan.
    pub fn write(&self, path: &Path) -> Result<(), PlanFileError> {
        let err = |source| PlanFileError::Write { path: path.to_path_buf(), source };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().ok_or_else(|| err(io::Error::other("the path names no file")))?;
        let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.to_json().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    /// Read a plan file and check it: its content hash, its shape, every task as a manifest
    /// would be checked, and that it was made for `endpoint` and `access_key_id` (what the run
    /// resolved from its configuration). Any failure means the run must send nothing.
    pub fn load_verified(path: &Path, endpoint: &str, access_key_id: &str) -> Result<PlanFile, PlanFileError> {
        let plan = PlanFile::load(path)?;
        plan.check_target(path, endpoint, access_key_id)?;
        Ok(plan)
    }

    /// Read a plan file and check its content hash and shape (not its target).
    pub fn load(path: &Path) -> Result<PlanFile, PlanFileError> {
        let read_err = |source| PlanFileError::Read { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_PLAN_BYTES {
            return Err(invalid(path, format!("{size} bytes is more than the {MAX_PLAN_BYTES} a plan may have")));
        }
        let text = std::fs::read(path).map_err(read_err)?;
        PlanFile::parse(path, &text)
    }

    /// Check the text of a plan file (see [`PlanFile::load`]); `path` is for messages.
    pub fn parse(path: &Path, text: &[u8]) -> Result<PlanFile, PlanFileError> {
        let mut value: Value =
            serde_json::from_slice(text).map_err(|e| invalid(path, format!("not a JSON plan: {e}")))?;
        let Some(obj) = value.as_object_mut() else {
            return Err(invalid(path, "not a JSON object".into()));
        };
        match obj.get("format") {
            Some(Value::String(f)) if f == FORMAT => {}
            Some(other) => return Err(invalid(path, format!("format {other} is not {FORMAT:?}"))),
            None => return Err(invalid(path, format!("no \"format\": {FORMAT:?}; is this a plan file?"))),
        }
        let recorded = match obj.remove("content_hash") {
            Some(Value::String(h)) => h,
            Some(_) => return Err(invalid(path, "content_hash is not a string".into())),
            None => return Err(invalid(path, "no content_hash: plans are made by `plan --out`".into())),
        };
        let computed = content_hash(&value);
        if recorded.to_ascii_lowercase() != computed {
            return Err(PlanFileError::Tampered { path: path.to_path_buf(), recorded, computed });
        }
        let doc: Doc = serde_json::from_value(value).map_err(|e| invalid(path, e.to_string()))?;
        let mut file = from_doc(path, doc)?;
        file.content_hash = computed;
        Ok(file)
    }

    fn check_target(&self, path: &Path, endpoint: &str, access_key_id: &str) -> Result<(), PlanFileError> {
        let wrong = |what, planned: &str, actual: &str| PlanFileError::WrongTarget {
            path: path.to_path_buf(),
            what,
            planned: planned.to_owned(),
            actual: actual.to_owned(),
        };
        if self.endpoint != endpoint {
            return Err(wrong("endpoint", &self.endpoint, endpoint));
        }
        if self.access_key_id != access_key_id {
            return Err(wrong("access key id", &self.access_key_id, access_key_id));
        }
        Ok(())
    }

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

    /// What the run records about its plan and approval, to be merged into the run's `options`
    /// JSON (and so into its `run_started` audit record): `{"plan": {"path", "content_hash",
    /// "created_at"}, "approved_by", "approval", "require_approval"}`. `approval` is
    /// `{"signed": true, "principal", "principals", "key_fingerprint", "signature",
    /// "allowed_signers", "namespace"}` for a checked signature, `{"signed": false}` for a
    /// typed `--approved-by`, `null` without an approver. `report` reads these keys back.
    pub fn run_options(&self, path: &Path, approval: &RunApproval) -> Value {
        let record = match (&approval.signed, &approval.approved_by) {
            (Some(a), _) => json!({
                "signed": true,
                "principal": a.principal,
                "principals": a.principals,
                "key_fingerprint": a.key_fingerprint,
                "signature": a.signature.display().to_string(),
                "allowed_signers": approval.allowed_signers.as_ref().map(|p| p.display().to_string()),
                "namespace": approval::NAMESPACE,
            }),
            (None, Some(_)) => json!({"signed": false}),
            (None, None) => Value::Null,
        };
        json!({
            "plan": {
                "path": path.display().to_string(),
                "content_hash": self.content_hash,
                "created_at": time(self.created_at),
            },
            "approved_by": approval.approved_by,
            "approval": record,
            "require_approval": approval.require,
        })
    }

    /// Read a plan file once and check everything a run needs before it trusts it: the content
    /// hash, the shape, the target (see [`PlanFile::load_verified`]), the signature over the
    /// very bytes read (with `--allowed-signers`), and the two-person rule.
    pub fn load_approved(
        path: &Path,
        endpoint: &str,
        access_key_id: &str,
        asked: &ApprovalArgs<'_>,
    ) -> Result<(PlanFile, RunApproval), PlanFileError> {
        let read_err = |source| PlanFileError::Read { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_PLAN_BYTES {
            return Err(invalid(path, format!("{size} bytes is more than the {MAX_PLAN_BYTES} a plan may have")));
        }
        let text = std::fs::read(path).map_err(read_err)?;
        let plan = PlanFile::parse(path, &text)?;
        plan.check_target(path, endpoint, access_key_id)?;
        let approval = match asked.allowed_signers {
            None => {
                check_approval(&plan, asked.approved_by, asked.require)?;
                RunApproval {
                    approved_by: asked.approved_by.map(|a| a.trim().to_owned()),
                    signed: None,
                    allowed_signers: None,
                    require: asked.require,
                }
            }
            Some(signers) => {
                let signed = approval::verify(&text, &approval::signature_path(path), signers, Utc::now())?;
                check_signed_approval(&plan, &signed, asked.approved_by, asked.require)?;
                RunApproval {
                    approved_by: Some(signed.principal.clone()),
                    signed: Some(signed),
                    allowed_signers: Some(signers.to_path_buf()),
                    require: asked.require,
                }
            }
        };
        Ok((plan, approval))
    }

    /// Task counts by planned state.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.tasks.iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(t.state.as_str()).or_default() += 1;
            m
        })
    }
}

/// What `run --plan` was asked to check about approval.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalArgs<'a> {
    pub approved_by: Option<&'a str>,
    pub allowed_signers: Option<&'a Path>,
    pub require: bool,
}

impl<'a> ApprovalArgs<'a> {
    pub fn new(approved_by: Option<&'a str>, allowed_signers: Option<&'a Path>, require: bool) -> Self {
        ApprovalArgs { approved_by, allowed_signers, require }
    }
}

/// The approval a run carries: who (the signer's principal, or the name typed), and the
/// checked signature when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunApproval {
    pub approved_by: Option<String>,
    pub signed: Option<Approval>,
    pub allowed_signers: Option<PathBuf>,
    pub require: bool,
}

/// The two-person rule for a signed plan: with `require`, the plan must name its requester and
/// no principal of the signing key may be that requester. A name typed with `--approved-by`
/// next to a signature must be the signer's.
pub fn check_signed_approval(
    plan: &PlanFile,
    signed: &Approval,
    approved_by: Option<&str>,
    require: bool,
) -> Result<(), PlanFileError> {
    if let Some(name) = approved_by.map(str::trim) {
        if !signed.names(name) {
            return Err(PlanFileError::Approval(format!(
                "--approved-by {name:?} is not the signer: the plan is signed by {:?} (key {})",
                signed.principal, signed.key_fingerprint
            )));
        }
    }
    if !require {
        return Ok(());
    }
    let requester = plan.requested_by.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let Some(requester) = requester else {
        return Err(PlanFileError::Approval(
            "the plan names no requested_by (set it in the manifest), so approval by another person cannot be checked"
                .into(),
        ));
    };
    if signed.names(requester) {
        return Err(PlanFileError::Approval(format!(
            "the plan is signed by the requester {requester:?} (key {}); another person must sign it",
            signed.key_fingerprint
        )));
    }
    Ok(())
}

/// The two-person rule. `approved_by` is recorded whenever given; with `require`, a run is
/// refused unless an approver is named, the plan names who requested it, and the two differ
/// (compared without case and surrounding spaces: `Alice@Example.com` is `alice@example.com`).
/// A refusal is exit 65: the plan, as approved, is not fit to run, and nothing was sent.
pub fn check_approval(plan: &PlanFile, approved_by: Option<&str>, require: bool) -> Result<(), PlanFileError> {
    let approver = approved_by.map(str::trim);
    if approver == Some("") {
        return Err(PlanFileError::Approval("--approved-by is empty; name the person who approved the plan".into()));
    }
    if !require {
        return Ok(());
    }
    let Some(approver) = approver else {
        return Err(PlanFileError::Approval(
            "--require-approval needs --approved-by NAME, someone other than the requester".into(),
        ));
    };
    let requester = plan.requested_by.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let Some(requester) = requester else {
        return Err(PlanFileError::Approval(
            "the plan names no requested_by (set it in the manifest), so approval by another person cannot be checked"
                .into(),
        ));
    };
    if approver.to_lowercase() == requester.to_lowercase() {
        return Err(PlanFileError::Approval(format!(
            "the approver {approver:?} is the requester {requester:?}; another person must approve the plan"
        )));
    }
    Ok(())
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

fn from_doc(path: &Path, doc: Doc) -> Result<PlanFile, PlanFileError> {
    let instant = |what: &str, s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| invalid(path, format!("{what} {s:?} is not an RFC 3339 instant: {e}")))
    };
    let mut tasks = Vec::with_capacity(doc.tasks.len());
    for (i, t) in doc.tasks.into_iter().enumerate() {
        let at = |why: String| invalid(path, format!("tasks[{i}]: {why}"));
        let state = match t.state.as_str() {
            "pending" => PlanState::Pending,
            "not_due" => PlanState::NotDue,
            "skipped" => PlanState::Skipped,
            other => return Err(at(format!("state {other:?} is not pending, not_due or skipped"))),
        };
        tasks.push(PlannedTask {
            cluster: ClusterId::parse(&t.cluster).map_err(at)?,
            zone: Zone::parse(&t.zone).map_err(at)?,
            user: UserName::parse(&t.user).map_err(at)?,
            host: HostSpec::parse(&t.host).map_err(at)?,
            state,
            not_before: t.not_before.as_deref().map(crate::manifest::parse_date).transpose().map_err(at)?,
            due_by: t.due_by.as_deref().map(|s| instant("due_by", s)).transpose().map_err(|e| at(e.to_string()))?,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tasks {
        if !seen.insert((&t.cluster, &t.user, &t.host)) {
            return Err(invalid(path, format!("task {} {}@{} appears twice", t.cluster, t.user, t.host)));
        }
    }
    if doc.endpoint.is_empty() || doc.access_key_id.is_empty() {
        return Err(invalid(path, "endpoint and access_key_id must not be empty".into()));
    }
    if let Some(a) = &doc.account {
        let a = crate::manifest::AccountName::parse(a).map_err(|e| invalid(path, format!("account: {e}")))?;
        if a.is_default() {
            return Err(invalid(path, "account: the default account is written by leaving `account` out".into()));
        }
    }
    Ok(PlanFile {
        manifests: doc.manifests.into_iter().map(|m| (m.path, m.sha256)).collect(),
        ticket: doc.ticket,
        requested_by: doc.requested_by,
        reason: doc.reason,
        due_by: doc.due_by.as_deref().map(|s| instant("due_by", s)).transpose()?,
        endpoint: doc.endpoint,
        account: doc.account,
        access_key_id: doc.access_key_id,
        created_at: instant("created_at", &doc.created_at)?,
        tasks,
        discovered: match doc.discovered {
            None => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => return Err(invalid(path, "discovered: not an object".into())),
        },
        content_hash: String::new(),
    })
}

/// `sha256:` and the hex SHA-256 of the canonical form of `value`.
pub fn content_hash(value: &Value) -> String {
    format!("{HASH_PREFIX}{}", hex::encode(Sha256::digest(canonical(value).as_bytes())))
}

/// RFC 8785 (JCS) canonical JSON of `value` (see the module documentation).
pub fn canonical(value: &Value) -> String {
    // A `Value` holds no non-finite number, the one thing JCS cannot write.
    serde_jcs::to_string(value).expect("JSON values serialize canonically")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PlanFile {
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
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": [1, null, true], "a": {"é": "x\ny", "Z": "\u0001"} }"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":{"Z":"\u0001","é":"x\ny"},"b":[1,null,true]}"#);
    }

    #[test]
    fn a_written_plan_loads_back_equal() {
        let p = sample();
        let back = PlanFile::parse(Path::new("p.json"), p.to_json().as_bytes()).unwrap();
        assert_eq!(back, p);
        assert!(p.content_hash.starts_with("sha256:") && p.content_hash.len() == 7 + 64);
    }

    #[test]
    fn the_hash_covers_tasks_and_target() {
        let p = sample();
        let text = p.to_json();
        for (from, to) in [
            ("\"user\": \"bob\"", "\"user\": \"carol\""),
            ("\"endpoint\": \"https://api.qingcloud.com/iaas/\"", "\"endpoint\": \"https://evil.example/iaas/\""),
            ("\"state\": \"pending\"", "\"state\": \"skipped\""),
        ] {
            let edited = text.replace(from, to);
            assert_ne!(edited, text);
            let err = PlanFile::parse(Path::new("p.json"), edited.as_bytes()).unwrap_err();
            assert!(matches!(err, PlanFileError::Tampered { .. }), "{from}: {err}");
        }
        // Whitespace and member order are not content.
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(PlanFile::parse(Path::new("p.json"), v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn a_recomputed_hash_does_not_smuggle_a_protected_account() {
        let p = sample();
        let mut v = p.doc_value(false);
        v["tasks"][0]["user"] = json!("root");
        let hash = content_hash(&v);
        v["content_hash"] = json!(hash);
        let err = PlanFile::parse(Path::new("p.json"), v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("protected"), "{err}");
    }

    #[test]
    fn target_must_match() {
        let p = sample();
        assert!(p.check_target(Path::new("p"), "https://api.qingcloud.com/iaas/", "QYACCESSKEYIDEXAMPLE").is_ok());
        let e = p.check_target(Path::new("p"), "http://127.0.0.1:1/iaas/", "QYACCESSKEYIDEXAMPLE").unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        let e = p.check_target(Path::new("p"), "https://api.qingcloud.com/iaas/", "OTHER").unwrap_err();
        assert!(e.to_string().contains("access key id"), "{e}");
    }

    #[test]
    fn two_person_rule() {
        let p = sample();
        assert!(check_approval(&p, None, false).is_ok());
        assert!(check_approval(&p, Some("alice@example.com"), false).is_ok(), "recorded, not enforced");
        assert!(check_approval(&p, Some("carol@example.com"), true).is_ok());
        for same in ["alice@example.com", " Alice@Example.COM "] {
            assert!(check_approval(&p, Some(same), true).unwrap_err().to_string().contains("another person"));
        }
        assert!(check_approval(&p, None, true).is_err());
        assert!(check_approval(&p, Some("  "), false).is_err());
        let anonymous = PlanFile { requested_by: None, ..p };
        assert!(check_approval(&anonymous, Some("carol"), true).unwrap_err().to_string().contains("requested_by"));
    }

    #[test]
    fn tasks_done_since_the_plan_are_skipped() {
        let p = sample();
        assert_eq!(p.new_tasks(|_, _, _| false)[0].state, TaskState::Pending);
        assert_eq!(p.new_tasks(|c, u, h| (c, u, h) == ("cl-abc12345", "bob", "%"))[0].state, TaskState::Skipped);
    }
}
