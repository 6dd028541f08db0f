//! One polling round: a `DescribeJobs` per zone (at most 100 ids per call) for every job in
//! flight, and what each job's status means for its task.
//!
//! `successful` → `deleted`; a failed job whose `error_codes` say the account does not exist →
//! `absent`; `failed`, `done with failure` and any unknown status → the attempt failed (retried
//! with backoff while attempts remain); `pending`/`working` → still running, unless it has run
//! longer than `--job-timeout`: then the task ends `failed` without a second request, since the
//! job exists and may still delete the account.
//!
//! Only an explicit answer proves that a job does not exist: the API refusing a batch because
//! it does not know one of its ids (the documented behaviour: 2100 for the whole call). Such a
//! batch is split — the named id set aside, or the batch halved when no id is named — until the
//! unknown ids are isolated and the rest answered. A job merely *missing* from an answer proves
//! nothing: it is treated as still running and, past `--job-timeout`, ends its task `failed`
//! without a second request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::time::Instant;

use super::context::{CallVerdict, Ctx};
use super::outcome;
use super::state::Event;
use super::task::{Submitted, TaskRef};
use crate::manifest::Zone;
use crate::qingcloud::client::MAX_JOBS_PER_CALL;
use crate::qingcloud::types::{ret, Job};
use crate::runner::error::RunnerError;
use crate::store::{TaskChange, TaskState};

/// A job in flight, as the poller needs it.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub task: TaskRef,
    pub job_id: String,
    pub submitted_at: DateTime<Utc>,
    /// `submitted_at` is when this process sent the request, so the job's age is measured and
    /// its duration can be learned (not so for a job adopted or resumed).
    pub timed: bool,
    /// The job's age at the last round that listed it running.
    pub seen_running: std::time::Duration,
    /// By when the request's answer had come (the job was created between `submitted_at` and
    /// this); only meaningful when `timed`.
    pub answered_at: DateTime<Utc>,
}

impl InFlight {
    pub fn new(task: TaskRef, job_id: String, submitted_at: DateTime<Utc>, timed: bool) -> Self {
        Self { task, job_id, submitted_at, timed, seen_running: std::time::Duration::ZERO, answered_at: submitted_at }
    }

    /// The same, with the time by which its request had been answered.
    pub fn answered_by(self, at: DateTime<Utc>) -> Self {
        Self { answered_at: at.max(self.submitted_at), ..self }
    }

    /// Its age at `at`.
    pub fn age_at(&self, at: DateTime<Utc>) -> std::time::Duration {
        (at - self.submitted_at).to_std().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Deleted,
    Absent,
    Running,
    Retry { at: Instant, attempts: u32 },
    Failed,
}

#[derive(Debug, Default)]
pub struct RoundResult {
    pub outcomes: Vec<(i64, JobOutcome)>,
    pub auth_failed: Option<String>,
    pub throttled: bool,
    /// Did any call of the round get an HTTP answer?
    pub answered: bool,
    /// Did a call fail (no answer, throttled, an error other than an unknown job)?
    pub call_failed: bool,
    /// For each task whose job was in an answered call: when that call was sent. A job it did
    /// not list done was still running then.
    pub polled: HashMap<i64, DateTime<Utc>>,
    /// For each task whose job the round listed: its `create_time` and, once ended, its
    /// `status_time` (the API's clock, whole seconds), where readable.
    pub stamps: HashMap<i64, Stamps>,
}

/// A listed job's time stamps, on the API's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    pub created: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    /// [`Job::took`].
    pub took: Option<std::time::Duration>,
}

impl Stamps {
    fn of(job: &Job) -> Self {
        Self { created: job.create_time(), ended: job.ended_at(), took: job.took() }
    }
}

/// Poll every job in `jobs` once.
pub async fn round(ctx: Arc<Ctx>, jobs: Vec<InFlight>) -> super::error::Result<RoundResult> {
    let mut by_zone: HashMap<Zone, Vec<InFlight>> = HashMap::new();
    for j in jobs {
        by_zone.entry(j.task.zone.clone()).or_default().push(j);
    }
    let mut result = RoundResult::default();
    for (zone, in_zone) in by_zone {
        let ids: Vec<String> = in_zone.iter().map(|j| j.job_id.clone()).collect();
        let (found, unknown, polled) = describe_isolating(&ctx, &zone, ids, &mut result).await?;
        let mut found = found;
        let asked: Arc<HashSet<String>> = Arc::new(polled.keys().cloned().collect());
        for j in &in_zone {
            if let Some(at) = polled.get(&j.job_id) {
                result.polled.insert(j.task.id, *at);
            }
        }
        // Settle the jobs concurrently so their state changes share the journal's commits.
        let mut settling = tokio::task::JoinSet::new();
        for j in in_zone {
            let job = found.remove(&j.job_id);
            if let Some(job) = &job {
                result.stamps.insert(j.task.id, Stamps::of(job));
            }
            // Only an explicit "no such job" proves a job unknown; an omission proves nothing.
            let proven_unknown = unknown.contains(&j.job_id);
            let ctx = Arc::clone(&ctx);
            let asked = Arc::clone(&asked);
            let span = super::task::task_span(&j.task);
            span.record("job_id", j.job_id.as_str());
            settling.spawn(tracing::Instrument::instrument(
                async move {
                    let outcome = match &job {
                        Some(job) => settle(&ctx, &j, job).await,
                        None if proven_unknown => unknown_job(&ctx, &j).await,
                        // Its call got no answer this round: nothing was learned about it (a
                        // job is "not listed" only by answers that leave it out).
                        None if !asked.contains(&j.job_id) => Ok(JobOutcome::Running),
                        None => timeout_check(&ctx, &j, None).await,
                    };
                    (j, outcome)
                },
                span,
            ));
        }
        while let Some(joined) = settling.join_next().await {
            let (j, outcome) =
                joined.map_err(|e| RunnerError::Panicked { what: "settling a job", detail: e.to_string() })?;
            let outcome = outcome?;
            result.outcomes.push((j.task.id, outcome));
        }
    }
    Ok(result)
}

/// `DescribeJobs` for `ids` in batches of at most 100, isolating ids the API refuses as unknown.
/// Returns the jobs found, the ids proven unknown, and when each id's answered call was sent.
/// Each refused batch costs one call and
/// shrinks (by the named id, or by half), so a round costs at most about twice its ids.
async fn describe_isolating(
    ctx: &Ctx,
    zone: &Zone,
    ids: Vec<String>,
    result: &mut RoundResult,
) -> super::error::Result<(HashMap<String, Job>, HashSet<String>, HashMap<String, DateTime<Utc>>)> {
    let mut polled: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut found: HashMap<String, Job> = HashMap::new();
    let mut unknown: HashSet<String> = HashSet::new();
    let mut batches: Vec<Vec<String>> = ids.chunks(MAX_JOBS_PER_CALL).map(<[String]>::to_vec).collect();
    while let Some(batch) = batches.pop() {
        let sent_at = ctx.instant();
        for call in ctx.api.describe_jobs(zone, &batch).await {
            result.answered |= call.record.http_status.is_some();
            match ctx.note_call(None, &call, sent_at).await? {
                CallVerdict::AuthFailed(m) => result.auth_failed = Some(m),
                CallVerdict::Throttled => result.throttled = true,
                _ => {}
            }
            match call.result {
                Ok(resp) => {
                    for id in &batch {
                        polled.insert(id.clone(), call.record.started_at);
                    }
                    for job in resp.job_set {
                        found.insert(job.job_id.clone(), job);
                    }
                }
                Err(e) if e.ret_code() == Some(ret::NOT_FOUND) => {
                    let named = batch.iter().find(|id| e.message().contains(&format!("[{id}]"))).cloned();
                    match named {
                        Some(id) => {
                            unknown.insert(id.clone());
                            let rest: Vec<String> = batch.iter().filter(|b| **b != id).cloned().collect();
                            if !rest.is_empty() {
                                batches.push(rest);
                            }
                        }
                        None if batch.len() == 1 => {
                            unknown.insert(batch[0].clone());
                        }
                        None => {
                            let (a, b) = batch.split_at(batch.len() / 2);
                            batches.push(a.to_vec());
                            batches.push(b.to_vec());
                        }
                    }
                }
                // Any other failure: nothing is known about this batch this round.
                Err(_) => result.call_failed = true,
            }
        }
    }
    Ok((found, unknown, polled))
}

/// The API said it does not know the job: that attempt is proven to have no job, so retrying
/// is safe.
async fn unknown_job(ctx: &Ctx, j: &InFlight) -> super::error::Result<JobOutcome> {
    let message = format!("job {} is unknown to DescribeJobs (the API answered that it does not exist)", j.job_id);
    Ok(match outcome::retry_or_fail(ctx, &j.task, j.task.attempts, &[TaskState::Submitted], None, &message).await? {
        Submitted::RetryAt { at, attempts } => JobOutcome::Retry { at, attempts },
        _ => JobOutcome::Failed,
    })
}

async fn settle(ctx: &Ctx, j: &InFlight, job: &Job) -> super::error::Result<JobOutcome> {
    if job.status.is_success() {
        ctx.step(
            j.task.id,
            &[TaskState::Submitted],
            Event::Succeeded,
            TaskChange::new().finished_at(ctx.now()),
            json!({ "job_id": j.job_id, "job_status": job.status.as_str(), "status_time": job.status_time }),
        )
        .await?;
        tracing::debug!("deleted");
        return Ok(JobOutcome::Deleted);
    }
    if job.status.is_running() {
        return timeout_check(ctx, j, Some(job)).await;
    }
    let message = if job.error_codes.is_empty() {
        format!("job {} ended '{}'", j.job_id, job.status.as_str())
    } else {
        format!("job {} ended '{}' (error_codes {})", j.job_id, job.status.as_str(), job.error_codes)
    };
    if ctx.opts.absent.job_says_absent(&job.error_codes) {
        outcome::absent(ctx, j.task.id, &[TaskState::Submitted], j.task.attempts, None, &message).await?;
        tracing::debug!("account not found");
        return Ok(JobOutcome::Absent);
    }
    Ok(match outcome::retry_or_fail(ctx, &j.task, j.task.attempts, &[TaskState::Submitted], None, &message).await? {
        Submitted::RetryAt { at, attempts } => JobOutcome::Retry { at, attempts },
        _ => JobOutcome::Failed,
    })
}

/// A job still running, or not found at all: past `--job-timeout` the task is settled.
async fn timeout_check(ctx: &Ctx, j: &InFlight, job: Option<&Job>) -> super::error::Result<JobOutcome> {
    let age = ctx.now() - j.submitted_at;
    let limit = chrono::Duration::from_std(ctx.opts.job_timeout).unwrap_or(chrono::Duration::MAX);
    if age < limit {
        return Ok(JobOutcome::Running);
    }
    match job {
        Some(job) => {
            // The job exists and may still delete the account: never send a second request.
            let message = format!(
                "job {} still '{}' after {}; not resubmitted so the account is never sent twice — check the job",
                j.job_id,
                job.status.as_str(),
                humantime::format_duration(ctx.opts.job_timeout)
            );
            outcome::fail_unresolved(ctx, j.task.id, &[TaskState::Submitted], j.task.attempts, "job", &message).await?;
            Ok(JobOutcome::Failed)
        }
        None => {
            // Missing from every answer, never refused as unknown: not proof that the job does
            // not exist, so it is never sent again.
            let message = format!(
                "job {} was not listed by DescribeJobs for {}; not resubmitted so the account is never sent twice — check the job",
                j.job_id,
                humantime::format_duration(ctx.opts.job_timeout)
            );
            outcome::fail_unresolved(ctx, j.task.id, &[TaskState::Submitted], j.task.attempts, "job", &message).await?;
            Ok(JobOutcome::Failed)
        }
    }
}
