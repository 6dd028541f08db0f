//! The evidence behind report rows (`report --user U`, and every HTML report): who asked and
//! who ran it, when the request went out, the API calls, and the audit records with the
//! verdict of the hash chain.
//!
//! `audit.verified` of a task is true when the whole chain verifies, or when the task's last
//! audit record lies before the first bad record: its records are then covered by the intact
//! part of the chain.

use std::collections::HashMap;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{csv_field, time, ReportRow};
use crate::store::{ReportFilter, RunRow, SeqRange, Store, StoreError, TaskCall, Verification};

/// The action that sends `del_user`.
const SUBMIT_ACTION: &str = "RunClusterCustomService";

/// Everything an auditor needs about a set of tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    #[serde(serialize_with = "ser_instant")]
    pub generated_at: DateTime<Utc>,
    pub chain: ChainCheck,
    pub runs: Vec<RunEvidence>,
    pub tasks: Vec<EvidenceRow>,
}

/// The verdict of walking the whole audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    pub intact: bool,
    pub checked: u64,
    /// `SEQ:HASH` of the last intact record.
    pub tip: String,
    /// The first bad record and what is wrong with it.
    pub problem: Option<String>,
    pub first_bad_seq: Option<i64>,
}

impl ChainCheck {
    fn of(v: &Verification) -> ChainCheck {
        ChainCheck {
            intact: v.is_intact(),
            checked: v.checked,
            tip: v.tip.to_string(),
            problem: v.problem.as_ref().map(ToString::to_string),
            first_bad_seq: v.problem.as_ref().map(|p| p.seq()),
        }
    }

    /// Are the records `range` covered by the intact part of the chain?
    pub fn covers(&self, range: Option<SeqRange>) -> bool {
        match (range, self.first_bad_seq) {
            (None, _) => false,
            (Some(_), None) => self.intact,
            (Some(r), Some(bad)) => r.last < bad,
        }
    }

    /// One line: `intact (N records, tip SEQ:HASH)` or the problem.
    pub fn describe(&self) -> String {
        match &self.problem {
            None => format!("intact ({} records checked, tip {})", self.checked, self.tip),
            Some(p) => format!("NOT intact: {p}"),
        }
    }
}

/// A run as the evidence names it: who asked, who approved, who ran it, against what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvidence {
    pub id: i64,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    /// The content hash of the plan file the run executed (`run --plan`).
    pub plan_content_hash: Option<String>,
    pub operator: String,
    pub host: String,
    pub endpoint: String,
    pub access_key_id: String,
    #[serde(serialize_with = "ser_instant")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "super::ser_time")]
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub simulated: bool,
    pub audit: Option<SeqRange>,
}

impl RunEvidence {
    fn of(run: &RunRow, audit: Option<SeqRange>) -> RunEvidence {
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        RunEvidence {
            id: run.id,
            ticket: run.ticket.clone(),
            requested_by: run.requested_by.clone(),
            reason: run.reason.clone(),
            approved_by: run.options.get("approved_by").and_then(text),
            plan_content_hash: run.options.pointer("/plan/content_hash").and_then(text),
            operator: run.operator.clone(),
            host: run.host.clone(),
            endpoint: run.endpoint.clone(),
            access_key_id: run.access_key_id.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            exit_code: run.exit_code,
            simulated: run.simulated,
            audit,
        }
    }
}

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
    fn of(c: &TaskCall) -> CallEvidence {
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
    pub operator: Option<String>,
    /// When the first `del_user` request for the task was sent (its first submission intent
    /// when no call was recorded).
    #[serde(serialize_with = "super::ser_time")]
    pub requested_at: Option<DateTime<Utc>>,
    pub api_calls: Vec<CallEvidence>,
    pub audit: Option<TaskAudit>,
}

fn ser_instant<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time(*t))
}

/// Gather the evidence for the tasks `filter` selects, judged at `now`.
pub async fn gather(store: &Store, filter: &ReportFilter, now: DateTime<Utc>) -> Result<Evidence, StoreError> {
    let tasks = store.report_tasks(filter).await?;
    let verification = store.verify_audit(None).await?;
    let chain = ChainCheck::of(&verification);
    let task_ids: Vec<i64> = tasks.iter().map(|(t, _)| t.id).collect();
    let mut run_ids: Vec<i64> = tasks.iter().map(|(t, _)| t.run_id).collect();
    run_ids.dedup();
    run_ids.sort_unstable();
    run_ids.dedup();
    let mut calls = store.task_calls(&task_ids).await?;
    let task_ranges = store.task_audit_ranges(&task_ids).await?;
    let run_ranges = store.run_audit_ranges(&run_ids).await?;
    let mut runs = Vec::with_capacity(run_ids.len());
    for id in &run_ids {
        if let Some(run) = store.run(*id).await? {
            runs.push(RunEvidence::of(&run, run_ranges.get(id).copied()));
        }
    }
    let by_id: HashMap<i64, &RunEvidence> = runs.iter().map(|r| (r.id, r)).collect();
    let rows = tasks
        .into_iter()
        .map(|(task, ticket)| {
            let run = by_id.get(&task.run_id);
            let api_calls: Vec<CallEvidence> =
                calls.remove(&task.id).unwrap_or_default().iter().map(CallEvidence::of).collect();
            let requested_at = api_calls.iter().find(|c| c.action == SUBMIT_ACTION).map(|c| c.at).or(task.started_at);
            let range = task_ranges.get(&task.id).copied();
            let audit = range.map(|r| TaskAudit {
                first_seq: r.first,
                last_seq: r.last,
                records: r.records,
                verified: chain.covers(Some(r)),
            });
            EvidenceRow {
                requested_by: run.and_then(|r| r.requested_by.clone()),
                approved_by: run.and_then(|r| r.approved_by.clone()),
                operator: run.map(|r| r.operator.clone()),
                requested_at,
                api_calls,
                audit,
                row: ReportRow::new(task, ticket, now),
            }
        })
        .collect();
    Ok(Evidence { generated_at: now, chain, runs, tasks: rows })
}

impl Evidence {
    pub fn rows(&self) -> Vec<ReportRow> {
        self.tasks.iter().map(|t| t.row.clone()).collect()
    }
}

/// The columns `--user` adds to the CSV export, after [`super::CSV_HEADER`].
pub const CSV_EVIDENCE_HEADER: [&str; 8] = [
    "requested_by",
    "approved_by",
    "operator",
    "requested_at",
    "api_calls",
    "audit_seq_first",
    "audit_seq_last",
    "audit_verified",
];

/// CSV with the evidence columns; `api_calls` lists the calls as `#ID ACTION AT …` joined by
/// ` | `.
pub fn write_csv(mut w: impl Write, evidence: &Evidence) -> io::Result<()> {
    let header: Vec<&str> = super::CSV_HEADER.iter().chain(CSV_EVIDENCE_HEADER.iter()).copied().collect();
    write!(w, "{}\r\n", header.join(","))?;
    for t in &evidence.tasks {
        let mut fields: Vec<String> = super::fields(&t.row).to_vec();
        let calls: Vec<String> = t.api_calls.iter().map(CallEvidence::summary).collect();
        fields.extend([
            t.requested_by.clone().unwrap_or_default(),
            t.approved_by.clone().unwrap_or_default(),
            t.operator.clone().unwrap_or_default(),
            t.requested_at.map(time).unwrap_or_default(),
            calls.join(" | "),
            t.audit.map(|a| a.first_seq.to_string()).unwrap_or_default(),
            t.audit.map(|a| a.last_seq.to_string()).unwrap_or_default(),
            t.audit.is_some_and(|a| a.verified).to_string(),
        ]);
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        write!(w, "{}\r\n", line.join(","))?;
    }
    Ok(())
}

/// A JSON array of rows, each with its evidence fields.
pub fn write_json(mut w: impl Write, evidence: &Evidence) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, &evidence.tasks)?;
    writeln!(w)
}

/// The table of [`super::write_table`], then one block per task with its evidence, and the
/// verdict of the audit chain.
pub fn write_table(mut w: impl Write, evidence: &Evidence) -> io::Result<()> {
    super::write_table(&mut w, &evidence.rows())?;
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for t in &evidence.tasks {
        let r = &t.row;
        writeln!(w, "\ntask {} (run {}): {}@{} on {} ({})", r.task_id, r.run_id, r.user, r.host, r.cluster, r.zone)?;
        let line = |w: &mut dyn Write, label: &str, value: String| writeln!(w, "  {label:<14}{value}");
        line(&mut w, "outcome", format!("{}{}", r.outcome.as_str(), if r.late { " (LATE)" } else { "" }))?;
        line(&mut w, "ticket", dash(r.ticket.clone()))?;
        line(&mut w, "requested by", dash(t.requested_by.clone()))?;
        line(&mut w, "approved by", dash(t.approved_by.clone()))?;
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
            Some(a) => format!(
                "records {}..{} ({}), {}",
                a.first_seq,
                a.last_seq,
                a.records,
                if a.verified { "verified by the hash chain" } else { "NOT verified: the chain is broken before them" }
            ),
            None => "no records".into(),
        };
        line(&mut w, "audit", audit)?;
        if t.api_calls.is_empty() {
            line(&mut w, "api calls", "none".into())?;
        }
        for (i, c) in t.api_calls.iter().enumerate() {
            line(&mut w, if i == 0 { "api calls" } else { "" }, c.summary())?;
        }
    }
    writeln!(w, "\naudit chain: {}", evidence.chain.describe())
}
