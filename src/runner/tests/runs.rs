//! Whole runs: the happy path within `--max-in-flight` and one job per cluster, a quota storm,
//! a job that outlives `--job-timeout`.

use std::time::Duration;

use super::fake::Answer;
use super::{Rig, HOST, ZONE};
use crate::qingcloud::types::{DESCRIBE_CLUSTERS, DESCRIBE_JOBS, RUN_CLUSTER_CUSTOM_SERVICE};
use crate::runner::preflight;
use crate::runner::state::{self, Event};
use crate::store::{TaskChange, TaskState};

/// `clusters` clusters `cl-c0…` with `users` accounts each, `u{cluster}x{user}`.
fn accounts(clusters: usize, users: usize) -> Vec<(String, String)> {
    (0..clusters).flat_map(|c| (0..users).map(move |u| (format!("cl-c{c}"), format!("u{c}x{u}")))).collect()
}

fn refs(a: &[(String, String)]) -> Vec<(&str, &str)> {
    a.iter().map(|(c, u)| (c.as_str(), u.as_str())).collect()
}

/// The happy path: every account deleted by one request, at most `--max-in-flight` jobs at once
/// and never two on one cluster.
#[tokio::test(start_paused = true)]
async fn a_run_over_several_clusters_keeps_one_job_per_cluster_within_max_in_flight() {
    let accounts = accounts(6, 3);
    let mut rig = Rig::new(&refs(&accounts)).await;
    rig.opts.max_in_flight = 4;
    let started = tokio::time::Instant::now();
    assert_eq!(rig.execute().await, None);
    let virt = started.elapsed();

    for t in rig.tasks().await {
        assert_eq!((t.state, t.attempts), (TaskState::Deleted, 1), "{t:?}");
        assert_eq!(rig.api.del_users(&t.cluster, &t.user, HOST), 1, "{t:?}");
        assert!(t.job_id.is_some(), "{t:?}");
    }
    let (overall, per_cluster) = rig.api.most_jobs_at_once();
    assert_eq!(overall, 4, "--max-in-flight is used to the full, never beyond");
    assert_eq!(per_cluster, 1, "never two jobs on one cluster");
    // 18 jobs of 4 s, 4 at a time, 3 after one another on each cluster: at least 5 rounds.
    assert!(virt >= Duration::from_secs(5 * 4), "{virt:?}");
    assert_eq!(rig.api.calls_of(RUN_CLUSTER_CUSTOM_SERVICE), 18);
    // Polling is batched: fewer DescribeJobs calls than jobs.
    let polls = rig.api.calls_of(DESCRIBE_JOBS);
    assert!(polls > 0 && polls < 18, "{polls} DescribeJobs calls");
    rig.assert_audit_intact().await;
}

/// SPEC §4: a 2500 never costs a task an attempt, the rate is lowered and the calls pause
/// (AIMD) instead of spinning through the storm, and the run finishes once the quota is back.
#[tokio::test(start_paused = true)]
async fn a_quota_storm_costs_no_attempt_and_the_run_finishes() {
    let accounts = accounts(4, 2);
    let mut rig = Rig::new(&refs(&accounts)).await;
    rig.opts.max_attempts = 1;
    let storm = Duration::from_secs(20);
    rig.api.exhaust_quota_for(storm);
    let ceiling = rig.limiter.ceiling();
    let started = tokio::time::Instant::now();
    assert_eq!(rig.execute().await, None);
    let virt = started.elapsed();

    for t in rig.tasks().await {
        assert_eq!((t.state, t.attempts), (TaskState::Deleted, 1), "no 2500 cost an attempt: {t:?}");
        assert_eq!(rig.api.jobs_for(&t.cluster, &t.user, HOST), 1, "{t:?}");
    }
    let throttled = rig.api.answered(2500);
    assert!(throttled > 0, "the storm was met");
    // Without the pauses, 8 submissions answered in 50 ms would be re-sent some 3000 times
    // in 20 s; the pauses (2, 4, 8, 16 s) leave a handful of waves.
    assert!(throttled <= 8 * 6, "{throttled} calls answered 2500: the storm was not waited out");
    assert!(virt >= storm, "{virt:?}");
    assert!(rig.limiter.current_rate() < ceiling, "the rate was lowered and is still recovering");
    rig.assert_audit_intact().await;
}

/// A job still running after `--job-timeout` ends its task `failed`, marked unresolved; the
/// account is never sent again (the job may still delete it).
#[tokio::test(start_paused = true)]
async fn a_job_that_outlives_the_job_timeout_fails_its_task_and_is_never_resent() {
    let mut rig = Rig::new(&[("cl-a", "slow"), ("cl-b", "quick")]).await;
    rig.opts.job_timeout = Duration::from_secs(30);
    rig.api.jobs_of_run_for("slow", None);
    let started = tokio::time::Instant::now();
    assert_eq!(rig.execute().await, None);
    let virt = started.elapsed();

    let slow = rig.task("slow").await;
    assert_eq!(slow.state, TaskState::Failed, "{slow:?}");
    assert_eq!(slow.unresolved.as_deref(), Some("job"), "{slow:?}");
    assert!(slow.last_message.as_deref().unwrap_or_default().contains("not resubmitted"), "{slow:?}");
    assert_eq!(rig.api.del_users("cl-a", "slow", HOST), 1, "never sent twice");
    assert_eq!(rig.task("quick").await.state, TaskState::Deleted);
    assert!(virt >= Duration::from_secs(30), "{virt:?}");
    rig.assert_audit_intact().await;
}

/// A transient refusal (5000) costs an attempt and is retried after back-off (jitter from the
/// run's seeded source, on virtual time); a permanent one (1100) ends the task after one request.
#[tokio::test(start_paused = true)]
async fn a_refused_request_is_retried_after_backoff_and_a_permanent_one_fails() {
    let rig = Rig::new(&[("cl-a", "flaky"), ("cl-b", "refused")]).await;
    rig.api.script("flaky", [Answer::Refuse(5000, "InternalError, try again".to_owned())]);
    rig.api.script("refused", [Answer::Refuse(1100, "ParameterError, bad service_params".to_owned())]);
    assert_eq!(rig.execute().await, None);

    let flaky = rig.task("flaky").await;
    assert_eq!((flaky.state, flaky.attempts), (TaskState::Deleted, 2), "{flaky:?}");
    assert_eq!(rig.api.del_users("cl-a", "flaky", HOST), 2);
    let refused = rig.task("refused").await;
    assert_eq!((refused.state, refused.attempts), (TaskState::Failed, 1), "{refused:?}");
    assert_eq!(refused.last_ret_code, Some(1100));
    assert_eq!(rig.api.del_users("cl-b", "refused", HOST), 1);
}

/// Preflight looks the clusters up through the same API: one `DescribeClusters` for the zone,
/// and a cluster the answer leaves out ends its tasks `failed` with nothing sent.
#[tokio::test(start_paused = true)]
async fn preflight_fails_the_tasks_of_an_unknown_cluster_before_anything_is_sent() {
    let rig = Rig::new(&[("cl-a", "u1"), ("cl-a", "u2"), ("cl-gone", "u3")]).await;
    let ctx = rig.ctx().await;
    let checked = preflight::run(&ctx).await.unwrap();
    assert_eq!((checked.calls, checked.refused, checked.not_ready), (1, 1, 0));
    assert_eq!(rig.api.calls_of(DESCRIBE_CLUSTERS), 1);
    let gone = rig.task("u3").await;
    assert_eq!(gone.state, TaskState::Failed, "{gone:?}");
    assert!(gone.last_message.as_deref().unwrap_or_default().contains("not found"), "{gone:?}");
    assert_eq!(rig.execute().await, None);
    assert_eq!(rig.api.calls_of(RUN_CLUSTER_CUSTOM_SERVICE), 2, "nothing sent for the unknown cluster");
}

/// A job older than `--job-timeout` (a host that took over another's submitted job, or a run
/// resumed long after a crash) is not "not listed" by a round whose call got no answer: only an
/// answer that leaves it out says so. Here every call is refused (2500) for a while, then the
/// listing answers and shows the job done.
#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_is_not_failed_by_a_round_that_got_no_answer() {
    let mut rig = Rig::new(&[("cl-a", "old")]).await;
    rig.opts.job_timeout = Duration::from_secs(30);
    let long_ago = rig.clock_now() - chrono::Duration::minutes(10);
    rig.crash_after_intent("old", long_ago).await;
    let job = rig.api.add_job(ZONE, "cl-a", "old", HOST, Some(Duration::from_secs(1)));
    let task = rig.task("old").await;
    let accepted = state::transition(
        task.id,
        &[TaskState::Submitting],
        Event::Accepted,
        TaskChange::new().attempts(1).job_id(job.clone()).submitted_at(long_ago),
        serde_json::json!({ "job_id": job }),
    )
    .unwrap();
    assert!(rig.store.steps(&[accepted]).await.unwrap()[0].is_some());
    rig.api.exhaust_quota_for(Duration::from_secs(5));
    assert_eq!(rig.execute().await, None);

    let task = rig.task("old").await;
    assert_eq!(task.state, TaskState::Deleted, "{task:?}");
    assert!(rig.api.answered(2500) >= 1, "the first rounds got no answer");
    assert_eq!(rig.api.del_users("cl-a", "old", HOST), 0, "nothing sent");
    rig.assert_audit_intact().await;
}

/// A later run over accounts whose jobs an earlier run gave up following (still running past
/// `--job-timeout`, unresolved) adopts them one cluster job at a time: the second attempt on a
/// cluster waits for the first adopted job to end, is then adopted and followed, and neither
/// account is sent again. Before, both were adopted at once: followed together here, and refused
/// by PostgreSQL's one-job-per-cluster index.
#[tokio::test(start_paused = true)]
async fn adopted_attempts_on_one_cluster_are_followed_one_at_a_time() {
    let accounts = [("cl-a", "a1"), ("cl-a", "a2"), ("cl-b", "b1")];
    let mut rig = Rig::new(&accounts).await;
    rig.opts.job_timeout = Duration::from_secs(30);
    rig.api.jobs_of_run_for("a1", Some(Duration::from_secs(200)));
    rig.api.jobs_of_run_for("a2", Some(Duration::from_secs(200)));
    assert_eq!(rig.execute().await, None);
    let (a1, a2) = (rig.task("a1").await, rig.task("a2").await);
    for t in [&a1, &a2] {
        assert_eq!((t.state, t.unresolved.as_deref()), (TaskState::Failed, Some("job")), "{t:?}");
    }
    let (j1, j2) = (a1.job_id.clone().unwrap(), a2.job_id.clone().unwrap());
    let polled_before = rig.api.polled().len();

    rig.another_run(&accounts).await;
    rig.opts.job_timeout = Duration::from_secs(600);
    assert_eq!(rig.execute().await, None);
    let tasks = rig.tasks().await;
    let states: Vec<TaskState> = tasks.iter().map(|t| t.state).collect();
    assert_eq!(states, vec![TaskState::Deleted, TaskState::Deleted, TaskState::Skipped], "{tasks:#?}");
    assert_eq!(tasks[0].adopted_from, Some(a1.id));
    assert_eq!(tasks[1].adopted_from, Some(a2.id));
    for u in ["a1", "a2"] {
        assert_eq!(rig.api.del_users("cl-a", u, HOST), 1, "{u} never sent again");
    }
    let polled = rig.api.polled().split_off(polled_before);
    assert!(polled.iter().any(|ids| ids.contains(&j1)) && polled.iter().any(|ids| ids.contains(&j2)), "{polled:?}");
    for ids in &polled {
        assert!(!(ids.contains(&j1) && ids.contains(&j2)), "both adopted jobs of cl-a followed at once: {polled:?}");
    }
    let first_of_j2 = polled.iter().position(|ids| ids.contains(&j2)).unwrap();
    let last_of_j1 = polled.iter().rposition(|ids| ids.contains(&j1)).unwrap();
    assert!(last_of_j1 < first_of_j2, "{polled:?}");
    rig.assert_audit_intact().await;
}

/// An adoption whose cluster stays taken by a task this run cannot adopt (a live attempt of
/// another access key's run on the same cluster) waits at most `--job-timeout`: then the task
/// ends `failed` with nothing sent, the earlier attempt left for a later run, and the run ends
/// instead of waiting for ever.
#[tokio::test(start_paused = true)]
async fn an_adoption_whose_cluster_stays_taken_ends_failed_after_the_job_timeout() {
    let accounts = [("cl-a", "a1")];
    let mut rig = Rig::new(&accounts).await;
    rig.opts.job_timeout = Duration::from_secs(30);
    rig.api.jobs_of_run_for("a1", None);
    assert_eq!(rig.execute().await, None);
    let a1 = rig.task("a1").await;
    assert_eq!((a1.state, a1.unresolved.as_deref()), (TaskState::Failed, Some("job")), "{a1:?}");
    // Another key's run died with a job in flight on cl-a.
    let other = crate::store::NewRun { access_key_id: "QYOTHERKEY".to_owned(), ..super::new_run() };
    let foreign = rig.store.create_run(&other, &super::new_tasks(&[("cl-a", "someone")])).await.unwrap();
    let theirs = rig.store.tasks(foreign).await.unwrap()[0].id;
    for (event, change) in [
        (Event::Intent, TaskChange::new().intent_at(rig.clock_now())),
        (Event::Accepted, TaskChange::new().job_id("j-foreign").submitted_at(rig.clock_now())),
    ] {
        let t = state::from_any(theirs, event, change, serde_json::json!({}));
        assert!(rig.store.steps(&[t]).await.unwrap()[0].is_some());
    }
    rig.another_run(&accounts).await;
    let started = tokio::time::Instant::now();
    assert_eq!(rig.execute().await, None, "the run ends");
    assert!(started.elapsed() >= Duration::from_secs(30), "{:?}", started.elapsed());
    let mine = rig.task("a1").await;
    assert_eq!((mine.state, mine.adopted_from), (TaskState::Failed, None), "{mine:?}");
    assert!(mine.last_message.as_deref().unwrap_or_default().contains("could not be adopted"), "{mine:?}");
    assert_eq!(rig.store.task(a1.id).await.unwrap().unwrap().state, TaskState::Failed, "left for a later run");
    assert_eq!(rig.api.del_users("cl-a", "a1", HOST), 1, "never sent again");
    rig.assert_audit_intact().await;
}

/// `users` accounts on one cluster, jobs of 10 s, polled with the product's default 3 s interval.
async fn one_cluster_of_ten_second_jobs(users: usize) -> Rig {
    let accounts = accounts(1, users);
    let mut rig = Rig::new(&refs(&accounts)).await;
    rig.opts.poll_interval = Duration::from_secs(3);
    rig.api.jobs_run_for(Duration::from_secs(10));
    rig
}

/// One cluster's jobs run one after another, so each poll that comes late holds up every
/// account behind it. The API stamps jobs in whole seconds; with its clock placed against
/// ours from the `create_time`s (here 37.25 s ahead), jobs that ended at other fractions of a
/// second pin a 10 s duration to well under the second the stamps' difference leaves. Each
/// later job is then looked at once, soon after it has ended.
#[tokio::test(start_paused = true)]
async fn one_cluster_s_jobs_are_looked_at_soon_after_they_end_once_the_api_s_clock_is_placed() {
    let rig = one_cluster_of_ten_second_jobs(20).await;
    rig.api.clock_ahead_by(Duration::from_millis(37_250));
    assert_eq!(rig.execute().await, None);

    let log = rig.api.requests();
    let sent: Vec<_> = log.iter().filter(|r| r.action == RUN_CLUSTER_CUSTOM_SERVICE).map(|r| r.at).collect();
    assert_eq!(sent.len(), 20);
    // Each job's submission and one poll; the first job's probes (at 6 s, running) one more.
    assert_eq!(rig.api.calls_of(DESCRIBE_JOBS), 21);
    // From one submission to the next: the job's 10 s and the poll's delay after its end, and
    // the answers' latency. The stamps' difference alone puts the end within (9 s, 11.1 s]
    // and the polls at 11.3 s.
    let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    let last: Vec<Duration> = gaps[gaps.len() - 8..].to_vec();
    assert!(last.iter().all(|g| *g < Duration::from_millis(10_800)), "{gaps:?}");
    for t in rig.tasks().await {
        assert_eq!((t.state, t.attempts), (TaskState::Deleted, 1), "{t:?}");
    }
}

/// An API whose clock jumps in the middle of a run (its stamps 2.5 s further ahead from one
/// job on) contradicts what its earlier stamps said (`ApiClock` sets itself aside then; its
/// own tests show that). The run goes on: every account deleted with one request, and the
/// jobs still followed with one poll each, none looked at too early over and over.
#[tokio::test(start_paused = true)]
async fn an_api_clock_that_jumps_is_set_aside_and_the_run_goes_on() {
    let rig = one_cluster_of_ten_second_jobs(12).await;
    let api = std::sync::Arc::clone(&rig.api);
    let jump = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        api.clock_ahead_by(Duration::from_millis(2500));
    });
    assert_eq!(rig.execute().await, None);
    jump.await.unwrap();

    for t in rig.tasks().await {
        assert_eq!((t.state, t.attempts), (TaskState::Deleted, 1), "{t:?}");
    }
    assert_eq!(rig.api.calls_of(RUN_CLUSTER_CUSTOM_SERVICE), 12);
    // One poll per job, the first job's probe, and at most one more where the jump was met.
    let polls = rig.api.calls_of(DESCRIBE_JOBS);
    assert!((13..=14).contains(&polls), "{polls} DescribeJobs calls");
}
