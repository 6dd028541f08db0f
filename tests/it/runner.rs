//! The runner end to end: the real binary against the simulator over loopback TCP, with the
//! simulator in this test process so its state can be read while the runner lives and dies.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use qc_offboard::sim::{SimHandle, Stats};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::helpers::{start_sim, tempdir, world};

/// A simulator, a home, a database and a manifest for one test.
pub(crate) struct Rig {
    pub(crate) home: tempfile::TempDir,
    pub(crate) sim: SimHandle,
    pub(crate) db: PathBuf,
    pub(crate) manifest: PathBuf,
}

/// `clusters` clusters spread over `zones` zones with `users` accounts each.
pub(crate) fn manifest_text(clusters: usize, users: usize, zones: &[&str]) -> String {
    let mut s = String::from("version: 1\nticket: OPS-1\nrequested_by: hr@example.com\nclusters:\n");
    for c in 0..clusters {
        s.push_str(&format!("  - id: cl-t{c:03}\n    zone: {}\n    users:\n", zones[c % zones.len()]));
        for u in 0..users {
            s.push_str(&format!("      - u{c}x{u}\n"));
        }
    }
    s
}

impl Rig {
    pub(crate) async fn new(world_yaml: &str, manifest: &str) -> Rig {
        let home = tempdir();
        let sim = start_sim(world(world_yaml)).await;
        let db = home.path().join("audit.db");
        let path = home.path().join("manifest.yaml");
        std::fs::write(&path, manifest).expect("write manifest");
        Rig { home, sim, db, manifest: path }
    }

    /// The real binary, scrubbed environment, credentials of the simulator, this rig's database.
    pub(crate) fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"));
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("QINGCLOUD_ACCESS_KEY", "QYACCESSKEYIDEXAMPLE")
            .env("QINGCLOUD_SECRET_KEY", "SECRETACCESSKEY")
            .env("QINGCLOUD_ENDPOINT", self.sim.endpoint())
            .env("QC_OFFBOARD_DB", &self.db)
            .env("RUST_LOG", "qc_offboard=info")
            .arg("--no-progress")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// `run MANIFEST` with fast polling and the extra arguments.
    pub(crate) fn run_cmd(&self, extra: &[&str]) -> tokio::process::Command {
        let manifest = self.manifest.to_str().expect("utf-8 path");
        let mut args = vec!["run", manifest];
        args.extend_from_slice(&with_defaults(extra));
        self.cmd(&args)
    }

    pub(crate) async fn output(cmd: tokio::process::Command) -> Output {
        Self::output_within(cmd, Duration::from_secs(120)).await
    }

    pub(crate) async fn output_within(mut cmd: tokio::process::Command, limit: Duration) -> Output {
        // stderr goes to a file so that a command that hangs can still be diagnosed.
        let log = tempfile::NamedTempFile::new().expect("stderr file");
        cmd.stderr(log.reopen().expect("stderr file"));
        let child = cmd.spawn().expect("the command runs");
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(out) => {
                let mut out = out.expect("the command runs");
                out.stderr = std::fs::read(log.path()).unwrap_or_default();
                out
            }
            Err(_) => panic!(
                "the command did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            ),
        }
    }

    pub(crate) async fn run(&self, extra: &[&str]) -> Output {
        Self::output(self.run_cmd(extra)).await
    }

    pub(crate) async fn resume(&self, extra: &[&str]) -> Output {
        let mut args = vec!["resume"];
        args.extend_from_slice(&with_defaults(extra));
        Self::output(self.cmd(&args)).await
    }

    pub(crate) async fn report(&self) -> Vec<Value> {
        let out = Self::output(self.cmd(&["report", "--format", "json"])).await;
        assert!(out.status.success(), "report: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("report JSON")
    }

    pub(crate) async fn audit_verify(&self) -> Output {
        Self::output(self.cmd(&["audit", "verify"])).await
    }

    pub(crate) fn stats(&self) -> Stats {
        self.sim.stats()
    }
}

/// Fast polling, a generous rate and a short reconciliation settle unless the test sets its own.
pub(crate) fn with_defaults<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = extra.to_vec();
    if !extra.contains(&"--poll-interval") {
        args.extend(["--poll-interval", "50ms"]);
    }
    if !extra.contains(&"--rate") {
        args.extend(["--rate", "200/s"]);
    }
    // The simulator's listings do not lag (unless a world says so, and then the test sets its
    // own): a short settle keeps lost-response tests quick.
    if !extra.contains(&"--reconcile-settle") {
        args.extend(["--reconcile-settle", "1s"]);
    }
    // Retries after transient failures: the runner's unit tests cover the back-off on virtual
    // time; here a short base keeps fault tests from waiting out real 2 s doublings.
    if !extra.contains(&"--retry-base") {
        args.extend(["--retry-base", "100ms"]);
    }
    args
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Every account of the manifest is gone and was sent exactly one accepted `del_user`.
pub(crate) fn assert_all_deleted_exactly_once(stats: &Stats, expected: usize) {
    let accounts: Vec<_> = stats.accounts.iter().filter(|a| a.del_user_accepted > 0 || !a.exists).collect();
    assert_eq!(accounts.len(), expected, "accounts touched: {:#?}", stats.accounts);
    for a in &stats.accounts {
        assert!(!a.exists, "{}@{} on {} still exists", a.user, a.host, a.cluster);
        assert_eq!(
            a.del_user_accepted, 1,
            "{}@{} on {} was accepted {} times",
            a.user, a.host, a.cluster, a.del_user_accepted
        );
    }
}

pub(crate) fn run_calls(stats: &Stats) -> u64 {
    stats.requests_by_action.get("RunClusterCustomService").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_across_three_zones() {
    let rig =
        Rig::new("jobs: {pending_ms: 20, working_ms: 30}\n", &manifest_text(6, 3, &["sh1a", "pek3", "gd2"])).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("18 deleted, 0 skipped, 0 failed, 0 pending"), "{}", text(&out.stdout));
    let stats = rig.stats();
    assert_all_deleted_exactly_once(&stats, 18);
    assert_eq!(run_calls(&stats), 18);
    // Polling is batched: far fewer DescribeJobs than jobs polled one by one would need.
    let describe = stats.requests_by_action.get("DescribeJobs").copied().unwrap_or(0);
    assert!(describe > 0);
    let rows = rig.report().await;
    assert_eq!(rows.len(), 18);
    for r in &rows {
        assert_eq!(r["outcome"], "deleted", "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
        assert!(r["job_id"].as_str().is_some_and(|j| j.starts_with("j-")), "{r}");
    }
    let zones: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r["zone"].as_str()).collect();
    assert_eq!(zones.into_iter().collect::<Vec<_>>(), ["gd2", "pek3", "sh1a"]);
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{}", text(&verify.stdout));
}

/// One fault kind at a high rate: every account still ends deleted exactly once.
async fn survives(faults: &str) {
    let world_yaml = format!("seed: 11\njobs: {{pending_ms: 20, working_ms: 30}}\nfaults: {{{faults}}}\n");
    let rig = Rig::new(&world_yaml, &manifest_text(4, 3, &["sh1a", "pek3"])).await;
    let out = rig.run(&["--max-attempts", "30"]).await;
    assert_eq!(code(&out), 0, "faults {faults}\nstdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stats = rig.stats();
    assert!(
        stats.faults_injected.values().sum::<u64>() > 0 || faults.contains("delay"),
        "no fault was injected: {stats:?}"
    );
    assert_all_deleted_exactly_once(&stats, 12);
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{}", text(&verify.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_server_busy() {
    survives("busy_rate: 0.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_internal_errors() {
    survives("internal_rate: 0.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_http_502() {
    survives("http_502_rate: 0.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_connection_resets() {
    survives("reset_rate: 0.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_added_latency() {
    survives("delay_ms: 40").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_never_cause_a_second_del_user() {
    let world_yaml = "seed: 5\njobs: {pending_ms: 20, working_ms: 30}\nfaults: {lost_response_rate: 0.4}\n";
    let rig = Rig::new(world_yaml, &manifest_text(4, 4, &["sh1a", "pek3"])).await;
    let out = rig.run(&["--max-attempts", "30"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stats = rig.stats();
    assert!(stats.faults_injected.get("lost_response").copied().unwrap_or(0) > 0, "{stats:?}");
    assert_all_deleted_exactly_once(&stats, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_then_resume_deletes_each_account_exactly_once() {
    let world_yaml = "jobs: {pending_ms: 60, working_ms: 120}\nfaults: {lost_response_rate: 0.05}\n";
    let rig = Rig::new(world_yaml, &manifest_text(16, 5, &["sh1a", "pek3"])).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut kills = 0;
    let mut first = true;
    while kills < 10 {
        let mut cmd = if first {
            // 80 accounts at 15 calls a second outlast ten lives of at most half a second each;
            // the back-off stays short (no test waits on a real back-off).
            rig.run_cmd(&["--rate", "15/s", "--max-attempts", "30"])
        } else {
            rig.cmd(&[
                "resume",
                "--poll-interval",
                "50ms",
                "--rate",
                "15/s",
                "--max-attempts",
                "30",
                "--retry-base",
                "100ms",
            ])
        };
        first = false;
        let mut child = cmd.spawn().expect("runner starts");
        let wait = Duration::from_millis(rng.random_range(30..500));
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(status) => {
                // It finished before the kill: the work is done.
                assert!(status.expect("wait").success());
                break;
            }
            Err(_) => {
                child.start_kill().expect("SIGKILL");
                child.wait().await.expect("reaped");
                kills += 1;
            }
        }
    }
    assert!(kills >= 10, "the run finished after only {kills} kills; make it longer");
    let out = rig.resume(&["--max-attempts", "30"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert_all_deleted_exactly_once(&rig.stats(), 80);
    let rows = rig.report().await;
    assert!(rows.iter().all(|r| r["outcome"] == "deleted"), "{rows:#?}");
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{}", text(&verify.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_storm_lowers_the_rate_and_costs_no_attempts() {
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10}\nquota: {requests: 4, window_s: 1}\n";
    let rig = Rig::new(world_yaml, &manifest_text(5, 2, &["sh1a"])).await;
    let out = rig.run(&["--rate", "50/s", "--burst", "5", "--max-attempts", "1"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stats = rig.stats();
    assert!(stats.ret_code(2500) > 0, "the quota was never hit: {stats:?}");
    assert_all_deleted_exactly_once(&stats, 10);
    // --max-attempts 1 and every task deleted: no 2500 cost an attempt.
    let rows = rig.report().await;
    assert!(rows.iter().all(|r| r["attempts"] == 1), "{rows:#?}");
    assert!(text(&out.stderr).contains("rate lowered"), "{}", text(&out.stderr));
}

/// The API's 2500 starts a block in which every request is refused (reference §5.2). The calls
/// waiting at the limiter when the first 2500 came wait out the pause; the first of them still
/// refused lengthens the pause (it was sent after the decrease) instead of each of the others
/// going into the block in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalty_block_is_waited_out_not_queued_into() {
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10}\nquota: {requests: 10, window_s: 1, penalty_s: 4}\n";
    let rig = Rig::new(world_yaml, &manifest_text(30, 1, &["sh1a"])).await;
    let out = rig.run(&["--rate", "20/s", "--max-attempts", "1"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stats = rig.stats();
    assert_all_deleted_exactly_once(&stats, 30);
    // The one that exhausted the quota and one after the 2 s pause (the 4 s pause then
    // outlasts the block), with room for a call already on the wire at the first; each call
    // that waited at the limiter through the first pause went into the block in turn before.
    let refused = stats.ret_code(2500);
    assert!((1..=3).contains(&refused), "{refused} refused calls: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_with_69_and_lose_nothing() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(3, 2, &["sh1a"])).await;
    let mut cmd = rig.run_cmd(&[]);
    cmd.env("QINGCLOUD_SECRET_KEY", "WRONGSECRET");
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 69, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(!text(&out.stdout).contains("WRONGSECRET") && !text(&out.stderr).contains("WRONGSECRET"));
    let rows = rig.report().await;
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["outcome"] == "pending" && r["attempts"] == 0), "{rows:#?}");
    // With the right secret, the same run finishes.
    let out = rig.resume(&[]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert_all_deleted_exactly_once(&rig.stats(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_account_ends_absent_after_one_attempt_and_exits_0() {
    // Before, an account already gone was retried --max-attempts times and ended `failed`.
    let world_yaml =
        "jobs: {pending_ms: 10, working_ms: 10}\nclusters:\n  - id: cl-t000\n    zone: sh1a\n    users: [\"u0x0@%\"]\n";
    let rig = Rig::new(world_yaml, &manifest_text(1, 2, &["sh1a"])).await;
    let out = rig.run(&["--max-attempts", "2"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1 deleted") && stdout.contains("0 failed"), "{stdout}");
    assert!(stdout.contains("1 absent (account not found)"), "{stdout}");
    let rows = rig.report().await;
    let absent: Vec<_> = rows.iter().filter(|r| r["outcome"] == "absent").collect();
    assert_eq!(absent.len(), 1, "{rows:#?}");
    assert_eq!(absent[0]["user"], "u0x1");
    assert_eq!(absent[0]["attempts"], 1, "one attempt, no retries");
    assert!(absent[0]["message"].as_str().unwrap_or_default().contains("account not found"), "{rows:#?}");
    assert_eq!(run_calls(&rig.stats()), 2, "exactly one del_user per account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_run_is_refused_with_73() {
    let rig = Rig::new("jobs: {pending_ms: 3000, working_ms: 3000}\n", &manifest_text(2, 1, &["sh1a"])).await;
    let mut first = rig.run_cmd(&[]).spawn().expect("first run starts");
    // Wait until the first run holds the lock (it has submitted its jobs).
    crate::helpers::eventually("the first run to submit", || async { (run_calls(&rig.stats()) >= 2).then_some(()) })
        .await;
    let second = rig.run(&[]).await;
    assert_eq!(code(&second), 73, "stdout: {}\nstderr: {}", text(&second.stdout), text(&second.stderr));
    assert!(text(&second.stderr).contains("holds the database's run lock"), "{}", text(&second.stderr));
    assert!(text(&second.stderr).contains(&format!("pid {}", first.id().expect("pid"))), "{}", text(&second.stderr));
    first.start_kill().expect("kill");
    first.wait().await.expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_with_75_and_resume_finishes() {
    let rig = Rig::new("jobs: {pending_ms: 100, working_ms: 200}\n", &manifest_text(4, 4, &["sh1a", "pek3"])).await;
    let child = rig.run_cmd(&["--rate", "20/s"]).spawn().expect("run starts");
    crate::helpers::eventually("some submissions", || async { (run_calls(&rig.stats()) >= 3).then_some(()) }).await;
    let pid = rustix::process::Pid::from_raw(child.id().expect("pid") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let out =
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("exits").expect("output");
    assert_eq!(code(&out), 75, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("resume"), "{}", text(&out.stdout));
    assert!(run_calls(&rig.stats()) < 16, "the run stopped submitting");
    let out = rig.resume(&[]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert_all_deleted_exactly_once(&rig.stats(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_manifest_again_is_all_skipped_without_a_call() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(3, 2, &["sh1a", "pek3"])).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let calls_before = run_calls(&rig.stats());
    assert_eq!(calls_before, 6);
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 deleted, 6 skipped"), "{}", text(&out.stdout));
    assert_eq!(run_calls(&rig.stats()), calls_before, "no RunClusterCustomService call the second time");
    // `plan` knows too.
    let manifest = rig.manifest.to_str().expect("utf-8");
    let out = Rig::output(rig.cmd(&["plan", manifest, "--output", "json"])).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let tasks = plan["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 6);
    assert!(tasks.iter().all(|t| t["state"] == "skipped"), "{plan:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_report_start_and_success() {
    let (ping_url, seen) = crate::helpers::ping_listener().await;
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(1, 2, &["sh1a"])).await;
    let out = rig.run(&["--ping-url", &ping_url]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].starts_with("POST /ping/abc/start "), "{}", seen[0]);
    assert!(seen[1].starts_with("POST /ping/abc/0 "), "{}", seen[1]);
    assert!(seen[1].contains("2 deleted"), "the summary is the body: {}", seen[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_appears_in_no_output_and_not_in_the_database() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(2, 2, &["sh1a"])).await;
    let mut cmd = rig.run_cmd(&["-vvv"]);
    cmd.env("RUST_LOG", "trace");
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("DescribeJobs"), "trace logging was on");
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!text(bytes).contains("SECRETACCESSKEY"), "the secret is in {name}");
    }
    for suffix in ["", "-wal"] {
        let path = PathBuf::from(format!("{}{suffix}", rig.db.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(!bytes.windows(15).any(|w| w == b"SECRETACCESSKEY"), "the secret is in {}", path.display());
        }
    }
    let report = Rig::output(rig.cmd(&["report", "--format", "csv"])).await;
    assert!(!text(&report.stdout).contains("SECRETACCESSKEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_while_the_quota_is_exhausted_stops_with_75() {
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10}\nquota: {requests: 3, window_s: 600}\n";
    let rig = Rig::new(world_yaml, &manifest_text(4, 2, &["sh1a"])).await;
    let out = rig.run(&["--deadline", "2s"]).await;
    assert_eq!(code(&out), 75, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("stopped at --deadline") && stdout.contains("resume"), "{stdout}");
    let rows = rig.report().await;
    assert!(rows.iter().any(|r| r["outcome"] == "pending"), "{rows:#?}");
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{}", text(&verify.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fail_stops_submitting_with_75_and_retry_makes_a_linked_run() {
    // Every job fails (an account that is missing is no longer a failure: it ends `absent`).
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10, fail_rate: 1.0}\n";
    let rig = Rig::new(world_yaml, &manifest_text(1, 4, &["sh1a"])).await;
    let out = rig.run(&["--max-fail", "1", "--max-attempts", "1"]).await;
    assert_eq!(code(&out), 75, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("stopped by --max-fail"), "{}", text(&out.stdout));
    assert_eq!(run_calls(&rig.stats()), 1, "nothing submitted after the first failure");
    // `retry` takes the failed task only, in a new run linked to the first.
    let out = Rig::output(rig.cmd(&["retry", "1", "--max-attempts", "1", "--poll-interval", "50ms"])).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("run 2 retries the 1 failed task(s) of run 1"), "{}", text(&out.stdout));
    let status = Rig::output(rig.cmd(&["status", "--output", "json"])).await;
    let runs: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let text_all = runs.to_string();
    assert!(text_all.contains("\"retry_of\":1"), "{text_all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_exits_69_and_keeps_the_run() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(1, 2, &["sh1a"])).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut cmd = rig.run_cmd(&[]);
    cmd.env("QINGCLOUD_ENDPOINT", format!("http://127.0.0.1:{port}/iaas/"));
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 69, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let rows = rig.report().await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["outcome"] == "pending" && r["attempts"] == 0), "{rows:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_nothing_and_writes_no_run() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(2, 2, &["sh1a"])).await;
    let out = rig.run(&["--dry-run"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cl-t000"), "the plan is printed: {}", text(&out.stdout));
    assert_eq!(rig.stats().requests_total, 0, "nothing was sent");
    let status = Rig::output(rig.cmd(&["status", "--output", "json"])).await;
    let runs: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
    assert!(runs.as_array().is_none_or(|a| a.is_empty()), "no run recorded: {runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_exit_78_and_an_invalid_manifest_65_before_anything_is_written() {
    let rig = Rig::new("{}\n", &manifest_text(1, 1, &["sh1a"])).await;
    let mut cmd = rig.run_cmd(&[]);
    cmd.env_remove("QINGCLOUD_ACCESS_KEY").env_remove("QINGCLOUD_SECRET_KEY");
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 78, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("QINGCLOUD_ACCESS_KEY"), "{}", text(&out.stderr));
    std::fs::write(&rig.manifest, "version: 1\nclusters:\n  - id: cl-t000\n    zone: sh1a\n    users: [root]\n")
        .expect("write");
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 65, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("manifest.yaml:5:"), "{}", text(&out.stderr));
    assert!(!rig.db.exists(), "no database was written");
    assert_eq!(rig.stats().requests_total, 0);
}

/// One cell of the fault matrix: a world with `faults`, a tight quota and `seed`.
async fn matrix_cell(faults: &str, seed: u64) -> Result<(), String> {
    let world_yaml = format!(
        "seed: {seed}\njobs: {{pending_ms: 20, working_ms: 30, fail_rate: 0.05}}\nquota: {{requests: 30, window_s: 1}}\nfaults: {{{faults}}}\n"
    );
    let rig = Rig::new(&world_yaml, &manifest_text(4, 3, &["sh1a", "pek3"])).await;
    // The rate a little above the quota, as when other tools share the key. A task may
    // legitimately back off for up to 5 min between attempts (SPEC §4), so allow for one.
    let cmd = rig.run_cmd(&["--max-attempts", "40", "--rate", "40/s"]);
    let out = Rig::output_within(cmd, Duration::from_secs(420)).await;
    let cell = format!("faults {{{faults}}} seed {seed}");
    if code(&out) != 0 {
        return Err(format!("{cell}: exit {}\n{}\n{}", code(&out), text(&out.stdout), text(&out.stderr)));
    }
    let stats = rig.stats();
    if let Some(a) = stats.accounts.iter().find(|a| a.exists) {
        return Err(format!("{cell}: {}@{} on {} still exists", a.user, a.host, a.cluster));
    }
    // A second accepted del_user for an account is allowed only after a job of it failed.
    let extra: u64 = stats.accounts.iter().map(|a| a.del_user_accepted.saturating_sub(1)).sum();
    let failed_jobs = stats.jobs_by_status.get("failed").copied().unwrap_or(0);
    if extra != failed_jobs {
        return Err(format!("{cell}: {extra} repeated del_user but {failed_jobs} failed jobs"));
    }
    let verify = rig.audit_verify().await;
    if code(&verify) != 0 {
        return Err(format!("{cell}: audit verify: {}", text(&verify.stdout)));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_with_a_tight_quota_loses_nothing_and_repeats_only_failed_jobs() {
    let kinds = [
        "busy_rate: 0.2",
        "internal_rate: 0.2",
        "http_502_rate: 0.2",
        "reset_rate: 0.2",
        "lost_response_rate: 0.2",
        "delay_ms: 15",
        "busy_rate: 0.04, internal_rate: 0.04, http_502_rate: 0.04, reset_rate: 0.04, lost_response_rate: 0.04, delay_ms: 5",
    ];
    let mut cells = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let seeds: &[u64] = if i + 1 == kinds.len() { &[101, 202, 303] } else { &[7, 8] };
        cells.extend(seeds.iter().map(|s| (*kind, *s)));
    }
    let mut failures = Vec::new();
    // A few cells at a time keep this 2-core machine responsive.
    for chunk in cells.chunks(3) {
        let mut set = tokio::task::JoinSet::new();
        for (faults, seed) in chunk {
            let (faults, seed) = (faults.to_string(), *seed);
            set.spawn(async move { matrix_cell(&faults, seed).await });
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r.expect("cell task") {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cells failed:\n{}", failures.len(), cells.len(), failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_a_manifest_from_standard_input() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(1, 2, &["sh1a"])).await;
    let mut cmd = rig.cmd(&["run", "-", "--poll-interval", "50ms", "--rate", "200/s", "--output", "json"]);
    cmd.stdin(std::fs::File::open(&rig.manifest).expect("manifest"));
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["counts"]["deleted"], 2, "{v}");
    assert_all_deleted_exactly_once(&rig.stats(), 2);
}
