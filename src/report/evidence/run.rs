//! A run as the evidence names it: who asked, who approved (signed or typed), who ran it,
//! against what, from the chain (or from the tables for a run the chain does not know, never
//! verified).
//!
//! It builds one run's evidence from what it is given; deciding what is verified is the
//! gathering's.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::report::instant::{parse_time, ser_instant};
use crate::store::{ChainRun, RunRow, SeqRange};

/// A run as the evidence names it: who asked, who approved, who ran it, against what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvidence {
    pub id: i64,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    /// `Some(true)` when the approver signed the plan (`run --allowed-signers`), `Some(false)`
    /// for a name typed with `--approved-by`, `None` without an approver.
    pub approval_signed: Option<bool>,
    /// The signing key's fingerprint (`SHA256:…`) of a signed approval.
    pub approval_key: Option<String>,
    /// The content hash of the plan file the run executed (`run --plan`).
    pub plan_content_hash: Option<String>,
    pub operator: String,
    pub host: String,
    pub endpoint: String,
    pub access_key_id: String,
    #[serde(serialize_with = "ser_instant")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::report::instant::ser_time")]
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub retry_of: Option<i64>,
    pub simulated: bool,
    pub audit: Option<SeqRange>,
    /// The run's own rows (`runs`, `run_manifests`) agree with the chain, which is intact
    /// through its `run_started` record.
    pub verified: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_verified: Vec<String>,
}

impl RunEvidence {
    /// The approver of a run's options, as recorded by `run --plan`.
    fn approval(options: &Value) -> (Option<String>, Option<bool>, Option<String>) {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let approved_by = text(options.get("approved_by"));
        let signed = approved_by.as_ref().map(|_| options.pointer("/approval/signed") == Some(&Value::Bool(true)));
        (approved_by, signed, text(options.pointer("/approval/key_fingerprint")))
    }

    /// A run as the tables hold it (a run the chain does not know: never verified).
    pub(super) fn of(run: &RunRow, audit: Option<SeqRange>, not_verified: Vec<String>) -> RunEvidence {
        let (approved_by, approval_signed, approval_key) = Self::approval(&run.options);
        RunEvidence {
            id: run.id,
            ticket: run.ticket.clone(),
            requested_by: run.requested_by.clone(),
            reason: run.reason.clone(),
            approved_by,
            approval_signed,
            approval_key,
            plan_content_hash: run.options.pointer("/plan/content_hash").and_then(Value::as_str).map(str::to_owned),
            operator: run.operator.clone(),
            host: run.host.clone(),
            endpoint: run.endpoint.clone(),
            access_key_id: run.access_key_id.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            exit_code: run.exit_code,
            retry_of: run.retry_of,
            simulated: run.simulated,
            audit,
            verified: false,
            not_verified,
        }
    }

    /// A run from the chain; the times the chain bounds come from the table when they lie in
    /// their window, else from the record.
    pub(super) fn from_chain(
        id: i64,
        chain: &ChainRun,
        stored: Option<&RunRow>,
        not_verified: Vec<String>,
    ) -> RunEvidence {
        let row = &chain.row;
        let text = |c: &str| row.text(c).map(str::to_owned);
        let options = row.columns.get("options").map(|p| p.value.clone()).unwrap_or(Value::Null);
        let (approved_by, approval_signed, approval_key) = Self::approval(&options);
        let disputed = |c: &str| not_verified.iter().any(|p| p.starts_with(&format!("runs row {id}, {c}:")));
        let window_time = |c: &str| row.windows.get(c).and_then(|w| parse_time(&w.upper));
        let started_at = match stored {
            Some(r) if !disputed("started_at") => Some(r.started_at),
            _ => window_time("started_at"),
        };
        let finished_at = match stored {
            Some(r) if !disputed("finished_at") => r.finished_at,
            _ => window_time("finished_at"),
        };
        RunEvidence {
            id,
            ticket: text("ticket"),
            requested_by: text("requested_by"),
            reason: text("reason"),
            approved_by,
            approval_signed,
            approval_key,
            plan_content_hash: options.pointer("/plan/content_hash").and_then(Value::as_str).map(str::to_owned),
            operator: text("operator").unwrap_or_default(),
            host: text("host").unwrap_or_default(),
            endpoint: text("endpoint").unwrap_or_default(),
            access_key_id: text("access_key_id").unwrap_or_default(),
            started_at: started_at.unwrap_or_default(),
            finished_at,
            exit_code: row.int("exit_code"),
            retry_of: row.int("retry_of"),
            simulated: row.columns.get("simulated").is_some_and(|p| p.value == Value::Bool(true)),
            audit: Some(SeqRange { first: row.first_seq, last: row.last_seq, records: row.records }),
            verified: not_verified.is_empty(),
            not_verified,
        }
    }

    /// The approver for people: `name (signed, key SHA256:…)` or `name (UNSIGNED …)`.
    pub fn approver(&self) -> Option<String> {
        let name = self.approved_by.as_deref()?;
        Some(match (self.approval_signed, &self.approval_key) {
            (Some(true), Some(key)) => format!("{name} (signed plan, key {key})"),
            (Some(true), None) => format!("{name} (signed plan)"),
            _ => format!("{name} (UNSIGNED: a name typed with --approved-by)"),
        })
    }
}
