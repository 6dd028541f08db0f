//! How an attempt ends, written: `absent`, `failed` (plain, or with its request still
//! unresolved), or `retry_wait` with the back-off drawn from the run's random source. Submission,
//! reconciliation and polling all end attempts through here, so the last answer, the attempts and
//! the end time are written the same way whichever of them saw the end.
//!
//! It decides nothing about *which* end an attempt has: its callers do.

use serde_json::json;

use super::context::Ctx;
use super::state::Event;
use super::task::{Submitted, TaskRef};
use crate::store::{TaskChange, TaskState};

/// The account does not exist: the task ends `absent` (final, done).
pub async fn absent(
    ctx: &Ctx,
    task_id: i64,
    from: &[TaskState],
    attempts: u32,
    ret_code: Option<i64>,
    message: &str,
) -> super::error::Result<()> {
    let message = format!("account not found: {message}");
    finish(ctx, task_id, from, Event::FoundAbsent, attempts, ret_code, &message, None).await
}

/// The last ret_code (cleared when there is none) and message of an outcome.
pub fn outcome_change(ret_code: Option<i64>, message: &str) -> TaskChange {
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
) -> super::error::Result<Submitted> {
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
) -> super::error::Result<()> {
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
) -> super::error::Result<()> {
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
) -> super::error::Result<()> {
    let mut change = outcome_change(ret_code, message).attempts(i64::from(attempts)).finished_at(ctx.now());
    if let Some(why) = unresolved {
        change = change.unresolved(why);
    }
    ctx.step(task_id, from, event, change, json!({ "ret_code": ret_code, "message": message })).await?;
    Ok(())
}
