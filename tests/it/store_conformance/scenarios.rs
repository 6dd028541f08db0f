//! The scenarios of the conformance suite, each over any [`Backend`]: what a run does to the
//! store, and what the store must answer, identical for SQLite and PostgreSQL. Every time a
//! scenario writes is fixed, so both backends write the same audit details.

use std::collections::HashSet;
use std::time::Duration;

use qc_offboard::runner::state;
use qc_offboard::store::{
    check, this_host, Adopted, ApiCallRow, Event, FindingStatus, LockOutcome, NewFinding, Refusal, ReportFilter,
    Standing, TaskChange, TaskState,
};
use serde_json::json;

use super::backend::Backend;
use crate::helpers::{at, new_run, new_task};

use TaskState as S;

const ENDPOINT: &str = "http://127.0.0.1:1/iaas/";
const KEY: &str = "QYACCESSKEYIDEXAMPLE";

fn call(action: &str, params: serde_json::Value, job: Option<&str>, started: &str) -> ApiCallRow {
    ApiCallRow {
        action: action.into(),
        params_json: params.to_string(),
        http_status: Some(200),
        ret_code: Some(0),
        message: None,
        job_id: job.map(str::to_owned),
        started_at: at(started),
        latency_ms: 40,
    }
}

/// A run of one task per (cluster, user), and the ids of its tasks.
async fn run_of<B: Backend>(b: &B, ticket: &str, accounts: &[(&str, &str)]) -> (i64, Vec<i64>) {
    let tasks: Vec<_> = accounts.iter().map(|(c, u)| new_task(c, u)).collect();
    let run = b.create_run(&new_run(Some(ticket)), &tasks).await.unwrap();
    (run, b.tasks(run).await.unwrap().iter().map(|t| t.id).collect())
}

/// Move a task along `events`, each applied (with a change fit for it).
async fn walk<B: Backend>(b: &B, task: i64, events: &[Event], job: &str) {
    for &e in events {
        let change = match e {
            Event::Intent => TaskChange::new().increment_attempts().intent_at(at("2026-11-28T10:00:00Z")),
            Event::Accepted => TaskChange::new().job_id(job).submitted_at(at("2026-11-28T10:00:01Z")).ret_code(0),
            Event::Succeeded | Event::FoundAbsent => TaskChange::new().finished_at(at("2026-11-28T10:00:31Z")),
            Event::GiveUp => TaskChange::new().message("job timed out").unresolved("job"),
            _ => TaskChange::new(),
        };
        assert!(b.step(task, e, &change, json!({"event": format!("{e:?}")})).await.unwrap().is_some(), "{e:?}");
    }
}

pub async fn guarded_steps_walk_the_state_table<B: Backend>(b: &B) {
    let (_, ids) = run_of(b, "HR-1", &[("cl-a", "alice"), ("cl-b", "bob")]).await;
    // Every event the table does not allow from `pending` is refused, and writes nothing.
    for e in [Event::Due, Event::Accepted, Event::Withdrawn, Event::Backoff, Event::Succeeded, Event::GiveUp] {
        let before = (b.audit_len().await.unwrap(), b.task(ids[0]).await.unwrap());
        let change = TaskChange::new().message("must not land").increment_attempts();
        assert_eq!(b.step(ids[0], e, &change, json!({})).await.unwrap(), None, "{e:?}");
        assert_eq!((b.audit_len().await.unwrap(), b.task(ids[0]).await.unwrap()), before, "{e:?}");
    }
    assert_eq!(b.step(9_999, Event::Intent, &TaskChange::new(), json!({})).await.unwrap(), None);
    assert!(state::transition(ids[0], &[S::Deleted], Event::Intent, TaskChange::new(), json!({})).is_err());

    let intent = TaskChange::new().increment_attempts().intent_at(at("2026-11-28T10:00:00Z"));
    let t = b.step(ids[0], Event::Intent, &intent, json!({"why": "due"})).await.unwrap().unwrap();
    assert_eq!((t.state, t.attempts, t.started_at, t.intent_at), (S::Submitting, 1, t.intent_at, t.intent_at));
    assert_eq!(t.started_at, Some(at("2026-11-28T10:00:00Z")));
    let busy = TaskChange::new().ret_code(5000).message("busy").next_attempt_at(at("2026-11-28T10:01:00Z"));
    let t = b.step(ids[0], Event::Backoff, &busy, json!({})).await.unwrap().unwrap();
    assert_eq!((t.state, t.last_ret_code, t.last_message.as_deref()), (S::RetryWait, Some(5000), Some("busy")));
    let again = TaskChange::new().increment_attempts().intent_at(at("2026-11-28T10:01:00Z")).clear_next_attempt_at();
    let t = b.step(ids[0], Event::Intent, &again, json!({})).await.unwrap().unwrap();
    assert_eq!((t.attempts, t.next_attempt_at), (2, None));
    assert_eq!((t.started_at, t.intent_at), (Some(at("2026-11-28T10:00:00Z")), Some(at("2026-11-28T10:01:00Z"))));
    walk(b, ids[0], &[Event::Accepted, Event::Succeeded], "j-1").await;
    let t = b.task(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (t.state, t.job_id.as_deref(), t.finished_at),
        (S::Deleted, Some("j-1"), Some(at("2026-11-28T10:00:31Z")))
    );
    // A final state refuses everything, and a transition built for other states does nothing.
    let built = state::transition(ids[1], &[S::Submitting], Event::Accepted, TaskChange::new(), json!({})).unwrap();
    assert_eq!(b.steps(&[built]).await.unwrap(), vec![None]);
    walk(b, ids[1], &[Event::Intent, Event::Withdrawn, Event::NotReady], "").await;
    assert_eq!(b.task(ids[1]).await.unwrap().unwrap().state, S::NotReady);
}

pub async fn batched_steps_apply_in_order<B: Backend>(b: &B) {
    let (run, ids) = run_of(b, "HR-2", &[("cl-a", "u1"), ("cl-b", "u2"), ("cl-c", "u3"), ("cl-a", "u4")]).await;
    let t = |id, e, c: TaskChange| state::from_any(id, e, c, json!({"batch": true}));
    let intent = || TaskChange::new().increment_attempts().intent_at(at("2026-11-28T10:00:00Z"));
    let batch = [
        t(ids[0], Event::Intent, intent()),
        t(ids[0], Event::Accepted, TaskChange::new().job_id("j-a").submitted_at(at("2026-11-28T10:00:01Z"))),
        t(ids[1], Event::Succeeded, TaskChange::new()),
        t(ids[2], Event::Intent, intent()),
        t(ids[0], Event::Succeeded, TaskChange::new().finished_at(at("2026-11-28T10:00:30Z"))),
        // The cluster's job is over, so a second task of cl-a may take its turn.
        t(ids[3], Event::Intent, intent()),
        t(ids[2], Event::Withdrawn, TaskChange::new().message("never sent")),
    ];
    let got: Vec<Option<TaskState>> =
        b.steps(&batch).await.unwrap().iter().map(|r| r.as_ref().map(|t| t.state)).collect();
    assert_eq!(
        got,
        vec![
            Some(S::Submitting),
            Some(S::Submitted),
            None,
            Some(S::Submitting),
            Some(S::Deleted),
            Some(S::Submitting),
            Some(S::Pending)
        ]
    );
    let states: Vec<TaskState> = b.tasks(run).await.unwrap().iter().map(|t| t.state).collect();
    assert_eq!(states, vec![S::Deleted, S::Pending, S::Pending, S::Submitting]);
    assert_eq!(b.steps(&[]).await.unwrap(), vec![]);
}

pub async fn api_calls_are_recorded_and_read_back<B: Backend>(b: &B) {
    let (run, ids) = run_of(b, "HR-3", &[("cl-a", "alice"), ("cl-b", "bob")]).await;
    walk(b, ids[0], &[Event::Intent, Event::Accepted], "j-a").await;
    let submit = call(
        "RunClusterCustomService",
        json!({"cluster": "cl-a", "user": "alice"}),
        Some("j-a"),
        "2026-11-28T10:00:01Z",
    );
    b.record_call(run, Some(ids[0]), &submit).await.unwrap();
    let describe = call("DescribeJobs", json!({"jobs.1": "j-a", "jobs.2": "j-zz"}), None, "2026-11-28T10:00:05Z");
    let mut failed = call("DescribeClusters", json!({"zone": "sh1a"}), None, "2026-11-28T10:00:06Z");
    (failed.http_status, failed.ret_code, failed.message) = (Some(500), None, Some("gateway".into()));
    b.record_calls(&[(run, None, describe.clone()), (run, Some(ids[1]), failed.clone())]).await.unwrap();
    b.record_calls(&[]).await.unwrap();
    let calls = b.calls(run).await.unwrap();
    assert_eq!(calls, vec![(Some(ids[0]), submit.clone()), (None, describe.clone()), (Some(ids[1]), failed)]);
    let behind = b.task_calls(&[ids[0], ids[1]]).await.unwrap();
    let mine: Vec<(Option<i64>, &str)> =
        behind[&ids[0]].iter().map(|c| (c.recorded_for, c.call.action.as_str())).collect();
    assert_eq!(mine, vec![(Some(ids[0]), "RunClusterCustomService"), (None, "DescribeJobs")]);
    assert_eq!(behind[&ids[1]].len(), 1);
    let ranges = b.task_audit_ranges(&ids).await.unwrap();
    assert_eq!(ranges[&ids[0]].records, 4, "created, two steps, one call");
    assert_eq!(b.run_audit_ranges(&[run]).await.unwrap()[&run].records, b.audit_len().await.unwrap());
    b.audit_event(Some(run), Some(ids[1]), "preflight", json!({"status": "active"})).await.unwrap();
    b.audit_events(run, "preflight_unchecked", &[(None, json!({"zone": "pek3"})), (None, json!(7))]).await.unwrap();
    b.audit_events(run, "preflight_unchecked", &[]).await.unwrap();
    b.audit_event(None, None, "note", json!({"n": 1})).await.unwrap();
    let replay = b.replay().await.unwrap();
    assert_eq!(replay.tasks[&ids[1]].preflight.as_ref().map(|p| p.detail["ticket"].clone()), Some(json!("HR-3")));
    assert_eq!(replay.runs[&run].preflight_unchecked.len(), 2);
}

pub async fn runs_finish_and_are_counted<B: Backend>(b: &B) {
    assert_eq!(b.newest_unfinished_run().await.unwrap(), None);
    let (first, ids) = run_of(b, "HR-4", &[("cl-a", "alice"), ("cl-b", "bob"), ("cl-c", "carol")]).await;
    walk(b, ids[0], &[Event::Intent, Event::Accepted, Event::Succeeded], "j-1").await;
    walk(b, ids[1], &[Event::Intent, Event::GiveUp], "").await;
    b.step(ids[2], Event::Refused, &TaskChange::new().message("protected"), json!({})).await.unwrap().unwrap();
    let (second, more) = run_of(b, "HR-5", &[("cl-d", "dave")]).await;
    assert_eq!(b.newest_unfinished_run().await.unwrap().map(|r| r.id), Some(second));
    b.finish_run(second, 0, json!({"deleted": 0})).await.unwrap();
    // Finished, but a task is still pending: resume would still pick it.
    assert_eq!(b.newest_unfinished_run().await.unwrap().map(|r| r.id), Some(second));
    b.step(more[0], Event::NotReady, &TaskChange::new(), json!({})).await.unwrap().unwrap();
    assert_eq!(b.newest_unfinished_run().await.unwrap().map(|r| r.id), Some(first));
    b.finish_run(first, 1, json!({"failed": 2})).await.unwrap();
    assert_eq!(b.newest_unfinished_run().await.unwrap(), None);
    assert!(b.finish_run(99, 0, json!({})).await.is_err(), "no such run");

    let counts = b.counts(first).await.unwrap();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), vec![(S::Deleted, 1), (S::Failed, 2)]);
    assert_eq!(b.counts_by_run().await.unwrap()[&second].get(&S::NotReady), Some(&1));
    let failed: Vec<i64> = b.failed_tasks(first).await.unwrap().iter().map(|t| t.id).collect();
    assert_eq!(failed, vec![ids[1], ids[2]]);
    let run = b.run(first).await.unwrap().unwrap();
    assert_eq!((run.exit_code, run.summary, run.manifests.len()), (Some(1), Some(json!({"failed": 2})), 1));
    assert!(run.finished_at.is_some_and(|f| f >= run.started_at));
    assert_eq!(b.runs().await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![second, first]);
    assert_eq!(b.run(99).await.unwrap(), None);
    let deadlines = b.deadline_counts(None, at("2026-11-29T00:00:00Z")).await.unwrap();
    assert_eq!((deadlines[&first].on_time, deadlines[&first].late), (1, 2));
    assert_eq!(b.deadline_counts(Some(second), at("2026-11-01T00:00:00Z")).await.unwrap()[&second].open, 1);
}

pub async fn accounts_are_adopted_across_runs<B: Backend>(b: &B) {
    let (first, a) = run_of(b, "HR-6", &[("cl-a", "alice"), ("cl-b", "bob"), ("cl-c", "carol"), ("cl-d", "dan")]).await;
    walk(b, a[0], &[Event::Intent, Event::Accepted, Event::Succeeded], "j-a").await;
    walk(b, a[1], &[Event::Intent, Event::Accepted], "j-b").await;
    walk(b, a[2], &[Event::Intent], "").await;
    walk(b, a[3], &[Event::Intent, Event::Accepted, Event::GiveUp], "j-d").await;
    b.finish_run(first, 75, json!({})).await.unwrap();
    let standings = b.standings(ENDPOINT, KEY).await.unwrap();
    let key = |c: &str, u: &str| (c.to_owned(), u.to_owned(), "%".to_owned());
    assert_eq!(standings[&key("cl-a", "alice")], Standing::Done { run_id: first });
    assert_eq!(standings[&key("cl-b", "bob")], Standing::InFlight { run_id: first });
    assert_eq!(standings.len(), 4);
    assert_eq!(b.done_keys(ENDPOINT, KEY).await.unwrap(), HashSet::from([key("cl-a", "alice")]));
    // The same identity spelled otherwise; another key is another identity.
    let (second, m) =
        run_of(b, "HR-7", &[("cl-a", "alice"), ("cl-b", "bob"), ("cl-c", "carol"), ("cl-d", "dan"), ("cl-e", "eve")])
            .await;
    let runs = b.identity_runs("HTTP://127.0.0.1:1/iaas", KEY).await.unwrap();
    assert_eq!(runs, vec![first, second]);
    assert_eq!(b.identity_runs(ENDPOINT, "OTHER").await.unwrap(), Vec::<i64>::new());
    let prepared = b.prepare_run(second, &runs).await.unwrap();
    assert_eq!(prepared.skipped, 1);
    assert_eq!(prepared.adopted, vec![(m[1], first), (m[2], first), (m[3], first)]);
    let mine: Vec<(TaskState, Option<i64>)> =
        b.tasks(second).await.unwrap().iter().map(|t| (t.state, t.adopted_from)).collect();
    assert_eq!(
        mine,
        vec![
            (S::Skipped, None),
            (S::Submitted, Some(a[1])),
            (S::Submitting, Some(a[2])),
            (S::Submitted, Some(a[3])),
            (S::Pending, None)
        ]
    );
    let theirs: Vec<TaskState> = b.tasks(first).await.unwrap().iter().map(|t| t.state).collect();
    assert_eq!(theirs, vec![S::Deleted, S::HandedOver, S::HandedOver, S::HandedOver]);
    assert_eq!(b.task(m[1]).await.unwrap().unwrap().job_id.as_deref(), Some("j-b"));
    assert_eq!(b.prepare_run(second, &runs).await.unwrap(), Default::default(), "nothing left to prepare");
    let mut lineage = b.lineage(m[1]).await.unwrap();
    lineage.sort_unstable();
    assert_eq!(lineage, vec![a[1], m[1]]);
    let jobs = b.known_jobs(&runs).await.unwrap();
    assert_eq!(jobs[&key("cl-d", "dan")], HashSet::from(["j-d".to_owned()]));
    assert_eq!(b.recent_job_duration(&runs).await.unwrap(), Some(Duration::from_secs(30)));
    assert_eq!(b.recent_job_duration(&[]).await.unwrap(), None);
}

/// One job per cluster holds for adopted attempts too: of two unresolved attempts on one cluster
/// (a `retry` of a run whose jobs were omitted from every answer), one is adopted and the other
/// waits for the cluster, adopted (never sent) when its turn comes after the first has ended.
pub async fn adoptions_wait_for_their_cluster<B: Backend>(b: &B) {
    let accounts =
        [("cl-a", "alice"), ("cl-a", "bob"), ("cl-b", "carol"), ("cl-a", "dan"), ("cl-c", "erin"), ("cl-c", "frank")];
    let (first, a) = run_of(b, "HR-20", &accounts).await;
    walk(b, a[0], &[Event::Intent, Event::Accepted, Event::GiveUp], "j-a").await;
    walk(b, a[1], &[Event::Intent, Event::Accepted, Event::GiveUp], "j-b").await;
    walk(b, a[2], &[Event::Intent, Event::Accepted, Event::GiveUp], "j-c").await;
    walk(b, a[3], &[Event::Intent, Event::Accepted, Event::Succeeded], "j-d").await;
    walk(b, a[4], &[Event::Intent, Event::Accepted, Event::GiveUp], "j-e").await;
    // Frank's job was in flight when the first run died: it holds cl-c's slot.
    walk(b, a[5], &[Event::Intent, Event::Accepted], "j-f").await;
    b.finish_run(first, 75, json!({})).await.unwrap();
    let (second, m) = run_of(b, "HR-21", &accounts).await;
    let runs = [first, second];
    let prepared = b.prepare_run(second, &runs).await.unwrap();
    assert_eq!(prepared.skipped, 1);
    assert_eq!(prepared.adopted, vec![(m[0], first), (m[2], first), (m[5], first)]);
    assert_eq!(prepared.deferred, vec![m[1], m[4]], "bob waits for alice's job, erin for frank's");
    let mine: Vec<TaskState> = b.tasks(second).await.unwrap().iter().map(|t| t.state).collect();
    assert_eq!(mine, vec![S::Submitted, S::Pending, S::Submitted, S::Skipped, S::Pending, S::Submitted]);
    let theirs: Vec<TaskState> = b.tasks(first).await.unwrap().iter().map(|t| t.state).collect();
    assert_eq!(theirs, vec![S::HandedOver, S::Failed, S::HandedOver, S::Deleted, S::Failed, S::HandedOver]);
    // Bob's turn while alice's adopted job is still followed: it waits, nothing written.
    assert_eq!(b.adopt_deferred(second, m[1], &runs).await.unwrap(), Adopted::Waits);
    assert_eq!(b.task(m[1]).await.unwrap().unwrap().state, S::Pending);
    // Alice's job ends: bob's attempt is adopted, to be followed, never sent again.
    walk(b, m[0], &[Event::Succeeded], "").await;
    let Adopted::Moved(row) = b.adopt_deferred(second, m[1], &runs).await.unwrap() else { panic!("bob adopted") };
    assert_eq!((row.state, row.adopted_from, row.job_id.as_deref()), (S::Submitted, Some(a[1]), Some("j-b")));
    assert_eq!(b.task(a[1]).await.unwrap().unwrap().state, S::HandedOver);
    // Nothing left to adopt for a task that moved on, or whose account nobody else holds.
    assert_eq!(b.adopt_deferred(second, m[1], &runs).await.unwrap(), Adopted::Nothing);
    assert_eq!(b.prepare_run(second, &runs).await.unwrap().adopted, vec![]);
    // Erin's attempt is adopted once frank's job has ended.
    walk(b, m[5], &[Event::Succeeded], "").await;
    let Adopted::Moved(row) = b.adopt_deferred(second, m[4], &runs).await.unwrap() else { panic!("erin adopted") };
    assert_eq!((row.state, row.adopted_from), (S::Submitted, Some(a[4])));
}

pub async fn the_last_check_refuses<B: Backend>(b: &B) {
    let (first, a) = run_of(b, "HR-8", &[("cl-a", "alice"), ("cl-b", "bob")]).await;
    walk(b, a[0], &[Event::Intent, Event::Accepted, Event::FoundAbsent], "j-a").await;
    walk(b, a[1], &[Event::Intent], "").await;
    // Bob's second attempt is in another zone of the cluster: PostgreSQL refuses a second job in
    // one (cluster, zone), which is what a live attempt of the first run is.
    let mut tasks = vec![new_task("cl-a", "alice"), new_task("cl-b", "bob"), new_task("cl-c", "carol")];
    tasks[1].zone = "pek3".into();
    let second = b.create_run(&new_run(Some("HR-9")), &tasks).await.unwrap();
    let m: Vec<i64> = b.tasks(second).await.unwrap().iter().map(|t| t.id).collect();
    let runs = [first, second];
    assert_eq!(b.last_check(m[0], &runs).await.unwrap(), Err(Refusal::NotOpen(S::Pending)));
    for t in &m {
        walk(b, *t, &[Event::Intent], "").await;
    }
    assert_eq!(b.last_check(m[0], &runs).await.unwrap(), Err(Refusal::DoneElsewhere { run_id: first }));
    assert_eq!(b.last_check(m[1], &runs).await.unwrap(), Err(Refusal::InFlightElsewhere { run_id: first }));
    assert_eq!(b.last_check(m[1], &[second]).await.unwrap(), Ok(()), "only the runs of the identity count");
    assert_eq!(b.last_check(m[2], &runs).await.unwrap(), Ok(()));
    assert!(b.last_check(9_999, &runs).await.is_err());
}

pub async fn doctor_findings_are_kept<B: Backend>(b: &B) {
    let finding = |name: &str, status, value: &str| NewFinding {
        name: name.to_owned(),
        status,
        value: value.to_owned(),
        summary: format!("{name} is {value}"),
        advice: (status != FindingStatus::Ok).then(|| "look".to_owned()),
        detail: json!({"n": 1}),
    };
    assert!(b.latest_findings(ENDPOINT, KEY).await.unwrap().is_empty());
    b.record_findings(ENDPOINT, KEY, Some("sh1a"), &[finding(check::LISTING_ORDER, FindingStatus::Ok, "newest_first")])
        .await
        .unwrap();
    let second = [
        finding(check::LISTING_ORDER, FindingStatus::Warn, "oldest_first"),
        finding(check::QUOTA, FindingStatus::Ok, "unreported"),
    ];
    let id = b.record_findings(ENDPOINT, KEY, None, &second).await.unwrap();
    b.record_findings("other", KEY, None, &[]).await.unwrap();
    let got = b.latest_findings(ENDPOINT, KEY).await.unwrap();
    let names: Vec<(&str, FindingStatus, &str)> =
        got.iter().map(|f| (f.name.as_str(), f.status, f.value.as_str())).collect();
    assert_eq!(
        names,
        vec![("listing_order", FindingStatus::Warn, "oldest_first"), ("quota", FindingStatus::Ok, "unreported")]
    );
    assert!(got.iter().all(|f| f.checkup_id == id && f.zone.is_none() && f.detail == json!({"n": 1})));
    let order = b.latest_finding(ENDPOINT, KEY, check::LISTING_ORDER).await.unwrap().unwrap();
    assert_eq!((order.value.as_str(), order.advice.as_deref()), ("oldest_first", Some("look")));
    assert_eq!(b.latest_finding(ENDPOINT, KEY, check::CLOCK_SKEW).await.unwrap(), None);
}

pub async fn report_tasks_are_filtered<B: Backend>(b: &B) {
    let (first, a) = run_of(b, "HR-10", &[("cl-a", "alice"), ("cl-b", "alice"), ("cl-a", "bob")]).await;
    let (second, m) = run_of(b, "HR-11", &[("cl-c", "carol")]).await;
    walk(b, a[0], &[Event::Intent], "").await;
    let ids = |rows: Vec<(qc_offboard::store::TaskRow, Option<String>)>| -> Vec<(i64, Option<String>)> {
        rows.into_iter().map(|(t, ticket)| (t.id, ticket)).collect()
    };
    let all = ids(b.report_tasks(&ReportFilter::default()).await.unwrap());
    let ticket = |s: &str| Some(s.to_owned());
    assert_eq!(
        all,
        vec![(a[0], ticket("HR-10")), (a[1], ticket("HR-10")), (a[2], ticket("HR-10")), (m[0], ticket("HR-11"))]
    );
    let by_run = ReportFilter { run_id: Some(second), ..Default::default() };
    assert_eq!(ids(b.report_tasks(&by_run).await.unwrap()), vec![(m[0], ticket("HR-11"))]);
    let by_user = ReportFilter { user: Some("alice".into()), ..Default::default() };
    assert_eq!(ids(b.report_tasks(&by_user).await.unwrap()).len(), 2);
    let by_both =
        ReportFilter { user: Some("alice".into()), cluster: Some("cl-a".into()), run_id: Some(first), since: None };
    assert_eq!(ids(b.report_tasks(&by_both).await.unwrap()), vec![(a[0], ticket("HR-10"))]);
    // Work started long ago, runs started now: since a moment in between, only unstarted tasks.
    let since = ReportFilter { since: Some(at("2026-11-28T11:00:00Z")), ..Default::default() };
    assert_eq!(ids(b.report_tasks(&since).await.unwrap()).len(), 3);
    let none = ReportFilter { cluster: Some("cl-z".into()), ..Default::default() };
    assert!(b.report_tasks(&none).await.unwrap().is_empty());
}

pub async fn the_run_lock_is_one_at_a_time<B: Backend>(b: &B) {
    let here = this_host();
    let me = i64::from(std::process::id());
    // Above any pid_max: no process has it, and both backends record the same number.
    let gone = i64::from(i32::MAX);
    assert_eq!(b.lock_holder().await.unwrap(), None);
    let (first, outcome) =
        b.create_run_locked(&new_run(Some("HR-12")), &[new_task("cl-a", "alice")], gone, &here).await.unwrap();
    assert_eq!(outcome, LockOutcome::Acquired);
    assert_eq!(b.acquire_lock(first, gone, &here).await.unwrap(), LockOutcome::Acquired, "already ours");
    // The holder's process is gone: this host takes the lock over, audited.
    let (second, outcome) =
        b.create_run_locked(&new_run(Some("HR-13")), &[new_task("cl-b", "bob")], me, &here).await.unwrap();
    assert!(matches!(outcome, LockOutcome::TakenOver { previous } if previous.run_id == first && previous.pid == gone));
    assert_eq!(b.lock_holder().await.unwrap().map(|h| (h.run_id, h.pid)), Some((second, me)));
    // A holder on another host is never taken over: the refused run keeps no task.
    assert!(b.release_lock(second).await.unwrap());
    assert!(!b.release_lock(second).await.unwrap());
    assert_eq!(b.acquire_lock(second, 1, "elsewhere").await.unwrap(), LockOutcome::Acquired);
    let (refused, outcome) =
        b.create_run_locked(&new_run(Some("HR-14")), &[new_task("cl-c", "carol")], me, &here).await.unwrap();
    assert!(matches!(outcome, LockOutcome::Held(h) if h.host == "elsewhere"));
    let run = b.run(refused).await.unwrap().unwrap();
    assert_eq!((run.exit_code, b.tasks(refused).await.unwrap().len()), (Some(73), 0));
    assert_eq!(run.summary.unwrap()["refused"], json!("another run holds the run lock"));
}
