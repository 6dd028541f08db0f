//! The runner against every API behaviour the documentation leaves open (the simulator's `api:`
//! block, clock offsets, omissions) and all of them together with faults: the lost-response
//! check and the SIGKILL-then-run check must hold in every cell — each account accepted exactly
//! once, nothing lost, the audit chain intact — and an endpoint that is not the API stops the run.

use std::time::Duration;

use crate::helpers::eventually;
use crate::pg_db::TestDb;
use crate::runner::{assert_all_deleted_exactly_once, code, manifest_text, run_calls, text, with_defaults, Rig};

/// The cells: a name and the world lines that select the behaviour.
const VARIANTS: [(&str, &str); 8] = [
    ("documented", ""),
    ("unknown ids dropped", "api: {describe_jobs_unknown_id: drop}\n"),
    ("oldest first", "api: {describe_jobs_order: oldest_first}\n"),
    ("random order", "api: {describe_jobs_order: random}\n"),
    ("job_action ignored", "api: {job_action_filter: false, unrelated_jobs_per_zone: 150}\n"),
    ("listings lag 1.5 s", "api: {list_lag_ms: 1500}\n"),
    ("by-id omits every third", "api: {describe_jobs_omit_every: 3}\n"),
    ("API clock 5 min behind", "clock_offset_s: -300\n"),
];

const ALL_TOGETHER: &str = "api: {describe_jobs_unknown_id: drop, describe_jobs_order: oldest_first, \
                            job_action_filter: false, list_lag_ms: 1500, describe_jobs_omit_every: 4}\n\
                            clock_offset_s: 300\n\
                            faults: {lost_response_rate: 0.2, reset_rate: 0.05, busy_rate: 0.05, http_502_rate: 0.05}\n";

fn world_of(variant: &str, faults: &str) -> String {
    format!("jobs: {{pending_ms: 30, working_ms: 60}}\nseed: 9\n{variant}{faults}")
}

/// Settle past the listing lag of the cell (1.5 s where the world has one; the simulator's
/// listings do not lag otherwise), and a short job timeout so an omitted job ends its task
/// (failed, never re-sent) rather than waiting 15 minutes. The runner's unit tests cover the
/// settle and the job timeout on virtual time; here the real binary only has to agree.
fn args(world_yaml: &str) -> [&'static str; 4] {
    let settle = if world_yaml.contains("list_lag_ms") { "3s" } else { "1s" };
    ["--reconcile-settle", settle, "--job-timeout", "3s"]
}

async fn lost_responses_cell(name: &str, world_yaml: &str) {
    let rig = Rig::new(world_yaml, &manifest_text(12, 1, &["sh1a"])).await;
    let out = rig.run(&args(world_yaml)).await;
    assert_exactly_once(name, world_yaml, &rig, &out, 12).await;
    // A task that did not end deleted ended failed without a second request (an omitted job).
    let rows = rig.report().await;
    for r in &rows {
        assert!(["deleted", "failed"].contains(&r["outcome"].as_str().unwrap_or_default()), "{name}: {r}");
    }
}

async fn sigkill_cell(name: &str, world_yaml: &str) {
    let rig = Rig::new(world_yaml, &manifest_text(16, 1, &["sh1a"])).await;
    let mut first = vec!["--rate", "30/s"];
    first.extend(args(world_yaml));
    let mut child = rig.run_cmd(&first).spawn().expect("run starts");
    eventually("submissions", || async { (run_calls(&rig.stats()) >= 5).then_some(()) }).await;
    child.kill().await.expect("SIGKILL");
    let _ = child.wait().await;
    let out = rig.run(&args(world_yaml)).await;
    assert_exactly_once(name, world_yaml, &rig, &out, 16).await;
}

/// No account accepted twice; where no job is ever omitted, every account deleted and exit 0;
/// the audit chain intact.
async fn assert_exactly_once(name: &str, world_yaml: &str, rig: &Rig, out: &std::process::Output, accounts: usize) {
    let stdout = text(&out.stdout);
    assert!(matches!(code(out), 0 | 1), "{name}: stdout: {stdout}\nstderr: {}", text(&out.stderr));
    let stats = rig.stats();
    for a in &stats.accounts {
        let (user, host, cluster, n) = (&a.user, &a.host, &a.cluster, a.del_user_accepted);
        assert!(n <= 1, "{name}: {user}@{host} on {cluster} accepted {n} times");
    }
    if !world_yaml.contains("omit_every") {
        assert_eq!(code(out), 0, "{name}: {stdout}");
        assert_all_deleted_exactly_once(&stats, accounts);
    }
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{name}: {}", text(&verify.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_are_never_resent_under_any_api_behaviour() {
    for (name, variant) in VARIANTS {
        lost_responses_cell(name, &world_of(variant, "faults: {lost_response_rate: 0.3}\n")).await;
    }
    lost_responses_cell("all together with faults", &world_of(ALL_TOGETHER, "")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_run_is_exactly_once_under_any_api_behaviour() {
    for (name, variant) in VARIANTS {
        sigkill_cell(name, &world_of(variant, "faults: {lost_response_rate: 0.1}\n")).await;
    }
    sigkill_cell("all together with faults", &world_of(ALL_TOGETHER, "")).await;
}

/// An endpoint that omits jobs from answers by id: the omission is never taken as proof that
/// the job does not exist, so no account is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omitted_job_is_not_proof_of_absence() {
    let rig = Rig::new(&world_of("api: {describe_jobs_omit_every: 3}\n", ""), &manifest_text(12, 1, &["sh1a"])).await;
    let out = rig.run(&["--job-timeout", "2s"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 1, "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("was not listed by DescribeJobs"), "{stdout}");
    let stats = rig.stats();
    assert_eq!(run_calls(&stats), 12, "one del_user per account: {:?}", stats.requests_by_action);
    for a in &stats.accounts {
        assert_eq!(a.del_user_accepted, 1, "{a:?}");
    }
}

/// `retry` of a run whose omitted jobs (failed, unresolved) share a cluster, twice, on `db` (the
/// rig's SQLite file when `None`): each earlier attempt is adopted in its turn and followed,
/// nothing is sent again, and both retries end 1 (the jobs stay omitted). On PostgreSQL the
/// one-job-per-cluster index refused the second adoption and `retry` ended 70.
async fn retry_twice_after_omissions_on_one_cluster(name: &str, db: Option<&str>) {
    let world_yaml = world_of("api: {describe_jobs_omit_every: 2}\n", "");
    let rig = Rig::new(&world_yaml, &manifest_text(1, 6, &["sh1a"])).await;
    let on_db = |mut cmd: tokio::process::Command| {
        if let Some(url) = db {
            cmd.env("QC_OFFBOARD_DB", url);
        }
        cmd
    };
    let out = Rig::output(on_db(rig.run_cmd(&["--job-timeout", "2s"]))).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 1, "{name}: stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("3 failed"), "{name}: every second job is omitted: {stdout}");
    for (retry, of) in [(2, "1"), (3, "2")] {
        let mut args = vec!["retry", of, "--job-timeout", "2s"];
        args = with_defaults(&args);
        let out = Rig::output(on_db(rig.cmd(&args))).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(code(&out), 1, "{name}: retry {of}: stdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains(&format!("run {retry}: 0 deleted, 0 skipped, 3 failed")), "{name}: {stdout}");
        assert!(stderr.contains("wait for their cluster's job to end"), "{name}: {stderr}");
    }
    let stats = rig.stats();
    assert_eq!(run_calls(&stats), 6, "{name}: one del_user per account: {:?}", stats.requests_by_action);
    for a in &stats.accounts {
        assert_eq!((a.del_user_accepted, a.exists), (1, false), "{name}: {a:?}");
    }
    assert!(stats.cluster_overlaps.is_empty(), "{name}: {:?}", stats.cluster_overlaps);
    let verify = Rig::output(on_db(rig.cmd(&["audit", "verify"]))).await;
    assert_eq!(code(&verify), 0, "{name}: {}", text(&verify.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_adopts_omitted_jobs_of_one_cluster_one_at_a_time() {
    retry_twice_after_omissions_on_one_cluster("sqlite", None).await;
    let Some(pg) = TestDb::create("variants::retry_adopts_omitted_jobs_of_one_cluster_one_at_a_time").await else {
        return;
    };
    retry_twice_after_omissions_on_one_cluster("postgres", Some(&pg.url)).await;
}

/// What `del_user` does for a missing account is undocumented: whichever it is, the account
/// ends done (absent, or deleted by a no-op job) after exactly one request, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_account_is_done_after_one_request_whatever_the_api_does() {
    for (mode, outcome) in [("fail_job", "absent"), ("reject", "absent"), ("succeed", "deleted")] {
        let world_yaml = format!(
            "jobs: {{pending_ms: 10, working_ms: 10}}\napi: {{missing_account: {mode}}}\nclusters:\n  - id: cl-t000\n    \
             zone: sh1a\n    users: [\"u0x0@%\"]\n"
        );
        let rig = Rig::new(&world_yaml, &manifest_text(1, 3, &["sh1a"])).await;
        let out = rig.run(&[]).await;
        assert_eq!(code(&out), 0, "{mode}: stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
        assert_eq!(run_calls(&rig.stats()), 3, "{mode}: one request per account");
        let rows = rig.report().await;
        let missing: Vec<_> = rows.iter().filter(|r| r["user"] != "u0x0").collect();
        assert!(missing.iter().all(|r| r["outcome"] == outcome), "{mode}: {rows:#?}");
    }
}

/// Something that is not the QingCloud API answers (a captive proxy): the run stops with 69
/// after a few answers, everything recorded, instead of reconciling for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_html_stops_the_run_with_69() {
    let rig = Rig::new("api: {html_everywhere: true}\n", &manifest_text(10, 1, &["sh1a"])).await;
    let out = Rig::output_within(rig.run_cmd(&[]), Duration::from_secs(90)).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 69, "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("not the QingCloud API"), "{stdout}");
    let calls = rig.stats().requests_total;
    assert!(calls <= 30, "{calls} requests spent on an endpoint that is not the API");
    let resume = rig.resume(&[]).await;
    assert_eq!(code(&resume), 69, "resume stops the same way: {}", text(&resume.stdout));
    // Also when the answers turn out not to be the API's while a stop follows jobs.
    let resume = rig.resume(&["--deadline", "1s"]).await;
    assert_eq!(code(&resume), 69, "a deadline does not hide it: {}", text(&resume.stdout));
    let rows = rig.report().await;
    assert!(rows.iter().all(|r| r["outcome"] != "failed"), "nothing is failed on a guess: {rows:#?}");
}

/// `doctor`'s findings are used by runs: a clock `doctor` found 5 minutes off the API's is
/// corrected before the first request, so no time stamp is refused; without it the first
/// request is refused (1300) and the run corrects itself from the answer's `Date` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_difference_doctor_measured_is_corrected_before_the_first_request() {
    let world_yaml = world_of("clock_offset_s: -300\n", "");
    let rig = Rig::new(&world_yaml, &manifest_text(3, 1, &["sh1a"])).await;
    let out = Rig::output(rig.cmd(&["doctor", "--zone", "sh1a"])).await;
    assert!(text(&out.stdout).contains("clock"), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let refused_by_doctor = rig.stats().ret_codes.get("1300").copied().unwrap_or(0);
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        rig.stats().ret_codes.get("1300").copied().unwrap_or(0),
        refused_by_doctor,
        "the run sent no stale time stamp"
    );
    assert_all_deleted_exactly_once(&rig.stats(), 3);

    // The same world without doctor: the run is refused once, then signs with the API's clock.
    let rig = Rig::new(&world_yaml, &manifest_text(3, 1, &["sh1a"])).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(rig.stats().ret_codes.get("1300").copied().unwrap_or(0) >= 1);
    assert_all_deleted_exactly_once(&rig.stats(), 3);
}

/// A wrong path (the simulator answers 404 there, as a web server would): not the API, so the
/// run stops with 69 instead of failing every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_stops_the_run_with_69_and_fails_nothing() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &manifest_text(6, 1, &["sh1a"])).await;
    let mut cmd = rig.run_cmd(&[]);
    cmd.env("QINGCLOUD_ENDPOINT", rig.sim.endpoint().replace("/iaas/", "/iaasx/"));
    let out = Rig::output_within(cmd, Duration::from_secs(90)).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 69, "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("not the QingCloud API") && stdout.contains("0 failed"), "{stdout}");
    assert_eq!(run_calls(&rig.stats()), 0, "nothing reached the API");
}
