//! The store: schema, file mode, runs and tasks, guarded transitions, calls, the lock, concurrent
//! readers, and the `status` / `report` commands over a database written here.

use std::os::unix::fs::PermissionsExt;

use predicates::prelude::*;
use qc_offboard::report;
use qc_offboard::runner::state::{self, apply};
use qc_offboard::store::{ApiCallRow, Event, LockOutcome, ReportFilter, Store, TaskChange, TaskState};
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{at, db_path, move_task, new_run, new_task, qc, raw_connection, tempdir};

#[tokio::test]
async fn migrations_apply_to_an_empty_file_and_reopening_is_harmless() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    store.close().await;
    let store = Store::open(&path).await.unwrap();
    assert!(store.runs().await.unwrap().is_empty());
    assert_eq!(store.audit_len().await.unwrap(), 0);
    store.close().await;

    let mut raw = raw_connection(&path).await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') ORDER BY name")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    for want in [
        "_sqlx_migrations",
        "api_calls",
        "audit_log",
        "audit_log_no_delete",
        "audit_log_no_update",
        "run_lock",
        "run_manifests",
        "runs",
        "tasks",
    ] {
        assert!(tables.iter().any(|t| t == want), "{want} missing from {tables:?}");
    }
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut raw).await.unwrap();
    let migrations = std::fs::read_dir("migrations/sqlite").unwrap().count() as i64;
    assert_eq!(applied, migrations, "every migration in migrations/ is applied");
}

#[tokio::test]
async fn the_database_file_is_private() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    store.create_run(&new_run(None), &[new_task("cl-a1", "bob")]).await.unwrap();
    for file in [path.clone(), path.with_extension("db-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
    let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[tokio::test]
async fn a_run_is_recorded_with_its_tasks_and_audit_records() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let mut skipped = new_task("cl-a1", "carol");
    skipped.state = TaskState::Skipped;
    let mut later = new_task("cl-b2", "bob");
    later.state = TaskState::NotDue;
    later.not_before = Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap());
    let tasks = vec![new_task("cl-a1", "bob"), skipped, later];
    let first = store.create_run(&new_run(Some("HR-4711")), &tasks).await.unwrap();
    let second = store.create_run(&new_run(None), &[new_task("cl-c3", "dave")]).await.unwrap();

    let runs = store.runs().await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![second, first], "newest first");
    let run = store.run(first).await.unwrap().unwrap();
    assert_eq!(run.ticket.as_deref(), Some("HR-4711"));
    assert_eq!(run.manifests, new_run(None).manifests);
    assert_eq!(run.options, json!({"rate": "50/s", "max_in_flight": 20}));
    assert_eq!(run.due_by, Some(at("2026-11-28T12:00:00Z")));
    assert!(run.finished_at.is_none());

    let rows = store.tasks(first).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].state, TaskState::Pending);
    assert_eq!(rows[1].state, TaskState::Skipped);
    assert!(rows[1].finished_at.is_none(), "a skipped task did nothing in this run");
    assert_eq!(rows[2].not_before, tasks[2].not_before);
    assert_eq!(store.task(rows[0].id).await.unwrap().unwrap(), rows[0]);
    let counts = store.counts(first).await.unwrap();
    assert_eq!(counts.get(&TaskState::Pending), Some(&1));
    assert_eq!(counts.get(&TaskState::NotDue), Some(&1));

    // One run_started record per run and one task_created record per task, each naming the run;
    // the ticket is in every record of the run that has one.
    assert_eq!(store.audit_len().await.unwrap(), 1 + 3 + 1 + 1);
    let mut raw = raw_connection(store.path()).await;
    let records: Vec<(Option<i64>, String, String)> =
        sqlx::query_as("SELECT run_id, kind, detail FROM audit_log ORDER BY seq").fetch_all(&mut raw).await.unwrap();
    assert_eq!(records[0].1, "run_started");
    let started: serde_json::Value = serde_json::from_str(&records[0].2).unwrap();
    assert_eq!(started["manifests"][0]["sha256"], json!("ab".repeat(32)));
    assert_eq!(started["requested_by"], json!("alice@example.com"));
    for (run_id, _, detail) in &records[..4] {
        assert_eq!(*run_id, Some(first));
        let detail: serde_json::Value = serde_json::from_str(detail).unwrap();
        assert_eq!(detail["ticket"], json!("HR-4711"), "{detail}");
    }
    assert!(store.verify_audit(None).await.unwrap().is_intact());
}

/// Put a fresh task into `state` through the store's own guarded steps (a `not_due` task is
/// created so).
async fn task_in(store: &Store, run_id: i64, n: usize, state: TaskState) -> i64 {
    let id = store.tasks(run_id).await.unwrap()[n].id;
    if !matches!(state, TaskState::Pending | TaskState::NotDue) {
        let moved = move_task(store, id, TaskState::Pending, state, &TaskChange::new(), json!({})).await;
        assert_eq!(moved.state, state);
    }
    id
}

#[tokio::test]
async fn every_guard_refuses_a_task_in_another_state_and_writes_nothing() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let tasks: Vec<_> = TaskState::ALL
        .iter()
        .enumerate()
        .map(|(i, state)| {
            let mut t = new_task("cl-a1", &format!("u{i}"));
            if *state == TaskState::NotDue {
                t.state = TaskState::NotDue;
                t.not_before = Some(chrono::NaiveDate::from_ymd_opt(2099, 1, 1).unwrap());
                t.due_by = None;
            }
            t
        })
        .collect();
    let run_id = store.create_run(&new_run(Some("T-1")), &tasks).await.unwrap();
    for (n, state) in TaskState::ALL.into_iter().enumerate() {
        let id = task_in(&store, run_id, n, state).await;
        let before = store.task(id).await.unwrap().unwrap();
        let records = store.audit_len().await.unwrap();
        for event in Event::ALL.into_iter().filter(|e| apply(state, *e).is_err()) {
            let change = TaskChange::new().increment_attempts().job_id("j-x").ret_code(5000).message("m");
            let refused = store.step(id, event, &change, json!({"why": "test"})).await.unwrap();
            assert!(refused.is_none(), "{event:?} in {state} was applied");
            assert_eq!(store.task(id).await.unwrap().unwrap(), before, "{event:?} in {state} changed the row");
            assert_eq!(store.audit_len().await.unwrap(), records, "{event:?} in {state} wrote an audit record");
        }
        // An event the table allows applies, and writes exactly one record.
        if let Some(event) = Event::ALL.into_iter().find(|e| apply(state, *e).is_ok()) {
            let applied = store.step(id, event, &TaskChange::new(), json!({})).await.unwrap();
            assert_eq!(applied.unwrap().state, apply(state, event).unwrap().to);
            assert_eq!(store.audit_len().await.unwrap(), records + 1);
        }
    }
    assert!(store.step(9999, Event::GiveUp, &TaskChange::new(), json!({})).await.unwrap().is_none());
    assert!(store.verify_audit(None).await.unwrap().is_intact());
}

#[tokio::test]
async fn a_task_walks_its_lifecycle_and_every_step_is_audited() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run_id = store.create_run(&new_run(Some("HR-4711")), &[new_task("cl-a1", "bob")]).await.unwrap();
    let id = store.tasks(run_id).await.unwrap()[0].id;
    use TaskState::*;

    let t1 = at("2026-11-28T10:00:00Z");
    let row = store
        .step(id, Event::Intent, &TaskChange::new().increment_attempts().intent_at(t1), json!({}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.attempts, row.started_at, row.intent_at), (1, Some(t1), Some(t1)));
    let row = store
        .step(id, Event::Backoff, &TaskChange::new().ret_code(5100).message("busy").next_attempt_at(t1), json!({}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.last_ret_code, row.last_message.as_deref()), (Some(5100), Some("busy")));
    let t2 = at("2026-11-28T10:05:00Z");
    let change = TaskChange::new().increment_attempts().intent_at(t2).clear_next_attempt_at();
    let row = store.step(id, Event::Intent, &change, json!({})).await.unwrap().unwrap();
    assert_eq!((row.attempts, row.started_at, row.intent_at, row.next_attempt_at), (2, Some(t1), Some(t2), None));
    let row = store
        .step(id, Event::Accepted, &TaskChange::new().job_id("j-abc").ret_code(0).submitted_at(t2), json!({}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.job_id.as_deref(), Some("j-abc"));
    let t3 = at("2026-11-28T10:06:00Z");
    let row = store
        .step(id, Event::Succeeded, &TaskChange::new().finished_at(t3), json!({"job_status": "successful"}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state, row.finished_at), (Deleted, Some(t3)));
    // A deleted task moves no further: no event leaves `deleted`.
    for event in Event::ALL {
        assert!(store.step(id, event, &TaskChange::new().attempts(7), json!({})).await.unwrap().is_none(), "{event:?}");
    }

    let mut raw = raw_connection(store.path()).await;
    let details: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE kind = 'task_state' AND task_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert_eq!(details.len(), 5);
    let deleted: serde_json::Value = serde_json::from_str(&details[4]).unwrap();
    assert_eq!(
        deleted,
        json!({"cluster": "cl-a1", "user": "bob", "host": "%", "from": "submitted", "to": "deleted",
               "finished_at": "2026-11-28T10:06:00.000000Z", "job_status": "successful", "ticket": "HR-4711"})
    );
}

#[tokio::test]
async fn batched_transitions_apply_in_one_transaction() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run_id = store.create_run(&new_run(None), &[new_task("cl-a1", "a"), new_task("cl-a1", "b")]).await.unwrap();
    let ids: Vec<i64> = store.tasks(run_id).await.unwrap().iter().map(|t| t.id).collect();
    let step = |id, from: TaskState, event| {
        state::transition(id, &[from], event, TaskChange::new().increment_attempts(), json!(null)).unwrap()
    };
    let before = store.audit_len().await.unwrap();
    let results = store
        .steps(&[
            step(ids[0], TaskState::Pending, Event::Intent),
            step(ids[0], TaskState::Submitting, Event::Accepted),
            step(ids[1], TaskState::Submitted, Event::Succeeded),
        ])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().state, TaskState::Submitting);
    assert_eq!(results[1].as_ref().unwrap().attempts, 2, "the second step sees the first");
    assert!(results[2].is_none());
    assert_eq!(store.audit_len().await.unwrap(), before + 2);
    assert_eq!(store.task(ids[1]).await.unwrap().unwrap().state, TaskState::Pending);
}

#[tokio::test]
async fn api_calls_are_recorded() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run_id = store.create_run(&new_run(None), &[new_task("cl-a1", "a")]).await.unwrap();
    let task_id = store.tasks(run_id).await.unwrap()[0].id;
    let call = ApiCallRow {
        action: "RunClusterCustomService".into(),
        params_json: r#"{"cluster":"cl-a1","service":"del_user"}"#.into(),
        http_status: Some(200),
        ret_code: Some(0),
        message: None,
        job_id: Some("j-1".into()),
        started_at: at("2026-11-28T10:00:00Z"),
        latency_ms: 42,
    };
    store.record_call(run_id, Some(task_id), &call).await.unwrap();
    let poll = ApiCallRow { action: "DescribeJobs".into(), job_id: None, ..call.clone() };
    store.record_calls(&[(run_id, None, poll.clone()), (run_id, None, poll.clone())]).await.unwrap();
    let calls = store.calls(run_id).await.unwrap();
    assert_eq!(calls, vec![(Some(task_id), call), (None, poll.clone()), (None, poll)]);
}

#[tokio::test]
async fn work_done_earlier_is_known_per_endpoint_and_key() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run1 = store
        .create_run(&new_run(None), &[new_task("cl-a1", "a"), new_task("cl-a1", "b"), new_task("cl-a1", "c")])
        .await
        .unwrap();
    let ids: Vec<i64> = store.tasks(run1).await.unwrap().iter().map(|t| t.id).collect();
    let none = TaskChange::new();
    move_task(&store, ids[0], TaskState::Pending, TaskState::Deleted, &none, json!({})).await;
    move_task(&store, ids[1], TaskState::Pending, TaskState::Failed, &none, json!({})).await;
    let mut other_key = new_run(None);
    other_key.access_key_id = "OTHERKEY".into();
    let run2 = store.create_run(&other_key, &[new_task("cl-a1", "c")]).await.unwrap();
    let c2 = store.tasks(run2).await.unwrap()[0].id;
    move_task(&store, c2, TaskState::Pending, TaskState::Deleted, &none, json!({})).await;
    let mut skipped = new_task("cl-a1", "a");
    skipped.state = TaskState::Skipped;
    let run3 = store.create_run(&new_run(None), &[skipped, new_task("cl-z9", "z")]).await.unwrap();

    let run = new_run(None);
    let done = store.done_keys(&run.endpoint, &run.access_key_id).await.unwrap();
    assert_eq!(done, [("cl-a1".to_string(), "a".to_string(), "%".to_string())].into_iter().collect());
    let done = store.done_keys(&run.endpoint, "OTHERKEY").await.unwrap();
    assert_eq!(done.len(), 1);
    assert!(store.done_keys("http://elsewhere/iaas/", &run.access_key_id).await.unwrap().is_empty());

    let failed = store.failed_tasks(run1).await.unwrap();
    assert_eq!(failed.iter().map(|t| t.user.as_str()).collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(failed[0].run_id, run1);

    // Newest unfinished: run3 has a pending task even once finished; run2 has none once finished.
    assert_eq!(store.newest_unfinished_run().await.unwrap().unwrap().id, run3);
    store.finish_run(run3, 75, json!({"pending": 1})).await.unwrap();
    assert_eq!(store.newest_unfinished_run().await.unwrap().unwrap().id, run3);
    store.finish_run(run2, 0, json!({})).await.unwrap();
    let z = store.tasks(run3).await.unwrap()[1].id;
    move_task(&store, z, TaskState::Pending, TaskState::Deleted, &none, json!({})).await;
    assert_eq!(store.newest_unfinished_run().await.unwrap().unwrap().id, run1, "run1 never finished");
    store.finish_run(run1, 1, json!({})).await.unwrap();
    assert_eq!(store.newest_unfinished_run().await.unwrap().unwrap().id, run1, "run1 has a pending task");
    move_task(&store, ids[2], TaskState::Pending, TaskState::Failed, &none, json!({})).await;
    assert!(store.newest_unfinished_run().await.unwrap().is_none());
    let finished = store.run(run3).await.unwrap().unwrap();
    assert_eq!((finished.exit_code, finished.summary), (Some(75), Some(json!({"pending": 1}))));
    assert!(matches!(store.finish_run(999, 0, json!({})).await, Err(qc_offboard::store::StoreError::NoSuchRun(999))));
}

#[tokio::test]
async fn the_run_lock_is_held_by_live_processes_and_taken_over_from_dead_ones() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run1 = store.create_run(&new_run(Some("L-1")), &[]).await.unwrap();
    let run2 = store.create_run(&new_run(Some("L-2")), &[]).await.unwrap();
    let mut live = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let live_pid = i64::from(live.id());

    assert_eq!(store.acquire_lock(run1, live_pid, "here").await.unwrap(), LockOutcome::Acquired);
    assert_eq!(store.acquire_lock(run1, live_pid, "here").await.unwrap(), LockOutcome::Acquired, "re-entrant");
    let LockOutcome::Held(holder) = store.acquire_lock(run2, 1, "here").await.unwrap() else { panic!("not held") };
    assert_eq!((holder.run_id, holder.pid, holder.host.as_str()), (run1, live_pid, "here"));

    // The holder dies: a process on the same host takes over, and the takeover is audited.
    live.kill().unwrap();
    live.wait().unwrap();
    let records = store.audit_len().await.unwrap();
    let LockOutcome::TakenOver { previous } = store.acquire_lock(run2, 1, "here").await.unwrap() else {
        panic!("not taken over")
    };
    assert_eq!(previous.pid, live_pid);
    assert_eq!(store.audit_len().await.unwrap(), records + 1);
    let mut raw = raw_connection(store.path()).await;
    let (kind, detail): (String, String) =
        sqlx::query_as("SELECT kind, detail FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    assert_eq!(kind, "lock_taken_over");
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["previous"]["pid"], json!(live_pid));
    assert_eq!(detail["ticket"], json!("L-2"));

    // A holder on another host is never taken over, dead or not.
    assert!(store.release_lock(run2).await.unwrap());
    assert!(!store.release_lock(run2).await.unwrap());
    assert_eq!(store.acquire_lock(run1, 999_999_999, "elsewhere").await.unwrap(), LockOutcome::Acquired);
    assert!(matches!(store.acquire_lock(run2, 1, "here").await.unwrap(), LockOutcome::Held(_)));
    assert_eq!(store.lock_holder().await.unwrap().unwrap().host, "elsewhere");
    assert!(store.verify_audit(None).await.unwrap().is_intact());
}

#[tokio::test]
async fn readers_are_not_blocked_by_a_writer() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    store.create_run(&new_run(Some("R-1")), &[new_task("cl-a1", "a")]).await.unwrap();

    // Another process holds the write lock with an uncommitted run.
    let mut writer = raw_connection(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut writer).await.unwrap();
    assert_eq!(mode, "wal");
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query(
        "INSERT INTO runs (started_at, operator, host, endpoint, access_key_id, options, simulated) \
         VALUES ('2026-01-01T00:00:00.000000Z', 'x', 'x', 'x', 'x', '{}', 0)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();

    assert_eq!(store.runs().await.unwrap().len(), 1, "the reader sees the last commit only");
    qc(dir.path()).args(["status", "--db"]).arg(&path).assert().success().stdout(predicate::str::contains("R-1"));
    qc(dir.path()).args(["audit", "verify", "--db"]).arg(&path).assert().success();
    tx.commit().await.unwrap();
    assert_eq!(store.runs().await.unwrap().len(), 2);
}

/// A database with every outcome, written with fixed times.
async fn evidence_fixture(store: &Store) -> i64 {
    let mut tasks = vec![
        new_task("cl-a1", "bob"),
        new_task("cl-b2", "bob"),
        new_task("cl-c3", "bob"),
        new_task("cl-d4", "bob"),
        new_task("cl-e5", "carol"),
    ];
    tasks[2].state = TaskState::Skipped;
    tasks[3].due_by = Some(at("2099-01-01T00:00:00Z"));
    tasks[4].state = TaskState::NotDue;
    tasks[4].not_before = Some(chrono::NaiveDate::from_ymd_opt(2099, 1, 1).unwrap());
    tasks[4].due_by = None;
    let run_id = store.create_run(&new_run(Some("HR-4711")), &tasks).await.unwrap();
    let ids: Vec<i64> = store.tasks(run_id).await.unwrap().iter().map(|t| t.id).collect();
    use TaskState::*;
    let start = TaskChange::new().increment_attempts().intent_at(at("2026-11-28T10:00:00Z"));
    for id in &ids[..2] {
        store.step(*id, Event::Intent, &start, json!({})).await.unwrap().unwrap();
    }
    let ok = TaskChange::new().job_id("j-ok").ret_code(0).finished_at(at("2026-11-28T11:00:00Z"));
    move_task(store, ids[0], Submitting, Deleted, &ok, json!({})).await;
    let bad = TaskChange::new()
        .ret_code(1400)
        .message("refused, \"user\" busy,\nsee job j-2")
        .finished_at(at("2026-11-28T13:00:00Z"));
    store.step(ids[1], Event::GiveUp, &bad, json!({})).await.unwrap().unwrap();
    move_task(store, ids[3], Pending, RetryWait, &TaskChange::new().message("a,b\r\nc"), json!({})).await;
    run_id
}

#[tokio::test]
async fn report_json_is_the_evidence_of_every_outcome() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    evidence_fixture(&store).await;
    let rows = report::rows(&store, &ReportFilter::default(), at("2026-12-01T00:00:00Z")).await.unwrap();
    let mut out = Vec::new();
    report::write_json(&mut out, &rows).unwrap();
    insta::assert_snapshot!("report_json", String::from_utf8(out).unwrap());
}

#[tokio::test]
async fn report_filters_narrow_the_rows() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let run1 = evidence_fixture(&store).await;
    let run2 = store.create_run(&new_run(None), &[new_task("cl-a1", "carol")]).await.unwrap();
    let now = at("2026-12-01T00:00:00Z");
    let users = |f: ReportFilter| {
        let store = store.clone();
        async move {
            report::rows(&store, &f, now)
                .await
                .unwrap()
                .into_iter()
                .map(|r| format!("{}/{}", r.cluster, r.user))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        users(ReportFilter { user: Some("carol".into()), ..Default::default() }).await,
        ["cl-e5/carol", "cl-a1/carol"]
    );
    assert_eq!(
        users(ReportFilter { cluster: Some("cl-a1".into()), ..Default::default() }).await,
        ["cl-a1/bob", "cl-a1/carol"]
    );
    assert_eq!(users(ReportFilter { run_id: Some(run2), ..Default::default() }).await, ["cl-a1/carol"]);
    assert_eq!(users(ReportFilter { run_id: Some(run1), ..Default::default() }).await.len(), 5);
    // Tasks never started count from their run's start, which is now: a future `since` drops them.
    let since = ReportFilter { since: Some(at("2026-11-28T09:00:00Z")), run_id: Some(run1), ..Default::default() };
    assert_eq!(users(since).await.len(), 5);
    let future = ReportFilter { since: Some(chrono::Utc::now() + chrono::Duration::days(1)), ..Default::default() };
    assert!(users(future).await.is_empty());
}

/// A small RFC 4180 reader: quoted fields may hold commas, doubled quotes and line breaks;
/// records end in CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => {
                assert!(c != '\n' && c != '"', "bare {c:?} outside quotes in {text:?}");
                field.push(c);
            }
        }
    }
    assert!(field.is_empty() && record.is_empty() && !quoted, "unterminated record");
    records
}

#[tokio::test]
async fn report_csv_round_trips_commas_quotes_and_line_breaks() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    evidence_fixture(&store).await;
    let rows = report::rows(&store, &ReportFilter::default(), chrono::Utc::now()).await.unwrap();
    store.close().await;

    let out = qc(dir.path()).args(["report", "--format", "csv", "--db"]).arg(&path).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let records = parse_csv(&text);
    assert_eq!(records[0], report::CSV_HEADER);
    assert_eq!(records.len(), 1 + rows.len());
    let column = |name: &str| report::CSV_HEADER.iter().position(|h| *h == name).unwrap();
    for (record, row) in records[1..].iter().zip(&rows) {
        assert_eq!(record.len(), report::CSV_HEADER.len());
        assert_eq!(record[column("message")], row.message.clone().unwrap_or_default());
        assert_eq!(record[column("user")], row.user);
        assert_eq!(record[column("outcome")], row.outcome.as_str());
    }
    assert_eq!(records[2][column("message")], "refused, \"user\" busy,\nsee job j-2");
    assert_eq!(records[4][column("message")], "a,b\r\nc");
}

#[tokio::test]
async fn status_and_report_commands_read_the_database() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    let run_id = evidence_fixture(&store).await;
    store.finish_run(run_id, 1, json!({"failed": 1})).await.unwrap();
    store.close().await;

    let out = qc(dir.path()).args(["status", "--output", "json", "--db"]).arg(&path).assert().success();
    let runs: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(runs[0]["id"], json!(run_id));
    assert_eq!(runs[0]["exit_code"], json!(1));
    assert_eq!(runs[0]["total"], json!(5));
    assert_eq!(runs[0]["counts"]["retry_wait"], json!(1));
    assert_eq!(runs[0]["counts"]["submitting"], json!(0));

    let out =
        qc(dir.path()).args(["status", &run_id.to_string(), "--output", "json", "--db"]).arg(&path).assert().success();
    let run: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(run["ticket"], json!("HR-4711"));
    assert_eq!(run["counts"]["deleted"], json!(1));

    qc(dir.path())
        .args(["status", &run_id.to_string(), "--db"])
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::contains("HR-4711").and(predicate::str::contains("retry_wait  1")));
    qc(dir.path())
        .args(["status", "42", "--db"])
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run 42"));
    qc(dir.path())
        .args(["report", "--user", "bob", "--cluster", "cl-b2", "--db"])
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::contains("failed").and(predicate::str::contains("1 tasks: 1 failed; 1 late")));
    let out = qc(dir.path())
        .args(["report", "--format", "json", "--run", &run_id.to_string(), "--db"])
        .arg(&path)
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 5);

    // The read-only commands never create a database: a wrong path is a configuration error.
    let missing = dir.path().join("nope/audit.db");
    for args in [vec!["status"], vec!["report"], vec!["audit", "verify"], vec!["audit", "checkpoint"]] {
        qc(dir.path())
            .args(&args)
            .arg("--db")
            .arg(&missing)
            .assert()
            .code(78)
            .stderr(predicate::str::contains("no database"));
    }
    assert!(!missing.exists());
    // The default path comes from XDG_DATA_HOME (set by the helper to HOME/.local/share).
    qc(dir.path())
        .arg("status")
        .assert()
        .code(78)
        .stderr(predicate::str::contains(".local/share/qc-offboard/audit.db"));
}

#[tokio::test]
async fn large_batches_keep_the_order_of_transitions_of_one_task() {
    let dir = tempdir();
    let store = Store::open(db_path(dir.path())).await.unwrap();
    let tasks: Vec<_> = (0..700).map(|i| new_task("cl-a1", &format!("u{i}"))).collect();
    let run_id = store.create_run(&new_run(Some("B-1")), &tasks).await.unwrap();
    let ids: Vec<i64> = store.tasks(run_id).await.unwrap().iter().map(|t| t.id).collect();
    let step = |id: i64, from: TaskState, event: Event| {
        let change = TaskChange::new().increment_attempts().job_id(format!("j-{id}"));
        state::transition(id, &[from], event, change, json!({"batch": true})).unwrap()
    };
    // Each task twice, the second step depending on the first, plus a step whose guard fails.
    let mut batch = Vec::new();
    for pair in ids.chunks(2) {
        for &id in pair {
            batch.push(step(id, TaskState::Pending, Event::Intent));
        }
        for &id in pair {
            batch.push(step(id, TaskState::Submitting, Event::Accepted));
        }
        batch.push(step(pair[0], TaskState::Pending, Event::Refused));
    }
    let before = store.audit_len().await.unwrap();
    let results = store.steps(&batch).await.unwrap();
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1400);
    assert_eq!(results.iter().filter(|r| r.is_none()).count(), 350);
    for (t, r) in batch.iter().zip(&results) {
        if let Some(row) = r {
            assert_eq!((row.id, row.state), (t.task_id(), t.to()));
        }
    }
    for row in store.tasks(run_id).await.unwrap() {
        assert_eq!((row.state, row.attempts, row.job_id), (TaskState::Submitted, 2, Some(format!("j-{}", row.id))));
    }
    assert_eq!(store.audit_len().await.unwrap(), before + 1400);
    let v = store.verify_audit(None).await.unwrap();
    assert!(v.is_intact(), "{:?}", v.problem);
}
