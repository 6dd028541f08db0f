//! `doctor` end to end: the real binary against simulators configured each way, over loopback
//! TCP. Each test checks what is printed, the exit code, what is saved in the database (and
//! audited), and that no del_user was sent.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use qc_offboard::sim::SimHandle;
use qc_offboard::store::{check, Finding, FindingStatus, Store};

use crate::helpers::{start_sim, tempdir, world};

/// Jobs that stay pending, so a listing's create times come only from what the test made.
const SLOW: &str = "jobs: {pending_ms: 600000, working_ms: 1000}";

struct Checkup {
    out: Output,
    stdout: String,
    db: PathBuf,
    _home: tempfile::TempDir,
}

impl Checkup {
    fn code(&self) -> i32 {
        self.out.status.code().expect("exited")
    }

    /// The printed line of check `name`: `(status, summary)`.
    fn line(&self, name: &str) -> (String, String) {
        let prefix = format!(" {name}: ");
        let line = self
            .stdout
            .lines()
            .find(|l| l.contains(&prefix) && !l.starts_with(' '))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{}", self.stdout));
        let (status, rest) = line.split_once(' ').expect("status first");
        let summary = rest.trim_start().strip_prefix(&format!("{name}: ")).expect("name second");
        (status.to_owned(), summary.to_owned())
    }

    fn status(&self, name: &str) -> String {
        self.line(name).0
    }

    /// What was saved for the endpoint: the newest checkup's findings.
    async fn saved(&self, endpoint: &str) -> Vec<Finding> {
        let store = Store::open_existing(&self.db).await.expect("the database exists");
        let found = store.latest_findings(endpoint, "QYACCESSKEYIDEXAMPLE").await.expect("findings");
        let verification = store.verify_audit(None).await.expect("verify");
        assert!(verification.is_intact(), "{:?}", verification.problem);
        store.close().await;
        found
    }
}

fn value(findings: &[Finding], name: &str) -> (FindingStatus, String) {
    let f = findings.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no finding {name}: {findings:?}"));
    (f.status, f.value.clone())
}

fn command(home: &Path, db: &Path, endpoint: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"));
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("QINGCLOUD_ACCESS_KEY", "QYACCESSKEYIDEXAMPLE")
        .env("QINGCLOUD_SECRET_KEY", "SECRETACCESSKEY")
        .env("QINGCLOUD_ENDPOINT", endpoint)
        .env("QC_OFFBOARD_DB", db)
        .arg("doctor")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn finish(cmd: tokio::process::Command, home: tempfile::TempDir, db: PathBuf) -> Checkup {
    let mut cmd = cmd;
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("doctor finishes")
        .expect("doctor runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Checkup { out, stdout, db, _home: home }
}

/// `doctor --zone sh1a` against `sim`.
async fn doctor(sim: &SimHandle, extra: &[&str]) -> Checkup {
    let home = tempdir();
    let db = home.path().join("audit.db");
    let mut args = vec!["--zone", "sh1a"];
    args.extend_from_slice(extra);
    let cmd = command(home.path(), &db, &sim.endpoint(), &args);
    finish(cmd, home, db).await
}

/// del_user jobs in sh1a made before doctor looks.
async fn make_jobs(sim: &SimHandle, n: usize) {
    let api = crate::helpers::Api::new(&sim.endpoint());
    for i in 0..n {
        let r = api.del_user("sh1a", "cl-d", &format!("u{i}"), "%").await.expect("del_user");
        assert_eq!(r["ret_code"], 0, "{r}");
        // Distinct create times (whole seconds) are what the order check reads; jobs of one
        // second are told apart by the unrelated ones below.
    }
}

/// Nothing doctor did was a del_user.
fn assert_no_del_user(sim: &SimHandle, made: u64) {
    let stats = sim.stats();
    assert_eq!(stats.requests_of("RunClusterCustomService"), made, "{:?}", stats.requests_by_action);
    assert_eq!(stats.requests.len() as u64, made);
    assert!(stats.requests_of("DescribeJobs") >= 3, "{:?}", stats.requests_by_action);
}

#[tokio::test]
async fn the_documented_behaviour_reports_ok_and_is_saved_for_runs() {
    let sim = start_sim(world(&format!("{SLOW}\napi: {{unrelated_jobs_per_zone: 3}}"))).await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 0, "{}\n{}", c.stdout, String::from_utf8_lossy(&c.out.stderr));
    for name in [
        "endpoint",
        "credentials",
        "clock_skew",
        "unknown_job_id",
        "listing_order",
        "job_action_filter",
        "quota",
        "database",
    ] {
        assert_eq!(c.status(name), "ok", "{name}:\n{}", c.stdout);
    }
    assert!(c.line("unknown_job_id").1.starts_with("error: "), "{}", c.stdout);
    assert_eq!(c.line("listing_order").1, "newest first");
    assert!(c.line("quota").1.contains("does not report"), "{}", c.stdout);
    assert!(c.stdout.contains("findings saved in "), "{}", c.stdout);

    let saved = c.saved(&sim.endpoint()).await;
    assert_eq!(saved.len(), 8, "{saved:?}");
    assert_eq!(value(&saved, check::UNKNOWN_JOB_ID), (FindingStatus::Ok, "error".to_owned()));
    assert_eq!(value(&saved, check::LISTING_ORDER), (FindingStatus::Ok, "newest_first".to_owned()));
    assert_eq!(value(&saved, check::JOB_ACTION_FILTER), (FindingStatus::Ok, "honoured".to_owned()));
    assert_eq!(value(&saved, check::CREDENTIALS), (FindingStatus::Ok, "accepted".to_owned()));
    assert_eq!(value(&saved, check::DATABASE), (FindingStatus::Ok, "private".to_owned()));
    let skew: i64 = value(&saved, check::CLOCK_SKEW).1.parse().expect("whole seconds");
    assert!(skew.abs() <= 2, "{skew}");
    assert!(saved.iter().all(|f| f.zone.as_deref() == Some("sh1a")));
    assert_no_del_user(&sim, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn oldest_first_listings_dropped_unknown_ids_and_an_ignored_filter_are_reported() {
    let yaml = format!(
        "{SLOW}\napi: {{describe_jobs_order: oldest_first, describe_jobs_unknown_id: drop, job_action_filter: false}}"
    );
    let sim = start_sim(world(&yaml)).await;
    make_jobs(&sim, 2).await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 0, "{}", c.stdout);
    assert_eq!(c.line("listing_order"), ("warn".to_owned(), "oldest first (undocumented)".to_owned()));
    assert_eq!(c.status("unknown_job_id"), "warn");
    assert!(c.line("unknown_job_id").1.starts_with("drop: "), "{}", c.stdout);
    assert_eq!(c.status("job_action_filter"), "warn");
    assert!(c.line("job_action_filter").1.starts_with("ignored: "), "{}", c.stdout);
    let saved = c.saved(&sim.endpoint()).await;
    assert_eq!(value(&saved, check::LISTING_ORDER).1, "oldest_first");
    assert_eq!(value(&saved, check::UNKNOWN_JOB_ID).1, "drop");
    assert_eq!(value(&saved, check::JOB_ACTION_FILTER).1, "ignored");
    assert_no_del_user(&sim, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_random_order_is_unordered_and_too_few_jobs_leave_the_order_and_filter_unknown() {
    let sim =
        start_sim(world(&format!("{SLOW}\nseed: 4\napi: {{describe_jobs_order: random, unrelated_jobs_per_zone: 5}}")))
            .await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 0, "{}", c.stdout);
    assert_eq!(c.status("listing_order"), "warn");
    assert_eq!(value(&c.saved(&sim.endpoint()).await, check::LISTING_ORDER).1, "unordered");
    sim.shutdown().await;

    let sim = start_sim(world(SLOW)).await;
    make_jobs(&sim, 1).await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 0, "{}", c.stdout);
    assert!(c.line("listing_order").1.contains("fewer than 2"), "{}", c.stdout);
    let saved = c.saved(&sim.endpoint()).await;
    assert_eq!(value(&saved, check::LISTING_ORDER), (FindingStatus::Warn, "unknown".to_owned()));
    assert_eq!(value(&saved, check::JOB_ACTION_FILTER), (FindingStatus::Warn, "unknown".to_owned()));
    assert_no_del_user(&sim, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_answering_html_fails_with_69_and_is_saved() {
    let sim = start_sim(world("api: {html_everywhere: true}")).await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 69, "{}", c.stdout);
    let (status, summary) = c.line("endpoint");
    assert_eq!(status, "fail");
    assert!(summary.starts_with("this is not the QingCloud API"), "{summary}");
    assert!(c.stdout.contains("what to do: check the endpoint URL"), "{}", c.stdout);
    let saved = c.saved(&sim.endpoint()).await;
    assert_eq!(value(&saved, check::ENDPOINT), (FindingStatus::Fail, "not_api".to_owned()));
    assert_eq!(value(&saved, check::DATABASE).0, FindingStatus::Ok);
    let stats = sim.stats();
    assert_eq!(stats.requests_of("RunClusterCustomService"), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_clock_difference_warns_and_one_the_api_refuses_fails_with_69() {
    let sim = start_sim(world("clock_offset_s: 30")).await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 0, "{}", c.stdout);
    let (status, summary) = c.line("clock_skew");
    assert_eq!(status, "warn");
    assert!(summary.contains("s ahead of this machine's"), "{summary}");
    let skew: i64 = value(&c.saved(&sim.endpoint()).await, check::CLOCK_SKEW).1.parse().unwrap();
    assert!((28..=32).contains(&skew), "{skew}");
    sim.shutdown().await;

    // Ten minutes behind: our time stamps are refused; doctor measures, reports, and still
    // checks the rest with the API's clock.
    let sim = start_sim(world("clock_offset_s: -600\napi: {unrelated_jobs_per_zone: 2}")).await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 69, "{}", c.stdout);
    assert_eq!(c.status("clock_skew"), "fail");
    assert!(c.line("clock_skew").1.contains("s behind this machine's"), "{}", c.stdout);
    assert_eq!(c.status("credentials"), "ok");
    assert_eq!(c.status("unknown_job_id"), "ok");
    let skew: i64 = value(&c.saved(&sim.endpoint()).await, check::CLOCK_SKEW).1.parse().unwrap();
    assert!((-602..=-598).contains(&skew), "{skew}");
    assert_no_del_user(&sim, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn refused_credentials_fail_with_69_and_configuration_problems_exit_78() {
    let sim = start_sim(world("credentials: [{access_key_id: QYACCESSKEYIDEXAMPLE, secret_access_key: other}]")).await;
    let c = doctor(&sim, &[]).await;
    assert_eq!(c.code(), 69, "{}", c.stdout);
    assert_eq!(c.status("credentials"), "fail");
    assert!(c.line("credentials").1.contains("AuthFailure"), "{}", c.stdout);
    assert!(!c.stdout.contains("SECRETACCESSKEY"), "{}", c.stdout);

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/iaas/", closed.local_addr().unwrap());
    drop(closed);
    let home = tempdir();
    let db = home.path().join("audit.db");
    let c = finish(command(home.path(), &db, &endpoint, &["--zone", "sh1a"]), home, db).await;
    assert_eq!(c.code(), 69, "{}", c.stdout);
    assert_eq!(c.status("endpoint"), "fail");
    assert!(c.line("endpoint").1.contains("cannot connect"), "{}", c.stdout);
    assert_eq!(value(&c.saved(&endpoint).await, check::ENDPOINT).1, "unreachable");

    // No zone anywhere.
    let home = tempdir();
    let db = home.path().join("audit.db");
    let cmd = command(home.path(), &db, &sim.endpoint(), &[]);
    let c = finish(cmd, home, db).await;
    assert_eq!(c.code(), 78, "{}", String::from_utf8_lossy(&c.out.stderr));
    assert!(String::from_utf8_lossy(&c.out.stderr).contains("no zone to check"));

    // A database path that cannot be created: the checks run, the findings cannot be saved.
    let sim = start_sim(world("{}")).await;
    let home = tempdir();
    let file = home.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let db = file.join("audit.db");
    let cmd = command(home.path(), &db, &sim.endpoint(), &["--zone", "sh1a"]);
    let c = finish(cmd, home, db).await;
    assert_eq!(c.code(), 78, "{}", c.stdout);
    assert_eq!(c.status("database"), "fail");
    assert_eq!(c.status("credentials"), "ok");
    assert!(c.stdout.contains("findings not saved"), "{}", c.stdout);
    sim.shutdown().await;
}

#[tokio::test]
async fn simulate_checks_an_in_process_simulator_and_saves_under_its_name() {
    let home = tempdir();
    let db = home.path().join("sim.db");
    let mut cmd = command(home.path(), &db, "http://127.0.0.1:1/iaas/", &["--simulate"]);
    cmd.env_remove("QINGCLOUD_ENDPOINT");
    let c = finish(cmd, home, db).await;
    assert_eq!(c.code(), 0, "{}", c.stdout);
    assert_eq!(c.status("endpoint"), "ok");
    let saved = c.saved("simulator").await;
    assert_eq!(value(&saved, check::UNKNOWN_JOB_ID).1, "error");
}
