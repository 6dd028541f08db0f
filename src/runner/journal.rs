//! Group commit for the runner's writes. Many submissions and polls run at once; each needs its
//! state change durable (the database runs with `synchronous=FULL`) before it goes on — above
//! all the `submitting` intent, which must be on disk before its request leaves. Committing each
//! change alone would cap a run at about a thousand transactions per second.
//!
//! Writers send their change here and wait for the answer; one task takes everything queued,
//! commits it in two transactions (API-call records, then state transitions with their audit
//! records), and answers each writer. A writer never proceeds before its own change is
//! committed, so crash safety is exactly that of committing one by one.

use tokio::sync::{mpsc, oneshot};

use crate::store::{ApiCallRow, Store, TaskRow, Transition};

/// Most changes committed together.
const MAX_BATCH: usize = 2000;

enum Write {
    Call { run_id: i64, task_id: Option<i64>, row: ApiCallRow, done: oneshot::Sender<Result<(), String>> },
    Transition { t: Transition, done: oneshot::Sender<Result<Option<TaskRow>, String>> },
}

/// The handle writers use. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Write>,
}

impl Journal {
    /// Start the committing task for `store`.
    pub fn start(store: Store) -> Journal {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 2);
        tokio::spawn(commit_loop(store, rx));
        Journal { tx }
    }

    /// Apply a guarded transition (see [`Store::transition`]); returns once it is committed.
    pub async fn transition(&self, t: Transition) -> anyhow::Result<Option<TaskRow>> {
        let (done, answer) = oneshot::channel();
        self.tx.send(Write::Transition { t, done }).await.map_err(|_| anyhow::anyhow!("the journal has stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the journal has stopped"))?.map_err(anyhow::Error::msg)
    }

    /// Record an API call; returns once it is committed.
    pub async fn record_call(&self, run_id: i64, task_id: Option<i64>, row: ApiCallRow) -> anyhow::Result<()> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Write::Call { run_id, task_id, row, done })
            .await
            .map_err(|_| anyhow::anyhow!("the journal has stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the journal has stopped"))?.map_err(anyhow::Error::msg)
    }
}

async fn commit_loop(store: Store, mut rx: mpsc::Receiver<Write>) {
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
            let result = store.record_calls(&calls).await.map_err(|e| with_causes(&e));
            for ack in call_acks {
                // A writer that went away (its run stopped) needs no answer.
                let _ = ack.send(result.clone());
            }
        }
        if !transitions.is_empty() {
            match store.transition_many(&transitions).await {
                Ok(rows) => {
                    for (ack, row) in transition_acks.into_iter().zip(rows) {
                        let _ = ack.send(Ok(row));
                    }
                }
                Err(e) => {
                    let msg = with_causes(&e);
                    for ack in transition_acks {
                        let _ = ack.send(Err(msg.clone()));
                    }
                }
            }
        }
    }
}

/// An error and its causes on one line, as the final report prints them.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
