//! The main loop of a run: hand out submissions within `--max-in-flight` (one job per cluster),
//! poll jobs in rounds, reconcile submissions in doubt, retry after backoff, and stop cleanly on
//! a signal (SIGINT, SIGTERM, SIGHUP), `--deadline` or `--max-fail`.
//!
//! A stop stops (SPEC §8): the run's stop switch is set at once, so every intent still waiting
//! for the rate limiter is withdrawn (back to `pending`, audited) and no `del_user` leaves that
//! had not passed its last check. Jobs already accepted are followed for a bounded time — the
//! job timeout after `--deadline`/`--max-fail`, [`FOLLOW_AFTER_SIGNAL`] after a signal — and a
//! second signal leaves at once, withdrawing what never left.
//!
//! One task owns all bookkeeping; the API calls and database writes of each step run as spawned
//! futures whose results come back here. The database is written by those futures *before* the
//! result arrives, so a crash at any point leaves it describing what really happened. The loop
//! must not read time or randomness, nor reach the API, other than through its [`Ctx`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::context::Ctx;
use super::policy;
use super::poll::{self, InFlight, JobOutcome, RoundResult};
use super::poll_plan::{self, Durations, JobView, Situation};
use super::progress::Progress;
use super::queue::Queue;
use super::state;
use super::submit::{self, Submitted, TaskRef};
use crate::manifest::{ClusterId, Zone};
use crate::qingcloud::types::RUN_CLUSTER_CUSTOM_SERVICE;
use crate::store::{TaskChange, TaskRow, TaskState};

/// Why a run stopped before every task was final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Signal,
    Deadline,
    MaxFail,
    AuthFailed(String),
    /// A 1400 refusing the action or the key itself (not one cluster or account).
    ActionRefused(String),
    /// The endpoint answers, but not as the QingCloud API (an HTML page, a captive proxy).
    NotApi(String),
    Unreachable(String),
}

impl StopReason {
    /// The API cannot be used (credentials, the action or the key refused, not the API,
    /// unreachable): nothing more is sent, not even a poll, and the run exits 69.
    pub fn is_hard(&self) -> bool {
        matches!(
            self,
            StopReason::AuthFailed(_)
                | StopReason::ActionRefused(_)
                | StopReason::NotApi(_)
                | StopReason::Unreachable(_)
        )
    }

    pub fn describe(&self) -> String {
        match self {
            StopReason::Signal => "stopped by a signal".to_owned(),
            StopReason::Deadline => "stopped at --deadline".to_owned(),
            StopReason::MaxFail => "stopped by --max-fail".to_owned(),
            StopReason::AuthFailed(m) => format!("the API refused the credentials (1200): {m}"),
            StopReason::ActionRefused(m) => format!("the API refused the action or the key (1400): {m}"),
            StopReason::NotApi(m) => {
                format!("this is not the QingCloud API (check the endpoint URL and any proxy in between): {m}")
            }
            StopReason::Unreachable(m) => format!("the API could not be reached: {m}"),
        }
    }
}

enum Event {
    /// The stop is on record (`run_stopping`).
    Recorded(anyhow::Result<()>),
    Submit(i64, anyhow::Result<Submitted>),
    Reconcile(i64, anyhow::Result<Submitted>),
    Poll(anyhow::Result<RoundResult>),
}

/// How long requests already under way may take to finish after a stop that follows no jobs.
const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long jobs already accepted are followed after SIGINT, SIGTERM or SIGHUP (a second signal
/// leaves at once). Short enough for a service manager's stop timeout.
pub const FOLLOW_AFTER_SIGNAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Connection failures in a row, before any answer, that mean the endpoint is unreachable.
const UNREACHABLE_AFTER: u32 = 3;

/// The longest wait before an inconclusive reconciliation is tried again.
const RECONCILE_RETRY_CAP: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers in a row that were not the QingCloud API, after which the run stops (69).
const NOT_API_AFTER: u32 = 3;

/// The longest wait before trying an unreachable endpoint again: an outage should cost about
/// its own length, not a backoff climbing to its 5-minute cap.
const UNREACHABLE_RETRY_CAP: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the endpoint may stay unreachable (no answer to any call) after it answered once,
/// before the run stops with 69 instead of trying for ever.
const OUTAGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

struct Loop {
    ctx: Arc<Ctx>,
    tasks: HashMap<i64, TaskRef>,
    queue: Queue,
    in_flight: HashMap<i64, InFlight>,
    submitting: HashSet<i64>,
    in_doubt: Vec<(Instant, i64)>,
    reconciling: HashSet<i64>,
    poll_running: bool,
    /// When the next round is due, as last decided (a wake-up; the decision is made again on
    /// every turn of the loop).
    next_poll: Option<Instant>,
    /// The job durations learned so far (and from earlier runs).
    durations: Durations,
    /// Rounds in a row with a failed call, and no round before this after them.
    poll_failures: u32,
    poll_not_before: Option<Instant>,
    /// Inconclusive reconciliations per task, in a row.
    inconclusive: HashMap<i64, u32>,
    total: u64,
    failed: u64,
    deleted: u64,
    answered_any: bool,
    unreachable_in_a_row: u32,
    /// Since when no call has been answered (set by the first connection failure).
    unreachable_since: Option<Instant>,
    stop: Option<StopReason>,
    stop_at: Option<Instant>,
    work: JoinSet<Event>,
}

/// The span every log line about one task carries: its id, cluster, account and, once known,
/// its job.
pub fn task_span(task: &TaskRef) -> tracing::Span {
    tracing::info_span!(
        "task",
        id = task.id,
        cluster = %task.cluster,
        user = %task.user,
        host = %task.host,
        job_id = tracing::field::Empty
    )
}

fn task_ref(row: &TaskRow) -> anyhow::Result<TaskRef> {
    Ok(TaskRef {
        id: row.id,
        cluster: ClusterId::parse(&row.cluster).map_err(anyhow::Error::msg)?,
        zone: Zone::parse(&row.zone).map_err(anyhow::Error::msg)?,
        user: row.user.clone(),
        host: row.host.clone(),
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        intent_at: row.intent_at,
        known_jobs: row.job_id.iter().cloned().collect(),
        busy_since: None,
        busy_count: 0,
    })
}

/// Execute the run's remaining work. Returns why it stopped early, if it did.
pub async fn execute(ctx: Arc<Ctx>, progress: &Progress) -> anyhow::Result<Option<StopReason>> {
    let rows = ctx.store.tasks(ctx.run_id).await?;
    let prior = ctx.store.recent_job_duration(&ctx.identity_runs).await?;
    let mut lp = Loop {
        ctx: Arc::clone(&ctx),
        tasks: HashMap::new(),
        queue: Queue::new(),
        in_flight: HashMap::new(),
        submitting: HashSet::new(),
        in_doubt: Vec::new(),
        reconciling: HashSet::new(),
        poll_running: false,
        next_poll: None,
        durations: Durations::new(prior),
        poll_failures: 0,
        poll_not_before: None,
        inconclusive: HashMap::new(),
        total: rows.len() as u64,
        failed: 0,
        deleted: 0,
        answered_any: false,
        unreachable_in_a_row: 0,
        unreachable_since: None,
        stop: None,
        stop_at: None,
        work: JoinSet::new(),
    };
    lp.load(rows).await?;
    progress.start(lp.total);
    lp.run(progress).await?;
    Ok(lp.stop)
}

impl Loop {
    async fn load(&mut self, mut rows: Vec<TaskRow>) -> anyhow::Result<()> {
        // Earliest deadline first, then the manifest's order.
        rows.sort_by_key(|r| (r.due_by.is_none(), r.due_by, r.id));
        let today = self.ctx.now().date_naive();
        let now = self.ctx.instant();
        // The job ids this run's calls returned, per task, with when the call was made. For a
        // task left `submitting`, a job returned at or after its intent is the answer to that
        // very submission (the process died between recording the answer and the new state);
        // jobs returned before the intent belong to earlier attempts and must never be adopted.
        // A task that adopted another run's attempt carries that task's calls too.
        let mut jobs_seen: HashMap<i64, Vec<(chrono::DateTime<Utc>, String, String)>> = HashMap::new();
        if rows.iter().any(|r| r.state == TaskState::Submitting) {
            for (task, call) in self.ctx.store.calls(self.ctx.run_id).await? {
                if let (Some(task), Some(job)) = (task, call.job_id) {
                    jobs_seen.entry(task).or_default().push((call.started_at, call.action, job));
                }
            }
            for row in rows.iter().filter(|r| r.state == TaskState::Submitting && r.adopted_from.is_some()) {
                let earlier: Vec<i64> =
                    self.ctx.store.lineage(row.id).await?.into_iter().filter(|&t| t != row.id).collect();
                for call in self.ctx.store.task_calls(&earlier).await?.into_values().flatten() {
                    if let Some(job) = call.call.job_id {
                        jobs_seen.entry(row.id).or_default().push((call.call.started_at, call.call.action, job));
                    }
                }
            }
        }
        // Jobs already seen for each account, in any run: never this run's submission's job.
        let mut account_jobs = self.ctx.store.known_jobs(&self.ctx.identity_runs).await?;
        for row in rows {
            let mut t = task_ref(&row)?;
            let key = (row.cluster.clone(), row.user.clone(), row.host.clone());
            if let Some(jobs) = account_jobs.remove(&key) {
                t.known_jobs.extend(jobs);
            }
            match row.state {
                TaskState::Deleted | TaskState::Skipped | TaskState::Absent => self.deleted += 1,
                TaskState::Failed => self.failed += 1,
                TaskState::HandedOver | TaskState::NotReady => {}
                TaskState::NotDue => {
                    if self.ctx.opts.promote_not_due && row.not_before.is_some_and(|d| d <= today) {
                        // Its date has come since the run was made (a resumed run).
                        let moved = self
                            .ctx
                            .step(
                                row.id,
                                &[TaskState::NotDue],
                                state::Event::Due,
                                TaskChange::new(),
                                serde_json::json!({ "reason": "not_before has come" }),
                            )
                            .await?;
                        if moved.is_some() {
                            self.queue.push(row.id, t.cluster.as_str(), row.due_by);
                        }
                    }
                }
                TaskState::Pending | TaskState::RetryWait => self.queue.push(row.id, t.cluster.as_str(), row.due_by),
                TaskState::Submitting => {
                    self.queue.mark_busy(t.cluster.as_str());
                    let intent = row.intent_at.unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
                    let seen = jobs_seen.remove(&row.id).unwrap_or_default();
                    let answered =
                        seen.iter().find(|(at, action, _)| *at >= intent && action == RUN_CLUSTER_CUSTOM_SERVICE);
                    if let Some((_, _, job_id)) = answered {
                        // The answer was recorded: adopt its job without asking the API.
                        let attempts = t.attempts + 1;
                        self.ctx
                            .step(
                                row.id,
                                &[TaskState::Submitting],
                                state::Event::Accepted,
                                TaskChange::new().attempts(i64::from(attempts)).job_id(job_id.clone()).submitted_at(self.ctx.now()),
                                serde_json::json!({ "reason": "resumed: the submission's answer was recorded", "job_id": job_id }),
                            )
                            .await?;
                        t.attempts = attempts;
                        t.known_jobs.insert(job_id.clone());
                        let flight = InFlight::new(t.clone(), job_id.clone(), self.ctx.now(), false);
                        self.in_flight.insert(row.id, flight);
                    } else {
                        // A submission in doubt from an interrupted process: reconcile first.
                        t.known_jobs.extend(seen.into_iter().map(|(_, _, job)| job));
                        self.in_doubt.push((now, row.id));
                    }
                }
                TaskState::Submitted => {
                    self.queue.mark_busy(t.cluster.as_str());
                    let job_id = row.job_id.clone().unwrap_or_default();
                    let submitted_at = row.submitted_at.unwrap_or_else(|| self.ctx.now());
                    self.in_flight.insert(row.id, InFlight::new(t.clone(), job_id, submitted_at, false));
                }
            }
            self.tasks.insert(row.id, t);
        }
        Ok(())
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.len() + self.submitting.len() + self.in_doubt.len() + self.reconciling.len()
    }

    fn stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// Stops after which nothing new is started, not even a poll: the API cannot be used.
    /// Requests already under way may finish (for at most [`GRACE`]) and record their answers;
    /// jobs in flight are left for `resume` to follow.
    fn hard_stop(&self) -> bool {
        self.stop.as_ref().is_some_and(StopReason::is_hard)
    }

    fn request_stop(&mut self, why: StopReason) {
        if self.stop.is_some() && why.is_hard() && !self.hard_stop() {
            // The API became unusable while jobs were being followed after a soft stop: stop
            // following (nothing new starts) and say why.
            tracing::warn!("{}; no more calls", why.describe());
            self.stop_at = Some(self.ctx.instant() + GRACE);
            self.stop = Some(why);
            return;
        }
        if self.stop.is_none() {
            tracing::warn!("{}; no new submissions", why.describe());
            // The switch first: intents waiting for the limiter are withdrawn from here on.
            self.ctx.stop.send_replace(true);
            let follow = match why {
                StopReason::Deadline | StopReason::MaxFail => self.ctx.opts.job_timeout,
                StopReason::Signal => FOLLOW_AFTER_SIGNAL,
                _ => GRACE,
            };
            self.stop_at = Some(self.ctx.instant() + follow);
            let ctx = Arc::clone(&self.ctx);
            let detail = serde_json::json!({ "reason": why.describe(), "follow_s": follow.as_secs() });
            self.work.spawn(async move {
                Event::Recorded(
                    ctx.store.audit_event(Some(ctx.run_id), None, "run_stopping", detail).await.map_err(Into::into),
                )
            });
            self.stop = Some(why);
        }
    }

    /// Leave now: abort what is under way and withdraw every intent whose request never passed
    /// its last check (nothing of it left). What may be on the wire stays `submitting` for the
    /// next run to reconcile.
    async fn leave_now(&mut self) -> anyhow::Result<()> {
        self.ctx.stop.send_replace(true);
        self.work.abort_all();
        while self.work.join_next().await.is_some() {}
        let never_left: Vec<i64> = self.submitting.iter().copied().filter(|id| !self.ctx.was_sent(*id)).collect();
        for id in never_left {
            submit::withdraw(&self.ctx, id).await?;
        }
        Ok(())
    }

    /// Is the run over? Past the stop's time limit, what is still running is abandoned: the
    /// database already holds each task's intent, so `resume` reconciles whatever was cut off.
    fn out_of_time(&self) -> bool {
        self.stopping() && self.stop_at.is_some_and(|t| self.ctx.instant() >= t)
    }

    fn finished(&mut self) -> bool {
        if self.out_of_time() {
            return true;
        }
        if !self.work.is_empty() {
            return false;
        }
        if self.hard_stop() {
            return true;
        }
        if self.stopping() {
            return self.in_flight.is_empty() && self.in_doubt.is_empty();
        }
        self.queue.queued() == 0 && self.in_flight.is_empty() && self.in_doubt.is_empty()
    }

    async fn run(&mut self, progress: &Progress) -> anyhow::Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        // A dropped SSH session: stop like Ctrl-C, with a summary, instead of dying at once.
        let mut sighup = signal(SignalKind::hangup())?;
        let deadline = self.ctx.opts.deadline.map(|d| self.ctx.instant() + d);
        let mut signals = 0u32;
        loop {
            self.dispatch();
            progress.update(self.deleted, self.failed, self.in_flight_count() as u64, self.ctx.limiter.current_rate());
            if self.finished() {
                if self.out_of_time() && !self.work.is_empty() {
                    tracing::warn!(
                        pending = self.work.len(),
                        "stop time limit reached: leaving what is under way to resume"
                    );
                    self.leave_now().await?;
                }
                return Ok(());
            }
            let wake = [
                self.queue.next_wake(),
                self.next_poll.filter(|_| !self.poll_running),
                self.in_doubt.iter().map(|(t, _)| *t).min(),
                deadline.filter(|_| !self.stopping()),
                self.stop_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = match wake {
                Some(t) => self.ctx.clock.sleep_until(t),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                Some(joined) = self.work.join_next() => {
                    let event = joined.map_err(|e| anyhow::anyhow!("a runner task panicked: {e}"))?;
                    self.handle(event).await?;
                    if self.ctx.not_api_answers() >= NOT_API_AFTER {
                        let n = self.ctx.not_api_answers();
                        self.request_stop(StopReason::NotApi(format!("{n} answers in a row were not the API's")));
                    }
                }
                _ = sigint.recv() => { signals += 1; self.request_stop(StopReason::Signal); }
                _ = sigterm.recv() => { signals += 1; self.request_stop(StopReason::Signal); }
                _ = sighup.recv() => { signals += 1; self.request_stop(StopReason::Signal); }
                _ = sleep => {
                    if deadline.is_some_and(|d| self.ctx.instant() >= d) {
                        self.request_stop(StopReason::Deadline);
                    }
                }
            }
            if signals >= 2 {
                tracing::warn!("second signal: leaving at once; resume will follow what was in flight");
                self.leave_now().await?;
                return Ok(());
            }
        }
    }

    /// Start whatever work is due: submissions, reconciliations, a polling round.
    fn dispatch(&mut self) {
        let now = self.ctx.instant();
        if !self.hard_stop() {
            // Reconciliations due.
            let (due, later): (Vec<_>, Vec<_>) = self.in_doubt.drain(..).partition(|(t, _)| *t <= now);
            self.in_doubt = later;
            for (_, id) in due {
                let Some(task) = self.tasks.get(&id).cloned() else { continue };
                self.reconciling.insert(id);
                let ctx = Arc::clone(&self.ctx);
                let span = task_span(&task);
                self.work
                    .spawn(async move { Event::Reconcile(id, submit::reconcile(ctx, task).await) }.instrument(span));
            }
        }
        if !self.stopping() {
            self.queue.promote_due(now);
            while self.in_flight_count() < self.ctx.opts.max_in_flight as usize {
                let Some((id, _cluster)) = self.queue.pop() else { break };
                let Some(task) = self.tasks.get(&id).cloned() else { continue };
                self.submitting.insert(id);
                let ctx = Arc::clone(&self.ctx);
                let span = task_span(&task);
                self.work.spawn(async move { Event::Submit(id, submit::submit(ctx, task).await) }.instrument(span));
            }
        }
        self.next_poll = None;
        if self.poll_running || self.in_flight.is_empty() || self.hard_stop() {
            return;
        }
        let Some(decision) = self.poll_decision(now) else { return };
        if !decision.delay.is_zero() {
            self.next_poll = Some(now + decision.delay);
            return;
        }
        self.poll_running = true;
        let jobs: Vec<InFlight> = decision.jobs.iter().filter_map(|id| self.in_flight.get(id).cloned()).collect();
        let ctx = Arc::clone(&self.ctx);
        self.work.spawn(async move { Event::Poll(poll::round(ctx, jobs).await) });
    }

    /// The poll scheduler's view of the jobs in flight, and its decision (see [`poll_plan`]).
    fn poll_decision(&self, now: Instant) -> Option<poll_plan::Decision> {
        let wall = self.ctx.now();
        // Ready work waits for a slot of --max-in-flight: any job's end lets it go.
        let slots_full = self.in_flight_count() >= self.ctx.opts.max_in_flight as usize;
        let waiting_for_a_slot = !self.stopping() && slots_full && self.queue.has_ready();
        let mut jobs: Vec<JobView> = self
            .in_flight
            .iter()
            .map(|(id, f)| JobView {
                id: *id,
                zone: f.task.zone.as_str(),
                age: f.age_at(wall),
                lo: f.seen_running,
                unblocks: !self.stopping() && (waiting_for_a_slot || self.queue.has_ready_for(f.task.cluster.as_str())),
            })
            .collect();
        jobs.sort_unstable_by_key(|j| (j.zone, std::cmp::Reverse(j.age), j.id));
        let situation = Situation {
            jobs: &jobs,
            pipeline: self.submitting.len(),
            rate: self.ctx.limiter.current_rate(),
            base: self.ctx.opts.poll_interval,
            job_timeout: self.ctx.opts.job_timeout,
            not_before: self.poll_not_before.map(|t| t.saturating_duration_since(now)).unwrap_or_default(),
        };
        poll_plan::decide(&situation, &self.durations)
    }

    fn release(&mut self, id: i64) {
        if let Some(t) = self.tasks.get(&id) {
            let cluster = t.cluster.as_str().to_owned();
            self.queue.release(&cluster);
        }
    }

    fn note_failed(&mut self) {
        self.failed += 1;
        if let Some(max) = self.ctx.opts.max_fail {
            if max.reached(self.failed, self.total) {
                self.request_stop(StopReason::MaxFail);
            }
        }
    }

    async fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Recorded(result) => result?,
            Event::Submit(id, result) => {
                self.submitting.remove(&id);
                self.ctx.mark_sent(id, false);
                self.settle_submission(id, result?);
            }
            Event::Reconcile(id, result) => {
                self.reconciling.remove(&id);
                let outcome = result?;
                if let Submitted::InDoubt { intent_at } = outcome {
                    let tries = self.inconclusive.entry(id).or_default();
                    let settling = self.ctx.now()
                        < intent_at + chrono::Duration::from_std(self.ctx.opts.reconcile_settle).unwrap_or_default();
                    if !settling {
                        *tries += 1;
                    }
                    if *tries >= submit::MAX_INCONCLUSIVE {
                        if let Some(task) = self.tasks.get(&id).cloned() {
                            // Never proven either way: the task ends failed, nothing sent again.
                            submit::give_up_in_doubt(&self.ctx, &task).await?;
                        }
                        self.release(id);
                        self.note_failed();
                        return Ok(());
                    }
                    // Not proven either way: look again later.
                    let wait = if settling {
                        (intent_at + chrono::Duration::from_std(self.ctx.opts.reconcile_settle).unwrap_or_default()
                            - self.ctx.now())
                        .to_std()
                        .unwrap_or_default()
                    } else {
                        self.ctx.backoff(*tries).min(RECONCILE_RETRY_CAP).max(self.ctx.opts.poll_interval)
                    };
                    self.in_doubt.push((self.ctx.instant() + wait, id));
                    return Ok(());
                }
                self.inconclusive.remove(&id);
                self.settle_submission(id, outcome);
            }
            Event::Poll(result) => {
                self.poll_running = false;
                let round = result?;
                if round.answered {
                    self.note_answer();
                }
                if round.throttled && self.stopping() && !self.hard_stop() {
                    // The quota is exhausted: following the jobs now would only spend the
                    // penalty; they are left for `resume` to follow.
                    tracing::warn!("quota exhausted while following jobs after a stop: resume follows them");
                    self.stop_at = Some(self.ctx.instant());
                }
                if let Some(m) = round.auth_failed {
                    self.request_stop(StopReason::AuthFailed(m));
                }
                if round.call_failed {
                    // Hold the next round back, doubling, so a failing endpoint is not hammered.
                    self.poll_failures += 1;
                    let wait = policy::next_poll_delay(self.ctx.opts.poll_interval, self.poll_failures - 1);
                    self.poll_not_before = Some(self.ctx.instant() + wait);
                } else {
                    self.poll_failures = 0;
                    self.poll_not_before = None;
                }
                for (id, outcome) in round.outcomes {
                    let seen = round.polled.get(&id).copied();
                    if let (Some(f), Some(at)) = (self.in_flight.get_mut(&id), seen) {
                        let age = f.age_at(at);
                        match outcome {
                            JobOutcome::Running => f.seen_running = f.seen_running.max(age),
                            JobOutcome::Deleted | JobOutcome::Absent if f.timed => {
                                let (lo, hi) = poll_plan::narrow(f.seen_running, age, round.took.get(&id).copied());
                                self.durations.learn(lo, hi);
                            }
                            _ => {}
                        }
                    }
                    match outcome {
                        JobOutcome::Running => continue,
                        JobOutcome::Absent | JobOutcome::Deleted => self.deleted += 1,
                        JobOutcome::Failed => self.note_failed(),
                        JobOutcome::Retry { at, attempts } => {
                            if let Some(t) = self.tasks.get_mut(&id) {
                                t.attempts = attempts;
                                let cluster = t.cluster.as_str().to_owned();
                                self.queue.defer(id, &cluster, at);
                            }
                        }
                    }
                    self.in_flight.remove(&id);
                    self.release(id);
                }
            }
        }
        Ok(())
    }

    /// Some call was answered: the endpoint is reachable.
    fn note_answer(&mut self) {
        self.answered_any = true;
        self.unreachable_in_a_row = 0;
        self.unreachable_since = None;
    }

    fn settle_submission(&mut self, id: i64, outcome: Submitted) {
        let now = self.ctx.instant();
        let wall = self.ctx.now();
        let answered = matches!(
            outcome,
            Submitted::Job { .. }
                | Submitted::Throttled
                | Submitted::Failed
                | Submitted::Absent
                | Submitted::Busy { .. }
        );
        if answered {
            self.note_answer();
        }
        let Some(task) = self.tasks.get_mut(&id) else { return };
        let cluster = task.cluster.as_str().to_owned();
        match outcome {
            Submitted::Job { job_id, attempts, sent_at } => {
                task.attempts = attempts;
                task.busy_since = None;
                task.busy_count = 0;
                task.known_jobs.insert(job_id.clone());
                let flight = InFlight::new(task.clone(), job_id, sent_at.unwrap_or(wall), sent_at.is_some());
                self.in_flight.insert(id, flight);
            }
            Submitted::Throttled => {
                self.queue.push_front(id, &cluster);
                self.queue.release(&cluster);
            }
            Submitted::RetryAt { at, attempts } => {
                task.attempts = attempts;
                self.queue.defer(id, &cluster, at);
                self.queue.release(&cluster);
            }
            Submitted::Failed => {
                self.queue.release(&cluster);
                self.note_failed();
            }
            Submitted::Absent | Submitted::Skipped => {
                self.queue.release(&cluster);
                self.deleted += 1;
            }
            Submitted::Busy { at } => {
                task.busy_since.get_or_insert(now);
                task.busy_count += 1;
                self.queue.defer(id, &cluster, at);
                self.queue.release(&cluster);
            }
            Submitted::Withdrawn | Submitted::Lost => {
                self.queue.release(&cluster);
            }
            Submitted::ActionRefused(m) => {
                self.queue.push_front(id, &cluster);
                self.queue.release(&cluster);
                self.request_stop(StopReason::ActionRefused(m));
            }
            Submitted::InDoubt { intent_at } => {
                task.intent_at = Some(intent_at);
                // Give the server a moment before asking whether the job exists.
                self.in_doubt.push((now + self.ctx.opts.poll_interval, id));
            }
            Submitted::AuthFailed(m) => {
                self.queue.push_front(id, &cluster);
                self.queue.release(&cluster);
                self.request_stop(StopReason::AuthFailed(m));
            }
            Submitted::Unreachable(m) => {
                self.unreachable_in_a_row += 1;
                let since = *self.unreachable_since.get_or_insert(now);
                let wait = self
                    .ctx
                    .backoff(self.unreachable_in_a_row)
                    .min(UNREACHABLE_RETRY_CAP)
                    .max(self.ctx.opts.poll_interval);
                if now.saturating_duration_since(since) >= OUTAGE_LIMIT {
                    self.request_stop(StopReason::Unreachable(format!(
                        "no answer for {}: {m}",
                        humantime::format_duration(OUTAGE_LIMIT)
                    )));
                }
                self.queue.defer(id, &cluster, now + wait);
                self.queue.release(&cluster);
                if !self.answered_any && self.unreachable_in_a_row >= UNREACHABLE_AFTER {
                    self.request_stop(StopReason::Unreachable(m));
                }
            }
        }
    }
}
