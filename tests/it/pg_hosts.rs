//! Sharing one run between hosts on PostgreSQL (`QC_OFFBOARD_TEST_PG`, see `pg_db`): hosts
//! claim whole clusters, never one another's; the per-host leases that replace the run lock
//! (several hosts on one live run, another run refused while it is live, a dead host's lease
//! removed); the runner's fence (`runner::shared::Shared`): once a host claims, it writes only
//! under a lease it holds, so a host whose lease was taken over writes nothing; and a write
//! without a lease never touches a task another host holds.

use std::collections::BTreeSet;
use std::time::Duration;

use qc_offboard::runner::shared::Shared;
use qc_offboard::store::postgres::{HostLease, PgStore};
use qc_offboard::store::{Adopted, LockOutcome, TaskChange, TaskState, Transition};
use serde_json::json;

use crate::helpers::{new_run, new_task};
use crate::pg_db::TestDb;

const OPEN: &[TaskState] = &[TaskState::Pending, TaskState::RetryWait, TaskState::Submitting, TaskState::Submitted];
const LEASE: Duration = Duration::from_secs(60);
const REQUEST: Duration = Duration::from_secs(5);

/// A run of `clusters` clusters with `users` accounts each; its id.
async fn run_of(store: &PgStore, clusters: usize, users: usize) -> i64 {
    let mut tasks = Vec::new();
    for c in 0..clusters {
        for u in 0..users {
            tasks.push(new_task(&format!("cl-h{c:03}"), &format!("u{c}x{u}")));
        }
    }
    store.create_run(&new_run(Some("OPS-7")), &tasks).await.unwrap()
}

fn host(run_id: i64, name: &str) -> HostLease {
    HostLease { run_id, owner: format!("{name}:1:00000000"), host: name.to_owned(), pid: 1 }
}

fn pending_to_submitting(task_id: i64) -> Transition {
    qc_offboard::runner::state::transition(
        task_id,
        &[TaskState::Pending],
        qc_offboard::store::Event::Intent,
        TaskChange::new().intent_at(chrono::Utc::now()),
        json!({ "attempt": 1 }),
    )
    .unwrap()
}

#[tokio::test]
async fn pg_hosts_claim_whole_clusters_and_never_one_another_s() {
    let Some(db) = TestDb::create("pg_hosts_claim_whole_clusters_and_never_one_another_s").await else { return };
    let (a, b) = (db.open().await, db.open().await);
    let run = run_of(&a, 4, 3).await;
    let clusters = |claims: &[qc_offboard::store::postgres::Claim]| -> BTreeSet<String> {
        claims.iter().map(|c| c.task.cluster.clone()).collect()
    };
    let first = a.claim_clusters(run, OPEN, "host-a", LEASE, 1).await.unwrap();
    assert_eq!(first.len(), 3, "every task of the cluster");
    assert_eq!(clusters(&first), BTreeSet::from(["cl-h000".to_owned()]));
    let second = b.claim_clusters(run, OPEN, "host-b", LEASE, 2).await.unwrap();
    assert_eq!(clusters(&second), BTreeSet::from(["cl-h001".to_owned(), "cl-h002".to_owned()]));
    // A asks for more: neither its own tasks again (their epoch would change under its writes)
    // nor B's clusters.
    let third = a.claim_clusters(run, OPEN, "host-a", LEASE, 10).await.unwrap();
    assert_eq!(clusters(&third), BTreeSet::from(["cl-h003".to_owned()]));
    assert!(b.claim_clusters(run, OPEN, "host-b", LEASE, 10).await.unwrap().is_empty(), "nothing left");
    assert_eq!(a.unfinished(run).await.unwrap(), 12);
    // A cluster whose only open task B holds stays B's even once its other tasks ended.
    let mine = second[0].task.id;
    assert!(b.release(&second[0].lease).await.unwrap());
    let retaken = a.claim_clusters(run, OPEN, "host-a", LEASE, 10).await.unwrap();
    assert!(retaken.is_empty(), "B still holds cl-h001's other tasks: {retaken:?}");
    let again = b.claim_clusters(run, OPEN, "host-b", LEASE, 10).await.unwrap();
    assert_eq!(again.iter().map(|c| c.task.id).collect::<Vec<_>>(), vec![mine]);
    assert!(a.verify_audit(None).await.unwrap().is_intact());
}

#[tokio::test]
async fn pg_lease_renewals_never_shorten_and_say_what_is_still_held() {
    let Some(db) = TestDb::create("pg_lease_renewals_never_shorten_and_say_what_is_still_held").await else { return };
    let store = db.open().await;
    let run = run_of(&store, 2, 1).await;
    let claims = store.claim_clusters(run, OPEN, "host-a", Duration::from_secs(600), 2).await.unwrap();
    let ids: Vec<i64> = claims.iter().map(|c| c.task.id).collect();
    let before = store.lease_of(ids[0]).await.unwrap().unwrap().until;
    let kept = store.extend_leases("host-a", &ids, Duration::from_secs(5)).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(store.lease_of(ids[0]).await.unwrap().unwrap().until, before, "a longer lease is kept");
    assert!(store.extend_leases("host-b", &ids, LEASE).await.unwrap().is_empty(), "not B's to renew");
}

#[tokio::test]
async fn pg_a_write_without_a_lease_never_touches_a_task_another_host_holds() {
    let Some(db) = TestDb::create("pg_a_write_without_a_lease_never_touches_a_task_another_host_holds").await else {
        return;
    };
    let store = db.open().await;
    let run = run_of(&store, 1, 1).await;
    let claim = store.claim_clusters(run, OPEN, "host-a", LEASE, 1).await.unwrap().remove(0);
    let id = claim.task.id;
    let written = store.steps(&[pending_to_submitting(id)]).await.unwrap();
    assert_eq!(written, vec![None], "held by host-a: nothing written");
    assert_eq!(store.tasks(run).await.unwrap()[0].state, TaskState::Pending);
    assert!(store.release(&claim.lease).await.unwrap());
    let written = store.steps(&[pending_to_submitting(id)]).await.unwrap();
    assert_eq!(written[0].as_ref().map(|r| r.state), Some(TaskState::Submitting), "nobody holds it now");
}

#[tokio::test]
async fn pg_hosts_share_a_live_run_and_another_run_waits_for_it() {
    let Some(db) = TestDb::create("pg_hosts_share_a_live_run_and_another_run_waits_for_it").await else { return };
    let store = db.open().await;
    let run = run_of(&store, 1, 1).await;
    let short = Duration::from_secs(2);
    let first = store.join_run(&host(run, "a"), LEASE).await.unwrap();
    assert_eq!((first.outcome, first.peers), (LockOutcome::Acquired, 0));
    let second = store.join_run(&host(run, "b"), short).await.unwrap();
    assert_eq!((second.outcome, second.peers), (LockOutcome::Acquired, 1), "b joins the live run");
    assert_eq!(store.live_hosts(run).await.unwrap().len(), 2);
    // Another run is refused while this one is live, and the refusal is on record.
    let (refused, outcome) =
        store.create_run_joined(&new_run(None), &[new_task("cl-x", "u")], &host(0, "c"), LEASE).await.unwrap();
    let LockOutcome::Held(holder) = outcome else { panic!("another run is live") };
    assert_eq!(holder.run_id, run);
    let refused_run = store.run(refused).await.unwrap().unwrap();
    assert_eq!(refused_run.exit_code, Some(73));
    assert!(store.tasks(refused).await.unwrap().is_empty(), "nothing of the refused run's work is kept");
    // a leaves (its task leases go with it); b's lease runs out: the database is free again.
    let claims = store.claim_clusters(run, OPEN, &host(run, "a").owner, LEASE, 1).await.unwrap();
    assert_eq!(claims.len(), 1);
    store.leave_run(&host(run, "a")).await.unwrap();
    assert_eq!(store.lease_of(claims[0].task.id).await.unwrap(), None, "leaving gives the tasks back");
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    assert!(store.live_hosts(run).await.unwrap().is_empty());
    let (next, outcome) =
        store.create_run_joined(&new_run(None), &[new_task("cl-x", "u")], &host(0, "c"), LEASE).await.unwrap();
    assert_eq!(outcome, LockOutcome::Acquired);
    assert_eq!(store.tasks(next).await.unwrap().len(), 1);
    let mut raw = db.raw().await;
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM audit_log WHERE kind LIKE 'host%' ORDER BY seq")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    assert_eq!(kinds, ["host_joined", "host_joined", "host_left", "host_lease_expired", "host_joined"]);
    assert!(store.verify_audit(None).await.unwrap().is_intact());
}

#[tokio::test]
async fn pg_a_host_whose_lease_was_taken_over_writes_nothing() {
    let Some(db) = TestDb::create("pg_a_host_whose_lease_was_taken_over_writes_nothing").await else { return };
    let (a_store, b_store) = (db.open().await, db.open().await);
    let run = run_of(&a_store, 2, 1).await;
    let short = Duration::from_secs(2);
    let a = Shared::new(a_store.clone(), host(run, "a"), short, REQUEST, true);
    let b = Shared::new(b_store.clone(), host(run, "b"), LEASE, REQUEST, true);
    let rows = a.claim(1).await.unwrap();
    let id = rows[0].id;
    assert!(a.holds(id));
    // A stalls past its lease; B takes the task over.
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    let taken = b.claim(10).await.unwrap();
    assert!(taken.iter().any(|r| r.id == id), "{taken:?}");
    assert_eq!(a.write(&pending_to_submitting(id)).await.unwrap(), None, "A's write changes nothing");
    assert!(!a.renew_for_request(id).await.unwrap(), "and A's last check refuses the request");
    let other = taken.iter().find(|r| r.id != id).map(|r| r.id).expect("B claimed the other cluster too");
    assert_eq!(a.write(&pending_to_submitting(other)).await.unwrap(), None, "never A's: nothing written");
    let row = b.write(&pending_to_submitting(id)).await.unwrap().expect("B holds it");
    assert_eq!(row.state, TaskState::Submitting);
    assert!(b.renew_for_request(id).await.unwrap());
    let lease = b_store.lease_of(id).await.unwrap().unwrap();
    assert!(lease.until > chrono::Utc::now() + chrono::Duration::seconds(50), "the request's lease is whole");
    assert!(a_store.verify_audit(None).await.unwrap().is_intact());
    let mut raw = db.raw().await;
    let takeovers: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE kind = 'lease_taken_over'")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(takeovers, 1);
}

#[tokio::test]
async fn pg_a_batch_of_writes_refused_one_job_per_cluster_keeps_the_rest() {
    let Some(db) = TestDb::create("pg_a_batch_of_writes_refused_one_job_per_cluster_keeps_the_rest").await else {
        return;
    };
    let store = db.open().await;
    let run = run_of(&store, 2, 2).await;
    let a = Shared::new(store.clone(), host(run, "a"), LEASE, REQUEST, true);
    let rows = a.claim(2).await.unwrap();
    assert_eq!(rows.len(), 4);
    let by_cluster = |c: &str| rows.iter().filter(|r| r.cluster == c).map(|r| r.id).collect::<Vec<_>>();
    let (x, y) = (by_cluster("cl-h000"), by_cluster("cl-h001"));
    let batch = [pending_to_submitting(x[0]), pending_to_submitting(x[1]), pending_to_submitting(y[0])];
    let written = a.write_all(&batch).await.unwrap();
    let states: Vec<Option<TaskState>> = written.iter().map(|r| r.as_ref().map(|r| r.state)).collect();
    assert_eq!(states, [Some(TaskState::Submitting), None, Some(TaskState::Submitting)], "one job per cluster");
    assert!(!a.holds(x[1]), "the refused task is handed back");
    assert_eq!(store.lease_of(x[1]).await.unwrap(), None);
    let tasks = store.tasks(run).await.unwrap();
    let submitting = tasks.iter().filter(|t| t.state == TaskState::Submitting).count();
    assert_eq!(submitting, 2);
    assert!(store.verify_audit(None).await.unwrap().is_intact());
    assert_eq!(store.replay().await.unwrap().discrepancies.len(), 0, "the tables agree with the chain");
}

/// A host killed while its `del_user` was on the wire leaves the task `submitting` under a lease
/// as long as the request's timeout. The next run cannot hand that attempt over until the lease
/// runs out: its adoption waits (before, the new run's prepare was refused by the
/// one-job-per-cluster index and the run ended 70), nothing of it is written, and once the lease
/// is over the attempt is adopted, to be reconciled, never sent blindly.
#[tokio::test]
async fn pg_a_dead_host_s_request_lease_makes_the_next_run_s_adoption_wait() {
    let Some(db) = TestDb::create("pg_a_dead_host_s_request_lease_makes_the_next_run_s_adoption_wait").await else {
        return;
    };
    let store = db.open().await;
    let first = run_of(&store, 1, 2).await;
    let request = Duration::from_secs(1);
    let a = Shared::new(store.clone(), host(first, "a"), Duration::from_secs(2), request, true);
    let rows = a.claim(1).await.unwrap();
    let x = rows[0].id;
    a.write(&pending_to_submitting(x)).await.unwrap().expect("A holds it");
    assert!(a.renew_for_request(x).await.unwrap(), "the request's lease: its timeout and 2 s");
    drop(a); // SIGKILLed with the request on the wire.
    let second = run_of(&store, 1, 2).await;
    let runs = [first, second];
    let mine: Vec<i64> = store.tasks(second).await.unwrap().iter().map(|t| t.id).collect();
    let prepared = store.prepare_run(second, &runs).await.unwrap();
    assert_eq!((prepared.adopted.len(), prepared.deferred.clone()), (0, vec![mine[0]]), "{prepared:?}");
    let state = |id| {
        let store = store.clone();
        async move { store.task(id).await.unwrap().unwrap().state }
    };
    assert_eq!((state(x).await, state(mine[0]).await), (TaskState::Submitting, TaskState::Pending));
    let db_handle = qc_offboard::store::Db::from(&store);
    assert_eq!(db_handle.adopt_deferred(second, mine[0], &runs).await.unwrap(), Adopted::Waits);
    // Nor is the cluster claimed while the request's lease lives: its tasks would only be
    // refused a job slot and handed back, round after round.
    let b = Shared::new(store.clone(), host(second, "b"), LEASE, REQUEST, true);
    assert_eq!(b.claim(10).await.unwrap(), vec![], "the cluster waits for the dead host's lease");
    // The dead host's lease runs out: the attempt is adopted in doubt.
    tokio::time::sleep(request + Duration::from_secs(2) + Duration::from_millis(300)).await;
    assert_eq!(b.claim(10).await.unwrap().len(), 2, "claimed once the lease is over");
    let Adopted::Moved(row) = b.adopt_deferred(mine[0], &runs).await.unwrap() else {
        panic!("adopted once the lease is over")
    };
    assert_eq!((row.state, row.adopted_from), (TaskState::Submitting, Some(x)));
    assert_eq!(state(x).await, TaskState::HandedOver);
    assert!(store.verify_audit(None).await.unwrap().is_intact());
    assert_eq!(store.replay().await.unwrap().discrepancies.len(), 0, "the tables agree with the chain");
}
