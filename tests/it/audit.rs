//! The audit log's tamper evidence: someone holding the database file drops the triggers and
//! edits, deletes, swaps or truncates records; `audit verify` (the real binary) finds each.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use qc_offboard::store::{record_hash, Checkpoint, Store, TaskChange, TaskState};
use serde_json::json;

use crate::helpers::{db_path, new_run, new_task, qc, raw_connection, tempdir};

/// A database with 12 audit records: run_started, 5 task_created, 5 task_state, run_finished.
async fn written_db(dir: &Path) -> PathBuf {
    let path = db_path(dir);
    let store = Store::open(&path).await.unwrap();
    let tasks: Vec<_> = (0..5).map(|i| new_task("cl-a1", &format!("u{i}"))).collect();
    let run_id = store.create_run(&new_run(Some("HR-4711")), &tasks).await.unwrap();
    for t in store.tasks(run_id).await.unwrap() {
        store.transition(t.id, &[TaskState::Pending], TaskState::Deleted, &TaskChange::new(), json!({})).await.unwrap();
    }
    store.finish_run(run_id, 0, json!({"deleted": 5})).await.unwrap();
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
    // The shortened chain is internally consistent: only the checkpoint kept elsewhere shows it.
    verify(dir.path(), &path, None).success().stdout(predicate::str::contains("9 records checked"));
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
    let updates: Vec<&str> = updates.iter().map(String::as_str).collect();
    tamper(&path, &updates).await;
    verify(dir.path(), &path, None).success();
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
