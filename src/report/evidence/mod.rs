//! The evidence behind report rows: who asked and who ran it, who approved (and whether the
//! approval was signed), when the request went out, the API calls, every failed attempt, and
//! the audit records with the verdict of the hash chain.
//!
//! Every value comes from the audit chain replayed ([`crate::store::Replay`]) and is checked
//! against the tables. A row is `verified` only when the chain is intact up to and including
//! the row's last record *and* every stored row behind it (its task, its run, its API calls)
//! agrees with the chain; otherwise `not_verified` says why: where the chain breaks, or which
//! stored value disagrees. Where a stored value disagrees, the row shows the chain's value.
//! A task that only the tables know (no `task_created` record) is shown from the tables and
//! is never verified. The pre-state comes from the chain alone ([`super::pre_state`]): when its
//! record lies outside the task's own records (a run-level `preflight_unchecked` written after
//! them), the row is verified only if the chain is intact through that record too.
//!
//! The gathering is `gather`'s; what it gathers is `chain_check`'s, `run`'s and `task`'s, and
//! the three export formats are `export`'s.

mod chain_check;
mod export;
mod gather;
mod run;
mod task;

pub use chain_check::ChainCheck;
pub use export::{write_csv, write_json, write_table, CSV_EVIDENCE_HEADER};
pub use gather::{gather, gather_where, Evidence};
pub use run::RunEvidence;
pub use task::{CallEvidence, EvidenceRow, FailedAttempt, TaskAudit};
