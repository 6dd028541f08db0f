//! The evidence in the report's three formats: the table followed by one block per task and
//! the chain's verdict, a JSON array of rows with their evidence, and CSV with the evidence
//! columns after the report's.
//!
//! It writes what was gathered; it reads nothing and judges nothing.

use std::io::{self, Write};

use crate::report::csv::{fields, write_csv_records, CSV_HEADER};
use crate::report::instant::time;
use crate::report::table;

use super::gather::Evidence;
use super::run::RunEvidence;
use super::task::{CallEvidence, FailedAttempt};

/// The columns `--user` adds to the CSV export, after [`crate::report::CSV_HEADER`].
pub const CSV_EVIDENCE_HEADER: [&str; 9] = [
    "requested_by",
    "approved_by",
    "approval_signed",
    "operator",
    "requested_at",
    "api_calls",
    "failed_attempts",
    "audit_seq_first",
    "audit_seq_last",
];

/// CSV with the evidence columns; `api_calls` lists the calls as `#ID ACTION AT …` and
/// `failed_attempts` the attempts that did not delete the account, each joined by ` | `.
pub fn write_csv(w: impl Write, evidence: &Evidence) -> io::Result<()> {
    let header: Vec<&str> = CSV_HEADER.iter().chain(CSV_EVIDENCE_HEADER.iter()).copied().collect();
    let records = evidence.tasks.iter().map(|t| {
        let mut fields: Vec<String> = fields(&t.row).to_vec();
        let calls: Vec<String> = t.api_calls.iter().map(CallEvidence::summary).collect();
        let attempts: Vec<String> = t.failed_attempts.iter().map(FailedAttempt::summary).collect();
        fields.extend([
            t.requested_by.clone().unwrap_or_default(),
            t.approved_by.clone().unwrap_or_default(),
            t.approval_signed.map(|s| s.to_string()).unwrap_or_default(),
            t.operator.clone().unwrap_or_default(),
            t.requested_at.map(time).unwrap_or_default(),
            calls.join(" | "),
            attempts.join(" | "),
            t.audit.map(|a| a.first_seq.to_string()).unwrap_or_default(),
            t.audit.map(|a| a.last_seq.to_string()).unwrap_or_default(),
        ]);
        fields
    });
    write_csv_records(w, &header, records)
}

/// A JSON array of rows, each with its evidence fields.
pub fn write_json(mut w: impl Write, evidence: &Evidence) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, &evidence.tasks)?;
    writeln!(w)
}

/// The table of [`crate::report::write_table`], then one block per task with its evidence, and the
/// verdict of the audit chain.
pub fn write_table(mut w: impl Write, evidence: &Evidence) -> io::Result<()> {
    table::write_table(&mut w, &evidence.rows())?;
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for t in &evidence.tasks {
        let r = &t.row;
        writeln!(w, "\ntask {} (run {}): {}@{} on {} ({})", r.task_id, r.run_id, r.user, r.host, r.cluster, r.zone)?;
        let line = |w: &mut dyn Write, label: &str, value: String| writeln!(w, "  {label:<14}{value}");
        line(&mut w, "outcome", format!("{}{}", r.outcome.as_str(), if r.late { " (LATE)" } else { "" }))?;
        let pre_state = match (&r.pre_state, t.pre_state_record) {
            (Some(p), Some(seq)) => format!("{p} (audit record {seq})"),
            (Some(p), None) => p.clone(),
            (None, _) => "- (no preflight)".into(),
        };
        line(&mut w, "pre-state", pre_state)?;
        line(&mut w, "ticket", dash(r.ticket.clone()))?;
        line(&mut w, "requested by", dash(t.requested_by.clone()))?;
        let approver = evidence.runs.iter().find(|run| run.id == r.run_id).and_then(RunEvidence::approver);
        line(&mut w, "approved by", dash(approver))?;
        line(&mut w, "operator", dash(t.operator.clone()))?;
        line(&mut w, "requested at", dash(t.requested_at.map(time)))?;
        line(&mut w, "job", dash(r.job_id.clone()))?;
        let api = match (r.ret_code, &r.message) {
            (Some(c), Some(m)) if !m.is_empty() => format!("ret_code {c}: {m}"),
            (Some(c), _) => format!("ret_code {c}"),
            (None, _) => "-".into(),
        };
        line(&mut w, "api status", api)?;
        line(&mut w, "attempts", r.attempts.to_string())?;
        line(&mut w, "finished", dash(r.finished_at.map(time)))?;
        line(&mut w, "due by", dash(r.due_by.map(time)))?;
        let audit = match t.audit {
            Some(a) if a.verified => {
                format!("records {}..{} ({}), verified by the hash chain", a.first_seq, a.last_seq, a.records)
            }
            Some(a) => format!("records {}..{} ({}), NOT verified", a.first_seq, a.last_seq, a.records),
            None => "no records: NOT verified".into(),
        };
        line(&mut w, "audit", audit)?;
        for why in &r.not_verified {
            line(&mut w, "", format!("- {why}"))?;
        }
        for (i, a) in t.failed_attempts.iter().enumerate() {
            line(&mut w, if i == 0 { "failed tries" } else { "" }, a.summary())?;
        }
        if t.api_calls.is_empty() {
            line(&mut w, "api calls", "none".into())?;
        }
        for (i, c) in t.api_calls.iter().enumerate() {
            line(&mut w, if i == 0 { "api calls" } else { "" }, c.summary())?;
        }
    }
    writeln!(w, "\naudit chain: {}", evidence.chain.describe())?;
    match evidence.table_differences {
        0 => writeln!(w, "tables: every stored run, task and API call agrees with the chain"),
        n => writeln!(w, "tables: {n} stored values disagree with the chain (`audit verify` lists them)"),
    }
}
