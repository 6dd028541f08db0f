//! How a run ends, for machines: `--output json`, the `run_finished` log event, the metrics file
//! and the healthcheck pings. The real binary against the simulator (the runner's `Rig`).

use serde_json::Value;

use crate::runner::{code, manifest_text, run_calls, text, Rig};

/// The one JSON object on stdout.
fn result_of(stdout: &[u8]) -> Value {
    let s = text(stdout);
    let mut lines = s.lines();
    let v: Value = serde_json::from_str(lines.next().expect("a line on stdout")).expect("JSON on stdout");
    assert_eq!(lines.next(), None, "one object only: {s}");
    v
}

/// The `run_finished` event among the JSON log lines on stderr.
fn run_finished(stderr: &[u8]) -> Value {
    text(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "run_finished")
        .unwrap_or_else(|| panic!("no run_finished event in {}", text(stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_json_and_run_finished_carry_counts_failures_and_calls() {
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10, fail_rate: 1.0}\n";
    let rig = Rig::new(world_yaml, &manifest_text(1, 2, &["sh1a"])).await;
    let out = rig.run(&["--output", "json", "--max-attempts", "1", "--log-format", "json"]).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let v = result_of(&out.stdout);
    assert_eq!(v["run_id"], 1, "{v}");
    assert_eq!(v["exit_code"], 1, "{v}");
    assert_eq!(v["tasks"], 2, "{v}");
    let counts = &v["counts"];
    for (outcome, n) in
        [("failed", 2), ("deleted", 0), ("absent", 0), ("skipped", 0), ("pending", 0), ("in_flight", 0), ("not_due", 0)]
    {
        assert_eq!(counts[outcome], n, "{outcome}: {v}");
    }
    assert_eq!(counts["handed_over"], 0, "{v}");
    let failed = v["failed"].as_array().expect("failed accounts");
    assert_eq!(failed.len(), 2, "{v}");
    for f in failed {
        assert_eq!(f["cluster"], "cl-t000", "{f}");
        assert_eq!(f["zone"], "sh1a", "{f}");
        assert!(f["user"].as_str().is_some_and(|u| u.starts_with("u0x")), "{f}");
        assert!(!f["reason"].as_str().unwrap_or_default().is_empty(), "a reason: {f}");
    }
    assert!(v["duration_s"].as_f64().is_some_and(|d| d > 0.0), "{v}");
    let sent = run_calls(&rig.stats());
    assert_eq!(v["api_calls"]["by_action"]["RunClusterCustomService"], sent, "{v}");
    assert!(v["api_calls"]["by_action"]["DescribeJobs"].as_u64() > Some(0), "{v}");
    let total: u64 = v["api_calls"]["by_action"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    assert_eq!(v["api_calls"]["total"], total, "{v}");

    let event = run_finished(&out.stderr);
    let fields = &event["fields"];
    for key in ["run_id", "exit_code", "failed", "deleted", "pending", "in_flight", "api_calls", "quota_exceeded"] {
        assert!(fields[key].is_u64(), "{key} is a number: {event}");
    }
    assert_eq!(fields["failed"], 2, "{event}");
    assert_eq!(fields["exit_code"], 1, "{event}");
    assert_eq!(fields["api_calls"], v["api_calls"]["total"], "{event}");
    assert!(fields["duration_s"].is_f64(), "{event}");
    let by_action: Value = serde_json::from_str(fields["api_calls_by_action"].as_str().expect("text")).unwrap();
    assert_eq!(by_action, v["api_calls"]["by_action"], "{event}");

    // `retry` keeps stdout to the one object too (its first line goes to stderr).
    let out =
        Rig::output(rig.cmd(&["retry", "1", "--output", "json", "--max-attempts", "1", "--poll-interval", "50ms"]))
            .await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let v = result_of(&out.stdout);
    assert_eq!((v["run_id"].as_i64(), v["counts"]["failed"].as_u64()), (Some(2), Some(2)), "{v}");
    assert!(text(&out.stderr).contains("run 2 retries the 2 failed task(s) of run 1"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_json_of_a_clean_run_and_of_resume() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(2, 2, &["sh1a"])).await;
    let out = rig.run(&["--output", "json"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let v = result_of(&out.stdout);
    assert_eq!((v["counts"]["deleted"].as_u64(), v["exit_code"].as_u64()), (Some(4), Some(0)), "{v}");
    assert_eq!(v["failed"], serde_json::json!([]), "{v}");
    assert_eq!(v["api_calls"]["by_action"]["RunClusterCustomService"], 4, "{v}");
    // Nothing to resume: stdout stays empty, the note goes to stderr.
    let out = rig.resume(&["--output", "json"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("no unfinished run to resume"), "{}", text(&out.stderr));
}
