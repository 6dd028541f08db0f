//! Submissions in doubt (SPEC §4, §8): an answer lost after the request took effect, one lost
//! before it did, and the crash windows — a task left `submitting` by a process that died after
//! committing its intent. A second `del_user` leaves only after a listing proved that no job
//! exists for the first.

use std::time::Duration;

use super::fake::Answer;
use super::{Rig, HOST, ZONE};
use crate::qingcloud::types::RUN_CLUSTER_CUSTOM_SERVICE;
use crate::store::{ApiCallRow, TaskState};

/// The requests of the fake's log that were `del_user`s for `user`.
fn del_user_times(rig: &Rig, user: &str) -> Vec<tokio::time::Instant> {
    let key = format!("/{user}@");
    rig.api
        .requests()
        .into_iter()
        .filter(|r| r.action == RUN_CLUSTER_CUSTOM_SERVICE && r.account.as_deref().is_some_and(|a| a.contains(&key)))
        .map(|r| r.at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_answer_lost_after_the_request_took_effect_is_reconciled_and_its_job_adopted() {
    let rig = Rig::new(&[("cl-a", "lost"), ("cl-b", "plain")]).await;
    rig.api.script("lost", [Answer::LostAfterEffect]);
    assert_eq!(rig.execute().await, None);

    let task = rig.task("lost").await;
    assert_eq!((task.state, task.attempts), (TaskState::Deleted, 1), "{task:?}");
    assert_eq!(rig.api.del_users("cl-a", "lost", HOST), 1, "exactly one del_user");
    assert_eq!(rig.api.jobs_for("cl-a", "lost", HOST), 1);
    assert!(task.job_id.as_deref().is_some_and(|j| j.starts_with("j-fake")), "the job was adopted: {task:?}");
    let listings = rig.api.listings();
    assert!(!listings.is_empty(), "the job was looked for with DescribeJobs");
    // The listing waited for --reconcile-settle after the intent (a listing may lag).
    let sent = del_user_times(&rig, "lost")[0];
    assert!(listings[0].at >= sent + rig.opts.reconcile_settle - Duration::from_millis(100), "{listings:?}");
    assert_eq!(rig.task("plain").await.state, TaskState::Deleted);
    rig.assert_audit_intact().await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_lost_before_the_request_took_effect_is_sent_again_once_the_listing_proves_no_job() {
    let rig = Rig::new(&[("cl-a", "lost")]).await;
    rig.api.script("lost", [Answer::LostBeforeEffect]);
    assert_eq!(rig.execute().await, None);

    let task = rig.task("lost").await;
    assert_eq!((task.state, task.attempts), (TaskState::Deleted, 2), "{task:?}");
    let sends = del_user_times(&rig, "lost");
    assert_eq!(sends.len(), 2, "exactly one resend");
    assert_eq!(rig.api.jobs_for("cl-a", "lost", HOST), 1);
    // The resend came only after a listing, made after the settle time, had found nothing.
    let listing = rig.api.listings().first().map(|r| r.at).expect("a listing");
    assert!(sends[0] + rig.opts.reconcile_settle <= listing + Duration::from_millis(100));
    assert!(listing < sends[1], "the listing came before the resend");
    rig.assert_audit_intact().await;
}

/// A process died between committing the intent and sending: the next run lists the zone's
/// jobs before anything else happens for the account, finds none, and only then sends.
#[tokio::test(start_paused = true)]
async fn a_task_left_submitting_before_its_request_left_is_reconciled_before_it_is_sent() {
    let rig = Rig::new(&[("cl-a", "crashed"), ("cl-a", "next")]).await;
    rig.crash_after_intent("crashed", rig.clock_now()).await;
    assert_eq!(rig.execute().await, None);

    let task = rig.task("crashed").await;
    assert_eq!(task.state, TaskState::Deleted, "{task:?}");
    let sends = del_user_times(&rig, "crashed");
    assert_eq!(sends.len(), 1);
    let listing = rig.api.listings().first().map(|r| r.at).expect("a listing");
    assert!(listing < sends[0], "reconciled before anything was sent");
    // The cluster was held for the task in doubt: its other task waited.
    let next = del_user_times(&rig, "next");
    assert!(next.len() == 1 && next[0] > listing, "{next:?}");
    assert_eq!(rig.task("next").await.state, TaskState::Deleted);
    rig.assert_audit_intact().await;
}

/// A process died after its request took effect but before the answer was recorded: the next
/// run finds the job and follows it; the account is never sent again.
#[tokio::test(start_paused = true)]
async fn a_task_left_submitting_after_its_request_took_effect_adopts_the_job_without_sending() {
    let rig = Rig::new(&[("cl-a", "crashed"), ("cl-b", "other")]).await;
    rig.crash_after_intent("crashed", rig.clock_now()).await;
    let job = rig.api.add_job(ZONE, "cl-a", "crashed", HOST, Some(Duration::from_secs(3)));
    assert_eq!(rig.execute().await, None);

    let task = rig.task("crashed").await;
    assert_eq!(task.state, TaskState::Deleted, "{task:?}");
    assert_eq!(task.job_id.as_deref(), Some(job.as_str()), "its job was adopted");
    assert_eq!(rig.api.del_users("cl-a", "crashed", HOST), 0, "nothing sent for it");
    assert_eq!(rig.api.jobs_for("cl-a", "crashed", HOST), 1);
    assert!(!rig.api.listings().is_empty());
    rig.assert_audit_intact().await;
}

/// A process died after recording the answer but before the task's new state: the job the
/// answer named is adopted from the database, without even a listing.
#[tokio::test(start_paused = true)]
async fn a_task_left_submitting_with_its_answer_recorded_adopts_that_job_without_a_call() {
    let rig = Rig::new(&[("cl-a", "crashed")]).await;
    let intent = rig.clock_now();
    rig.crash_after_intent("crashed", intent).await;
    let job = rig.api.add_job(ZONE, "cl-a", "crashed", HOST, Some(Duration::from_secs(3)));
    let task = rig.task("crashed").await;
    let answer = ApiCallRow {
        action: RUN_CLUSTER_CUSTOM_SERVICE.to_owned(),
        params_json: "{}".to_owned(),
        http_status: Some(200),
        ret_code: Some(0),
        message: None,
        job_id: Some(job.clone()),
        started_at: intent,
        latency_ms: 40,
    };
    rig.store.record_call(rig.run_id, Some(task.id), &answer).await.unwrap();
    assert_eq!(rig.execute().await, None);

    let task = rig.task("crashed").await;
    assert_eq!((task.state, task.job_id.as_deref()), (TaskState::Deleted, Some(job.as_str())), "{task:?}");
    assert_eq!(rig.api.del_users("cl-a", "crashed", HOST), 0);
    assert!(rig.api.listings().is_empty(), "the recorded answer was enough");
    rig.assert_audit_intact().await;
}
