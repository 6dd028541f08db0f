//! Who ran it and where it is on record: the operator recorded with every run, from `--operator`
//! or the system user database (cron and systemd give no `$USER`), and the simulator's own
//! database that `status`/`report --simulate` read.

use serde_json::Value;

use crate::runner::{code, manifest_text, text, Rig};

/// The evidence rows of one user (they name the run's operator).
async fn evidence_of(rig: &Rig, user: &str) -> Vec<Value> {
    let out = Rig::output(rig.cmd(&["report", "--user", user, "--format", "json"])).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_flag_is_recorded_and_shown() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(1, 2, &["sh1a"])).await;
    let out = rig.run(&["--operator", "alice"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let status = Rig::output(rig.cmd(&["status", "1"])).await;
    assert!(text(&status.stdout).contains(" by alice on "), "{}", text(&status.stdout));
    let rows = evidence_of(&rig, "u0x0").await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["operator"], "alice", "{rows:#?}");
    // The environment variable does the same.
    std::fs::write(&rig.manifest, manifest_text(1, 3, &["sh1a"])).expect("manifest");
    let mut cmd = rig.run_cmd(&[]);
    cmd.env("QC_OFFBOARD_OPERATOR", "bob");
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let rows = evidence_of(&rig, "u0x2").await;
    assert_eq!((rows[0]["run_id"].as_i64(), rows[0]["operator"].as_str()), (Some(2), Some("bob")), "{rows:#?}");
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{}", text(&verify.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flag_or_user_the_system_login_name_is_recorded() {
    let expected = uzers::get_current_username().and_then(|n| n.into_string().ok()).expect("this user has a name");
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(1, 1, &["sh1a"])).await;
    // The rig's environment has no USER and no LOGNAME.
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let rows = evidence_of(&rig, "u0x0").await;
    assert_eq!(rows[0]["operator"], Value::from(expected.clone()), "{rows:#?}");
    assert_ne!(rows[0]["operator"], "unknown");
    let status = Rig::output(rig.cmd(&["status", "1"])).await;
    assert!(text(&status.stdout).contains(&format!(" by {expected} on ")), "{}", text(&status.stdout));
    // The user database wins over an environment that says otherwise.
    std::fs::write(&rig.manifest, manifest_text(1, 2, &["sh1a"])).expect("manifest");
    let mut cmd = rig.run_cmd(&[]);
    cmd.env("USER", "someone-else").env("LOGNAME", "someone-else");
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let rows = evidence_of(&rig, "u0x1").await;
    assert_eq!(rows[0]["operator"], Value::from(expected), "{rows:#?}");
}

#[test]
fn status_and_report_read_the_simulators_database_with_simulate() {
    let home = crate::helpers::tempdir();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join("manifests/offboard-bob.yaml");
    let out = crate::helpers::qc(home.path())
        .args(["run", "--simulate", "--no-progress", "--operator", "rehearsal"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The real database was never made: plain `status` has nothing to read.
    let out = crate::helpers::qc(home.path()).args(["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    let out = crate::helpers::qc(home.path()).args(["status", "--simulate", "--output", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let runs: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs:#}");
    assert_eq!(runs[0]["simulated"], true, "{runs:#}");
    let out = crate::helpers::qc(home.path())
        .args(["report", "--simulate", "--format", "json", "--user", "bob"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let rows = rows.as_array().expect("rows");
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["operator"] == "rehearsal" && r["outcome"] == "deleted"), "{rows:#?}");
}

/// `qc-offboard report | head`: the reader closes the pipe before the report is written. That
/// is no error and no bug: the command ends quietly with 0 (it exited 70, "this is a bug").
#[test]
fn a_reader_that_stops_early_ends_the_report_quietly() {
    let home = crate::helpers::tempdir();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = crate::helpers::qc(home.path())
        .args(["run", "--simulate", "--no-progress"])
        .arg(root.join("manifests/example.yaml"))
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out.stderr));
    let commands: [&[&str]; 8] = [
        &["report", "--simulate", "--format", "table"],
        &["report", "--simulate", "--format", "csv"],
        &["report", "--simulate", "--format", "json"],
        &["status", "--simulate"],
        &["status", "1", "--simulate"],
        &["audit", "verify", "--db", "sim-audit.db"],
        &["audit", "checkpoint", "--db", "sim-audit.db"],
        &["status", "--simulate", "--output", "json"],
    ];
    let sim_db = home.path().join(".local/share/qc-offboard");
    for args in commands {
        let format = args.join(" ");
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"))
            .env_clear()
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join(".local/share"))
            .env("RUST_BACKTRACE", "0")
            .current_dir(&sim_db)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the report is written: every write meets a closed pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(!stderr.contains("bug") && !stderr.contains("panicked"), "{format}: {stderr}");
    }
    // A full disk under the output is an error with the exit code of a full disk (75), not a
    // panic or "a bug".
    let full = std::fs::File::create("/dev/full");
    if let Ok(full) = full {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"))
            .env_clear()
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join(".local/share"))
            .env("RUST_BACKTRACE", "0")
            .args(["status", "1", "--simulate"])
            .stdout(full)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{stderr}");
        assert!(!stderr.contains("bug") && !stderr.contains("panicked"), "{stderr}");
    }
}
