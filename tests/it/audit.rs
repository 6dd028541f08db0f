//! The audit log's tamper evidence: someone holding the database file drops the triggers and
//! edits, deletes, swaps or truncates records; `audit verify` (the real binary) finds each.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use qc_offboard::store::{record_hash, Checkpoint, Event, Store, TaskChange, TaskState};
use serde_json::json;

use crate::helpers::{db_path, new_run, new_task, qc, raw_connection, tempdir};

/// A database with 12 audit records: run_started, 5 task_created, 5 task_state (each task found
/// done by another run: `pending` → `skipped`, one step), run_finished.
async fn written_db(dir: &Path) -> PathBuf {
    let path = db_path(dir);
    let store = Store::open(&path).await.unwrap();
    let tasks: Vec<_> = (0..5).map(|i| new_task("cl-a1", &format!("u{i}"))).collect();
    let run_id = store.create_run(&new_run(Some("HR-4711")), &tasks).await.unwrap();
    for t in store.tasks(run_id).await.unwrap() {
        store.step(t.id, Event::DoneElsewhere, &TaskChange::new(), json!({})).await.unwrap().unwrap();
    }
    store.finish_run(run_id, 0, json!({"skipped": 5})).await.unwrap();
    assert_eq!(store.audit_len().await.unwrap(), 12);
    store.close().await;
    path
}

/// A copy of the database at `to`. Closing the store normally folds the WAL into the file, but
/// its last connection may still be closing: the WAL is copied too, so the copy holds every
/// committed record.
fn copy_db(from: &Path, to: &Path) -> PathBuf {
    std::fs::copy(from, to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", from.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
    to.to_owned()
}

/// What someone holding the file can do: drop the append-only triggers, then run `sql`.
async fn tamper(path: &Path, sql: &[&str]) {
    let mut raw = raw_connection(path).await;
    sqlx::query("DROP TRIGGER audit_log_no_update").execute(&mut raw).await.unwrap();
    sqlx::query("DROP TRIGGER audit_log_no_delete").execute(&mut raw).await.unwrap();
    for s in sql {
        sqlx::query(s).execute(&mut raw).await.unwrap();
    }
}

fn verify(dir: &Path, path: &Path, checkpoint: Option<&str>) -> assert_cmd::assert::Assert {
    let mut cmd = qc(dir);
    cmd.args(["audit", "verify", "--db"]).arg(path);
    if let Some(cp) = checkpoint {
        cmd.args(["--checkpoint", cp]);
    }
    cmd.assert()
}

fn checkpoint(dir: &Path, path: &Path) -> String {
    let out = qc(dir).args(["audit", "checkpoint", "--db"]).arg(path).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap().trim().to_string()
}

#[tokio::test]
async fn an_untouched_log_verifies_and_checkpoints() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    let cp = checkpoint(dir.path(), &path);
    let parsed: Checkpoint = cp.parse().unwrap();
    assert_eq!(parsed.seq, 12);
    verify(dir.path(), &path, None)
        .success()
        .stdout(predicate::str::contains(format!("audit log intact: 12 records checked, tip {cp}")));
    verify(dir.path(), &path, Some(&cp)).success().stdout(predicate::str::contains("is present"));
    let earlier = {
        let mut raw = raw_connection(&path).await;
        let hash: String =
            sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = 5").fetch_one(&mut raw).await.unwrap();
        format!("5:{hash}")
    };
    verify(dir.path(), &path, Some(&earlier)).success();
    verify(dir.path(), &path, Some("5:nothex")).code(2).stderr(predicate::str::contains("SEQ:HASH"));
}

#[tokio::test]
async fn the_triggers_refuse_updates_and_deletes() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    let mut raw = raw_connection(&path).await;
    let update = sqlx::query("UPDATE audit_log SET kind = 'x' WHERE seq = 3").execute(&mut raw).await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_log WHERE seq = 12").execute(&mut raw).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    drop(raw);
    verify(dir.path(), &path, None).success();
}

#[tokio::test]
async fn an_edited_field_is_found() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    tamper(&path, &["UPDATE audit_log SET detail = replace(detail, 'u2', 'u9') WHERE seq = 9"]).await;
    verify(dir.path(), &path, None).code(1).stdout(
        predicate::str::contains("record 9: hash mismatch")
            .and(predicate::str::contains("8 records before it are intact")),
    );
}

#[tokio::test]
async fn each_field_of_a_record_is_covered_by_its_hash() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    for (n, edit) in [
        "at = '2020-01-01T00:00:00.000000Z'",
        "run_id = 99",
        "run_id = NULL",
        "task_id = 3",
        "kind = 'task_created'",
        "detail = '{}'",
    ]
    .into_iter()
    .enumerate()
    {
        let copy = copy_db(&path, &dir.path().join(format!("copy{n}.db")));
        tamper(&copy, &[&format!("UPDATE audit_log SET {edit} WHERE seq = 8")]).await;
        verify(dir.path(), &copy, None).code(1).stdout(predicate::str::contains("record 8: hash mismatch"));
    }
}

#[tokio::test]
async fn a_deleted_record_is_found() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    tamper(&path, &["DELETE FROM audit_log WHERE seq = 4"]).await;
    verify(dir.path(), &path, None)
        .code(1)
        .stdout(predicate::str::contains("record 5: gap in seq, record 4 is missing"));
}

#[tokio::test]
async fn swapped_records_are_found() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    let cols = "at, run_id, task_id, kind, detail, prev_hash, hash";
    tamper(
        &path,
        &[
            &format!("CREATE TEMP TABLE a AS SELECT {cols} FROM audit_log WHERE seq = 3"),
            &format!("CREATE TEMP TABLE b AS SELECT {cols} FROM audit_log WHERE seq = 7"),
            "DELETE FROM audit_log WHERE seq IN (3, 7)",
            &format!("INSERT INTO audit_log (seq, {cols}) SELECT 3, {cols} FROM b"),
            &format!("INSERT INTO audit_log (seq, {cols}) SELECT 7, {cols} FROM a"),
        ],
    )
    .await;
    verify(dir.path(), &path, None)
        .code(1)
        .stdout(predicate::str::contains("record 3: reordered, it holds the record written as 7"));
}

#[tokio::test]
async fn a_relinked_record_is_found() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    // Point record 6 at the wrong predecessor and give it a hash consistent with that.
    let mut raw = raw_connection(&path).await;
    let (at, run_id, task_id, kind, detail): (String, Option<i64>, Option<i64>, String, String) =
        sqlx::query_as("SELECT at, run_id, task_id, kind, detail FROM audit_log WHERE seq = 6")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    drop(raw);
    let fake_prev = "11".repeat(32);
    let hash = record_hash(&fake_prev, 6, &at, run_id, task_id, &kind, &detail).unwrap();
    tamper(&path, &[&format!("UPDATE audit_log SET prev_hash = '{fake_prev}', hash = '{hash}' WHERE seq = 6")]).await;
    verify(dir.path(), &path, None).code(1).stdout(predicate::str::contains("record 6: broken link"));
}

#[tokio::test]
async fn truncation_is_found_against_a_checkpoint() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    let cp = checkpoint(dir.path(), &path);
    tamper(&path, &["DELETE FROM audit_log WHERE seq > 9"]).await;
    // The shortened chain is internally consistent, but the tables still hold what the cut
    // records said: the replay names the rows they no longer prove.
    verify(dir.path(), &path, None).code(1).stdout(
        predicate::str::contains("audit log intact: 9 records checked")
            .and(predicate::str::contains("tables do NOT agree with the audit chain"))
            .and(predicate::str::contains(
                "tasks row 5, state: the database says \"skipped\", the audit chain says \"pending\"",
            ))
            .and(predicate::str::contains("runs row 1, exit_code: the database says 0, the audit chain says empty")),
    );
    // Cutting the tables to match leaves a consistent but shorter story: only the checkpoint
    // kept elsewhere shows it.
    let mut raw = raw_connection(&path).await;
    for sql in [
        "UPDATE tasks SET state = 'pending', prev_state = NULL WHERE id > 3",
        "UPDATE runs SET finished_at = NULL, exit_code = NULL, summary = NULL",
    ] {
        sqlx::query(sql).execute(&mut raw).await.unwrap();
    }
    drop(raw);
    let out = verify(dir.path(), &path, None);
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    // updated_at of the rewound tasks still lies after the records that are left.
    assert!(text.contains("9 records checked") && text.contains("updated_at"), "{text}");
    verify(dir.path(), &path, Some(&cp)).code(1).stdout(
        predicate::str::contains("record 12: missing, the log ends at record 9")
            .and(predicate::str::contains("truncated")),
    );
}

/// seq, at, run_id, task_id, kind, detail, prev_hash
type RawRecord = (i64, String, Option<i64>, Option<i64>, String, String, String);

#[tokio::test]
async fn a_rewritten_history_is_found_against_a_checkpoint() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    let cp = checkpoint(dir.path(), &path);
    // Edit record 4 and recompute every hash from there on, as a careful forger would.
    let mut raw = raw_connection(&path).await;
    let rows: Vec<RawRecord> =
        sqlx::query_as("SELECT seq, at, run_id, task_id, kind, detail, prev_hash FROM audit_log ORDER BY seq")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    drop(raw);
    let mut updates = Vec::new();
    let mut prev = String::new();
    for (seq, at, run_id, task_id, kind, detail, stored_prev) in rows {
        if seq < 4 {
            continue;
        }
        if seq == 4 {
            // Record 3 is untouched: record 4 still links to it.
            prev = stored_prev;
        }
        let detail = if seq == 4 { detail.replace("u2", "mallory") } else { detail };
        let hash = record_hash(&prev, seq, &at, run_id, task_id, &kind, &detail).unwrap();
        updates.push(format!(
            "UPDATE audit_log SET detail = '{}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {seq}",
            detail.replace('\'', "''")
        ));
        prev = hash;
    }
    // The forger edits the table to match the rewritten records.
    updates.push("UPDATE tasks SET user = 'mallory' WHERE user = 'u2'".to_string());
    let updates: Vec<&str> = updates.iter().map(String::as_str).collect();
    tamper(&path, &updates).await;
    verify(dir.path(), &path, None).success().stdout(predicate::str::contains("tables agree with the audit chain"));
    verify(dir.path(), &path, Some(&cp))
        .code(1)
        .stdout(predicate::str::contains("record 12: hash").and(predicate::str::contains("history rewritten")));
}

#[tokio::test]
async fn an_empty_log_verifies_against_the_genesis_checkpoint() {
    let dir = tempdir();
    let path = db_path(dir.path());
    Store::open(&path).await.unwrap().close().await;
    let cp = checkpoint(dir.path(), &path);
    assert_eq!(cp, format!("0:{}", "0".repeat(64)));
    verify(dir.path(), &path, Some(&cp)).success().stdout(predicate::str::contains("0 records checked"));
    verify(dir.path(), &path, Some(&format!("1:{}", "a".repeat(64))))
        .code(1)
        .stdout(predicate::str::contains("truncated"));
}

#[tokio::test]
async fn values_that_are_not_what_was_written_are_named() {
    let dir = tempdir();
    let path = written_db(dir.path()).await;
    // Details may hold any character, the packing separator included.
    let store = Store::open(&path).await.unwrap();
    store.audit_event(Some(1), None, "note", json!({"text": "a|b|7|x|", "n": "\u{e9}"})).await.unwrap();
    store.close().await;
    verify(dir.path(), &path, None).success().stdout(predicate::str::contains("13 records checked"));

    for (n, (edit, found)) in [
        ("run_id = 'abc'", "record 5: malformed, run_id is not an integer"),
        ("task_id = 2.5", "record 5: malformed, task_id is not an integer"),
        ("hash = 'zz'", "record 5: malformed, hash is not 64 hex digits"),
        ("prev_hash = ''", "record 5: malformed, prev_hash is not 64 hex digits"),
        ("detail = x'ff00'", "record 5: hash mismatch"),
    ]
    .into_iter()
    .enumerate()
    {
        let copy = copy_db(&path, &dir.path().join(format!("copy{n}.db")));
        tamper(&copy, &[&format!("UPDATE audit_log SET {edit} WHERE seq = 5")]).await;
        verify(dir.path(), &copy, None).code(1).stdout(predicate::str::contains(found));
    }
}

#[tokio::test]
async fn records_are_checked_across_pages() {
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    let tasks: Vec<_> = (0..12_000).map(|i| new_task("cl-a1", &format!("u{i}"))).collect();
    store.create_run(&new_run(None), &tasks).await.unwrap();
    store.close().await;
    verify(dir.path(), &path, None).success().stdout(predicate::str::contains("12001 records checked"));
    let edited = copy_db(&path, &dir.path().join("edited.db"));
    tamper(&edited, &["UPDATE audit_log SET detail = replace(detail, 'u9000', 'u9001') WHERE seq = 9002"]).await;
    verify(dir.path(), &edited, None).code(1).stdout(predicate::str::contains("record 9002: hash mismatch"));
    tamper(&path, &["DELETE FROM audit_log WHERE seq = 5001"]).await;
    verify(dir.path(), &path, None)
        .code(1)
        .stdout(predicate::str::contains("record 5002: gap in seq, record 5001 is missing"));
}

// ---------------------------------------------------------------------------------------------
// Tables edited behind the product: a real run against the simulator, then the rows a report
// reads are changed with plain SQL, as someone holding the file could.

/// carol on cl-a1 (deleted) and on cl-zz9, a cluster the simulator does not know (2100: failed).
const CAROL: &str = "version: 1
ticket: HR-13
requested_by: alice@example.com
reason: carol left
defaults: {zone: sh1a}
users:
  - user: carol
    clusters: [cl-a1, cl-zz9]
";

struct Carol {
    home: tempfile::TempDir,
    db: PathBuf,
    /// The task that ended `failed`, and the one that ended `deleted`.
    failed: i64,
    deleted: i64,
}

async fn carol_run() -> Carol {
    let sim = crate::helpers::start_sim(crate::helpers::world(
        "clusters: [{id: cl-a1, zone: sh1a, users: ['carol@%']}]\njobs: {pending_ms: 20, working_ms: 20}",
    ))
    .await;
    let home = tempdir();
    let manifest = home.path().join("carol.yaml");
    std::fs::write(&manifest, CAROL).unwrap();
    let db = db_path(home.path());
    qc(home.path())
        .env("QINGCLOUD_ACCESS_KEY", "QYACCESSKEYIDEXAMPLE")
        .env("QINGCLOUD_SECRET_KEY", "SECRETACCESSKEY")
        .env("QINGCLOUD_ENDPOINT", sim.endpoint())
        .arg("--db")
        .arg(&db)
        // Without preflight the unknown cluster reaches the API: its 2100 is the evidence here.
        .args(["run", "--no-progress", "--no-preflight", "--poll-interval", "50ms", "--rate", "50/s"])
        .arg(&manifest)
        .assert()
        .code(1);
    let store = Store::open(&db).await.unwrap();
    let tasks = store.tasks(1).await.unwrap();
    store.close().await;
    let id = |cluster: &str| tasks.iter().find(|t| t.cluster == cluster).unwrap().id;
    let failed = id("cl-zz9");
    assert_eq!(tasks.iter().find(|t| t.id == failed).unwrap().state, TaskState::Failed);
    Carol { failed, deleted: id("cl-a1"), db, home }
}

/// `report --user carol --format json`, by task id.
fn carol_report(home: &Path, db: &Path) -> std::collections::BTreeMap<i64, serde_json::Value> {
    let out = qc(home).args(["report", "--user", "carol", "--format", "json", "--db"]).arg(db).assert().success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    rows.as_array().unwrap().iter().map(|r| (r["task_id"].as_i64().unwrap(), r.clone())).collect()
}

fn html_report(home: &Path, db: &Path) -> String {
    let out = qc(home).args(["report", "--user", "carol", "--format", "html", "--db"]).arg(db).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

/// A copy of carol's database with `sql` applied (foreign keys off, as a raw editor has them).
async fn edited(c: &Carol, name: &str, sql: &[&str]) -> PathBuf {
    let copy = copy_db(&c.db, &c.home.path().join(name));
    let mut raw = raw_connection(&copy).await;
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut raw).await.unwrap();
    for s in sql {
        sqlx::query(s).execute(&mut raw).await.unwrap();
    }
    drop(raw);
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_run_verifies_and_every_row_is_proven() {
    let c = carol_run().await;
    verify(c.home.path(), &c.db, None)
        .success()
        .stdout(predicate::str::contains("audit log intact").and(predicate::str::contains("tables agree")));
    let rows = carol_report(c.home.path(), &c.db);
    assert_eq!(rows.len(), 2);
    for r in rows.values() {
        assert_eq!(r["verified"], json!(true), "{r}");
        assert!(r.get("not_verified").is_none(), "{r}");
    }
    assert_eq!(rows[&c.failed]["outcome"], "failed");
    assert_eq!(rows[&c.failed]["ret_code"], json!(2100));
    let html = html_report(c.home.path(), &c.db);
    assert!(!html.contains("NOT verified"), "an untouched database is proven");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_task_state_is_named_and_not_claimed_as_verified() {
    let c = carol_run().await;
    let sql = format!(
        "UPDATE tasks SET state = 'deleted', finished_at = '2026-01-01T00:00:00.000000Z' WHERE id = {}",
        c.failed
    );
    let db = edited(&c, "state.db", &[&sql]).await;
    verify(c.home.path(), &db, None).code(1).stdout(
        predicate::str::contains(format!(
            "tasks row {}, state: the database says \"deleted\", the audit chain says \"failed\"",
            c.failed
        ))
        .and(predicate::str::contains(format!("tasks row {}, finished_at", c.failed))),
    );
    let rows = carol_report(c.home.path(), &db);
    let row = &rows[&c.failed];
    // The report shows what the chain proves and says where the row disagrees.
    assert_eq!(row["outcome"], "failed", "{row}");
    assert_eq!(row["verified"], json!(false));
    assert!(row["not_verified"].to_string().contains("state: the database says"), "{row}");
    assert_eq!(rows[&c.deleted]["verified"], json!(true), "the untouched task is still proven");
    let html = html_report(c.home.path(), &db);
    assert!(html.contains("NOT verified") && html.contains("1 of 2 NOT verified"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_requester_is_named_and_not_claimed_as_verified() {
    let c = carol_run().await;
    let db = edited(&c, "requester.db", &["UPDATE runs SET requested_by = 'someone-else'"]).await;
    verify(c.home.path(), &db, None).code(1).stdout(predicate::str::contains(
        "runs row 1, requested_by: the database says \"someone-else\", the audit chain says \"alice@example.com\"",
    ));
    for row in carol_report(c.home.path(), &db).values() {
        assert_eq!(row["requested_by"], "alice@example.com", "{row}");
        assert_eq!(row["verified"], json!(false), "{row}");
        assert!(row["not_verified"].to_string().contains("requested_by"), "{row}");
    }
    let table = qc(c.home.path()).args(["report", "--db"]).arg(&db).assert().success();
    let table = String::from_utf8(table.get_output().stdout.clone()).unwrap();
    assert!(table.contains("2 NOT proven by the audit chain"), "{table}");
    // status shows the run's metadata and says it is not proven.
    qc(c.home.path()).args(["status", "1", "--db"]).arg(&db).assert().success().stdout(
        predicate::str::contains("evidence    NOT verified")
            .and(predicate::str::contains("runs row 1, requested_by: the database says \"someone-else\"")),
    );
    qc(c.home.path())
        .args(["status", "1", "--db"])
        .arg(&c.db)
        .assert()
        .success()
        .stdout(predicate::str::contains("evidence    verified: the audit chain is intact and proves every row shown"));
    let out = qc(c.home.path()).args(["status", "--output", "json", "--db"]).arg(&db).assert().success();
    let runs: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(runs[0]["evidence"]["verified"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_api_call_is_named_and_not_claimed_as_verified() {
    let c = carol_run().await;
    let db = edited(&c, "call.db", &["UPDATE api_calls SET ret_code = 0 WHERE ret_code = 2100"]).await;
    let out = verify(c.home.path(), &db, None).code(1);
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.contains("api_calls row") && text.contains("ret_code: the database says 0, the audit chain says 2100"),
        "{text}"
    );
    let rows = carol_report(c.home.path(), &db);
    assert_eq!(rows[&c.failed]["verified"], json!(false));
    let calls = rows[&c.failed]["api_calls"].as_array().unwrap();
    assert!(calls.iter().any(|call| call["ret_code"] == json!(2100)), "the chain's value is shown: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_task_row_is_named_and_still_reported() {
    let c = carol_run().await;
    let db = edited(&c, "deleted.db", &[&format!("DELETE FROM tasks WHERE id = {}", c.failed)]).await;
    verify(c.home.path(), &db, None)
        .code(1)
        .stdout(predicate::str::contains(format!("tasks row {}: missing from the database", c.failed)));
    let rows = carol_report(c.home.path(), &db);
    let row = &rows.get(&c.failed).expect("the chain still knows the task");
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["verified"], json!(false));
    // The roll-up still counts the account, and does not vouch for it.
    let out = qc(c.home.path()).args(["report", "--latest", "--format", "json", "--db"]).arg(&db).assert().success();
    let latest: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let zz = latest.as_array().unwrap().iter().find(|s| s["cluster"] == "cl-zz9").unwrap();
    assert_eq!(zz["outcome"], "failed");
    assert_eq!(zz["verified"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_call_inserted_behind_the_product_is_named() {
    let c = carol_run().await;
    let sql = format!(
        "INSERT INTO api_calls (run_id, task_id, action, params, http_status, ret_code, message, job_id, \
         started_at, latency_ms) VALUES (1, {}, 'RunClusterCustomService', '{{}}', 200, 0, NULL, 'j-forged', \
         '2026-01-01T00:00:00.000000Z', 5)",
        c.failed
    );
    let db = edited(&c, "inserted.db", &[&sql]).await;
    verify(c.home.path(), &db, None)
        .code(1)
        .stdout(predicate::str::contains("not in the audit chain (no api_call record): added outside the product"));
    let rows = carol_report(c.home.path(), &db);
    let row = &rows[&c.failed];
    assert_eq!(row["verified"], json!(false));
    assert!(row["api_calls"].to_string().contains("j-forged"), "shown, and not vouched for: {row}");
    assert_eq!(rows[&c.deleted]["verified"], json!(true));
}
