//! Submitting one task, and reconciling one whose submission is in doubt.
//!
//! Write-ahead intent: the task is marked `submitting` (and that is committed) before the
//! request leaves. Whatever happens next — an answer, a lost answer, a crash — the database says
//! a request may exist, and nothing is sent again for the task until [`reconcile`] has either
//! found its job (adopted) or proved, through `DescribeJobs`, that there is none. It reaches the
//! API, the time and back-off randomness only through the run's [`Ctx`].

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::time::Instant;

use super::context::{CallVerdict, Ctx};
use super::guard::{TaskGuard, Withhold};
use super::state::Event;
use super::verdict::{self, Refused};
use crate::manifest::{ClusterId, Zone};
use crate::qingcloud::client::{ApiError, JobFilter};
use crate::qingcloud::types::{DelUserParams, DEL_USER, RUN_CLUSTER_CUSTOM_SERVICE};
use crate::store::{Refusal, TaskChange, TaskState};

/// What the engine needs to know about one task to act on it.
#[derive(Debug, Clone)]
pub struct TaskRef {
    pub id: i64,
    pub cluster: ClusterId,
    pub zone: Zone,
    pub user: String,
    pub host: String,
    /// Attempts used so far (2500s and reconciled-away doubts do not count).
    pub attempts: u32,
    /// When the newest `submitting` intent was recorded.
    pub intent_at: Option<DateTime<Utc>>,
    /// Every job id ever seen for this task, so reconciliation never adopts an old one.
    pub known_jobs: HashSet<String>,
    /// Since when the cluster has answered "busy with another job" (1400), in a row.
    pub busy_since: Option<Instant>,
    /// Busy answers in a row, for the backoff.
    pub busy_count: u32,
}

/// How a submission ended, for the engine's bookkeeping (the database already has it).
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Accepted: the job to poll.
    /// `sent_at`: when the request that started the job was sent, if this process sent it.
    Job { job_id: String, attempts: u32, sent_at: Option<DateTime<Utc>> },
    /// 2500 before anything happened: back in the queue, no attempt used.
    Throttled,
    /// A transient error: retry after the backoff.
    RetryAt { at: Instant, attempts: u32 },
    /// The task ended `failed`.
    Failed,
    /// The account does not exist: the task ended `absent`.
    Absent,
    /// The cluster is running another job: back in the queue at `at`, no attempt used.
    Busy { at: Instant },
    /// Another run removed the account: the task ended `skipped`, nothing was sent.
    Skipped,
    /// The run stopped before the request left: the intent was withdrawn (`pending` again).
    Withdrawn,
    /// The task was not in the state its turn needed (the guard did not match): left alone.
    Lost,
    /// A 1400 refusing the action or the key: the run must stop (exit 69).
    ActionRefused(String),
    /// The answer was lost after the request may have taken effect: reconcile before anything.
    InDoubt { intent_at: DateTime<Utc> },
    /// 1200: the run must stop; the task is back to `pending` with no attempt used.
    AuthFailed(String),
    /// The endpoint could not be reached at all (nothing was sent); back to pending, no attempt.
    Unreachable(String),
}

/// The `del_user` submission of one task.
pub async fn submit(ctx: Arc<Ctx>, task: TaskRef) -> anyhow::Result<Submitted> {
    let intent_at = ctx.now();
    let attempt = task.attempts + 1;
    let marked = ctx
        .step(
            task.id,
            &[TaskState::Pending, TaskState::RetryWait],
            Event::Intent,
            TaskChange::new().intent_at(intent_at),
            json!({ "attempt": attempt }),
        )
        .await?;
    if marked.is_none() {
        // A lost guard is data, not a crash: this task is left as it is and logged.
        tracing::warn!(task = task.id, "the task was not pending when its turn came; left alone");
        return Ok(Submitted::Lost);
    }
    ctx.mark_sent(task.id, false);

    let params = DelUserParams::new(&task.user, &task.host);
    // 1300 (time stamp expired) is retried at once with a fresh time stamp, a few times.
    let mut expired_left = 3;
    loop {
        let sent_at = ctx.instant();
        let guard = TaskGuard::new(&ctx, &task);
        let call = match ctx.api.del_user(&task.cluster, &task.zone, &params, &guard).await {
            Ok(call) => call,
            Err(_) => return withheld(&ctx, &task, guard.reason()).await,
        };
        let verdict = ctx.note_call(Some(task.id), &call, sent_at).await?;
        match call.result {
            Ok(resp) => {
                ctx.step(
                    task.id,
                    &[TaskState::Submitting],
                    Event::Accepted,
                    TaskChange::new()
                        .attempts(i64::from(attempt))
                        .job_id(resp.job_id.clone())
                        .submitted_at(ctx.now())
                        .ret_code(0)
                        .message(""),
                    json!({ "job_id": resp.job_id }),
                )
                .await?;
                tracing::Span::current().record("job_id", resp.job_id.as_str());
                tracing::debug!(attempt, "submitted");
                return Ok(Submitted::Job {
                    job_id: resp.job_id,
                    attempts: attempt,
                    sent_at: Some(call.record.started_at),
                });
            }
            Err(ApiError::Expired(_)) if expired_left > 0 => {
                expired_left -= 1;
                // `note_call` has set the client to sign with the API's clock (`Date` header).
                tracing::warn!(
                    skew_s = ctx.clock_skew().map(|s| s.num_seconds()),
                    "time stamp expired (1300): re-signing at once; check this machine's clock"
                );
                continue;
            }
            Err(err) => {
                let ret_code = err.ret_code();
                let message = err.to_string();
                return match (&err, verdict) {
                    (ApiError::Throttled(_), _) => {
                        back_to_pending(&ctx, &task, ret_code, &message, "throttled; no attempt used").await?;
                        Ok(Submitted::Throttled)
                    }
                    (ApiError::AuthFailed(_), _) => {
                        back_to_pending(&ctx, &task, ret_code, &message, "credentials refused; run stops").await?;
                        Ok(Submitted::AuthFailed(message))
                    }
                    (e, _) if e.may_have_taken_effect() => {
                        ctx.store
                            .audit_event(
                                Some(ctx.run_id),
                                Some(task.id),
                                "submission_in_doubt",
                                json!({ "error": message, "intent_at": intent_at }),
                            )
                            .await?;
                        Ok(Submitted::InDoubt { intent_at })
                    }
                    (ApiError::NotApi(_), _) => {
                        // Something other than the API answered and nothing took effect: the
                        // run counts these and stops with 69 after a few.
                        back_to_pending(&ctx, &task, ret_code, &message, "not the QingCloud API; nothing sent").await?;
                        Ok(Submitted::Unreachable(message))
                    }
                    (ApiError::Transient(_), CallVerdict::NoAnswer) => {
                        back_to_pending(&ctx, &task, ret_code, &message, "endpoint unreachable; nothing sent").await?;
                        Ok(Submitted::Unreachable(message))
                    }
                    (ApiError::Transient(_) | ApiError::Expired(_), _) => {
                        retry_or_fail(&ctx, &task, attempt, &[TaskState::Submitting], ret_code, &message).await
                    }
                    (e, _) => refused(&ctx, &task, attempt, e.ret_code(), e.message(), &message).await,
                };
            }
        }
    }
}

/// A synchronous refusal (a non-zero ret_code that is not throttling, auth or transient).
async fn refused(
    ctx: &Ctx,
    task: &TaskRef,
    attempt: u32,
    ret_code: Option<i64>,
    api_message: &str,
    message: &str,
) -> anyhow::Result<Submitted> {
    let kind = match ret_code {
        Some(code) => verdict::refusal(&ctx.opts.absent, code, api_message, task.cluster.as_str(), &task.user),
        None => Refused::Failed,
    };
    match kind {
        Refused::Absent => {
            absent(ctx, task.id, &[TaskState::Submitting], attempt, ret_code, message).await?;
            Ok(Submitted::Absent)
        }
        Refused::Busy => {
            let since = task.busy_since.unwrap_or_else(|| ctx.instant());
            if ctx.instant().saturating_duration_since(since) >= ctx.opts.job_timeout {
                let message = format!(
                    "{message} (the cluster stayed busy with other jobs for longer than --job-timeout {})",
                    humantime::format_duration(ctx.opts.job_timeout)
                );
                fail(ctx, task.id, &[TaskState::Submitting], task.attempts, ret_code, &message).await?;
                return Ok(Submitted::Failed);
            }
            let wait = ctx.backoff(task.busy_count + 1).max(ctx.opts.poll_interval);
            let next = ctx.now() + chrono::Duration::from_std(wait).unwrap_or_default();
            ctx.step(
                task.id,
                &[TaskState::Submitting],
                Event::Backoff,
                outcome_change(ret_code, message).next_attempt_at(next),
                json!({ "reason": "cluster busy with another job; no attempt used", "retry_in_ms": wait.as_millis() as u64, "ret_code": ret_code }),
            )
            .await?;
            Ok(Submitted::Busy { at: ctx.instant() + wait })
        }
        Refused::ActionRefused => {
            back_to_pending(ctx, task, ret_code, message, "the action or the key is refused; run stops").await?;
            Ok(Submitted::ActionRefused(message.to_owned()))
        }
        Refused::Failed => {
            fail(ctx, task.id, &[TaskState::Submitting], attempt, ret_code, message).await?;
            Ok(Submitted::Failed)
        }
    }
}

/// The last check withheld the request: nothing was sent.
async fn withheld(ctx: &Ctx, task: &TaskRef, why: Withhold) -> anyhow::Result<Submitted> {
    ctx.mark_sent(task.id, false);
    let from = [TaskState::Submitting];
    match why {
        Withhold::Stopped => {
            withdraw(ctx, task.id).await?;
            Ok(Submitted::Withdrawn)
        }
        Withhold::Protected => {
            let message = format!("user {:?} is protected: no request was sent", task.user);
            fail(ctx, task.id, &from, task.attempts, None, &message).await?;
            Ok(Submitted::Failed)
        }
        Withhold::Invalid(why) => {
            let message = format!("not an account that can be sent ({why}): no request was sent");
            fail(ctx, task.id, &from, task.attempts, None, &message).await?;
            Ok(Submitted::Failed)
        }
        Withhold::Refused(Refusal::DoneElsewhere { run_id }) => {
            ctx.step(
                task.id,
                &from,
                Event::DoneElsewhere,
                TaskChange::new().message(format!("already done by run {run_id}")).finished_at(ctx.now()),
                json!({ "reason": "withheld at the last check: done by another run", "by_run": run_id }),
            )
            .await?;
            Ok(Submitted::Skipped)
        }
        Withhold::Refused(Refusal::InFlightElsewhere { run_id }) => {
            let message = format!("run {run_id} holds a live attempt at this account: no request was sent");
            fail(ctx, task.id, &from, task.attempts, None, &message).await?;
            Ok(Submitted::Failed)
        }
        Withhold::Refused(refusal @ Refusal::RecordedDone { .. }) => {
            let message = format!("{}: no request was sent", refusal.describe());
            fail(ctx, task.id, &from, task.attempts, None, &message).await?;
            Ok(Submitted::Failed)
        }
        Withhold::Refused(Refusal::NotOpen(state)) => {
            tracing::warn!(task = task.id, %state, "withheld: the task is no longer submitting");
            Ok(Submitted::Lost)
        }
        Withhold::Unchecked(e) => {
            withdraw(ctx, task.id).await?;
            anyhow::bail!("the last check before sending could not be made: {e}")
        }
    }
}

/// Turn an intent whose request never left back to `pending`, audited as withdrawn.
pub async fn withdraw(ctx: &Ctx, task_id: i64) -> anyhow::Result<()> {
    ctx.step(
        task_id,
        &[TaskState::Submitting],
        Event::Withdrawn,
        TaskChange::new(),
        json!({ "reason": "intent_withdrawn: the run stopped before the request left" }),
    )
    .await?;
    Ok(())
}

/// The account does not exist: the task ends `absent` (final, done).
pub async fn absent(
    ctx: &Ctx,
    task_id: i64,
    from: &[TaskState],
    attempts: u32,
    ret_code: Option<i64>,
    message: &str,
) -> anyhow::Result<()> {
    let message = format!("account not found: {message}");
    finish(ctx, task_id, from, Event::FoundAbsent, attempts, ret_code, &message, None).await
}

async fn back_to_pending(
    ctx: &Ctx,
    task: &TaskRef,
    ret_code: Option<i64>,
    message: &str,
    why: &str,
) -> anyhow::Result<()> {
    ctx.step(
        task.id,
        &[TaskState::Submitting],
        Event::Withdrawn,
        outcome_change(ret_code, message),
        json!({ "reason": why, "ret_code": ret_code }),
    )
    .await?;
    Ok(())
}

/// The last ret_code (cleared when there is none) and message of an outcome.
fn outcome_change(ret_code: Option<i64>, message: &str) -> TaskChange {
    let mut change = TaskChange::new().message(message);
    change.last_ret_code = Some(ret_code);
    change
}

/// The attempt failed transiently: wait and retry, or end `failed` when attempts are used up.
pub async fn retry_or_fail(
    ctx: &Ctx,
    task: &TaskRef,
    attempts: u32,
    from: &[TaskState],
    ret_code: Option<i64>,
    message: &str,
) -> anyhow::Result<Submitted> {
    if attempts >= ctx.opts.max_attempts {
        let message = format!("{message} (after {attempts} attempts)");
        fail(ctx, task.id, from, attempts, ret_code, &message).await?;
        return Ok(Submitted::Failed);
    }
    let wait = ctx.backoff(attempts);
    let next = ctx.now() + chrono::Duration::from_std(wait).unwrap_or_default();
    ctx.step(
        task.id,
        from,
        Event::Backoff,
        outcome_change(ret_code, message).attempts(i64::from(attempts)).next_attempt_at(next),
        json!({ "retry_in_ms": wait.as_millis() as u64, "ret_code": ret_code, "message": message }),
    )
    .await?;
    Ok(Submitted::RetryAt { at: ctx.instant() + wait, attempts })
}

pub async fn fail(
    ctx: &Ctx,
    task_id: i64,
    from: &[TaskState],
    attempts: u32,
    ret_code: Option<i64>,
    message: &str,
) -> anyhow::Result<()> {
    finish(ctx, task_id, from, Event::GiveUp, attempts, ret_code, message, None).await
}

/// End a task `failed` while its last request may still take effect: `why` is `job` (its job
/// exists or may: still running, or never listed, at --job-timeout) or `in_doubt` (the answer
/// was lost and reconciliation could not tell). A later run (`retry`, `run`, `resume`) adopts
/// that attempt — follows the job, or reconciles again — and never sends the account blindly.
pub async fn fail_unresolved(
    ctx: &Ctx,
    task_id: i64,
    from: &[TaskState],
    attempts: u32,
    why: &str,
    message: &str,
) -> anyhow::Result<()> {
    finish(ctx, task_id, from, Event::GiveUp, attempts, None, message, Some(why)).await
}

/// Move a task to a final outcome with its attempts, last answer and end time.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Ctx,
    task_id: i64,
    from: &[TaskState],
    event: Event,
    attempts: u32,
    ret_code: Option<i64>,
    message: &str,
    unresolved: Option<&str>,
) -> anyhow::Result<()> {
    let mut change = outcome_change(ret_code, message).attempts(i64::from(attempts)).finished_at(ctx.now());
    if let Some(why) = unresolved {
        change = change.unresolved(why);
    }
    ctx.step(task_id, from, event, change, json!({ "ret_code": ret_code, "message": message })).await?;
    Ok(())
}

/// How far back from the intent a job may have been created and still be this submission's:
/// the server's clock may differ from ours by more than the 60 s its time-stamp check allows
/// (a time stamp is refused only when too far off), so the margin is wide. A wider margin only
/// makes reconciliation read more jobs; it never makes it conclude "absent" sooner.
const CLOCK_MARGIN: chrono::Duration = chrono::Duration::minutes(15);
/// At most this many pages of 100 jobs are read by one reconciliation.
const MAX_PAGES: u32 = 20;
/// Reconciliations that could not conclude (errors, or more jobs than the page budget), after
/// which the task ends `failed` without a second request: whether the first took effect is
/// unknown, so it is never sent again blindly.
pub const MAX_INCONCLUSIVE: u32 = 10;

/// Find the job of a submission in doubt. Adopts it when found. Absence counts as proven only
/// when every job of the zone's listing was read (whatever order the API lists in) and the
/// listing was made at least `--reconcile-settle` after the intent (a listing may lag behind
/// job creation); then the attempt counts as failed and the task waits for a retry. Otherwise
/// nothing changes and the caller tries again later.
pub async fn reconcile(ctx: Arc<Ctx>, task: TaskRef) -> anyhow::Result<Submitted> {
    let intent_at = task.intent_at.unwrap_or_else(|| ctx.now());
    // The API's `create_time` is on its clock: widen the margin by the measured difference.
    let skew = ctx.clock_skew().map_or(chrono::Duration::zero(), |s| s.abs());
    let not_before = intent_at - CLOCK_MARGIN - skew;
    let settle = chrono::Duration::from_std(ctx.opts.reconcile_settle).unwrap_or(chrono::Duration::MAX);
    let listed_at = ctx.now();
    if listed_at < intent_at + settle {
        return Ok(Submitted::InDoubt { intent_at });
    }
    let want = DelUserParams::new(&task.user, &task.host);
    let mut offset = 0u32;
    for _ in 0..MAX_PAGES {
        let filter = JobFilter {
            job_action: Some(RUN_CLUSTER_CUSTOM_SERVICE.to_owned()),
            status: Vec::new(),
            offset,
            limit: 100,
        };
        let sent_at = ctx.instant();
        let call = ctx.api.list_jobs(&task.zone, &filter).await;
        let verdict = ctx.note_call(Some(task.id), &call, sent_at).await?;
        let page = match call.result {
            Ok(page) => page,
            Err(err) => {
                if let CallVerdict::AuthFailed(m) = verdict {
                    return Ok(Submitted::AuthFailed(m));
                }
                tracing::info!(task = task.id, error = %err, "reconciliation incomplete; will try again");
                return Ok(Submitted::InDoubt { intent_at });
            }
        };
        for job in &page.job_set {
            // Pages may hold other actions when the API ignores `job_action`.
            if job.job_action != RUN_CLUSTER_CUSTOM_SERVICE && !job.job_action.is_empty() {
                continue;
            }
            if job.create_time().is_some_and(|t| t < not_before) || task.known_jobs.contains(&job.job_id) {
                continue;
            }
            let Some(target) = job.directive_target() else { continue };
            if target.cluster == task.cluster.as_str()
                && target.service == DEL_USER
                && target.params.as_ref() == Some(&want)
            {
                let attempts = task.attempts + 1;
                ctx.step(
                    task.id,
                    &[TaskState::Submitting],
                    Event::Accepted,
                    TaskChange::new().attempts(i64::from(attempts)).job_id(job.job_id.clone()).submitted_at(ctx.now()),
                    json!({ "reason": "reconciled: job found and adopted", "job_id": job.job_id }),
                )
                .await?;
                return Ok(Submitted::Job { job_id: job.job_id.clone(), attempts, sent_at: None });
            }
        }
        offset += page.job_set.len() as u32;
        let exhausted = page.job_set.is_empty() || u64::from(offset) >= page.total_count;
        if exhausted {
            let attempts = task.attempts + 1;
            ctx.store
                .audit_event(
                    Some(ctx.run_id),
                    Some(task.id),
                    "reconcile_absent",
                    json!({ "intent_at": intent_at, "listed_at": listed_at, "jobs_examined": offset }),
                )
                .await?;
            return retry_or_fail(
                &ctx,
                &task,
                attempts,
                &[TaskState::Submitting],
                None,
                "the submission's answer was lost and no job was found for it",
            )
            .await;
        }
    }
    tracing::warn!(task = task.id, "reconciliation read {MAX_PAGES} pages without reaching the end of the listing");
    Ok(Submitted::InDoubt { intent_at })
}

/// A submission stayed in doubt through [`MAX_INCONCLUSIVE`] reconciliations: end the task
/// `failed`, never sending a second request.
pub async fn give_up_in_doubt(ctx: &Ctx, task: &TaskRef) -> anyhow::Result<()> {
    let message = format!(
        "the answer to the submission was lost and {MAX_INCONCLUSIVE} reconciliations could not tell whether a job \
         exists; not resubmitted so the account is never sent twice — check the cluster's jobs"
    );
    fail_unresolved(ctx, task.id, &[TaskState::Submitting], task.attempts, "in_doubt", &message).await
}
