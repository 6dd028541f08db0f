//! Safety per account, across runs (SPEC §8), tried the way operators break it: Ctrl-C (and
//! SIGTERM, SIGHUP) on a slow run, SIGKILL followed by a plain `run`, `retry` twice, a bare
//! `resume` after a refused run, an account already gone, a cluster busy with another team's
//! job, a protected user written into the database, a plan's `not_due` task, a mistyped `--db`.
//! The real binary against the simulator over loopback TCP; the simulator's counts and the
//! database are the oracles.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use sqlx::Row;

use crate::helpers::{eventually, raw_connection, start_sim, tempdir, world};
use crate::runner::{assert_all_deleted_exactly_once, code, manifest_text, run_calls, text, Rig};

/// One user on each of `clusters` clusters.
fn one_per_cluster(clusters: usize) -> String {
    manifest_text(clusters, 1, &["sh1a"])
}

fn signal(child: &tokio::process::Child, sig: rustix::process::Signal) {
    let pid = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)).expect("child pid");
    rustix::process::kill_process(pid, sig).expect("send the signal");
}

async fn wait(child: tokio::process::Child) -> Output {
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the run ends after the signal")
        .expect("wait for the run")
}

/// `(state, count)` of the tasks of `run_id`.
async fn states(db: &Path, run_id: i64) -> Vec<(String, i64)> {
    let mut conn = raw_connection(db).await;
    sqlx::query("SELECT state, COUNT(*) AS n FROM tasks WHERE run_id = ? GROUP BY state ORDER BY state")
        .bind(run_id)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("state"), r.get("n")))
        .collect()
}

fn count_of(states: &[(String, i64)], state: &str) -> i64 {
    states.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n)
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("RFC 3339").with_timezone(&Utc)
}

/// The start of every `RunClusterCustomService` request the runs made (after the last check,
/// right before signing).
async fn request_starts(db: &Path) -> Vec<DateTime<Utc>> {
    let mut conn = raw_connection(db).await;
    let starts: Vec<String> =
        sqlx::query_scalar("SELECT started_at FROM api_calls WHERE action = 'RunClusterCustomService' ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    starts.iter().map(|s| parse_time(s)).collect()
}

/// When the run recorded that it was stopping, and the request starts.
async fn stop_and_requests(db: &Path) -> (DateTime<Utc>, Vec<DateTime<Utc>>) {
    let mut conn = raw_connection(db).await;
    let at: String = sqlx::query_scalar("SELECT at FROM audit_log WHERE kind = 'run_stopping' ORDER BY seq LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .expect("the stop is on record");
    (parse_time(&at), request_starts(db).await)
}

/// A stop stops: after SIGINT, SIGTERM or SIGHUP at a random instant of a slow run, no
/// `del_user` request starts, the intents queued behind the limiter are withdrawn, the summary
/// tells the truth, and `resume` finishes with every account deleted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_submissions_at_once_and_resume_finishes() {
    use rustix::process::Signal;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for sig in [Signal::INT, Signal::TERM, Signal::HUP] {
        let rig = Rig::new("jobs: {pending_ms: 200, working_ms: 300}\n", &one_per_cluster(40)).await;
        let child = rig.run_cmd(&["--rate", "4/s", "--max-in-flight", "20"]).spawn().expect("run starts");
        let sent_before = rng.random_range(2..6);
        eventually("some submissions", || async { (run_calls(&rig.stats()) >= sent_before).then_some(()) }).await;
        let signalled_at = Utc::now();
        signal(&child, sig);
        let out = wait(child).await;
        let stdout = text(&out.stdout);
        assert_eq!(code(&out), 75, "{sig:?}\nstdout: {stdout}\nstderr: {}", text(&out.stderr));
        assert!(stdout.contains("stopped by a signal"), "{stdout}");

        // Judged first by the test's own clock (the signal is handled within milliseconds), then
        // by the run's record of the instant it stopped.
        let starts = request_starts(&rig.db).await;
        let handled_by = signalled_at + chrono::Duration::milliseconds(250);
        let late: Vec<_> = starts.iter().filter(|t| **t > handled_by).collect();
        assert!(late.is_empty(), "{sig:?}: del_user requests started after the signal at {signalled_at}: {late:?}");
        let (stopped_at, starts) = stop_and_requests(&rig.db).await;
        let late: Vec<_> = starts.iter().filter(|t| **t > stopped_at).collect();
        assert!(late.is_empty(), "{sig:?}: del_user requests started after the stop at {stopped_at}: {late:?}");
        let stats = rig.stats();
        assert_eq!(run_calls(&stats), starts.len() as u64, "every request that reached the API is on record");

        // Nothing is left `submitting` that never left, and the summary counts what the
        // database holds.
        let st = states(&rig.db, 1).await;
        let accepted: u64 = stats.accounts.iter().map(|a| a.del_user_accepted).sum();
        let deleted = count_of(&st, "deleted");
        let in_flight = count_of(&st, "submitted") + count_of(&st, "submitting");
        assert_eq!((deleted + in_flight) as u64, accepted, "{sig:?}: {st:?}");
        assert!(stdout.contains(&format!("{deleted} deleted")), "{stdout}\n{st:?}");
        assert!(stdout.contains(&format!("{in_flight} in flight")), "{stdout}\n{st:?}");
        let withdrawn = {
            let mut conn = raw_connection(&rig.db).await;
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE detail LIKE '%intent_withdrawn%'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            n
        };
        assert!(withdrawn > 0, "{sig:?}: intents queued behind the limiter are withdrawn");

        let out = rig.resume(&[]).await;
        assert_eq!(code(&out), 0, "{sig:?} resume\nstdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
        assert_all_deleted_exactly_once(&rig.stats(), 40);
    }
}

/// The README's promise: an interrupted night is finished by the next night's plain `run`.
/// SIGKILL mid-run, then `run` again, then a third `run`: every account accepted once, nothing
/// failed, the third run skips everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_a_new_run_never_resends() {
    let world_yaml = "jobs: {pending_ms: 300, working_ms: 500}\nfaults: {lost_response_rate: 0.2}\nseed: 5\n";
    let rig = Rig::new(world_yaml, &one_per_cluster(40)).await;
    let mut child = rig.run_cmd(&["--rate", "20/s"]).spawn().expect("run starts");
    eventually("submissions", || async { (run_calls(&rig.stats()) >= 12).then_some(()) }).await;
    child.kill().await.expect("SIGKILL");
    let _ = child.wait().await;

    let second = rig.run(&[]).await;
    assert_eq!(code(&second), 0, "stdout: {}\nstderr: {}", text(&second.stdout), text(&second.stderr));
    assert!(text(&second.stdout).contains("0 failed"), "{}", text(&second.stdout));
    assert_all_deleted_exactly_once(&rig.stats(), 40);
    let st1 = states(&rig.db, 1).await;
    assert_eq!(count_of(&st1, "submitting") + count_of(&st1, "submitted"), 0, "run 1 holds nothing live: {st1:?}");

    let third = rig.run(&[]).await;
    assert_eq!(code(&third), 0, "stdout: {}\nstderr: {}", text(&third.stdout), text(&third.stderr));
    assert!(text(&third.stdout).contains("0 deleted, 40 skipped"), "{}", text(&third.stdout));
    assert_all_deleted_exactly_once(&rig.stats(), 40);
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{}", text(&verify.stdout));
}

/// A nightly list with accounts that are already gone: those end `absent` after exactly one
/// `del_user` each, and the run exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_already_gone_end_absent_with_one_request_each() {
    let world_yaml = "jobs: {pending_ms: 10, working_ms: 10}\nclusters:\n  - id: cl-t000\n    zone: sh1a\n    \
                      users: [\"u0x0@%\"]\n  - id: cl-t001\n    zone: sh1a\n    users: [\"u1x1@%\"]\n";
    let rig = Rig::new(world_yaml, &manifest_text(2, 3, &["sh1a"])).await;
    let out = rig.run(&[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("2 deleted") && stdout.contains("4 absent (account not found)"), "{stdout}");
    let stats = rig.stats();
    assert_eq!(run_calls(&stats), 6, "one del_user per account");
    for a in &stats.accounts {
        assert_eq!(a.del_user_accepted, 1, "{a:?}");
    }
    // Later runs skip absent accounts like deleted ones.
    let again = rig.run(&[]).await;
    assert!(text(&again.stdout).contains("0 deleted, 6 skipped"), "{}", text(&again.stdout));
    assert_eq!(run_calls(&rig.stats()), 6);
    let status = Rig::output(rig.cmd(&["status", "1"])).await;
    assert!(text(&status.stdout).contains("absent"), "{}", text(&status.stdout));
}

/// Two teams, two databases, the same clusters, one job per cluster: the busy answers (1400
/// "running job") are waited out without costing attempts, and everything ends deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_teams_sharing_clusters_wait_out_each_others_jobs() {
    let sim = start_sim(world("jobs: {pending_ms: 100, working_ms: 300}\none_job_per_cluster: true\n")).await;
    let mut teams = Vec::new();
    for team in ["a", "b"] {
        let home = tempdir();
        let mut m = String::from("version: 1\nclusters:\n");
        for c in 0..4 {
            m.push_str(&format!("  - id: cl-s{c:03}\n    zone: sh1a\n    users: [{team}{c}x0, {team}{c}x1]\n"));
        }
        let manifest = home.path().join("m.yaml");
        std::fs::write(&manifest, m).unwrap();
        teams.push((home, manifest));
    }
    let mut children = Vec::new();
    for (home, manifest) in &teams {
        let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"));
        cmd.env_clear()
            .env("HOME", home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("QINGCLOUD_ACCESS_KEY", "QYACCESSKEYIDEXAMPLE")
            .env("QINGCLOUD_SECRET_KEY", "SECRETACCESSKEY")
            .env("QINGCLOUD_ENDPOINT", sim.endpoint())
            .env("QC_OFFBOARD_DB", home.path().join("audit.db"))
            .args(["--no-progress", "run"])
            .arg(manifest)
            .args(["--poll-interval", "50ms", "--rate", "100/s", "--max-attempts", "1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        children.push(cmd.spawn().expect("team run starts"));
    }
    for child in children {
        let out = wait(child).await;
        assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains("8 deleted"), "{}", text(&out.stdout));
    }
    let stats = sim.stats();
    assert!(stats.ret_codes.get("1400").copied().unwrap_or(0) > 0, "the clusters were busy at times: {stats:?}");
    assert_all_deleted_exactly_once(&stats, 16);
}

/// `retry` twice: the second finds the accounts the first deleted and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_twice_sends_nothing_the_first_retry_deleted() {
    // Run 1 fails every job; its retries run against a healthy endpoint of the same identity.
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10, fail_rate: 1.0}\n", &one_per_cluster(2)).await;
    let out = rig.run(&["--max-attempts", "1"]).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let healthy = start_sim(world("jobs: {pending_ms: 10, working_ms: 10}\n")).await;
    // Same host and port as seen by the runner? No: another port. The runs are compared by
    // endpoint identity, so both retries run against `healthy`, and the first run is made of
    // failed tasks only.
    let retry = |n: &'static str| {
        let mut cmd = rig.cmd(&["retry", n, "--poll-interval", "50ms", "--rate", "200/s"]);
        cmd.env("QINGCLOUD_ENDPOINT", healthy.endpoint());
        cmd
    };
    let first = Rig::output(retry("1")).await;
    assert_eq!(code(&first), 0, "stdout: {}\nstderr: {}", text(&first.stdout), text(&first.stderr));
    assert_all_deleted_exactly_once(&healthy.stats(), 2);
    let second = Rig::output(retry("1")).await;
    assert_eq!(code(&second), 0, "stdout: {}\nstderr: {}", text(&second.stdout), text(&second.stderr));
    assert!(text(&second.stdout).contains("0 deleted, 2 skipped"), "{}", text(&second.stdout));
    assert_all_deleted_exactly_once(&healthy.stats(), 2);
}

/// A run refused with 73 leaves no ghost a bare `resume` would pick and re-send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_by_the_lock_leaves_nothing_to_resume() {
    let rig = Rig::new("jobs: {pending_ms: 1500, working_ms: 1500}\n", &one_per_cluster(2)).await;
    let first = rig.run_cmd(&[]).spawn().expect("first run starts");
    eventually("the first run to submit", || async { (run_calls(&rig.stats()) >= 2).then_some(()) }).await;
    let second = rig.run(&[]).await;
    assert_eq!(code(&second), 73, "stdout: {}\nstderr: {}", text(&second.stdout), text(&second.stderr));
    let out = wait(first).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let refused = states(&rig.db, 2).await;
    assert!(refused.is_empty(), "the refused run has no tasks: {refused:?}");
    let resume = rig.resume(&[]).await;
    assert_eq!(code(&resume), 0, "stdout: {}\nstderr: {}", text(&resume.stdout), text(&resume.stderr));
    assert!(text(&resume.stdout).contains("no unfinished run"), "{}", text(&resume.stdout));
    assert_all_deleted_exactly_once(&rig.stats(), 2);
}

/// `resume` of a finished run changes nothing and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_a_finished_run_changes_nothing() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &one_per_cluster(2)).await;
    assert_eq!(code(&rig.run(&[]).await), 0);
    let snapshot = |db: std::path::PathBuf| async move {
        let mut conn = raw_connection(&db).await;
        let finished: Option<String> =
            sqlx::query_scalar("SELECT finished_at FROM runs WHERE id = 1").fetch_one(&mut conn).await.unwrap();
        let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(&mut conn).await.unwrap();
        (finished, records)
    };
    let before = snapshot(rig.db.clone()).await;
    let out = rig.resume(&["1"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to resume"), "{}", text(&out.stdout));
    assert_eq!(snapshot(rig.db.clone()).await, before, "finished_at and the audit log are untouched");
    assert_eq!(run_calls(&rig.stats()), 2);
}

/// A protected user written into the database is never signed into a request, by `resume` or
/// by `retry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_user_written_into_the_database_is_never_sent() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10, fail_rate: 1.0}\n", &one_per_cluster(3)).await;
    let out = rig.run(&["--max-attempts", "1"]).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    {
        let mut conn = raw_connection(&rig.db).await;
        sqlx::query("UPDATE tasks SET user = 'root' WHERE id = 1").execute(&mut conn).await.unwrap();
        sqlx::query("UPDATE tasks SET user = 'QC_Admin', state = 'pending' WHERE id = 2")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE runs SET finished_at = NULL WHERE id = 1").execute(&mut conn).await.unwrap();
    }
    let before = run_calls(&rig.stats());
    // One attempt each: every job of this world fails, and retrying them would only wait out
    // real back-off (the runner's unit tests cover back-off on virtual time).
    let retry =
        Rig::output(rig.cmd(&["retry", "1", "--poll-interval", "50ms", "--rate", "200/s", "--max-attempts", "1"]))
            .await;
    let resume = rig.resume(&["1", "--max-attempts", "1"]).await;
    for out in [&retry, &resume] {
        assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    }
    let stats = rig.stats();
    let protected: Vec<_> =
        stats.accounts.iter().filter(|a| ["root", "qc_admin"].contains(&a.user.to_lowercase().as_str())).collect();
    assert!(protected.is_empty(), "a protected account reached the API: {protected:?}");
    let mut conn = raw_connection(&rig.db).await;
    let sent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_calls WHERE action = 'RunClusterCustomService' \
         AND (lower(params) LIKE '%root%' OR lower(params) LIKE '%qc_admin%')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(sent, 0);
    assert!(run_calls(&stats) >= before, "other accounts may be retried");
    let msg: String =
        sqlx::query_scalar("SELECT last_message FROM tasks WHERE id = 2").fetch_one(&mut conn).await.unwrap();
    assert!(msg.contains("protected"), "{msg}");
}

/// An approved plan runs exactly its planned states: a `not_due` task stays `not_due` in that
/// run even once its date has come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_not_due_task_stays_not_due() {
    let later = (Utc::now() + chrono::Duration::days(3)).format("%Y-%m-%d").to_string();
    let manifest = format!(
        "version: 1\nrequested_by: alice@example.com\nclusters:\n  - id: cl-p000\n    zone: sh1a\n    users: [a0, a1, a2, \
         {{user: later, not_before: {later}}}]\n"
    );
    let rig = Rig::new("jobs: {pending_ms: 200, working_ms: 200}\n", &manifest).await;
    let plan = rig.home.path().join("p.plan.json");
    let m = rig.manifest.to_str().unwrap().to_owned();
    let made = Rig::output(rig.cmd(&["plan", &m, "--out", plan.to_str().unwrap()])).await;
    assert_eq!(code(&made), 0, "{}", text(&made.stderr));
    let child = rig
        .cmd(&["run", "--plan", plan.to_str().unwrap(), "--rate", "2/s", "--poll-interval", "50ms"])
        .spawn()
        .expect("run starts");
    eventually("a submission", || async { (run_calls(&rig.stats()) >= 1).then_some(()) }).await;
    signal(&child, rustix::process::Signal::INT);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(code(&out), 75, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    {
        // Its date has come (as far as the database is concerned).
        let mut conn = raw_connection(&rig.db).await;
        sqlx::query("UPDATE tasks SET not_before = '2000-01-01' WHERE user = 'later'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let out = rig.resume(&["1"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(rig.stats().accounts.iter().all(|a| a.user != "later"), "the not_due task was sent");
    let st = states(&rig.db, 1).await;
    assert_eq!(count_of(&st, "not_due"), 1, "{st:?}");
}

/// `--deadline` follows the jobs already accepted to their end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_follows_running_jobs() {
    let rig = Rig::new("jobs: {pending_ms: 800, working_ms: 1200}\n", &one_per_cluster(30)).await;
    let out = rig.run(&["--deadline", "1s", "--rate", "10/s"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 75, "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    let st = states(&rig.db, 1).await;
    assert_eq!(count_of(&st, "submitted") + count_of(&st, "submitting"), 0, "jobs were followed: {st:?}");
    assert!(count_of(&st, "deleted") >= 1, "{st:?}");
    assert!(stdout.contains("0 in flight"), "{stdout}");
}

/// `/iaas` and `/iaas/` are one endpoint: what one run deleted, the next skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_spelled_another_way_is_the_same_endpoint() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &one_per_cluster(3)).await;
    assert_eq!(code(&rig.run(&[]).await), 0);
    let mut cmd = rig.run_cmd(&[]);
    let spelled = rig.sim.endpoint().trim_end_matches('/').to_owned();
    cmd.env("QINGCLOUD_ENDPOINT", &spelled);
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("0 deleted, 3 skipped"), "{}", text(&out.stdout));
    assert_eq!(run_calls(&rig.stats()), 3);
}

/// `resume` and `retry` on a path with no database refuse with 78 and create nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_retry_never_create_a_database() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &one_per_cluster(1)).await;
    let typo = rig.home.path().join("typo.db");
    for args in [vec!["resume"], vec!["retry", "1"]] {
        let mut cmd = rig.cmd(&args);
        cmd.env("QC_OFFBOARD_DB", &typo);
        let out = Rig::output(cmd).await;
        assert_eq!(code(&out), 78, "{args:?}\nstdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

/// `run` takes today from the clock: `QC_OFFBOARD_TODAY` cannot make a future `not_before` due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_ignores_a_today_override() {
    let manifest =
        "version: 1\nclusters:\n  - id: cl-d000\n    zone: sh1a\n    users: [{user: future, not_before: 2099-01-01}]\n";
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", manifest).await;
    let mut cmd = rig.run_cmd(&[]);
    cmd.env("QC_OFFBOARD_TODAY", "2100-01-01");
    let out = Rig::output(cmd).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("1 not due"), "{}", text(&out.stdout));
    assert_eq!(run_calls(&rig.stats()), 0);
}

/// A job that outlives `--job-timeout` ends its task `failed` without a second request; `retry`
/// and a later `run` adopt that job and follow it instead of sending the account again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_outlives_the_job_timeout_is_followed_by_later_runs_never_resent() {
    // Jobs of 3 s against a 1 s job timeout; `retry` then follows them to their end.
    let rig = Rig::new("jobs: {pending_ms: 500, working_ms: 2500}\n", &one_per_cluster(2)).await;
    let out = rig.run(&["--job-timeout", "1s"]).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("not resubmitted"), "{}", text(&out.stdout));
    let retry = Rig::output(rig.cmd(&["retry", "1", "--poll-interval", "50ms", "--rate", "200/s"])).await;
    assert_eq!(code(&retry), 0, "stdout: {}\nstderr: {}", text(&retry.stdout), text(&retry.stderr));
    assert!(text(&retry.stdout).contains("2 deleted"), "{}", text(&retry.stdout));
    assert_all_deleted_exactly_once(&rig.stats(), 2);
    let again = rig.run(&[]).await;
    assert!(text(&again.stdout).contains("0 deleted, 2 skipped"), "{}", text(&again.stdout));
    assert_all_deleted_exactly_once(&rig.stats(), 2);
    let st = states(&rig.db, 1).await;
    assert_eq!(count_of(&st, "handed_over"), 2, "run 1's attempts were adopted: {st:?}");
}

/// Names edited into the database that only look harmless: a protected user with a NUL or a
/// zero-width space, a quote that would end the name, and a removed account set back to
/// `pending`. None is signed into a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_rows_never_smuggle_a_request_past_the_last_check() {
    let rig = Rig::new("jobs: {pending_ms: 10, working_ms: 10}\n", &one_per_cluster(4)).await;
    assert_eq!(code(&rig.run(&[]).await), 0);
    {
        let mut conn = raw_connection(&rig.db).await;
        let edits = [(1, "root\u{0}"), (2, "ro\u{200b}ot"), (3, "bob'@'%', 'root")];
        for (id, user) in edits {
            sqlx::query("UPDATE tasks SET user = ?, state = 'pending', finished_at = NULL WHERE id = ?")
                .bind(user)
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        // A removed account set back to pending with its name unchanged.
        sqlx::query("UPDATE tasks SET state = 'pending', finished_at = NULL WHERE id = 4")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE runs SET finished_at = NULL WHERE id = 1").execute(&mut conn).await.unwrap();
    }
    let out = rig.resume(&["1"]).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(run_calls(&rig.stats()), 4, "nothing was sent after the edits: {:?}", rig.stats().accounts);
    let mut conn = raw_connection(&rig.db).await;
    let messages: Vec<String> = sqlx::query_scalar("SELECT last_message FROM tasks WHERE run_id = 1 ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(messages[0].contains("protected") && messages[1].contains("protected"), "{messages:?}");
    assert!(messages[2].contains("quote"), "{messages:?}");
    assert!(messages[3].contains("audit record"), "{messages:?}");
}

/// The "account does not exist" table comes from `--absent-on`, else the config file's
/// `absent_on`, else the defaults; a rule that does not parse is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absent_table_is_configurable() {
    let world_yaml =
        "jobs: {pending_ms: 10, working_ms: 10}\nclusters:\n  - id: cl-t000\n    zone: sh1a\n    users: []\n";
    for (config, flag, outcome, exit) in [
        ("absent_on: [\"job:2100\"]\n", None, "absent", 0),
        ("absent_on: [\"refusal:2100:does not exist\"]\n", None, "failed", 1),
        ("absent_on: [\"refusal:2100:does not exist\"]\n", Some("job:2100"), "absent", 0),
        ("absent_on: [\"nonsense\"]\n", None, "", 78),
    ] {
        let rig = Rig::new(world_yaml, &one_per_cluster(1)).await;
        let file = rig.home.path().join("config.yaml");
        std::fs::write(&file, config).unwrap();
        let mut args = vec!["--max-attempts", "1"];
        if let Some(rule) = flag {
            args.extend(["--absent-on", rule]);
        }
        let mut cmd = rig.run_cmd(&args);
        cmd.env("QINGCLOUD_CONFIG", &file);
        let out = Rig::output(cmd).await;
        assert_eq!(code(&out), exit, "{config} {flag:?}\nstdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
        if exit != 78 {
            let rows = rig.report().await;
            assert_eq!(rows[0]["outcome"], outcome, "{config} {flag:?}: {rows:#?}");
        }
    }
}

/// A 1400 that refuses the action or the key (it names no cluster and no user) would come back
/// for every task: the run stops with 69, nothing failed, everything resumable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_action_stops_the_run_with_69_instead_of_failing_every_task() {
    let rig = Rig::new("api: {refuse_custom_service: true}\n", &one_per_cluster(10)).await;
    // A slow rate, so the first answer comes back before the next request may leave.
    let out = rig.run(&["--rate", "2/s"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 69, "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("refused the action or the key") && stdout.contains("0 failed"), "{stdout}");
    assert!(run_calls(&rig.stats()) <= 2, "the run stopped at once: {:?}", rig.stats().requests_by_action);
    let st = states(&rig.db, 1).await;
    assert_eq!(count_of(&st, "pending"), 10, "{st:?}");
}

/// A second signal leaves at once: nothing is left `submitting` that never left, and `resume`
/// finishes every account exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_leaves_at_once_with_everything_recorded() {
    let rig = Rig::new("jobs: {pending_ms: 2000, working_ms: 2000}\n", &one_per_cluster(30)).await;
    let child = rig.run_cmd(&["--rate", "4/s", "--max-in-flight", "20"]).spawn().expect("run starts");
    eventually("some submissions", || async { (run_calls(&rig.stats()) >= 3).then_some(()) }).await;
    signal(&child, rustix::process::Signal::INT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(&child, rustix::process::Signal::INT);
    let out = wait(child).await;
    assert!(matches!(code(&out), 75 | 130), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let st = states(&rig.db, 1).await;
    let accepted: u64 = rig.stats().accounts.iter().map(|a| a.del_user_accepted).sum();
    let live = count_of(&st, "submitting") + count_of(&st, "submitted");
    assert!(live as u64 >= accepted, "every accepted request is on record as live: {st:?}, {accepted} accepted");
    assert!((count_of(&st, "submitting") as u64) <= accepted, "intents that never left were withdrawn: {st:?}");
    // Every cluster at once: the 4 s jobs are waited for in one wave, not two.
    let out = rig.resume(&["--max-in-flight", "30"]).await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert_all_deleted_exactly_once(&rig.stats(), 30);
}

/// The marks that keep a later run from sending again (`unresolved`, `adopted_from`) are
/// evidence too: `audit verify` names an edit of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_unresolved_mark_is_named_by_audit_verify() {
    let rig = Rig::new("jobs: {pending_ms: 500, working_ms: 5000}\n", &one_per_cluster(1)).await;
    let out = rig.run(&["--job-timeout", "1s"]).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(code(&rig.audit_verify().await), 0);
    {
        let mut conn = raw_connection(&rig.db).await;
        sqlx::query("UPDATE tasks SET unresolved = NULL WHERE id = 1").execute(&mut conn).await.unwrap();
    }
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 1, "{}", text(&verify.stdout));
    assert!(text(&verify.stdout).contains("unresolved"), "{}", text(&verify.stdout));
}
