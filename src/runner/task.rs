//! A task as the runner holds it while it works on it ([`TaskRef`]: its account, attempts and
//! the jobs it has seen), how one submission of it ended ([`Submitted`]), and the log span every
//! line about it carries. Plain data: no I/O, no decisions; `submit`, `reconcile`, `poll` and the
//! engine act on it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::manifest::{ClusterId, Zone};

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
