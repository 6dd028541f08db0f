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
use crate::store::{Store, TaskState};

/// How one account's run ended.
pub struct Ending {
    pub exit: Exit,
    /// The summary for people (`--output human` prints it when the run ends).
    pub summary: String,
    pub result: RunResult,
}

/// What a run ended with, for machines: `--output json` prints it, `run_finished` logs it and
/// `--metrics-file` exports it. The counts are the human summary's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub run_id: i64,
    /// The QingCloud account (config profile) the run was for.
    pub account: String,
    pub exit_code: u8,
    pub tasks: u64,
    pub counts: OutcomeCounts,
    /// Tasks that ended `failed`, with the last message about each.
    pub failed: Vec<FailedAccount>,
    /// Why the run stopped before its work was done, when it did.
    pub stop: Option<String>,
    pub duration_s: f64,
    pub api_calls: ApiCalls,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct OutcomeCounts {
    pub deleted: u64,
    pub absent: u64,
    pub skipped: u64,
    pub failed: u64,
    /// `pending` and `retry_wait`: not sent (again) yet.
    pub pending: u64,
    /// `submitting` and `submitted`: resume follows or reconciles them.
    pub in_flight: u64,
    pub not_due: u64,
    pub handed_over: u64,
    /// The cluster was not active at preflight; a later run tries again.
    pub not_ready: u64,
}

impl OutcomeCounts {
    /// Each outcome with its name, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("deleted", self.deleted),
            ("absent", self.absent),
            ("skipped", self.skipped),
            ("failed", self.failed),
            ("pending", self.pending),
            ("in_flight", self.in_flight),
            ("not_due", self.not_due),
            ("handed_over", self.handed_over),
            ("not_ready", self.not_ready),
        ]
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedAccount {
    pub cluster: String,
    pub zone: String,
    pub user: String,
    pub host: String,
    pub reason: String,
}

/// The API calls the run recorded (its `api_calls` rows): by action, and by action and the
/// answer's `ret_code` (`none` when no answer was parsed).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApiCalls {
    pub total: u64,
    pub by_action: BTreeMap<String, u64>,
    pub by_action_and_ret_code: BTreeMap<String, BTreeMap<String, u64>>,
    /// Answers with ret_code 2500 (quota exceeded).
    pub quota_exceeded: u64,
}

impl ApiCalls {
    fn add(&mut self, action: &str, ret_code: Option<i64>) {
        self.total += 1;
        *self.by_action.entry(action.to_owned()).or_default() += 1;
        let code = ret_code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        *self.by_action_and_ret_code.entry(action.to_owned()).or_default().entry(code).or_default() += 1;
        if ret_code == Some(2500) {
            self.quota_exceeded += 1;
        }
    }
}

impl RunResult {
    /// The `run_finished` event: numbers as numbers; the per-action table and the failed
    /// accounts (lists) as JSON text.
    pub fn log(&self) {
        let c = &self.counts;
        let by_action = serde_json::to_string(&self.api_calls.by_action).unwrap_or_default();
        let failed_accounts = serde_json::to_string(&self.failed).unwrap_or_default();
        tracing::info!(
            run_id = self.run_id,
            account = %self.account,
            exit_code = self.exit_code,
            tasks = self.tasks,
            deleted = c.deleted,
            absent = c.absent,
            skipped = c.skipped,
            failed = c.failed,
            pending = c.pending,
            in_flight = c.in_flight,
            not_due = c.not_due,
            handed_over = c.handed_over,
            not_ready = c.not_ready,
            duration_s = self.duration_s,
            api_calls = self.api_calls.total,
            quota_exceeded = self.api_calls.quota_exceeded,
            api_calls_by_action = %by_action,
            failed_accounts = %failed_accounts,
            stop = self.stop.as_deref().unwrap_or(""),
            "run_finished"
        );
    }
}

/// The end of run `run_id` of `account`, read from its tasks once the runner returned (`stop`:
/// why it stopped early, if it did): its exit code, its summary and its result. The run is
/// finished in the database with that exit code.
pub async fn tally(
    store: &Store,
    run_id: i64,
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
    store.finish_run(run_id, i64::from(exit.code()), summary_json).await?;
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
    write_metrics(metrics_file, exit.code(), &results);
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

/// `--metrics-file`: best effort, like the pings; a failure is a warning, never the run's exit.
pub fn write_metrics(path: Option<&Path>, exit_code: u8, results: &[&RunResult]) {
    let Some(path) = path else { return };
    let text = super::metrics::render(exit_code, chrono::Utc::now(), results);
    if let Err(e) = super::metrics::write_atomically(path, &text) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the metrics file");
    }
}
