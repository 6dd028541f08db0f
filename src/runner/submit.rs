//! Submitting one task: the intent, the `del_user` request through the last check, and what
//! its answer means for the task.
//!
//! Write-ahead intent: the task is marked `submitting` (and that is committed) before the
//! request leaves. Whatever happens next — an answer, a lost answer, a crash — the database says
//! a request may exist, and nothing is sent again for the task until
//! [`reconcile`](super::reconcile::reconcile) has either found its job (adopted) or proved,
//! through `DescribeJobs`, that there is none. This module must not send a request that has not
//! passed [`TaskGuard`], nor read time or randomness except through the run's [`Ctx`].

use std::sync::Arc;

use serde_json::json;

use super::context::{CallVerdict, Ctx};
use super::guard::{TaskGuard, Withhold};
use super::outcome::{absent, fail, outcome_change, retry_or_fail};
use super::state::Event;
use super::task::{Submitted, TaskRef};
use super::verdict::{self, Refused};
use crate::qingcloud::client::ApiError;
use crate::qingcloud::types::DelUserParams;
use crate::runner::error::RunnerError;
use crate::store::{Refusal, TaskChange, TaskState};

/// The `del_user` submission of one task.
pub async fn submit(ctx: Arc<Ctx>, task: TaskRef) -> super::error::Result<Submitted> {
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
) -> super::error::Result<Submitted> {
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
async fn withheld(ctx: &Ctx, task: &TaskRef, why: Withhold) -> super::error::Result<Submitted> {
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
        Withhold::Refused(Refusal::LeaseLost) => {
            // Its intent stays `submitting`: the host that holds the task now reconciles it,
            // finds that nothing left, and sends it then.
            tracing::warn!(task = task.id, "withheld: this host's lease on the task is gone");
            Ok(Submitted::Lost)
        }
        Withhold::Unchecked(e) => {
            withdraw(ctx, task.id).await?;
            Err(RunnerError::Unchecked(e))
        }
    }
}

/// Turn an intent whose request never left back to `pending`, audited as withdrawn.
pub async fn withdraw(ctx: &Ctx, task_id: i64) -> super::error::Result<()> {
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

async fn back_to_pending(
    ctx: &Ctx,
    task: &TaskRef,
    ret_code: Option<i64>,
    message: &str,
    why: &str,
) -> super::error::Result<()> {
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
