//! Reconciling a submission in doubt: its answer was lost (or the process died) after the intent
//! was committed, so the request may have taken effect. Nothing is sent again for the task until
//! [`reconcile`] has either found its job through `DescribeJobs` (and adopted it) or proved, by
//! reading the zone's whole listing at least `--reconcile-settle` after the intent, that there is
//! none. An omission, a lagging listing or a listing order is never such proof.

use std::sync::Arc;

use serde_json::json;

use super::context::{CallVerdict, Ctx};
use super::outcome::{fail_unresolved, retry_or_fail};
use super::state::Event;
use super::task::{Submitted, TaskRef};
use crate::qingcloud::client::JobFilter;
use crate::qingcloud::types::{DelUserParams, DEL_USER, RUN_CLUSTER_CUSTOM_SERVICE};
use crate::store::{TaskChange, TaskState};

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
pub async fn reconcile(ctx: Arc<Ctx>, task: TaskRef) -> super::error::Result<Submitted> {
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
pub async fn give_up_in_doubt(ctx: &Ctx, task: &TaskRef) -> super::error::Result<()> {
    let message = format!(
        "the answer to the submission was lost and {MAX_INCONCLUSIVE} reconciliations could not tell whether a job \
         exists; not resubmitted so the account is never sent twice — check the cluster's jobs"
    );
    fail_unresolved(ctx, task.id, &[TaskState::Submitting], task.attempts, "in_doubt", &message).await
}
