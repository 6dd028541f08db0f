//! What the results of the loop's work mean for the run: a submission's end, a reconciliation's
//! verdict, a polling round's outcomes. The database already holds each result (the work wrote
//! it before answering); this is the loop's own bookkeeping — queue, slots, counts, stops.

use super::{Event, Loop, OUTAGE_LIMIT, RECONCILE_RETRY_CAP, UNREACHABLE_AFTER, UNREACHABLE_RETRY_CAP};
use crate::runner::policy;
use crate::runner::poll::{InFlight, JobOutcome};
use crate::runner::poll_plan;
use crate::runner::reconcile;
use crate::runner::stop::StopReason;
use crate::runner::task::Submitted;

impl Loop {
    /// Book one result of the loop's work.
    pub(super) async fn handle(&mut self, event: Event) -> crate::runner::error::Result<()> {
        match event {
            Event::Recorded(result) => result?,
            Event::Claimed(result) => {
                self.claiming = false;
                let (rows, left) = result?;
                // A task claimed again after this host let it go is loaded afresh.
                let fresh: Vec<_> = rows.into_iter().filter(|r| !self.works_on(r.id)).collect();
                if !fresh.is_empty() {
                    tracing::debug!(tasks = fresh.len(), "claimed");
                    self.load(fresh).await?;
                }
                self.run_done = left == 0;
                // A task held here that nothing here works on (its lease lapsed and was claimed
                // again while its last write was being refused) would be renewed for ever and
                // never finished: give it back, and a later claim loads it afresh.
                if let Some(shared) = self.ctx.shared.clone() {
                    let orphans: Vec<i64> = shared.held_ids().into_iter().filter(|id| !self.works_on(*id)).collect();
                    if !orphans.is_empty() {
                        tracing::debug!(tasks = orphans.len(), "held but not worked on here: given back");
                        self.work.spawn(async move {
                            Event::Recorded(shared.release_many(&orphans).await.map_err(Into::into))
                        });
                    }
                }
            }
            Event::Submit(id, result) => {
                self.submitting.remove(&id);
                self.ctx.mark_sent(id, false);
                self.settle_submission(id, result?);
            }
            Event::Adopt(id, result) => self.adopted(id, result?).await?,
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
                    if *tries >= reconcile::MAX_INCONCLUSIVE {
                        if let Some(task) = self.tasks.get(&id).cloned() {
                            // Never proven either way: the task ends failed, nothing sent again.
                            reconcile::give_up_in_doubt(&self.ctx, &task).await?;
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
                // Every listed job of this process's own tells where the API's clock stands.
                for (id, stamps) in &round.stamps {
                    if let (Some(f), Some(created)) = (self.in_flight.get(id), stamps.created) {
                        if f.timed {
                            self.api_clock.learn_created(f.submitted_at, f.answered_at, created);
                        }
                    }
                }
                for (id, outcome) in round.outcomes {
                    let seen = round.polled.get(&id).copied();
                    if let (Some(f), Some(at)) = (self.in_flight.get_mut(&id), seen) {
                        let age = f.age_at(at);
                        match outcome {
                            JobOutcome::Running => f.seen_running = f.seen_running.max(age),
                            JobOutcome::Deleted | JobOutcome::Absent if f.timed => {
                                let stamps = round.stamps.get(&id).copied().unwrap_or_default();
                                let (lo, hi) = poll_plan::narrow(f.seen_running, age, stamps.took);
                                // A call takes no longer to reach the API than the job's own
                                // request took to be answered.
                                let transit = f.age_at(f.answered_at);
                                let trusted = !self.api_clock.distrusted();
                                let (lo, hi) = self.api_clock.narrow((lo, hi), f.submitted_at, stamps.ended, transit);
                                if trusted && self.api_clock.distrusted() {
                                    tracing::debug!(
                                        job_id = %f.job_id,
                                        "the API's time stamps contradict what the rounds saw: job durations are learned without them for the rest of the run"
                                    );
                                }
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
    pub(super) fn note_answer(&mut self) {
        self.answered_any = true;
        self.unreachable_in_a_row = 0;
        self.unreachable_since = None;
    }

    /// A deferred adoption's outcome: the task follows the attempt it adopted (loaded as a
    /// resumed run loads it), goes as usual when there was nothing left to adopt, or waits.
    pub(super) async fn adopted(
        &mut self,
        id: i64,
        adopted: crate::store::Adopted,
    ) -> crate::runner::error::Result<()> {
        use crate::store::Adopted;
        self.adopting.remove(&id);
        match adopted {
            Adopted::Moved(row) => {
                let live = crate::store::TaskState::LIVE.contains(&row.state);
                tracing::warn!(task = id, state = %row.state, "adopted a live attempt of an earlier run: nothing is sent before it is resolved");
                self.load(vec![*row]).await?;
                if !live {
                    self.release(id);
                }
            }
            Adopted::Nothing => match self.tasks.get(&id).cloned() {
                // The run stopped meanwhile: the task stays `pending`, nothing is sent.
                Some(task) if !self.stopping() => self.start_submission(task),
                _ => self.release(id),
            },
            Adopted::Waits => {
                // The slot is another task's (on PostgreSQL, maybe a dead host's whose request
                // lease has not run out): ask again later, backing off as a busy cluster does,
                // for at most --job-timeout. Past it the task ends `failed` with nothing sent,
                // and the earlier attempt stays for a later run (`retry`) to adopt.
                let now = self.ctx.instant();
                let since = self.tasks.get(&id).and_then(|t| t.busy_since).unwrap_or(now);
                let timeout = self.ctx.opts.job_timeout;
                if now.saturating_duration_since(since) >= timeout {
                    let message = format!(
                        "an earlier run's attempt at this account could not be adopted: its cluster stayed busy with \
                         another task's job for longer than --job-timeout {}; nothing was sent, a later run adopts it",
                        humantime::format_duration(timeout)
                    );
                    let open = [crate::store::TaskState::Pending, crate::store::TaskState::RetryWait];
                    let change = crate::store::TaskChange::new().message(message).finished_at(self.ctx.now());
                    let detail = serde_json::json!({ "reason": "the adoption waited past --job-timeout" });
                    self.ctx.step(id, &open, crate::runner::state::Event::Refused, change, detail).await?;
                    self.release(id);
                    self.note_failed();
                    return Ok(());
                }
                self.deferred.insert(id);
                let tries = self.tasks.get(&id).map_or(0, |t| t.busy_count);
                let wait = self.ctx.backoff(tries + 1).min(RECONCILE_RETRY_CAP).max(self.ctx.opts.poll_interval);
                self.settle_submission(id, Submitted::Busy { at: self.ctx.instant() + wait });
            }
            Adopted::NotHeld => self.settle_submission(id, Submitted::Lost),
        }
        Ok(())
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
                let flight =
                    InFlight::new(task.clone(), job_id, sent_at.unwrap_or(wall), sent_at.is_some()).answered_by(wall);
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
            Submitted::Withdrawn => {
                self.queue.release(&cluster);
            }
            Submitted::Lost => {
                self.queue.release(&cluster);
                if let Some(shared) = self.ctx.shared.clone() {
                    // Another host's now, or in a state this host did not expect: let it go
                    // (a later claim loads it afresh if it comes back).
                    self.tasks.remove(&id);
                    self.work.spawn(async move { Event::Recorded(shared.release(id).await.map_err(Into::into)) });
                }
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
