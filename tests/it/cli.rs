//! What people read from the `validate` and `plan` commands: help texts and plan output,
//! snapshotted. "Today" is frozen with `QC_OFFBOARD_TODAY` so `not_before` states are stable.

use std::path::Path;

use crate::helpers::{qc, tempdir};

fn stdout_of(args: &[&str]) -> String {
    let home = tempdir();
    let out = qc(home.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QC_OFFBOARD_TODAY", "2030-11-30")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help() {
    insta::assert_snapshot!("help", stdout_of(&["--help"]));
}

#[test]
fn plan_help() {
    insta::assert_snapshot!("plan_help", stdout_of(&["plan", "--help"]));
}

#[test]
fn run_help() {
    let text = stdout_of(&["run", "--help"]);
    // Every flag with an environment variable says so (help wraps lines: compare words).
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for env in ["QINGCLOUD_ENDPOINT", "QINGCLOUD_CONFIG", "QC_OFFBOARD_RATE", "QC_OFFBOARD_PING_URL", "QC_OFFBOARD_DB"]
    {
        // Secret-bearing variables show their name only (`hide_env_values`).
        let shown = words.contains(&format!("[env: {env}=]")) || words.contains(&format!("[env: {env}]"));
        assert!(shown, "{env} missing from run --help");
    }
    insta::assert_snapshot!("run_help", text);
}

#[test]
fn plan_example_human() {
    insta::assert_snapshot!("plan_example_human", stdout_of(&["plan", "manifests/example.yaml"]));
}

#[test]
fn plan_example_json() {
    let text = stdout_of(&["plan", "manifests/example.yaml", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["tasks"].as_array().unwrap().len(), 13);
    for t in v["tasks"].as_array().unwrap() {
        for key in ["cluster", "zone", "user", "host", "state"] {
            assert!(t[key].is_string(), "{key} in {t}");
        }
    }
    assert!(v["estimate"]["api_calls"].as_u64().unwrap() > 12);
    insta::assert_snapshot!("plan_example_json", text);
}

#[test]
fn plan_marks_entries_not_yet_due() {
    let early = stdout_of(&["plan", "manifests/nightly-cleanup.yaml", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&early).unwrap();
    assert_eq!(v["counts"]["not_due"], 2, "{early}");
    // On a later day every entry is due.
    let home = tempdir();
    let out = qc(home.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QC_OFFBOARD_TODAY", "2031-04-01")
        .args(["plan", "manifests/nightly-cleanup.yaml", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["counts"]["pending"].as_u64(), v["counts"]["not_due"].as_u64()), (Some(6), Some(0)));
}

#[test]
fn plan_rate_changes_the_estimate() {
    let slow = stdout_of(&["plan", "manifests/offboard-bob.yaml", "--output", "json"]);
    let fast = stdout_of(&["plan", "manifests/offboard-bob.yaml", "--output", "json", "--rate", "50/s"]);
    let s: serde_json::Value = serde_json::from_str(&slow).unwrap();
    let f: serde_json::Value = serde_json::from_str(&fast).unwrap();
    assert_eq!(f["rate"], "50/s");
    assert!(s["estimate"]["duration_s"].as_u64() > f["estimate"]["duration_s"].as_u64());
}

#[test]
fn plan_refuses_invalid_manifests_with_65() {
    let dir = tempdir();
    let p = dir.path().join("m.yaml");
    std::fs::write(&p, "version: 1\nclusters: [{id: cl-a, zone: sh1a, users: [root]}]\n").unwrap();
    let out = qc(dir.path()).arg("plan").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:2:43: user \"root\" is protected", p.display())));
}

#[test]
fn validate_prints_one_line_per_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = tempdir();
    let out = qc(home.path())
        .current_dir(root)
        .args(["validate", "manifests/example.yaml", "manifests/nightly-cleanup.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "manifests/example.yaml: ok: 13 tasks, 3 clusters, 2 zones, 10 accounts\n\
         manifests/nightly-cleanup.yaml: ok: 6 tasks, 3 clusters, 2 zones, 6 accounts\n"
    );
}

const COMMANDS: [&str; 13] = [
    "validate",
    "plan",
    "run",
    "resume",
    "retry",
    "status",
    "report",
    "audit",
    "sim",
    "doctor",
    "completions",
    "man",
    "schema",
];

#[test]
fn completions_name_every_command_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let text = stdout_of(&["completions", shell]);
        assert!(text.contains("qc-offboard"), "{shell}: {text}");
        for command in COMMANDS {
            assert!(text.contains(command), "{shell} completion lacks {command}");
        }
        // Options of commands are completed too.
        assert!(text.contains("max-in-flight"), "{shell} completion lacks run's options");
    }
    let home = tempdir();
    let out = qc(home.path()).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_for_the_program_and_each_command() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH qc-offboard 1"), "{page}");
    for command in COMMANDS {
        assert!(page.contains(&format!("qc\\-offboard\\-{}(1)", command.replace('-', "\\-"))), "{command} missing");
    }
    let run = stdout_of(&["man", "run"]);
    assert!(run.contains(".TH qc-offboard-run 1"), "{run}");
    assert!(run.contains("\\-\\-max\\-in\\-flight"), "{run}");
    let home = tempdir();
    let out = qc(home.path()).args(["man", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command \"nope\""));
}

#[test]
fn a_dash_reads_the_manifest_from_standard_input() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("manifests/example.yaml")).unwrap();
    let home = tempdir();
    let out = qc(home.path()).args(["validate", "-"]).write_stdin(text.clone()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "-: ok: 13 tasks, 3 clusters, 2 zones, 10 accounts\n");
    let out = qc(home.path())
        .env("QC_OFFBOARD_TODAY", "2030-11-30")
        .args(["plan", "-", "--output", "json"])
        .write_stdin(text)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"].as_array().unwrap().len(), 13);
    // Errors point into standard input; `-` twice is refused.
    let bad = "version: 1\nclusters: [{id: cl-a, zone: sh1a, users: [root]}]\n";
    let out = qc(home.path()).args(["validate", "-"]).write_stdin(bad).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-:2:43: user \"root\" is protected"));
    let out = qc(home.path()).args(["validate", "-", "-"]).write_stdin(bad).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only once"), "{}", String::from_utf8_lossy(&out.stderr));
}
