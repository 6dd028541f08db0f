//! How runs end: one run's counts, exit code and summary text read back from its tasks
//! ([`tally`]), the result machines read ([`RunResult`]: `--output json`, the `run_finished`
//! event, the metrics file), and the one exit code of a command over several accounts' runs
//! ([`conclude`]).
//!
//! The summary is composed here, as text; printing it is `cli`'s. Nothing here sends a request.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::exit::Exit;
use crate::manifest::AccountName;
use crate::runner::StopReason;
use crate::store::{Db, TaskState};

pub use super::result::{ApiCalls, FailedAccount, OutcomeCounts, RunResult};

/// How one account's run ended.
pub struct Ending {
    pub exit: Exit,
    /// The summary for people (`--output human` prints it when the run ends).
    pub summary: String,
    pub result: RunResult,
}

/// The end of run `run_id` of `account`, read from its tasks once the runner returned (`stop`:
/// why it stopped early, if it did): its exit code, its summary and its result. The run is
/// finished in the database with that exit code, unless `others_work_on_it` (a shared run that
/// other hosts are still working on: they finish it).
pub async fn tally(
    store: &Db,
    run_id: i64,
    others_work_on_it: bool,
    account: &AccountName,
    stop: Option<StopReason>,
    started: std::time::Instant,
) -> anyhow::Result<Ending> {
    let rows = store.tasks(run_id).await?;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.state.as_str()).or_default() += 1;
    }
    let count = |s: TaskState| counts.get(s.as_str()).copied().unwrap_or(0);
    let in_flight = count(TaskState::Submitting) + count(TaskState::Submitted);
    let waiting = count(TaskState::Pending) + count(TaskState::RetryWait);
    let unfinished = in_flight + waiting;
    let failed = count(TaskState::Failed);
    let not_ready = count(TaskState::NotReady);
    let exit = match &stop {
        Some(why) if why.is_hard() => Exit::Unavailable,
        _ if unfinished > 0 => Exit::TempFail,
        _ if not_ready > 0 && failed == 0 => Exit::TempFail,
        _ if failed > 0 => Exit::TasksFailed,
        _ => Exit::Ok,
    };
    let mut summary = format!(
        "run {run_id}: {} deleted, {} skipped, {} failed, {} pending, {} not due, {} absent (account not found), \
         {} in flight ({} tasks in {:.1} s) — exit {}",
        count(TaskState::Deleted),
        count(TaskState::Skipped),
        failed,
        waiting,
        count(TaskState::NotDue),
        count(TaskState::Absent),
        in_flight,
        rows.len(),
        started.elapsed().as_secs_f64(),
        exit.code()
    );
    if count(TaskState::HandedOver) > 0 {
        summary.push_str(&format!(
            "\n{} task(s) handed over: a later run adopted their live attempts",
            count(TaskState::HandedOver)
        ));
    }
    if not_ready > 0 {
        summary.push_str(&format!(
            "\n{not_ready} task(s) not ready: their cluster was not active at preflight; nothing was sent, a later \
             run of the manifest tries them again"
        ));
    }
    if let Some(why) = &stop {
        summary.push_str(&format!("\n{}", why.describe()));
    }
    let running = count(TaskState::Submitted);
    if running > 0 {
        summary.push_str(&format!("\n{running} job(s) still running: resume follows them"));
    }
    if count(TaskState::Submitting) > 0 {
        summary.push_str(&format!(
            "\n{} submission(s) in doubt: resume reconciles them before anything is sent again",
            count(TaskState::Submitting)
        ));
    }
    if unfinished > 0 {
        summary.push_str(&format!("\n`qc-offboard resume {run_id}` continues this run"));
    }
    let failed_rows: Vec<_> = rows.iter().filter(|r| r.state == TaskState::Failed).collect();
    if !failed_rows.is_empty() {
        summary.push_str("\nfailed:");
        for r in failed_rows {
            summary.push_str(&format!(
                "\n  {} ({}) {}@{}: {}",
                r.cluster,
                r.zone,
                r.user,
                r.host,
                r.last_message.as_deref().unwrap_or("")
            ));
        }
        summary.push_str(&format!("\n`qc-offboard retry {run_id}` tries the failed tasks again"));
    }
    let duration_s = started.elapsed().as_secs_f64();
    let summary_json = json!({
        "counts": counts,
        "stop": stop.as_ref().map(StopReason::describe),
        "elapsed_s": duration_s,
    });
    let mut api_calls = ApiCalls::default();
    for (_, call) in store.calls(run_id).await? {
        api_calls.add(&call.action, call.ret_code);
    }
    let result = RunResult {
        run_id,
        account: account.to_string(),
        exit_code: exit.code(),
        tasks: rows.len() as u64,
        counts: OutcomeCounts {
            deleted: count(TaskState::Deleted),
            absent: count(TaskState::Absent),
            skipped: count(TaskState::Skipped),
            failed,
            pending: waiting,
            in_flight,
            not_due: count(TaskState::NotDue),
            handed_over: count(TaskState::HandedOver),
            not_ready,
        },
        failed: rows
            .iter()
            .filter(|r| r.state == TaskState::Failed)
            .map(|r| FailedAccount {
                cluster: r.cluster.clone(),
                zone: r.zone.clone(),
                user: r.user.clone(),
                host: r.host.clone(),
                reason: r.last_message.clone().unwrap_or_default(),
            })
            .collect(),
        stop: stop.as_ref().map(StopReason::describe),
        duration_s,
        api_calls,
    };
    if others_work_on_it {
        tracing::info!(run_id, "other hosts are still working on the run: they finish it");
    } else {
        store.finish_run(run_id, i64::from(exit.code()), summary_json).await?;
    }
    store.check_written_to_disk().await?;
    Ok(Ending { exit, summary, result })
}

/// The end of a command's runs, all of them.
pub struct Conclusion {
    /// One exit code for all the runs.
    pub exit: Exit,
    pub endings: Vec<Ending>,
    /// Accounts left for the same command to do later (a run before them stopped).
    pub not_started: Vec<AccountName>,
    /// With several accounts (or one not started): each account's run and exit, on one line.
    pub accounts_line: Option<String>,
}

impl Conclusion {
    pub fn results(&self) -> Vec<&RunResult> {
        self.endings.iter().map(|e| &e.result).collect()
    }

    /// The command's summary: every run's, then the accounts line (the final ping's body).
    pub fn summary(&self) -> String {
        let mut summary = self.endings.iter().map(|e| e.summary.as_str()).collect::<Vec<_>>().join("\n");
        if let Some(line) = &self.accounts_line {
            summary.push_str(&format!("\n{line}"));
        }
        summary
    }
}

/// One exit code for a command's runs, and the metrics file. Several accounts' runs end with
/// the worst of their codes, at least 75 when an account was not started.
pub fn conclude(metrics_file: Option<&Path>, endings: Vec<Ending>, not_started: Vec<AccountName>) -> Conclusion {
    let rank = |e: Exit| match e {
        Exit::Ok => 0,
        Exit::TasksFailed => 1,
        Exit::TempFail => 2,
        _ => 3,
    };
    let mut exit = endings.iter().map(|e| e.exit).max_by_key(|e| rank(*e)).unwrap_or(Exit::Ok);
    if !not_started.is_empty() && rank(exit) < rank(Exit::TempFail) {
        exit = Exit::TempFail;
    }
    let results: Vec<&RunResult> = endings.iter().map(|e| &e.result).collect();
    super::metrics::write_metrics(metrics_file, exit.code(), &results);
    let several = endings.len() > 1 || !not_started.is_empty();
    let accounts_line = several.then(|| {
        let mut line = format!(
            "accounts: {}",
            endings
                .iter()
                .map(|e| format!("{} run {} exit {}", e.result.account, e.result.run_id, e.exit.code()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !not_started.is_empty() {
            line.push_str(&format!(
                "; not started: {} (the same command does them later)",
                not_started.iter().map(AccountName::as_str).collect::<Vec<_>>().join(", ")
            ));
        }
        line.push_str(&format!(" — exit {}", exit.code()));
        line
    });
    Conclusion { exit, endings, not_started, accounts_line }
}
