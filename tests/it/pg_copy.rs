//! Moving an SQLite evidence database up to PostgreSQL (`QC_OFFBOARD_TEST_PG`, see `pg_db`):
//! every table and id arrives, the audit log byte for byte with its chain verified there, and
//! work goes on from it; a broken source or a used target is refused. Also: the PostgreSQL
//! store writes the same audit records as the SQLite store for the same run.

use chrono::{DateTime, Utc};
use qc_offboard::audit::Problem;
use qc_offboard::store::postgres::{copy_from_sqlite, CopyError, PgStore};
use qc_offboard::store::{check, ApiCallRow, Event, FindingStatus, NewFinding, Store, TaskChange, TaskState};
use serde_json::json;
use sqlx::Executor;

use crate::helpers::{at, db_path, new_run, new_task, raw_connection, tempdir};
use crate::pg_db::TestDb;

type AuditRow = (i64, String, Option<i64>, Option<i64>, String, String, String, String);
const AUDIT: &str = "SELECT seq, at, run_id, task_id, kind, detail, prev_hash, hash FROM audit_log ORDER BY seq";
type RunCols = (i64, DateTime<Utc>, Option<DateTime<Utc>>, Option<i64>, Option<String>, Option<i64>, bool);
const RUNS: &str = "SELECT id, started_at, finished_at, exit_code, summary, retry_of, simulated FROM runs ORDER BY id";
type CallCols = (i64, Option<i64>, String, String, Option<i64>, DateTime<Utc>, i64);
const CALLS: &str = "SELECT id, task_id, action, params, ret_code, started_at, latency_ms FROM api_calls ORDER BY id";

/// An SQLite store with a little of everything: two runs (one retrying the other), tasks in
/// several states, an API call, the run lock, and a doctor checkup.
async fn evidence(store: &Store) -> (i64, i64) {
    let mut later = new_task("cl-b2", "carol");
    later.state = TaskState::NotDue;
    later.not_before = Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap());
    let tasks = [new_task("cl-a1", "bob"), new_task("cl-a1", "dave"), later];
    let first = store.create_run(&new_run(Some("HR-4711")), &tasks).await.unwrap();
    let ids: Vec<i64> = store.tasks(first).await.unwrap().iter().map(|t| t.id).collect();
    let now = at("2026-11-28T10:00:00.123456Z");
    let moves = [
        (ids[0], Event::Intent, TaskChange::new().intent_at(now).increment_attempts()),
        (ids[0], Event::Accepted, TaskChange::new().job_id("j-1").submitted_at(now)),
        (ids[0], Event::Succeeded, TaskChange::new().finished_at(now)),
        (ids[1], Event::Refused, TaskChange::new().ret_code(1400).message("busy \"x\"")),
    ];
    for (task_id, event, change) in moves {
        assert!(store.step(task_id, event, &change, json!({})).await.unwrap().is_some(), "{event:?}");
    }
    let call = ApiCallRow {
        action: "RunClusterCustomService".into(),
        params_json: json!({"cluster": "cl-a1", "zone": "sh1a"}).to_string(),
        http_status: Some(200),
        ret_code: Some(0),
        message: None,
        job_id: Some("j-1".into()),
        started_at: now,
        latency_ms: 42,
    };
    store.record_call(first, Some(ids[0]), &call).await.unwrap();
    store.finish_run(first, 1, json!({"deleted": 1, "failed": 1})).await.unwrap();
    let mut retry = new_run(None);
    retry.retry_of = Some(first);
    let second = store.create_run(&retry, &[new_task("cl-a1", "dave")]).await.unwrap();
    // The second run took the lock and ended (a source a run still holds is not copied).
    store.acquire_lock(second, 4242, "build-1").await.unwrap();
    store.release_lock(second).await.unwrap();
    let finding = NewFinding {
        name: check::CLOCK_SKEW.into(),
        status: FindingStatus::Ok,
        value: "0".into(),
        summary: "clocks agree".into(),
        advice: None,
        detail: json!({"skew_s": 0}),
    };
    store.record_findings("http://127.0.0.1:1/iaas/", "QYACCESSKEYIDEXAMPLE", Some("sh1a"), &[finding]).await.unwrap();
    (first, second)
}

#[tokio::test]
async fn pg_copy_moves_an_sqlite_database_with_its_chain_intact() {
    let Some(db) = TestDb::create("pg_copy_moves_an_sqlite_database_with_its_chain_intact").await else { return };
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let (first, second) = evidence(&store).await;
    let source_tip = store.audit_checkpoint().await.unwrap();
    store.close().await;
    // The source is read as evidence: opened read-only.
    let source = Store::open_existing(db_path(dir.path())).await.unwrap();
    let pg = db.open().await;
    let copied = copy_from_sqlite(&source, &pg).await.unwrap();
    assert_eq!(copied.tip, source_tip);
    let count = |table: &str| copied.rows.iter().find(|(t, _)| *t == table).map(|(_, n)| *n);
    assert_eq!((count("runs"), count("tasks"), count("api_calls")), (Some(2), Some(4), Some(1)));
    assert_eq!((count("run_manifests"), count("run_lock"), count("doctor_findings")), (Some(2), Some(0), Some(1)));
    assert_eq!(count("audit_log"), Some(source_tip.seq as u64));

    // The audit log byte for byte, verified by the same verifier on both sides.
    let mut lite = raw_connection(source.path()).await;
    let mut raw = db.raw().await;
    let lite_audit: Vec<AuditRow> = sqlx::query_as(AUDIT).fetch_all(&mut lite).await.unwrap();
    assert_eq!(lite_audit, sqlx::query_as::<_, AuditRow>(AUDIT).fetch_all(&mut raw).await.unwrap());
    assert_eq!(
        pg.verify_audit(Some(&source_tip)).await.unwrap(),
        source.verify_audit(Some(&source_tip)).await.unwrap()
    );
    // Every table with its ids and values.
    for run in [first, second] {
        assert_eq!(pg.tasks(run).await.unwrap(), source.tasks(run).await.unwrap());
    }
    let lite_runs: Vec<RunCols> = sqlx::query_as(RUNS).fetch_all(&mut lite).await.unwrap();
    assert_eq!(lite_runs, sqlx::query_as::<_, RunCols>(RUNS).fetch_all(&mut raw).await.unwrap());
    let lite_calls: Vec<CallCols> = sqlx::query_as(CALLS).fetch_all(&mut lite).await.unwrap();
    assert_eq!(lite_calls, sqlx::query_as::<_, CallCols>(CALLS).fetch_all(&mut raw).await.unwrap());

    // Work goes on from the copy: the chain continues it, new ids follow the copied ones.
    pg.audit_event(Some(second), None, "note", json!({})).await.unwrap();
    let run = pg.create_run(&new_run(None), &[new_task("cl-c3", "erin")]).await.unwrap();
    assert_eq!(run, second + 1);
    assert!(pg.tasks(run).await.unwrap()[0].id > pg.tasks(second).await.unwrap()[0].id);
    let v = pg.verify_audit(Some(&source_tip)).await.unwrap();
    assert!(v.is_intact() && v.tip.seq == source_tip.seq + 3, "{v:?}");

    // A second copy into the same database is refused, with nothing written.
    let len = pg.audit_len().await.unwrap();
    assert!(matches!(copy_from_sqlite(&source, &pg).await, Err(CopyError::NotEmpty { .. })));
    assert_eq!(pg.audit_len().await.unwrap(), len);
}

#[tokio::test]
async fn pg_copy_refuses_a_broken_source() {
    let Some(db) = TestDb::create("pg_copy_refuses_a_broken_source").await else { return };
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    evidence(&store).await;
    store.close().await;
    let mut lite = raw_connection(&db_path(dir.path())).await;
    lite.execute("DROP TRIGGER audit_log_no_update").await.unwrap();
    lite.execute(r#"UPDATE audit_log SET detail = '{"edited":true}' WHERE seq = 2"#).await.unwrap();
    let source = Store::open_existing(db_path(dir.path())).await.unwrap();
    let pg: PgStore = db.open().await;
    match copy_from_sqlite(&source, &pg).await {
        Err(CopyError::SourceBroken(problem)) => assert_eq!(problem, Problem::HashMismatch { seq: 2 }),
        other => panic!("copied a broken chain: {other:?}"),
    }
    assert_eq!(pg.audit_len().await.unwrap(), 0);
}

#[tokio::test]
async fn pg_store_writes_the_same_audit_records_as_the_sqlite_store() {
    let Some(db) = TestDb::create("pg_store_writes_the_same_audit_records_as_the_sqlite_store").await else { return };
    let dir = tempdir();
    let lite = Store::open(db_path(dir.path())).await.unwrap();
    let pg = db.open().await;
    let mut later = new_task("cl-b2", "carol");
    later.state = TaskState::NotDue;
    later.not_before = Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap());
    let mut run = new_run(Some("HR-7"));
    run.discovered = Some(json!({"selectors": 1}));
    let tasks = [new_task("cl-a1", "bob"), later];
    assert_eq!(lite.create_run(&run, &tasks).await.unwrap(), pg.create_run(&run, &tasks).await.unwrap());
    assert_eq!(lite.tasks(1).await.unwrap().len(), pg.tasks(1).await.unwrap().len());
    let q = "SELECT run_id, task_id, kind, detail FROM audit_log ORDER BY seq";
    type Rec = (Option<i64>, Option<i64>, String, String);
    let from_lite: Vec<Rec> = sqlx::query_as(q).fetch_all(&mut raw_connection(lite.path()).await).await.unwrap();
    let from_pg: Vec<Rec> = sqlx::query_as(q).fetch_all(&mut db.raw().await).await.unwrap();
    assert_eq!(from_lite.len(), 3);
    assert_eq!(from_lite, from_pg);
}
