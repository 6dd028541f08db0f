//! Group commit for the runner's writes. Many submissions and polls run at once; each needs its
//! state change durable (the database runs with `synchronous=FULL`) before it goes on — above
//! all the `submitting` intent, which must be on disk before its request leaves. Committing each
//! change alone would cap a run at about a thousand transactions per second.
//!
//! Writers send their change here and wait for the answer; one task takes everything queued,
//! commits it in two transactions (API-call records, then state transitions with their audit
//! records), and answers each writer. A writer never proceeds before its own change is
//! committed, so crash safety is exactly that of committing one by one.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{ApiCallRow, Db, StoreError, TaskRow, Transition};

use super::shared::Shared;

/// Most changes committed together.
const MAX_BATCH: usize = 2000;

/// Why a writer's change was not committed. The store's own error is kept (shared by every
/// writer of the batch), so what SQLite said — a busy lock, a full disk — still decides the exit
/// code and hint, as it does for an error met outside the journal.
#[derive(Debug, Clone)]
pub enum JournalError {
    Store(Arc<StoreError>),
    /// The committing task is gone (the run is ending).
    Stopped,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Store(_) => f.write_str("the change could not be committed"),
            JournalError::Stopped => f.write_str("the journal has stopped"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Store(e) => Some(e.as_ref()),
            JournalError::Stopped => None,
        }
    }
}

type Ack<T> = oneshot::Sender<Result<T, JournalError>>;

enum Write {
    Call { run_id: i64, task_id: Option<i64>, row: ApiCallRow, done: Ack<()> },
    Transition { t: Transition, done: Ack<Option<TaskRow>> },
}

/// The handle writers use. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Write>,
}

impl Journal {
    /// Start the committing task for `store`.
    pub fn start(store: impl Into<Db>) -> Journal {
        Journal::spawn(store.into(), None)
    }

    /// Start the committing task of a run shared with other hosts: task writes go through
    /// `shared`'s leases, a batch in one transaction.
    pub fn start_shared(store: impl Into<Db>, shared: Arc<Shared>) -> Journal {
        Journal::spawn(store.into(), Some(shared))
    }

    fn spawn(store: Db, shared: Option<Arc<Shared>>) -> Journal {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 2);
        tokio::spawn(commit_loop(store, shared, rx));
        Journal { tx }
    }

    /// Apply a guarded transition (see [`Store::steps`]); returns once it is committed.
    pub async fn transition(&self, t: Transition) -> Result<Option<TaskRow>, JournalError> {
        let (done, answer) = oneshot::channel();
        self.tx.send(Write::Transition { t, done }).await.map_err(|_| JournalError::Stopped)?;
        answer.await.map_err(|_| JournalError::Stopped)?
    }

    /// Record an API call; returns once it is committed.
    pub async fn record_call(&self, run_id: i64, task_id: Option<i64>, row: ApiCallRow) -> Result<(), JournalError> {
        let (done, answer) = oneshot::channel();
        self.tx.send(Write::Call { run_id, task_id, row, done }).await.map_err(|_| JournalError::Stopped)?;
        answer.await.map_err(|_| JournalError::Stopped)?
    }
}

/// How long a write waits before it is tried once more on a new connection.
const RECONNECT_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Run `op`, and once more after [`RECONNECT_AFTER`] when the database connection was lost (a
/// server restart, a cut connection): a statement that failed so either committed whole or not
/// at all, and every write here is guarded, so trying it again never applies it twice (a
/// transition that had committed finds its guard gone; the caller treats that as a lost guard).
pub async fn once_more_if_disconnected<T, F, Fut>(what: &str, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    match op().await {
        Err(e) if e.connection_lost() => {
            tracing::warn!("{what}: the database connection was lost ({e}); trying once more");
            tokio::time::sleep(RECONNECT_AFTER).await;
            op().await
        }
        other => other,
    }
}

async fn commit_loop(store: Db, shared: Option<Arc<Shared>>, mut rx: mpsc::Receiver<Write>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut calls = Vec::new();
        let mut call_acks = Vec::new();
        let mut transitions = Vec::new();
        let mut transition_acks = Vec::new();
        for w in batch {
            match w {
                Write::Call { run_id, task_id, row, done } => {
                    calls.push((run_id, task_id, row));
                    call_acks.push(done);
                }
                Write::Transition { t, done } => {
                    transitions.push(t);
                    transition_acks.push(done);
                }
            }
        }
        if !calls.is_empty() {
            let result = once_more_if_disconnected("recording API calls", || store.record_calls(&calls))
                .await
                .map_err(|e| JournalError::Store(Arc::new(e)));
            for ack in call_acks {
                // A writer that went away (its run stopped) needs no answer.
                let _ = ack.send(result.clone());
            }
        }
        if !transitions.is_empty() {
            let written = once_more_if_disconnected("writing task states", || async {
                match &shared {
                    Some(shared) => shared.write_all(&transitions).await,
                    None => store.steps(&transitions).await,
                }
            })
            .await;
            match written {
                Ok(rows) => {
                    for (ack, row) in transition_acks.into_iter().zip(rows) {
                        let _ = ack.send(Ok(row));
                    }
                }
                Err(e) => {
                    let e = JournalError::Store(Arc::new(e));
                    for ack in transition_acks {
                        let _ = ack.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_error_stays_in_the_chain() {
        let e = anyhow::Error::new(JournalError::Store(Arc::new(StoreError::NoSuchRun(7)))).context("the run stopped");
        assert!(e.chain().any(|c| matches!(c.downcast_ref::<StoreError>(), Some(StoreError::NoSuchRun(7)))));
        assert_eq!(format!("{e:#}"), "the run stopped: the change could not be committed: no run 7 in the database");
    }

    /// Through the runner's error the journal's words are said once, not twice, and the store's
    /// error is still in the chain for the exit code.
    #[test]
    fn through_the_runner_s_error_the_failure_is_said_once() {
        let journal = JournalError::Store(Arc::new(StoreError::NoSuchRun(7)));
        let e = anyhow::Error::new(crate::runner::error::RunnerError::from(journal)).context("the run stopped");
        assert_eq!(format!("{e:#}"), "the run stopped: the change could not be committed: no run 7 in the database");
        assert!(e.chain().any(|c| matches!(c.downcast_ref::<StoreError>(), Some(StoreError::NoSuchRun(7)))));
    }
}
