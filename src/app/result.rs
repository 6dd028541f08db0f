//! What a run ended with, for machines: the counts per outcome, the failed accounts and the API
//! calls by action ([`RunResult`]). `--output json` prints it, the `run_finished` event logs it
//! and `--metrics-file` exports it. It only holds and logs values: composing them from the
//! database is `summary`'s, writing the metrics file `metrics`'.

use std::collections::BTreeMap;

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
    pub(super) fn add(&mut self, action: &str, ret_code: Option<i64>) {
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
