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

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{late, time, write_csv_records, Filter, Outcome, ReportRow};
use crate::store::{
    ChainRow, ChainRun, ChainTask, ReportFilter, RunRow, SeqRange, Store, StoreError, TaskCall, Verification,
};

/// The action that sends `del_user`.
const SUBMIT_ACTION: &str = "RunClusterCustomService";

/// Everything an auditor needs about a set of tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    #[serde(serialize_with = "ser_instant")]
    pub generated_at: DateTime<Utc>,
    pub chain: ChainCheck,
    /// How many stored rows (of any task, not only those shown) disagree with the chain.
    pub table_differences: usize,
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

    /// Why records `first..=last` are not covered, if they are not.
    fn breaks_within(&self, first: i64, last: i64) -> Option<String> {
        let bad = self.first_bad_seq?;
        let problem = self.problem.as_deref().unwrap_or("the chain is broken");
        (bad <= last).then(|| {
            if bad < first {
                format!("the audit chain breaks at record {bad}, before this row's records {first}..{last} ({problem})")
            } else {
                format!("the audit chain breaks at record {bad}, within this row's records {first}..{last} ({problem})")
            }
        })
    }

    /// One line: `intact (N records, tip SEQ:HASH)` or the problem.
    pub fn describe(&self) -> String {
        match &self.problem {
            None => format!("intact ({} records checked, tip {})", self.checked, self.tip),
            Some(p) => format!(
                "NOT intact: {p}; records 1..{} are intact, nothing from record {} on is proven",
                self.checked,
                self.first_bad_seq.unwrap_or(0)
            ),
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
    #[serde(serialize_with = "super::ser_time")]
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
    fn of(run: &RunRow, audit: Option<SeqRange>, not_verified: Vec<String>) -> RunEvidence {
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
    fn from_chain(id: i64, chain: &ChainRun, stored: Option<&RunRow>, not_verified: Vec<String>) -> RunEvidence {
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

    /// The call as the chain proves it.
    fn from_chain(id: i64, row: &ChainRow) -> CallEvidence {
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

fn failed_attempts(task: &ChainTask) -> Vec<FailedAttempt> {
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
    /// Whether the approval was a signed plan (see [`RunEvidence::approval_signed`]).
    pub approval_signed: Option<bool>,
    pub operator: Option<String>,
    /// When the first `del_user` request for the task was sent (its first submission intent
    /// when no call was recorded).
    #[serde(serialize_with = "super::ser_time")]
    pub requested_at: Option<DateTime<Utc>>,
    pub api_calls: Vec<CallEvidence>,
    /// Every attempt that did not delete the account, with the API's message and error codes.
    pub failed_attempts: Vec<FailedAttempt>,
    /// The audit record the row's `pre_state` comes from.
    pub pre_state_record: Option<i64>,
    pub audit: Option<TaskAudit>,
}

fn ser_instant<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time(*t))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Gather the evidence for the tasks `filter` selects, judged at `now`.
pub async fn gather(store: &Store, filter: &ReportFilter, now: DateTime<Utc>) -> Result<Evidence, StoreError> {
    gather_where(store, &Filter::from(filter), now).await
}

/// [`gather`] with the full filter.
pub async fn gather_where(store: &Store, filter: &Filter, now: DateTime<Utc>) -> Result<Evidence, StoreError> {
    let verification = store.verify_audit(None).await?;
    let replay = store.replay().await?;
    let chain = ChainCheck::of(&verification);
    let stored_runs: HashMap<i64, RunRow> = store.runs().await?.into_iter().map(|r| (r.id, r)).collect();

    let mut runs: BTreeMap<i64, RunEvidence> = BTreeMap::new();
    for (id, run) in replay.runs.iter().filter(|(_, r)| r.started_record_at.is_some()) {
        let mut problems: Vec<String> = replay.run_discrepancies(*id).map(ToString::to_string).collect();
        if let Some(why) = chain.breaks_within(run.row.first_seq, run.row.first_seq) {
            problems.insert(0, why);
        }
        runs.insert(*id, RunEvidence::from_chain(*id, run, stored_runs.get(id), problems));
    }
    for (id, run) in &stored_runs {
        if !runs.contains_key(id) {
            let problems = replay.run_discrepancies(*id).map(ToString::to_string).collect();
            runs.insert(*id, RunEvidence::of(run, None, problems));
        }
    }

    let mut rows: Vec<(ReportRow, Option<&ChainTask>)> = Vec::new();
    for (id, task) in replay.tasks.iter().filter(|(_, t)| t.row.columns.contains_key("cluster")) {
        let Some(run_id) = task.run_id else { continue };
        let run = runs.get(&run_id);
        let row = chain_row(*id, run_id, task, run, now);
        let started = row.started_at.or(run.map(|r| r.started_at));
        if filter.admits(run_id, &row.user, &row.cluster, row.ticket.as_deref(), started) {
            rows.push((row, Some(task)));
        }
    }
    for (task, ticket) in store.report_tasks(&filter.store_filter()).await? {
        let known = replay.tasks.get(&task.id).is_some_and(|t| t.row.columns.contains_key("cluster"));
        let started = task.started_at.or(runs.get(&task.run_id).map(|r| r.started_at));
        if known || !filter.admits(task.run_id, &task.user, &task.cluster, ticket.as_deref(), started) {
            continue;
        }
        let mut row = ReportRow::new(task, ticket, now);
        row.not_verified = replay.task_discrepancies(row.task_id).map(ToString::to_string).collect();
        rows.push((row, None));
    }
    rows.sort_by_key(|(r, _)| (r.run_id, r.task_id));

    let task_ids: Vec<i64> = rows.iter().map(|(r, _)| r.task_id).collect();
    let mut calls = store.task_calls(&task_ids).await?;
    let mut tasks = Vec::with_capacity(rows.len());
    for (mut row, chain_task) in rows {
        let run = runs.get(&row.run_id);
        let mut api_calls: Vec<CallEvidence> = Vec::new();
        let mut call_problems = Vec::new();
        let stored_calls = calls.remove(&row.task_id).unwrap_or_default();
        for c in &stored_calls {
            match replay.calls.get(&c.id) {
                Some(proven) => api_calls.push(CallEvidence::from_chain(c.id, proven)),
                None => {
                    api_calls.push(CallEvidence::of(c));
                    // Unknown to the chain: inserted behind the product's back (a discrepancy,
                    // listed below for the task's own calls) or recorded before calls were
                    // chained; either way nothing proves it.
                    if !replay.discrepancies.iter().any(|d| d.table == "api_calls" && d.row == c.id) {
                        call_problems.push(format!("api_calls row {}: no audit record proves this call", c.id));
                    }
                }
            }
            // Calls recorded for the task are in its own discrepancies; shared DescribeJobs
            // rounds are not.
            if c.recorded_for.is_none() {
                call_problems.extend(
                    replay
                        .discrepancies
                        .iter()
                        .filter(|d| d.table == "api_calls" && d.row == c.id)
                        .map(|d| d.to_string()),
                );
            }
        }
        // Calls the chain records for the task that the table lost.
        for (id, proven) in &replay.calls {
            if proven.int("task_id") == Some(row.task_id) && !stored_calls.iter().any(|c| c.id == *id) {
                api_calls.push(CallEvidence::from_chain(*id, proven));
            }
        }
        api_calls.sort_by_key(|c| c.id);
        let requested_at = api_calls.iter().find(|c| c.action == SUBMIT_ACTION).map(|c| c.at).or(row.started_at);
        let pre_state = super::pre_state::of_task(
            replay.tasks.get(&row.task_id),
            replay.runs.get(&row.run_id),
            &row.zone,
            &row.cluster,
        );
        let pre_state_record = pre_state.as_ref().map(|(_, seq)| *seq);
        row.pre_state = pre_state.map(|(p, _)| p.describe());
        let audit = chain_task.map(|t| TaskAudit {
            first_seq: t.row.first_seq,
            last_seq: t.row.last_seq,
            records: t.row.records,
            verified: false,
        });
        if let Some(t) = chain_task {
            let mut problems = Vec::new();
            if let Some(why) = chain.breaks_within(t.row.first_seq, t.row.last_seq) {
                problems.push(why);
            }
            if let Some(seq) = pre_state_record.filter(|seq| *seq > t.row.last_seq) {
                if let Some(why) = chain.breaks_within(seq, seq) {
                    problems.push(format!("pre-state: {why}"));
                }
            }
            problems.extend(replay.task_discrepancies(row.task_id).map(ToString::to_string));
            row.not_verified = problems;
        } else if row.not_verified.is_empty() {
            row.not_verified.push(format!("tasks row {}: no audit record describes this task", row.task_id));
        }
        if let Some(run) = run {
            row.not_verified.extend(run.not_verified.iter().map(|p| format!("run {}: {p}", run.id)));
        }
        row.not_verified.extend(call_problems);
        row.verified = row.not_verified.is_empty();
        let audit = audit.map(|a| TaskAudit { verified: row.verified, ..a });
        tasks.push(EvidenceRow {
            requested_by: run.and_then(|r| r.requested_by.clone()),
            approved_by: run.and_then(|r| r.approved_by.clone()),
            approval_signed: run.and_then(|r| r.approval_signed),
            operator: run.map(|r| r.operator.clone()),
            requested_at,
            api_calls,
            failed_attempts: chain_task.map(failed_attempts).unwrap_or_default(),
            pre_state_record,
            audit,
            row,
        });
    }
    let shown: std::collections::BTreeSet<i64> = tasks.iter().map(|t| t.row.run_id).collect();
    let runs = runs.into_values().filter(|r| shown.contains(&r.id)).collect();
    Ok(Evidence { generated_at: now, chain, table_differences: replay.discrepancies.len(), runs, tasks })
}

/// A report row from the chain's values.
fn chain_row(id: i64, run_id: i64, task: &ChainTask, run: Option<&RunEvidence>, now: DateTime<Utc>) -> ReportRow {
    let row = &task.row;
    let text = |c: &str| row.text(c).map(str::to_owned);
    let at = |c: &str| row.text(c).and_then(parse_time);
    let state = text("state").unwrap_or_default();
    let outcome = Outcome::of_state(&state);
    let updated = row.windows.get("updated_at").and_then(|w| parse_time(&w.upper)).unwrap_or(now);
    ReportRow {
        run_id,
        task_id: id,
        ticket: run.and_then(|r| r.ticket.clone()),
        cluster: text("cluster").unwrap_or_default(),
        zone: text("zone").unwrap_or_default(),
        user: text("user").unwrap_or_default(),
        host: text("host").unwrap_or_default(),
        pre_state: None,
        late: late(&outcome, at("due_by"), at("finished_at"), updated, now),
        outcome,
        state,
        attempts: row.int("attempts").unwrap_or_default(),
        job_id: text("job_id"),
        ret_code: row.int("last_ret_code"),
        message: text("last_message"),
        started_at: at("started_at"),
        finished_at: at("finished_at"),
        due_by: at("due_by"),
        verified: false,
        not_verified: Vec::new(),
    }
}

impl Evidence {
    pub fn rows(&self) -> Vec<ReportRow> {
        self.tasks.iter().map(|t| t.row.clone()).collect()
    }
}

/// The columns `--user` adds to the CSV export, after [`super::CSV_HEADER`].
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
    let header: Vec<&str> = super::CSV_HEADER.iter().chain(CSV_EVIDENCE_HEADER.iter()).copied().collect();
    let records = evidence.tasks.iter().map(|t| {
        let mut fields: Vec<String> = super::fields(&t.row).to_vec();
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

    #[test]
    fn a_broken_chain_is_named_where_it_breaks() {
        let chain = ChainCheck {
            intact: false,
            checked: 9,
            tip: "9:x".into(),
            problem: Some("record 10: hash mismatch".into()),
            first_bad_seq: Some(10),
        };
        assert_eq!(chain.breaks_within(3, 9), None);
        assert!(chain.breaks_within(8, 12).unwrap().contains("breaks at record 10, within this row's records 8..12"));
        assert!(chain.breaks_within(11, 12).unwrap().contains("before this row's records 11..12"));
        assert!(chain.describe().contains("nothing from record 10 on is proven"));
    }
}
