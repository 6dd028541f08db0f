//! The PostgreSQL store against a real server (`QC_OFFBOARD_TEST_PG`, see `pg_db`): its
//! migrations, one audit chain appended by many hosts at once and checked by the same verifier
//! as SQLite's, tasks claimed under leases by competing hosts with every write fenced by the
//! lease's epoch, and the database's own refusal of a second job on a cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use qc_offboard::audit::Problem;
use qc_offboard::store::postgres::{Lease, LeasedWrite, PgStore};
use qc_offboard::store::{Event, TaskChange, TaskState};
use serde_json::json;
use sqlx::Executor;

use crate::helpers::{new_run, new_task};
use crate::pg_db::TestDb;

const PENDING: &[TaskState] = &[TaskState::Pending];
const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn pg_migrations_apply_and_reopening_is_harmless() {
    let Some(db) = TestDb::create("pg_migrations_apply_and_reopening_is_harmless").await else { return };
    let store = db.open().await;
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.audit_len().await.unwrap(), 0);
    assert!(store.verify_audit(None).await.unwrap().is_intact());
    let mut raw = db.raw().await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    for want in ["api_calls", "audit_log", "doctor_checkups", "doctor_findings", "quota", "run_lock", "runs", "tasks"] {
        assert!(tables.iter().any(|t| t == want), "{want} missing from {tables:?}");
    }
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut raw).await.unwrap();
    let files = std::fs::read_dir("migrations/postgres").unwrap().count() as i64;
    assert_eq!(applied, files, "every migration in migrations/postgres is applied");
    // The log is append-only here too.
    store.audit_event(None, None, "note", json!({"n": 1})).await.unwrap();
    for statement in [
        "UPDATE audit_log SET kind = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "TRUNCATE doctor_findings",
        "TRUNCATE doctor_checkups CASCADE",
    ] {
        let err = raw.execute(statement).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{statement}: {err}");
    }
    // A record numbered outside the chain's count is refused.
    let err = raw
        .execute("INSERT INTO audit_log (seq, at, kind, detail, prev_hash, hash) VALUES (0, 't', 'k', '{}', 'p', 'h')")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("audit_log_seq_from_one"), "{err}");
}

#[tokio::test]
async fn pg_appends_from_many_hosts_at_once_make_one_gapless_chain() {
    let Some(db) = TestDb::create("pg_appends_from_many_hosts_at_once_make_one_gapless_chain").await else { return };
    // Three hosts, each with its own pool, eight workers each, appending at the same time; runs
    // with their tasks (many records in one transaction) are created among them.
    let mut hosts: Vec<PgStore> = Vec::new();
    for _ in 0..3 {
        hosts.push(db.open().await);
    }
    let mut workers = Vec::new();
    for (h, store) in hosts.iter().enumerate() {
        for w in 0..8 {
            let store = store.clone();
            workers.push(tokio::spawn(async move {
                for i in 0..15 {
                    store.audit_event(None, None, "note", json!({"host": h, "worker": w, "i": i})).await.unwrap();
                }
                let tasks = [new_task("cl-a1", &format!("u{h}x{w}")), new_task("cl-b2", &format!("u{h}x{w}"))];
                store.create_run(&new_run(Some("HR-1")), &tasks).await.unwrap();
            }));
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let want = 3 * 8 * (15 + 1 + 2);
    let store = &hosts[0];
    assert_eq!(store.audit_len().await.unwrap(), want);
    let verified = store.verify_audit(None).await.unwrap();
    assert!(verified.is_intact(), "{verified:?}");
    assert_eq!((verified.checked, verified.tip.seq), (want as u64, want));
    assert_eq!(verified.tip, store.audit_checkpoint().await.unwrap());
    // Every host's records are in it, and each worker's in the order it wrote them.
    let mut raw = db.raw().await;
    let notes: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit_log WHERE kind = 'note' ORDER BY seq")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    let notes: Vec<serde_json::Value> = notes.iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    for (h, w) in (0..3).flat_map(|h| (0..8).map(move |w| (h, w))) {
        let mine: Vec<_> =
            notes.iter().filter(|n| n["host"] == h && n["worker"] == w).map(|n| n["i"].clone()).collect();
        assert_eq!(mine, (0..15).map(|i| json!(i)).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn pg_an_edited_detail_fails_verification_at_its_seq() {
    let Some(db) = TestDb::create("pg_an_edited_detail_fails_verification_at_its_seq").await else { return };
    let store = db.open().await;
    for i in 1..=5 {
        store.audit_event(None, None, "note", json!({"i": i})).await.unwrap();
    }
    let checkpoint = store.audit_checkpoint().await.unwrap();
    assert!(store.verify_audit(Some(&checkpoint)).await.unwrap().is_intact());
    // Someone holding the database turns the trigger off and edits record 3.
    let mut raw = db.raw().await;
    raw.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update").await.unwrap();
    raw.execute(r#"UPDATE audit_log SET detail = '{"i":30}' WHERE seq = 3"#).await.unwrap();
    let v = store.verify_audit(None).await.unwrap();
    assert_eq!(v.problem, Some(Problem::HashMismatch { seq: 3 }));
    assert_eq!((v.checked, v.tip.seq), (2, 2));
    // Records 2 and 4 swapped, each keeping its own hashes, read as reordered.
    raw.execute(r#"UPDATE audit_log SET detail = '{"i":3}' WHERE seq = 3"#).await.unwrap();
    assert!(store.verify_audit(Some(&checkpoint)).await.unwrap().is_intact());
    raw.execute("UPDATE audit_log SET seq = 1000 + seq WHERE seq IN (2, 4)").await.unwrap();
    raw.execute("UPDATE audit_log SET seq = 1006 - seq WHERE seq IN (1002, 1004)").await.unwrap();
    let v = store.verify_audit(None).await.unwrap();
    assert_eq!(v.problem, Some(Problem::Reordered { seq: 2, written_as: 4 }));
}

#[tokio::test]
async fn pg_two_claimers_never_get_the_same_task() {
    let Some(db) = TestDb::create("pg_two_claimers_never_get_the_same_task").await else { return };
    let (a, b) = (db.open().await, db.open().await);
    let tasks: Vec<_> = (0..60).map(|i| new_task(&format!("cl-c{i}"), "bob")).collect();
    let run = a.create_run(&new_run(None), &tasks).await.unwrap();
    let claimer = |store: PgStore, owner: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim(Some(run), PENDING, owner, LEASE, 3).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                assert!(got.iter().all(|c| c.lease.owner == owner && c.lease.epoch == 1 && c.taken_from.is_none()));
                mine.extend(got.into_iter().map(|c| c.task.id));
            }
        })
    };
    let (got_a, got_b) = (claimer(a.clone(), "host-a"), claimer(b.clone(), "host-b"));
    let (got_a, got_b) = (got_a.await.unwrap(), got_b.await.unwrap());
    let all: BTreeSet<i64> = got_a.iter().chain(&got_b).copied().collect();
    assert_eq!(all.len(), got_a.len() + got_b.len(), "a task was claimed twice: {got_a:?} {got_b:?}");
    assert_eq!(all, a.tasks(run).await.unwrap().iter().map(|t| t.id).collect());

    // A task another transaction is claiming is skipped, not waited for.
    let more = a.create_run(&new_run(None), &[new_task("cl-d1", "bob"), new_task("cl-d2", "bob")]).await.unwrap();
    let ids: Vec<i64> = a.tasks(more).await.unwrap().iter().map(|t| t.id).collect();
    let mut raw = db.raw().await;
    let mut tx = sqlx::Connection::begin(&mut raw).await.unwrap();
    sqlx::query("SELECT id FROM tasks WHERE id = $1 FOR UPDATE").bind(ids[0]).execute(&mut *tx).await.unwrap();
    let claim = b.claim(Some(more), PENDING, "host-b", LEASE, 10);
    let got = tokio::time::timeout(Duration::from_secs(20), claim).await.expect("the claim waited").unwrap();
    assert_eq!(got.iter().map(|c| c.task.id).collect::<Vec<_>>(), vec![ids[1]]);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn pg_a_stale_epoch_writes_nothing_and_an_expired_lease_is_taken_over() {
    let Some(db) = TestDb::create("pg_a_stale_epoch_writes_nothing_and_an_expired_lease_is_taken_over").await else {
        return;
    };
    let (a, b) = (db.open().await, db.open().await);
    let run = a.create_run(&new_run(Some("HR-2")), &[new_task("cl-e1", "bob")]).await.unwrap();
    let short = Duration::from_millis(300);
    let first = a.claim(Some(run), PENDING, "host-a", short, 1).await.unwrap().remove(0);
    assert_eq!(first.lease.epoch, 1);
    // Held: another host gets nothing; the holder can extend it.
    assert!(b.claim(Some(run), PENDING, "host-b", LEASE, 1).await.unwrap().is_empty());
    let lease_a = a.extend_lease(&first.lease, short).await.unwrap().expect("still held");
    assert!(lease_a.until >= first.lease.until);

    // Host A stalls past its lease; host B takes the task over with a new epoch, audited.
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let taken = b.claim(Some(run), PENDING, "host-b", LEASE, 1).await.unwrap().remove(0);
    assert_eq!((taken.lease.epoch, taken.taken_from.clone()), (2, Some(("host-a".to_owned(), 1))));
    assert_eq!(b.lease_of(taken.task.id).await.unwrap(), Some(taken.lease.clone()));
    let mut raw = db.raw().await;
    let (kind, detail): (String, String) =
        sqlx::query_as("SELECT kind, detail FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(kind, "lease_taken_over");
    assert_eq!(
        (&detail["from_owner"], &detail["epoch"], &detail["ticket"]),
        (&json!("host-a"), &json!(2), &json!("HR-2"))
    );

    // Host A wakes and writes under its old epoch: nothing changes, nothing is audited.
    let records = a.audit_len().await.unwrap();
    let intent = TaskChange::new().intent_at(chrono::Utc::now()).increment_attempts();
    let stale = a.step_leased(&lease_a, Event::Intent, &intent, json!({})).await.unwrap();
    assert_eq!(stale, LeasedWrite::NotHeld);
    assert!(a.extend_lease(&lease_a, LEASE).await.unwrap().is_none());
    assert!(!a.release(&lease_a).await.unwrap());
    assert_eq!(a.task(taken.task.id).await.unwrap().unwrap(), taken.task);
    assert_eq!(a.audit_len().await.unwrap(), records);

    // The new holder's write applies and names its lease in the audit record; the same event
    // again (the task has left the states it may leave) writes nothing.
    let row = b.step_leased(&taken.lease, Event::Intent, &intent, json!({})).await.unwrap();
    let row = row.applied().expect("the holder's write applies");
    assert_eq!((row.state, row.attempts), (TaskState::Submitting, 1));
    assert!(row.started_at.is_some() && row.intent_at == row.started_at);
    let again = b.step_leased(&taken.lease, Event::Intent, &intent, json!({})).await.unwrap();
    assert_eq!(again, LeasedWrite::NotHeld);
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE kind = 'task_state'").fetch_one(&mut raw).await.unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!((&detail["owner"], &detail["epoch"], &detail["from"]), (&json!("host-b"), &json!(2), &json!("pending")));
    assert!(b.release(&taken.lease).await.unwrap());
    assert_eq!(b.lease_of(taken.task.id).await.unwrap(), None);
    assert!(b.verify_audit(None).await.unwrap().is_intact());
}

#[tokio::test]
async fn pg_the_database_refuses_a_second_job_on_a_cluster() {
    let Some(db) = TestDb::create("pg_the_database_refuses_a_second_job_on_a_cluster").await else { return };
    let (a, b) = (db.open().await, db.open().await);
    let run = a.create_run(&new_run(None), &[new_task("cl-f1", "bob"), new_task("cl-f1", "carol")]).await.unwrap();
    let other = a.create_run(&new_run(None), &[new_task("cl-f1", "dave")]).await.unwrap();
    let first = a.claim(Some(run), PENDING, "host-a", LEASE, 1).await.unwrap().remove(0);
    let second = b.claim(Some(run), PENDING, "host-b", LEASE, 1).await.unwrap().remove(0);
    let third = b.claim(Some(other), PENDING, "host-b", LEASE, 1).await.unwrap().remove(0);
    // The lease, not the connection, says who writes: any pool serves.
    let go = |lease: &Lease, event| {
        let (store, lease) = (a.clone(), lease.clone());
        async move { store.step_leased(&lease, event, &TaskChange::new(), json!({})).await.unwrap() }
    };
    assert!(matches!(go(&first.lease, Event::Intent).await, LeasedWrite::Applied(_)));
    // Another task of the cluster, whichever host or run holds it, waits.
    assert_eq!(go(&second.lease, Event::Intent).await, LeasedWrite::ClusterBusy);
    assert_eq!(go(&third.lease, Event::Intent).await, LeasedWrite::ClusterBusy);
    assert_eq!(b.task(second.task.id).await.unwrap().unwrap().state, TaskState::Pending);
    assert!(matches!(go(&first.lease, Event::Accepted).await, LeasedWrite::Applied(_)));
    assert_eq!(go(&second.lease, Event::Intent).await, LeasedWrite::ClusterBusy);
    // Not only the product's writes: the database itself refuses.
    let mut raw = db.raw().await;
    let err = sqlx::query("UPDATE tasks SET state = 'submitting' WHERE id = $1")
        .bind(second.task.id)
        .execute(&mut raw)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tasks_one_job_per_cluster"), "{err}");
    // Once the job has ended, the next task of the cluster goes.
    assert!(matches!(go(&first.lease, Event::Succeeded).await, LeasedWrite::Applied(_)));
    assert!(matches!(go(&second.lease, Event::Intent).await, LeasedWrite::Applied(_)));
    assert!(a.verify_audit(None).await.unwrap().is_intact());
}

#[tokio::test]
async fn pg_the_replay_finds_a_row_edited_behind_the_product() {
    let Some(db) = TestDb::create("pg_the_replay_finds_a_row_edited_behind_the_product").await else { return };
    let store = db.open().await;
    let run = store.create_run(&new_run(Some("HR-3")), &[new_task("cl-r1", "bob")]).await.unwrap();
    let task = store.tasks(run).await.unwrap()[0].id;
    let intent = TaskChange::new().intent_at(chrono::Utc::now()).increment_attempts();
    store.step(task, Event::Intent, &intent, json!({})).await.unwrap().unwrap();
    store.finish_run(run, 0, json!({})).await.unwrap();
    assert!(store.replay().await.unwrap().discrepancies.is_empty());
    let mut raw = db.raw().await;
    raw.execute(format!("UPDATE tasks SET state = 'deleted', attempts = 0 WHERE id = {task}").as_str()).await.unwrap();
    raw.execute(format!("UPDATE runs SET exit_code = 3 WHERE id = {run}").as_str()).await.unwrap();
    let found: Vec<(&str, Option<String>)> =
        store.replay().await.unwrap().discrepancies.iter().map(|d| (d.table, d.field.clone())).collect();
    let want = [("runs", "exit_code"), ("tasks", "state"), ("tasks", "attempts")];
    for (table, field) in want {
        assert!(found.contains(&(table, Some(field.to_owned()))), "{table}.{field} not found in {found:?}");
    }
    assert!(store.verify_audit(None).await.unwrap().is_intact(), "the chain itself is untouched");
}

#[tokio::test]
async fn pg_batched_steps_from_many_hosts_keep_the_tables_and_the_chain_in_step() {
    let Some(db) = TestDb::create("pg_batched_steps_from_many_hosts_keep_the_tables_and_the_chain_in_step").await
    else {
        return;
    };
    let hosts = [db.open().await, db.open().await, db.open().await];
    let tasks: Vec<_> = (0..40).map(|i| new_task(&format!("cl-m{i}"), "bob")).collect();
    let run = hosts[0].create_run(&new_run(Some("HR-4")), &tasks).await.unwrap();
    let ids: Vec<i64> = hosts[0].tasks(run).await.unwrap().iter().map(|t| t.id).collect();
    // Every host walks every task, in its own order and batches: each step applies once, the
    // others find the guard moved on, and nobody waits for anybody in a circle.
    let mut workers = Vec::new();
    for (h, store) in hosts.iter().enumerate() {
        let (store, mut ids) = (store.clone(), ids.clone());
        if h == 1 {
            ids.reverse();
        }
        workers.push(tokio::spawn(async move {
            let mut applied = 0;
            for event in [Event::Intent, Event::Accepted, Event::Succeeded] {
                for batch in ids.chunks(7) {
                    let steps: Vec<_> = batch
                        .iter()
                        .map(|&id| qc_offboard::runner::state::from_any(id, event, TaskChange::new(), json!({"h": h})))
                        .collect();
                    applied += store.steps(&steps).await.unwrap().iter().flatten().count();
                }
            }
            applied
        }));
    }
    let mut applied = 0;
    for w in workers {
        applied += w.await.unwrap();
    }
    assert_eq!(applied, 3 * ids.len(), "each step applied exactly once");
    let counts = hosts[2].counts(run).await.unwrap();
    assert_eq!(counts.get(&TaskState::Deleted), Some(&(ids.len() as i64)));
    assert!(hosts[0].verify_audit(None).await.unwrap().is_intact());
    let replay = hosts[1].replay().await.unwrap();
    assert!(replay.discrepancies.is_empty(), "{:#?}", replay.discrepancies);
}

/// A host that wakes from a stall after its lease ran out writes nothing and cannot extend the
/// lease back to life, even while no other host has taken the task yet: another may be about
/// to, and would then reconcile and send while the stalled host's request is on its way.
#[tokio::test]
async fn pg_an_expired_lease_nobody_took_writes_nothing_and_is_not_revived() {
    let Some(db) = TestDb::create("pg_an_expired_lease_nobody_took_writes_nothing_and_is_not_revived").await else {
        return;
    };
    let a = db.open().await;
    let run = a.create_run(&new_run(Some("HR-3")), &[new_task("cl-e2", "bob")]).await.unwrap();
    let short = Duration::from_millis(200);
    let held = a.claim(Some(run), PENDING, "host-a", short, 1).await.unwrap().remove(0);
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let records = a.audit_len().await.unwrap();
    let intent = TaskChange::new().intent_at(chrono::Utc::now()).increment_attempts();
    assert_eq!(a.step_leased(&held.lease, Event::Intent, &intent, json!({})).await.unwrap(), LeasedWrite::NotHeld);
    assert!(a.extend_lease(&held.lease, LEASE).await.unwrap().is_none(), "an expired lease was revived");
    assert_eq!(a.task(held.task.id).await.unwrap().unwrap().state, TaskState::Pending);
    assert_eq!(a.audit_len().await.unwrap(), records);
    // Claimed again, it is the holder's once more, under a new epoch.
    let again = a.claim(Some(run), PENDING, "host-a", LEASE, 1).await.unwrap().remove(0);
    assert_eq!(again.lease.epoch, held.lease.epoch + 1);
    assert!(a.step_leased(&again.lease, Event::Intent, &intent, json!({})).await.unwrap().applied().is_some());
}
