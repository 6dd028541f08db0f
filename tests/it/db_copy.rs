//! `db copy` through the real binary: an SQLite database written by the store moves up to a
//! PostgreSQL database with its chain and checkpoint intact; a second copy, a broken source, a
//! missing source and malformed arguments are refused with their exit codes and nothing written;
//! a password in the URL is never printed; `--db postgres://…` on a command that writes is
//! refused instead of becoming a file. The PostgreSQL cases skip (saying so) without
//! `QC_OFFBOARD_TEST_PG`.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use qc_offboard::store::{Event, Store, TaskChange};
use serde_json::json;

use crate::helpers::{db_path, new_run, new_task, qc, raw_connection, tempdir};
use crate::pg_db::TestDb;

/// An SQLite database of two runs: 3 tasks deleted or skipped, API calls, a finished run.
async fn written(dir: &Path) -> PathBuf {
    let path = db_path(dir);
    let store = Store::open(&path).await.unwrap();
    let run =
        store.create_run(&new_run(Some("HR-1")), &[new_task("cl-a1", "bob"), new_task("cl-b2", "bob")]).await.unwrap();
    for t in store.tasks(run).await.unwrap() {
        store.step(t.id, Event::DoneElsewhere, &TaskChange::new(), json!({})).await.unwrap().unwrap();
    }
    store.finish_run(run, 0, json!({"skipped": 2})).await.unwrap();
    let run2 = store.create_run(&new_run(Some("HR-2")), &[new_task("cl-c3", "carol")]).await.unwrap();
    let id = store.tasks(run2).await.unwrap()[0].id;
    store.step(id, Event::Intent, &TaskChange::new().increment_attempts(), json!({})).await.unwrap().unwrap();
    store.step(id, Event::Accepted, &TaskChange::new().job_id("j-1"), json!({})).await.unwrap().unwrap();
    store.step(id, Event::Succeeded, &TaskChange::new(), json!({})).await.unwrap().unwrap();
    store.close().await;
    path
}

fn sqlite_arg(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

/// The URL with a password in it (trust authentication ignores it), to prove it is never shown.
fn with_password(url: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_password(Some("s3cret-pw")).unwrap();
    u.to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn a_database_moves_up_with_its_chain_and_checkpoint() {
    let Some(pg) = TestDb::create("a_database_moves_up_with_its_chain_and_checkpoint").await else { return };
    let dir = tempdir();
    let src = written(dir.path()).await;
    let cp = qc(dir.path()).args(["audit", "checkpoint", "--db"]).arg(&src).assert().success();
    let checkpoint = text(&cp.get_output().stdout).trim().to_owned();

    let url = with_password(&pg.url);
    let out = qc(dir.path()).args(["db", "copy", "--from", &sqlite_arg(&src), "--to", &url]).assert().success();
    let (stdout, stderr) = (text(&out.get_output().stdout), text(&out.get_output().stderr));
    assert!(stdout.contains(&format!("tip {checkpoint}")), "{stdout}");
    assert!(stdout.contains("tasks                    3 rows"), "{stdout}");
    assert!(!stdout.contains("s3cret-pw") && !stderr.contains("s3cret-pw"), "{stdout}{stderr}");

    // The chain on PostgreSQL verifies, to the same tip, record for record.
    let target = pg.open().await;
    let v = target.verify_audit(None).await.unwrap();
    assert!(v.is_intact(), "{:?}", v.problem);
    assert_eq!(v.tip.to_string(), checkpoint);
    let store = Store::open_existing(&src).await.unwrap();
    assert_eq!(target.audit_len().await.unwrap(), store.audit_len().await.unwrap());
    store.close().await;

    // A second copy into it is refused (78) and writes nothing.
    let before = target.audit_len().await.unwrap();
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&src), "--to", &url])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("already holds").and(predicate::str::contains("s3cret-pw").not()));
    assert_eq!(target.audit_len().await.unwrap(), before);
    target.close().await;
}

#[tokio::test]
async fn a_broken_source_is_not_carried_over() {
    let Some(pg) = TestDb::create("a_broken_source_is_not_carried_over").await else { return };
    let dir = tempdir();
    let src = written(dir.path()).await;
    let mut raw = raw_connection(&src).await;
    sqlx::query("DROP TRIGGER audit_log_no_update").execute(&mut raw).await.unwrap();
    sqlx::query("UPDATE audit_log SET detail = replace(detail, 'bob', 'eve') WHERE seq = 2")
        .execute(&mut raw)
        .await
        .unwrap();
    drop(raw);
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&src), "--to", &pg.url])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not verify"));
    // Refused before the target was opened: not even the schema was made there.
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&mut pg.raw().await)
        .await
        .unwrap();
    assert_eq!(tables, 0, "the refused copy created tables");
}

/// Rows edited behind the product, with the chain intact, are what `audit verify` finds; the
/// copy finds them too and carries nothing over (exit 1, as `audit verify`).
#[tokio::test]
async fn edited_rows_are_not_carried_over() {
    let Some(pg) = TestDb::create("edited_rows_are_not_carried_over").await else { return };
    let dir = tempdir();
    let src = written(dir.path()).await;
    let mut raw = raw_connection(&src).await;
    sqlx::query("UPDATE runs SET requested_by = 'mallory' WHERE id = 1").execute(&mut raw).await.unwrap();
    drop(raw);
    qc(dir.path()).args(["db", "copy", "--from", &sqlite_arg(&src), "--to", &pg.url]).assert().code(1).stderr(
        predicate::str::contains("do not agree with its audit chain").and(predicate::str::contains("runs row 1")),
    );
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&mut pg.raw().await)
        .await
        .unwrap();
    assert_eq!(tables, 0);
}

/// A target holding nothing but a run lock (or quota state) is not empty: refused, 78.
#[tokio::test]
async fn a_target_with_a_stray_run_lock_is_not_empty() {
    let Some(pg) = TestDb::create("a_target_with_a_stray_run_lock_is_not_empty").await else { return };
    let dir = tempdir();
    let src = written(dir.path()).await;
    let target = pg.open().await;
    target.close().await;
    sqlx::query("INSERT INTO run_lock (id, run_id, pid, host, started_at) VALUES (1, 1, 999999, 'evil', now())")
        .execute(&mut pg.raw().await)
        .await
        .unwrap();
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&src), "--to", &pg.url])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("already holds data"));
}

#[tokio::test]
async fn what_cannot_be_copied_is_refused_before_anything_is_written() {
    let dir = tempdir();
    // A source that does not exist: 78, and no file is made.
    let missing = dir.path().join("nope.db");
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&missing), "--to", "postgres://root@127.0.0.1:1/none"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("no database at"));
    assert!(!missing.exists());
    // Arguments in the wrong form: clap's usage error.
    qc(dir.path()).args(["db", "copy", "--from", "/tmp/x.db", "--to", "postgres://h/d"]).assert().code(2);
    qc(dir.path())
        .args(["db", "copy", "--from", "sqlite:/tmp/x.db", "--to", "postgress://u:s3cret-pw@h/d"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("postgres://").and(predicate::str::contains("s3cret-pw").not()));
    // A server that does not answer: 69, the password not shown.
    let src = written(dir.path()).await;
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&src), "--to", "postgres://root:s3cret-pw@127.0.0.1:1/none"])
        .assert()
        .code(69)
        .stderr(predicate::str::contains("cannot connect").and(predicate::str::contains("s3cret-pw").not()));
}

#[test]
fn a_postgres_url_as_db_is_never_made_a_file() {
    let dir = tempdir();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/example.yaml");
    // The commands that work on PostgreSQL go to the server (none answers on port 1: 69)...
    for args in [
        vec!["--db", "postgres://root:s3cret-pw@127.0.0.1:1/test", "resume", "--simulate"],
        vec!["--db", "postgresql://root@127.0.0.1:1/test", "retry", "1", "--simulate"],
        vec!["--db", "postgres://root@127.0.0.1:1/test", "run", example, "--simulate"],
        vec!["--db", "POSTGRES://root:s3cret-pw@127.0.0.1:1/test", "resume", "--simulate"],
    ] {
        qc(dir.path())
            .current_dir(dir.path())
            .args(&args)
            .assert()
            .code(69)
            .stderr(predicate::str::contains("cannot connect").and(predicate::str::contains("s3cret-pw").not()));
    }
    // QC_OFFBOARD_DB too; `doctor` says in its findings that the database cannot be used.
    qc(dir.path())
        .current_dir(dir.path())
        .env("QC_OFFBOARD_DB", "postgres://root:s3cret-pw@127.0.0.1:1/test")
        .args(["doctor", "--simulate"])
        .assert()
        .code(78)
        .stdout(predicate::str::contains("cannot connect").and(predicate::str::contains("s3cret-pw").not()));
    assert!(!dir.path().join("postgres:").exists(), "no file was made from the URL");
    assert!(!dir.path().join("postgresql:").exists());
}

/// A database URL may carry a password: `--help` names the variable but never shows its value.
#[test]
fn help_never_shows_the_database_url() {
    let dir = tempdir();
    for args in [vec!["--help"], vec!["status", "--help"], vec!["run", "--help"]] {
        let out =
            qc(dir.path()).env("QC_OFFBOARD_DB", "postgres://u:s3cret-pw@db.internal/x").args(&args).assert().success();
        let stdout = text(&out.get_output().stdout);
        assert!(!stdout.contains("s3cret-pw") && !stdout.contains("db.internal"), "{args:?}: {stdout}");
        if args.len() > 1 {
            assert!(stdout.contains("QC_OFFBOARD_DB"), "{stdout}");
        }
    }
}

/// A run that still holds the source (a live process) is not copied mid-flight: exit 73, before
/// the target is even opened.
#[tokio::test]
async fn a_database_a_live_run_holds_is_not_copied() {
    let dir = tempdir();
    let src = written(dir.path()).await;
    let store = Store::open(&src).await.unwrap();
    let run = store.runs().await.unwrap()[0].id;
    let host = qc_offboard::store::this_host();
    store.acquire_lock(run, i64::from(std::process::id()), &host).await.unwrap();
    store.close().await;
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&src), "--to", "postgres://root@127.0.0.1:1/none"])
        .assert()
        .code(73)
        .stderr(predicate::str::contains("holds the source: copy it once that run has ended"));
    // The same lock left by a run whose process is gone (killed): 73, saying how to clear it.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = i64::from(gone.id());
    gone.wait().unwrap();
    let store = Store::open(&src).await.unwrap();
    store.release_lock(run).await.unwrap();
    store.acquire_lock(run, dead_pid, &host).await.unwrap();
    store.close().await;
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&src), "--to", "postgres://root@127.0.0.1:1/none"])
        .assert()
        .code(73)
        .stderr(predicate::str::contains("is gone").and(predicate::str::contains("qc-offboard resume")));
}

/// SQLite allows what an abandoned run can leave behind, two live tasks on one cluster; the
/// PostgreSQL schema does not. The copy says so as invalid data (65), and writes nothing.
#[tokio::test]
async fn two_live_tasks_on_one_cluster_are_refused_as_data() {
    let Some(pg) = TestDb::create("two_live_tasks_on_one_cluster_are_refused_as_data").await else { return };
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    let run = store.create_run(&new_run(None), &[new_task("cl-a1", "alice"), new_task("cl-a1", "bob")]).await.unwrap();
    for t in store.tasks(run).await.unwrap() {
        store.step(t.id, Event::Intent, &TaskChange::new(), json!({})).await.unwrap().unwrap();
    }
    store.close().await;
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&path), "--to", &pg.url])
        .assert()
        .code(65)
        .stderr(predicate::str::contains("two tasks live"));
    let target = pg.open().await;
    assert_eq!(target.audit_len().await.unwrap(), 0, "nothing was copied");
    target.close().await;
}

/// A URL given where it does not belong — the wrong option, a missing `--db`, an option's value
/// that is checked — is quoted in the error without its password; a URL with spaces around it,
/// or of another shape, is never taken for a file.
#[test]
fn a_url_in_the_wrong_place_never_shows_its_password_nor_becomes_a_file() {
    let dir = tempdir();
    let url = "postgres://root:S3cret-pw@127.0.0.1:1/x";
    for args in [
        vec!["db", "copy", "--from", url, "--to", url],
        vec!["status", url],
        vec!["db", "copy", "--from", "sqlite:a.db", "--to", url, url],
        vec!["audit", "verify", "--checkpoint", url],
    ] {
        let out = qc(dir.path()).current_dir(dir.path()).args(&args).assert().failure();
        let all = format!("{}{}", text(&out.get_output().stdout), text(&out.get_output().stderr));
        assert!(!all.contains("S3cret-pw"), "{args:?}: {all}");
    }
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/example.yaml");
    for db in [" postgres://root:S3cret-pw@127.0.0.1:1/x", "pg://root:S3cret-pw@h/x", "postgres:S3cret-pw"] {
        let out =
            qc(dir.path()).current_dir(dir.path()).args(["--db", db, "run", example, "--simulate"]).assert().failure();
        let all = format!("{}{}", text(&out.get_output().stdout), text(&out.get_output().stderr));
        assert!(!all.contains("S3cret-pw"), "{db:?}: {all}");
    }
    let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(made.iter().all(|n| !n.to_string_lossy().contains("S3cret")), "{made:?}");
    assert!(!dir.path().join(" postgres:").exists() && !dir.path().join("pg:").exists());
}

/// A value PostgreSQL cannot hold unchanged (here a NUL byte in a run's reason, which SQLite
/// keeps) is invalid data (65) naming the table, not a busy database or a bug.
#[tokio::test]
async fn a_value_postgres_cannot_hold_is_invalid_data() {
    let Some(pg) = TestDb::create("a_value_postgres_cannot_hold_is_invalid_data").await else { return };
    let dir = tempdir();
    let path = db_path(dir.path());
    let store = Store::open(&path).await.unwrap();
    let mut run = new_run(None);
    run.reason = Some("left\u{0}the company".into());
    store.create_run(&run, &[new_task("cl-a1", "bob")]).await.unwrap();
    store.close().await;
    qc(dir.path())
        .args(["db", "copy", "--from", &sqlite_arg(&path), "--to", &pg.url])
        .assert()
        .code(65)
        .stderr(predicate::str::contains("runs holds a value that cannot be carried over"));
    let target = pg.open().await;
    assert_eq!(target.audit_len().await.unwrap(), 0, "nothing was copied");
    target.close().await;
}
