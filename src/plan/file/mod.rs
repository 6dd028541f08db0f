//! The plan file (`plan --out PLAN_FILE`, `run --plan PLAN_FILE`): a reviewed, approvable
//! record of exactly which tasks a run will execute, against which endpoint and with which
//! access key, and the checks a run makes before it trusts one.
//!
//! This module owns the file format (`document`: the JSON shape, its content hash, writing it),
//! loading it back into checked types (`load`), the two-person rule (`two_person`) and what a
//! run takes from a plan (`tasks`); the types are `model`'s. It
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
mod model;
mod tasks;
mod two_person;

pub use document::{canonical, content_hash};
pub use model::{PinnedTask, PlanFile, PlanFileError, FORMAT, MAX_PLAN_BYTES};
pub use two_person::{check_approval, check_signed_approval, ApprovalArgs, RunApproval};
