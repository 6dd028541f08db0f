//! What a run starts from: its tasks as the database holds them, in the order they go, with
//! every task an earlier process left in flight put back where it was — a job to follow, or a
//! submission in doubt to reconcile before anything is sent.

use std::collections::HashMap;

use chrono::Utc;

use super::Loop;
use crate::manifest::{ClusterId, Zone};
use crate::qingcloud::types::RUN_CLUSTER_CUSTOM_SERVICE;
use crate::runner::error::RunnerError;
use crate::runner::poll::InFlight;
use crate::runner::state;
use crate::runner::task::TaskRef;
use crate::store::{TaskChange, TaskRow, TaskState};

fn task_ref(row: &TaskRow) -> crate::runner::error::Result<TaskRef> {
    Ok(TaskRef {
        id: row.id,
        cluster: ClusterId::parse(&row.cluster).map_err(|e| RunnerError::BadRow(e.to_string()))?,
        zone: Zone::parse(&row.zone).map_err(|e| RunnerError::BadRow(e.to_string()))?,
        user: row.user.clone(),
        host: row.host.clone(),
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        intent_at: row.intent_at,
        known_jobs: row.job_id.iter().cloned().collect(),
        busy_since: None,
        busy_count: 0,
    })
}

impl Loop {
    /// Queue the run's tasks, earliest deadline first, and put back what was in flight.
    pub(super) async fn load(&mut self, mut rows: Vec<TaskRow>) -> crate::runner::error::Result<()> {
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
                    } else if let Some(shared) = &self.ctx.shared {
                        // Claimed, but it stays `not_due`: free for the other hosts.
                        shared.release(row.id).await?;
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
}
