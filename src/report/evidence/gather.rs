//! Gathering the evidence: the whole chain verified and replayed, every run and task rebuilt
//! from it and held against the tables, the API calls behind each task, and for every row
//! whether it is verified and, if not, why (the rules are in the `evidence` module
//! documentation).
//!
//! It reads through `store` and judges; it writes no format.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::report::filter::Filter;
use crate::report::instant::{parse_time, ser_instant};
use crate::report::outcome::{late, Outcome};
use crate::report::row::ReportRow;
use crate::store::{ChainTask, Db, ReportFilter, RunRow, StoreError};

use super::chain_check::ChainCheck;
use super::run::RunEvidence;
use super::task::{failed_attempts, CallEvidence, EvidenceRow, TaskAudit};

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

/// Gather the evidence for the tasks `filter` selects, judged at `now`, on either backend
/// (`&Store`, `&PgStore` or `&Db`).
pub async fn gather(store: impl Into<Db>, filter: &ReportFilter, now: DateTime<Utc>) -> Result<Evidence, StoreError> {
    gather_where(&store.into(), &Filter::from(filter), now).await
}

/// [`gather`] with the full filter.
pub async fn gather_where(store: &Db, filter: &Filter, now: DateTime<Utc>) -> Result<Evidence, StoreError> {
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
        let pre_state = crate::report::pre_state::of_task(
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
