//! A stop stops (SPEC §8): after a stop request no `del_user` leaves, the intents still waiting
//! for the rate gate go back to `pending`, and jobs already accepted are followed for a while;
//! a second request leaves at once. `--deadline` stops the same way.

use std::sync::Arc;
use std::time::Duration;

use super::fake::FakeApi;
use super::Rig;
use crate::qingcloud::types::RUN_CLUSTER_CUSTOM_SERVICE;
use crate::runner::stop::{StopReason, StopRequests, FOLLOW_AFTER_SIGNAL};
use crate::store::TaskState;

/// Ten accounts on ten clusters behind a slow rate (one call a second): all ten intents are
/// recorded at once and wait for the gate.
async fn slow_rig() -> Rig {
    let accounts: Vec<(String, String)> = (0..10).map(|i| (format!("cl-s{i}"), format!("u{i}"))).collect();
    let refs: Vec<(&str, &str)> = accounts.iter().map(|(c, u)| (c.as_str(), u.as_str())).collect();
    Rig::with_api(&refs, |api: FakeApi| api.spaced(Duration::from_secs(1))).await
}

/// Request a stop (`times` times) once `sent` `del_user`s have reached the API.
fn stop_after(rig: &Rig, sent: usize, times: usize) -> (StopRequests, tokio::task::JoinHandle<()>) {
    let (tx, stops) = StopRequests::channel();
    let api = Arc::clone(&rig.api);
    let handle = tokio::spawn(async move {
        while api.calls_of(RUN_CLUSTER_CUSTOM_SERVICE) < sent {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..times {
            tx.send(()).unwrap();
        }
        // Keep the channel open: a closed one is no request.
        std::future::pending::<()>().await;
    });
    (stops, handle)
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_nothing_leaves_and_waiting_intents_return_to_pending() {
    let rig = slow_rig().await;
    let (stops, stopper) = stop_after(&rig, 3, 1);
    assert_eq!(rig.execute_with(stops).await, Some(StopReason::Signal));
    stopper.abort();

    let requests = rig.api.requests();
    let sent: Vec<_> = requests.iter().filter(|r| r.action == RUN_CLUSTER_CUSTOM_SERVICE).collect();
    assert_eq!(sent.len(), 3, "nothing left after the stop: {sent:?}");
    let tasks = rig.tasks().await;
    let deleted = tasks.iter().filter(|t| t.state == TaskState::Deleted).count();
    assert_eq!(deleted, 3, "the jobs already accepted were followed to their end: {tasks:#?}");
    for t in tasks.iter().filter(|t| t.state != TaskState::Deleted) {
        assert_eq!(t.state, TaskState::Pending, "{t:?}");
        assert_eq!(t.attempts, 0, "{t:?}");
        // It had an intent, withdrawn (the table allows `submitting` → `pending` only so).
        assert!(t.intent_at.is_some(), "{t:?}");
    }
    rig.assert_audit_intact().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_stop_leaves_at_once_and_withdraws_what_never_left() {
    let rig = slow_rig().await;
    rig.api.jobs_run_for(Duration::from_secs(600));
    let (stops, stopper) = stop_after(&rig, 2, 2);
    let started = tokio::time::Instant::now();
    assert_eq!(rig.execute_with(stops).await, Some(StopReason::Signal));
    let virt = started.elapsed();
    stopper.abort();

    assert!(virt < FOLLOW_AFTER_SIGNAL, "it did not follow the jobs: {virt:?}");
    let tasks = rig.tasks().await;
    let live = tasks.iter().filter(|t| matches!(t.state, TaskState::Submitting | TaskState::Submitted)).count();
    assert_eq!(live, 2, "what reached the API stays live for `resume`: {tasks:#?}");
    let pending = tasks.iter().filter(|t| t.state == TaskState::Pending).count();
    assert_eq!(pending, 8, "nothing that never left stays `submitting`: {tasks:#?}");
    assert_eq!(rig.api.calls_of(RUN_CLUSTER_CUSTOM_SERVICE), 2);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_stops_submitting_and_follows_the_jobs_in_flight() {
    let mut rig = slow_rig().await;
    rig.opts.deadline = Some(Duration::from_millis(4500));
    assert_eq!(rig.execute().await, Some(StopReason::Deadline));

    let sent = rig.api.calls_of(RUN_CLUSTER_CUSTOM_SERVICE);
    assert!((4..=5).contains(&sent), "one call a second until the deadline: {sent}");
    let tasks = rig.tasks().await;
    let deleted = tasks.iter().filter(|t| t.state == TaskState::Deleted).count();
    assert_eq!(deleted, sent, "{tasks:#?}");
    assert!(tasks.iter().all(|t| matches!(t.state, TaskState::Deleted | TaskState::Pending)), "{tasks:#?}");
}
