//! The README's recompute for PostgreSQL, run as an auditor would: the Python block the README
//! gives, fed by `psql`, over a database moved up with `db copy`, prints the same checkpoint as
//! `audit checkpoint`, and stops at an edited record. Skipped (saying so) without
//! `QC_OFFBOARD_TEST_PG`, `python3` or `psql`.

use std::path::Path;
use std::process::Command;

use qc_offboard::store::{Event, Store, TaskChange};
use serde_json::json;
use sqlx::Executor;

use crate::helpers::{db_path, new_run, new_task, qc, tempdir};
use crate::pg_db::TestDb;

/// The README's Python block that starts with `import hashlib, os, struct, subprocess, sys`.
fn readme_recompute() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start =
        readme.find("```python\nimport hashlib, os, struct, subprocess, sys").expect("the block is in the README");
    let body = &readme[start + "```python\n".len()..];
    body[..body.find("```").unwrap()].to_owned()
}

fn available(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).output().is_ok_and(|o| o.status.success())
}

fn recompute(url: &str) -> std::process::Output {
    Command::new("python3").args(["-c", &readme_recompute(), url]).output().expect("python3 runs")
}

async fn written(dir: &Path) -> std::path::PathBuf {
    let path = db_path(dir);
    let store = Store::open(&path).await.unwrap();
    let run =
        store.create_run(&new_run(Some("HR-9")), &[new_task("cl-a1", "bob"), new_task("cl-b2", "zoë")]).await.unwrap();
    for t in store.tasks(run).await.unwrap() {
        store.step(t.id, Event::DoneElsewhere, &TaskChange::new().message("é ✓"), json!({})).await.unwrap().unwrap();
    }
    store.finish_run(run, 0, json!({"skipped": 2})).await.unwrap();
    store.close().await;
    path
}

#[tokio::test]
async fn the_readmes_recompute_checks_a_postgres_chain() {
    let Some(pg) = TestDb::create("the_readmes_recompute_checks_a_postgres_chain").await else { return };
    if !available("python3", "--version") || !available("psql", "--version") {
        println!("skipped: python3 or psql is not installed");
        return;
    }
    let dir = tempdir();
    let src = written(dir.path()).await;
    qc(dir.path())
        .args(["db", "copy", "--from", &format!("sqlite:{}", src.display()), "--to", &pg.url])
        .assert()
        .success();
    let cp = qc(dir.path()).args(["audit", "checkpoint", "--db"]).arg(&src).assert().success();
    let checkpoint = String::from_utf8(cp.get_output().stdout.clone()).unwrap().trim().to_owned();

    let out = recompute(&pg.url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), checkpoint);

    // Someone holding the database edits record 4 past its trigger: the recompute stops there.
    let mut raw = pg.raw().await;
    raw.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update").await.unwrap();
    raw.execute("UPDATE audit_log SET detail = replace(detail, 'bob', 'eve') WHERE seq = 4").await.unwrap();
    let out = recompute(&pg.url);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("record 4: edited"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
