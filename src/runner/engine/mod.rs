//! The main loop of a run: hand out submissions within `--max-in-flight` (one job per cluster),
//! poll jobs in rounds, reconcile submissions in doubt, retry after backoff, and stop cleanly on
//! a signal (SIGINT, SIGTERM, SIGHUP), `--deadline` or `--max-fail`. `load` picks up what an
//! earlier process left; `settle` books the results of the work the loop started.
//!
//! A stop stops (SPEC §8): the run's stop switch is set at once, so every intent still waiting
//! for the rate limiter is withdrawn (back to `pending`, audited) and no `del_user` leaves that
//! had not passed its last check. Jobs already accepted are followed for a bounded time
//! ([`StopReason::follow_for`]: the job timeout after `--deadline`/`--max-fail`, 30 s after a
//! signal), and a second signal leaves at once, withdrawing what never left. Stop requests come
//! from [`StopRequests`]: the process's signals, or a channel in tests.
//!
//! One task owns all bookkeeping; the API calls and database writes of each step run as spawned
//! futures whose results come back here. The database is written by those futures *before* the
//! result arrives, so a crash at any point leaves it describing what really happened. The loop
//! must not read time or randomness, nor reach the API, other than through its [`Ctx`]: that is
//! what lets its unit tests (`runner::tests`) run it under paused time against a fake API.

mod load;
mod settle;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::context::Ctx;
use super::poll::{self, InFlight, RoundResult};
use super::poll_plan::{self, ApiClock, Durations, JobView, Situation};
use super::progress::Progress;
use super::queue::Queue;
use super::reconcile;
use super::stop::{StopReason, StopRequests, GRACE};
use super::submit;
use super::task::{task_span, Submitted, TaskRef};
use crate::runner::error::RunnerError;

enum Event {
    /// The stop is on record (`run_stopping`).
    Recorded(crate::runner::error::Result<()>),
    Submit(i64, crate::runner::error::Result<Submitted>),
    Reconcile(i64, crate::runner::error::Result<Submitted>),
    /// A deferred adoption, tried when the task's turn came.
    Adopt(i64, crate::runner::error::Result<crate::store::Adopted>),
    Poll(crate::runner::error::Result<RoundResult>),
    /// A shared run's claim: the tasks claimed, and the tasks of the run with work ahead.
    Claimed(crate::runner::error::Result<(Vec<crate::store::TaskRow>, i64)>),
}

/// How often a host of a shared run looks for work to claim (tasks freed by other hosts, leases
/// run out, retries come due) while it has room for more.
const CLAIM_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

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
    /// Tasks whose adoption of another run's attempt waits for their turn (`Ctx::deferred`),
    /// and those whose adoption is under way.
    deferred: HashSet<i64>,
    adopting: HashSet<i64>,
    poll_running: bool,
    /// When the next round is due, as last decided (a wake-up; the decision is made again on
    /// every turn of the loop).
    next_poll: Option<Instant>,
    /// The job durations learned so far (and from earlier runs).
    durations: Durations,
    /// The API's clock against ours, from the stamps of the jobs this process started.
    api_clock: ApiClock,
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
    /// A shared run: when to claim next, whether a claim is under way, and whether the last
    /// one found no work left in the run at all (every task's work ended, on any host).
    next_claim: Option<Instant>,
    claiming: bool,
    run_done: bool,
}

/// A deferred adoption, through this host's lease in a shared run.
async fn adopt_deferred(ctx: &Ctx, id: i64) -> crate::runner::error::Result<crate::store::Adopted> {
    use crate::runner::journal::once_more_if_disconnected as once_more;
    // Tried again after a cut connection: a committed adoption leaves the task open no more,
    // and the second try then adopts nothing (the task's turn finds it moved on).
    let adopted = once_more("adopting an earlier run's attempt", || async {
        match &ctx.shared {
            Some(shared) => shared.adopt_deferred(id, &ctx.identity_runs).await,
            None => ctx.store.adopt_deferred(ctx.run_id, id, &ctx.identity_runs).await,
        }
    })
    .await?;
    Ok(adopted)
}

/// Execute the run's remaining work, stopping on SIGINT, SIGTERM or SIGHUP. Returns why it
/// stopped early, if it did.
pub async fn execute(ctx: Arc<Ctx>, progress: &Progress) -> crate::runner::error::Result<Option<StopReason>> {
    execute_with(ctx, progress, StopRequests::Signals).await
}

/// [`execute`], with the stop requests coming from `stops`.
pub async fn execute_with(
    ctx: Arc<Ctx>,
    progress: &Progress,
    stops: StopRequests,
) -> crate::runner::error::Result<Option<StopReason>> {
    let (rows, total) = match &ctx.shared {
        Some(shared) => {
            let total: i64 = ctx.store.counts(ctx.run_id).await?.values().sum();
            (shared.claim(ctx.opts.max_in_flight as usize).await?, u64::try_from(total).unwrap_or(0))
        }
        None => {
            let rows = ctx.store.tasks(ctx.run_id).await?;
            let total = rows.len() as u64;
            (rows, total)
        }
    };
    let prior = ctx.store.recent_job_duration(&ctx.identity_runs).await?;
    let mut lp = Loop {
        ctx: Arc::clone(&ctx),
        tasks: HashMap::new(),
        queue: Queue::new(),
        in_flight: HashMap::new(),
        submitting: HashSet::new(),
        in_doubt: Vec::new(),
        reconciling: HashSet::new(),
        deferred: ctx.deferred.clone(),
        adopting: HashSet::new(),
        poll_running: false,
        next_poll: None,
        durations: Durations::new(prior),
        api_clock: ApiClock::default(),
        poll_failures: 0,
        poll_not_before: None,
        inconclusive: HashMap::new(),
        total,
        failed: 0,
        deleted: 0,
        answered_any: false,
        unreachable_in_a_row: 0,
        unreachable_since: None,
        stop: None,
        stop_at: None,
        work: JoinSet::new(),
        next_claim: ctx.shared.as_ref().map(|_| ctx.instant()),
        claiming: false,
        run_done: false,
    };
    lp.load(rows).await?;
    progress.start(lp.total);
    lp.run(progress, stops).await?;
    Ok(lp.stop)
}

impl Loop {
    /// Is this host working on the task (queued, submitting, in doubt, reconciling or polled)?
    fn works_on(&self, id: i64) -> bool {
        self.queue.contains(id)
            || self.in_flight.contains_key(&id)
            || self.submitting.contains(&id)
            || self.reconciling.contains(&id)
            || self.adopting.contains(&id)
            || self.in_doubt.iter().any(|(_, t)| *t == id)
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.len()
            + self.submitting.len()
            + self.in_doubt.len()
            + self.reconciling.len()
            + self.adopting.len()
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
            let follow = why.follow_for(self.ctx.opts.job_timeout);
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
    async fn leave_now(&mut self) -> crate::runner::error::Result<()> {
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
        let idle = self.queue.queued() == 0 && self.in_flight.is_empty() && self.in_doubt.is_empty();
        // A shared run ends here once no host has work left in it; until then this host waits
        // for tasks to claim (another host's lease running out, a retry coming due).
        idle && (self.ctx.shared.is_none() || self.run_done)
    }

    async fn run(&mut self, progress: &Progress, stops: StopRequests) -> crate::runner::error::Result<()> {
        let mut stops = stops.listen()?;
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
                self.next_claim.filter(|_| !self.claiming && !self.stopping()),
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
                    let event = joined.map_err(|e| RunnerError::Panicked { what: "a runner task", detail: e.to_string() })?;
                    self.handle(event).await?;
                    if self.ctx.not_api_answers() >= NOT_API_AFTER {
                        let n = self.ctx.not_api_answers();
                        self.request_stop(StopReason::NotApi(format!("{n} answers in a row were not the API's")));
                    }
                }
                () = stops.next() => { signals += 1; self.request_stop(StopReason::Signal); }
                () = sleep => {
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

    /// Start whatever work is due: a claim, submissions, reconciliations, a polling round.
    fn dispatch(&mut self) {
        let now = self.ctx.instant();
        self.claim_if_due(now);
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
                    .spawn(async move { Event::Reconcile(id, reconcile::reconcile(ctx, task).await) }.instrument(span));
            }
        }
        if !self.stopping() {
            self.queue.promote_due(now);
            while self.in_flight_count() < self.ctx.opts.max_in_flight as usize {
                let Some((id, _cluster)) = self.queue.pop() else { break };
                let Some(task) = self.tasks.get(&id).cloned() else { continue };
                if self.deferred.remove(&id) {
                    // Another run's attempt at the account comes first: adopt it, send nothing.
                    self.adopting.insert(id);
                    let ctx = Arc::clone(&self.ctx);
                    let span = task_span(&task);
                    self.work.spawn(async move { Event::Adopt(id, adopt_deferred(&ctx, id).await) }.instrument(span));
                    continue;
                }
                self.start_submission(task);
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

    fn start_submission(&mut self, task: TaskRef) {
        let id = task.id;
        self.submitting.insert(id);
        let ctx = Arc::clone(&self.ctx);
        let span = task_span(&task);
        self.work.spawn(async move { Event::Submit(id, submit::submit(ctx, task).await) }.instrument(span));
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

    /// A shared run: claim the free tasks of as many clusters as there is room for, when the
    /// time has come. The claim also counts the run's work left, which ends the run here.
    fn claim_if_due(&mut self, now: Instant) {
        let Some(shared) = self.ctx.shared.clone() else { return };
        if self.claiming || self.stopping() || self.next_claim.is_none_or(|t| t > now) {
            return;
        }
        let room =
            (self.ctx.opts.max_in_flight as usize).saturating_sub(self.queue.clusters().max(self.in_flight_count()));
        self.claiming = true;
        self.next_claim = Some(now + CLAIM_EVERY);
        self.work.spawn(async move {
            let claimed = async {
                use crate::runner::journal::once_more_if_disconnected as once_more;
                let rows = once_more("claiming tasks", || shared.claim(room)).await?;
                let left = once_more("counting the run's work left", || shared.unfinished()).await?;
                Ok((rows, left))
            };
            Event::Claimed(claimed.await)
        });
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
}
