//! How a run ends, for machines: `--output json`, the `run_finished` log event, the metrics file
//! and the healthcheck pings. The real binary against the simulator (the runner's `Rig`).

use serde_json::Value;

use crate::helpers::ping_listener;
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

/// The families and samples of a textfile, as the Prometheus client's own parser reads them:
/// `None` (and a "skipped" line) when Python or `prometheus_client` is not installed.
pub(crate) fn parse_with_prometheus_client(path: &std::path::Path) -> Option<Value> {
    const SCRIPT: &str = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = {}\n\
        for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   out[f.name] = {'type': f.type, 'help': f.documentation,\n\
        \x20       'samples': [{'name': s.name, 'labels': s.labels, 'value': s.value} for s in f.samples]}\n\
        print(json.dumps(out))\n";
    let probe = std::process::Command::new("python3").args(["-c", "import prometheus_client"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("skipped: python3 with prometheus_client is not installed (.ci/run installs it)");
        return None;
    }
    let out = std::process::Command::new("python3").args(["-c", SCRIPT]).arg(path).output().expect("python3 runs");
    assert!(out.status.success(), "the parser refused the file: {}", text(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).expect("parser output"))
}

pub(crate) fn sample(families: &Value, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"].as_array()?.iter().find_map(|s| {
        let all = labels.iter().all(|(k, v)| s["labels"][*k] == *v);
        all.then(|| s["value"].as_f64()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_file_is_a_valid_textfile_with_the_runs_numbers() {
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10, fail_rate: 1.0}\n";
    let rig = Rig::new(world_yaml, &manifest_text(1, 2, &["sh1a"])).await;
    let dir = rig.home.path().join("textfile");
    std::fs::create_dir_all(&dir).expect("folder");
    let path = dir.join("qc-offboard.prom");
    let before = chrono::Utc::now().timestamp();
    let out = rig.run(&["--output", "json", "--max-attempts", "1", "--metrics-file", path.to_str().unwrap()]).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let result = result_of(&out.stdout);
    let body = std::fs::read_to_string(&path).expect("the metrics file is written");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["qc-offboard.prom"], "no temporary file stays");
    for family in [
        "qc_offboard_last_run_timestamp_seconds",
        "qc_offboard_last_run_exit_code",
        "qc_offboard_tasks",
        "qc_offboard_api_calls_total",
        "qc_offboard_run_duration_seconds",
        "qc_offboard_quota_exceeded_total",
    ] {
        assert!(body.contains(&format!("# HELP {family} ")), "{family}: {body}");
        assert!(body.contains(&format!("# TYPE {family} gauge")), "{family}: {body}");
    }
    assert!(body.contains("\nqc_offboard_tasks{outcome=\"failed\"} 2\n"), "{body}");
    let Some(families) = parse_with_prometheus_client(&path) else { return };
    assert_eq!(sample(&families, "qc_offboard_last_run_exit_code", &[]), Some(1.0), "{families}");
    let ts = sample(&families, "qc_offboard_last_run_timestamp_seconds", &[]).expect("timestamp");
    assert!(ts >= before as f64 && ts <= chrono::Utc::now().timestamp() as f64 + 1.0, "{ts}");
    assert_eq!(sample(&families, "qc_offboard_tasks", &[("outcome", "failed")]), Some(2.0));
    assert_eq!(sample(&families, "qc_offboard_tasks", &[("outcome", "deleted")]), Some(0.0));
    let sent = result["api_calls"]["by_action_and_ret_code"]["RunClusterCustomService"]["0"].as_f64();
    assert!(sent > Some(0.0), "{result}");
    assert_eq!(
        sample(&families, "qc_offboard_api_calls_total", &[("action", "RunClusterCustomService"), ("ret_code", "0")]),
        sent,
        "{families}"
    );
    assert_eq!(sample(&families, "qc_offboard_quota_exceeded_total", &[]), Some(0.0));
    let duration = sample(&families, "qc_offboard_run_duration_seconds", &[]).expect("duration");
    assert!((duration - result["duration_s"].as_f64().unwrap()).abs() < 1e-6, "{duration}");

    // A run that cannot start replaces the file with its exit code.
    let mut cmd = rig.run_cmd(&["--metrics-file", path.to_str().unwrap()]);
    cmd.env_remove("QINGCLOUD_ACCESS_KEY").env_remove("QINGCLOUD_SECRET_KEY");
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 78, "{}", text(&out.stderr));
    let body = std::fs::read_to_string(&path).expect("metrics file");
    assert!(body.contains("\nqc_offboard_last_run_exit_code 78\n"), "{body}");
    assert!(!body.contains("qc_offboard_tasks"), "no counts without a run: {body}");
}

/// The request lines of the pings received since the last call.
fn take(seen: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
    let requests = std::mem::take(&mut *seen.lock().expect("lock"));
    requests.iter().map(|r| r.lines().next().unwrap_or_default().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_carry_the_exit_code_of_every_ending() {
    let (url, seen) = ping_listener().await;
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10, fail_rate: 1.0}\n";
    let rig = Rig::new(world_yaml, &manifest_text(1, 1, &["sh1a"])).await;

    // Some tasks failed: start, then 1.
    let out = rig.run(&["--ping-url", &url, "--max-attempts", "1"]).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert_eq!(take(&seen), ["POST /ping/abc/start HTTP/1.1", "POST /ping/abc/1 HTTP/1.1"]);

    // An invalid manifest (65): nothing started, the ending is reported.
    let bad = rig.home.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nclusters: [{id: cl-a, zone: sh1a, users: [root]}]\n").expect("write");
    let out = Rig::output(rig.cmd(&["run", bad.to_str().unwrap(), "--ping-url", &url])).await;
    assert_eq!(code(&out), 65, "{}", text(&out.stderr));
    assert_eq!(take(&seen), ["POST /ping/abc/65 HTTP/1.1"]);

    // No credentials (78), from the environment variable.
    let mut cmd = rig.run_cmd(&[]);
    cmd.env_remove("QINGCLOUD_ACCESS_KEY").env_remove("QINGCLOUD_SECRET_KEY").env("QC_OFFBOARD_PING_URL", &url);
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 78, "{}", text(&out.stderr));
    assert_eq!(take(&seen), ["POST /ping/abc/78 HTTP/1.1"]);
    // The URL is a secret: no output names it.
    for bytes in [&out.stdout, &out.stderr] {
        assert!(!text(bytes).contains("/ping/abc"), "{}", text(bytes));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_run_pings_73() {
    let (url, seen) = ping_listener().await;
    let rig = Rig::new("jobs: {pending_ms: 3000, working_ms: 3000}\n", &manifest_text(2, 1, &["sh1a"])).await;
    let mut first = rig.run_cmd(&[]).spawn().expect("first run starts");
    crate::helpers::eventually("the first run to submit", || async { (run_calls(&rig.stats()) >= 2).then_some(()) })
        .await;
    let second = rig.run(&["--ping-url", &url]).await;
    assert_eq!(code(&second), 73, "{}", text(&second.stderr));
    assert_eq!(take(&seen), ["POST /ping/abc/73 HTTP/1.1"]);
    first.start_kill().expect("kill");
    first.wait().await.expect("reaped");
}
