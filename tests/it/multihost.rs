//! Three hosts on one run through one PostgreSQL database (`QC_OFFBOARD_TEST_PG`, see `pg_db`):
//! host A starts the run, B and C join it with `resume`, B is killed (SIGKILL) and C stopped
//! (SIGTERM) part way, and A alone finishes it, taking over what B held once its leases ran out.
//! Against a simulator that loses responses and refuses past its quota (2500), every account
//! must end deleted by exactly one accepted `del_user`, no cluster may ever run two jobs at once,
//! the three hosts together must keep one rate, and the audit chain must verify.
//!
//! Real processes, a real server, real time; skipped, saying so, without the variable.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use qc_offboard::sim::{SimHandle, Stats};
use sqlx::PgConnection;
use tokio::process::{Child, Command};

use crate::helpers::{start_sim, tempdir, world};
use crate::pg_db::TestDb;
use crate::runner::{assert_all_deleted_exactly_once, manifest_text, run_calls, text, with_defaults};

/// Short jobs; one response in ten lost after the request took effect; a quota of 30 requests a
/// second on average (60 per 2 s window), under the 40/s the hosts are allowed, so 2500s come.
const WORLD: &str = "seed: 23\n\
                     jobs: {pending_ms: 30, working_ms: 200}\n\
                     faults: {lost_response_rate: 0.1}\n\
                     quota: {requests: 60, window_s: 2}\n";

/// The ceiling all hosts share (`--rate`), and `--burst` (its default).
const RATE_PER_S: f64 = 40.0;
const BURST: f64 = 1.0;

/// Tuning every host gets: a 3 s lease so B's tasks are taken over soon after it dies; a settle
/// past the simulator's (unlagged) listings; a job timeout far above the jobs' 230 ms.
const TUNING: [&str; 14] = [
    "--lease",
    "3s",
    "--rate",
    "40/s",
    "--reconcile-settle",
    "1s",
    "--job-timeout",
    "20s",
    "--poll-interval",
    "300ms",
    "--retry-base",
    "100ms",
    "--max-attempts",
    "30",
];

/// Run 1 is the first run of a fresh database.
const RUN: &str = "1";

/// One runner process, its stdout and stderr in files (so a hung host can still be diagnosed).
struct Host {
    name: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Host {
    fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Host {
        let (stdout, stderr) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
        cmd.stdout(std::fs::File::create(&stdout).expect("stdout file"));
        cmd.stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("the runner starts");
        Host { name, child, stdout, stderr }
    }

    fn pid(&self) -> i64 {
        i64::from(self.child.id().expect("a running host has a pid"))
    }

    fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- host {} stdout:\n{}--- host {} stderr:\n{}",
            self.name,
            read(&self.stdout),
            self.name,
            read(&self.stderr)
        )
    }

    async fn wait_within(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the host"),
            Err(_) => panic!("host {} did not end within {limit:?}\n{}", self.name, self.logs()),
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = self.child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)).expect("child pid");
        rustix::process::kill_process(pid, sig).expect("send the signal");
    }
}

/// The real binary with a scrubbed environment, the simulator's endpoint and credentials, and
/// the test database as `--db`.
fn runner(home: &Path, sim: &SimHandle, db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("qc-offboard"));
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("QINGCLOUD_ACCESS_KEY", "QYACCESSKEYIDEXAMPLE")
        .env("QINGCLOUD_SECRET_KEY", "SECRETACCESSKEY")
        .env("QINGCLOUD_ENDPOINT", sim.endpoint())
        .env("RUST_LOG", "qc_offboard=info")
        .arg("--no-progress")
        .args(args)
        .args(["--db", &db.url])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// One number from the database; `None` while the schema is not there yet (host A creates it).
async fn count(conn: &mut PgConnection, sql: &str) -> Option<i64> {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(conn).await.ok()
}

async fn count_for(conn: &mut PgConnection, sql: &str, bind: i64) -> Option<i64> {
    sqlx::query_scalar::<_, i64>(sql).bind(bind).fetch_one(conn).await.ok()
}

/// One step of a wait for `what`: fail (with the hosts' output) if one of `alive` has ended or
/// `deadline` has passed, else sleep 50 ms.
async fn pace(what: &str, deadline: Instant, alive: &mut [&mut Host]) {
    let ended = alive.iter_mut().find_map(|h| match h.child.try_wait() {
        Ok(Some(status)) => Some((h.name, status)),
        _ => None,
    });
    if let Some((name, status)) = ended {
        let logs: Vec<String> = alive.iter().map(|h| h.logs()).collect();
        panic!("host {name} ended ({status}) while waiting for {what}\n{}", logs.join("\n"));
    }
    if Instant::now() > deadline {
        let logs: Vec<String> = alive.iter().map(|h| h.logs()).collect();
        panic!("timed out waiting for {what}\n{}", logs.join("\n"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The most requests that arrived within any `window` (from the simulator's arrival log).
fn busiest(arrivals: &[i64], window: Duration) -> usize {
    let w = i64::try_from(window.as_millis()).expect("short window");
    let mut most = 0;
    let mut start = 0;
    for end in 0..arrivals.len() {
        while arrivals[end] - arrivals[start] >= w {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// Host A has begun: a task of its run has left `pending`.
const STARTED: &str = "SELECT count(*) FROM tasks WHERE run_id = 1 AND state <> 'pending'";

const DELETED: &str = "SELECT count(*) FROM tasks WHERE run_id = 1 AND state = 'deleted'";

/// Host B (its row in `run_hosts`, by pid) holds a live lease on a task whose job is in flight:
/// killing it now leaves work for a survivor to take over. (Not a task in `submitting`: a
/// request's lease lasts past its timeout, which would only make the takeover slower.)
const HOLDS_A_JOB: &str = "SELECT count(*) FROM tasks t JOIN run_hosts h ON h.owner = t.owner \
                           WHERE h.pid = $1 AND t.run_id = 1 AND t.state = 'submitted' \
                           AND t.lease_until > clock_timestamp()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_a_run_and_the_survivor_finishes_it() {
    let Some(db) = TestDb::create("three_hosts_share_a_run_and_the_survivor_finishes_it").await else { return };
    let home = tempdir();
    let sim = start_sim(world(WORLD)).await;
    let manifest = home.path().join("manifest.yaml");
    std::fs::write(&manifest, manifest_text(60, 5, &["sh1a", "pek3"])).expect("write the manifest");
    let manifest = manifest.to_str().expect("utf-8 path");
    let started = Instant::now();
    let (mut a, joiners, mut conn, _) =
        start_hosts(home.path(), &sim, &db, manifest, &with_defaults(&TUNING), &["B", "C"]).await;
    let [mut b, mut c]: [Host; 2] = joiners.try_into().unwrap_or_else(|_| unreachable!("two joiners"));
    let b_pid = b.pid();

    // Part way, with B in the middle of a job: SIGKILL B, SIGTERM C.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let deleted = count(&mut conn, DELETED).await.unwrap_or(0);
        if deleted >= 40 && count_for(&mut conn, HOLDS_A_JOB, b_pid).await.unwrap_or(0) > 0 {
            break;
        }
        pace("40 deletions and host B holding a job in flight", deadline, &mut [&mut a, &mut b, &mut c]).await;
    }
    let b_owner: String = sqlx::query_scalar("SELECT owner FROM run_hosts WHERE pid = $1")
        .bind(b_pid)
        .fetch_one(&mut conn)
        .await
        .expect("host B's row in run_hosts");
    // `status RUN_ID` names the hosts working on the run.
    let status = runner(home.path(), &sim, &db, &["status", RUN, "--output", "json"])
        .stdout(Stdio::piped())
        .output()
        .await
        .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --output json");
    let live: Vec<i64> =
        status["live_hosts"].as_array().expect("live_hosts").iter().filter_map(|h| h["pid"].as_i64()).collect();
    for (name, pid) in [("A", a.pid()), ("B", b_pid), ("C", c.pid())] {
        assert!(live.contains(&pid), "host {name} (pid {pid}) is not among the live hosts {status}");
    }
    b.child.kill().await.expect("SIGKILL host B");
    c.signal(rustix::process::Signal::TERM);
    let deleted_at_kill = count(&mut conn, DELETED).await.unwrap_or_default();
    let c_status = c.wait_within(Duration::from_secs(60)).await;
    // A stop stops: C leaves with the run's other tasks still to do, which is 75 (SPEC §2).
    assert_eq!(c_status.code(), Some(75), "host C after SIGTERM\n{}", c.logs());

    let a_status = a.wait_within(Duration::from_secs(240)).await;
    let took = started.elapsed();
    let stats = sim.stats();
    let takeovers = count(&mut conn, "SELECT count(*) FROM audit_log WHERE kind = 'lease_taken_over'").await;
    summary(&stats, took, deleted_at_kill, takeovers);
    assert_eq!(a_status.code(), Some(0), "host A, the survivor\n{}\n{}\n{}", a.logs(), b.logs(), c.logs());

    assert_scenario_happened(&stats);
    assert_all_deleted_exactly_once(&stats, 300);
    assert!(
        stats.cluster_overlaps.is_empty() && stats.cluster_overlaps_not_logged == 0,
        "two jobs ran at once on a cluster: {:#?}",
        stats.cluster_overlaps
    );
    assert_one_rate(&stats);

    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM tasks WHERE run_id = 1 GROUP BY state ORDER BY state")
            .fetch_all(&mut conn)
            .await
            .expect("tasks by state");
    assert_eq!(states, [("deleted".to_owned(), 300)], "every task of the run ends deleted");
    let all_tasks = count(&mut conn, "SELECT count(*) FROM tasks").await;
    assert_eq!(all_tasks, Some(300), "resume joined run 1 instead of starting another");
    // The survivors took over what the killed host held once its lease ran out.
    let from_b: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE kind = 'lease_taken_over' AND detail::jsonb ->> 'from_owner' = $1",
    )
    .bind(&b_owner)
    .fetch_one(&mut conn)
    .await
    .expect("takeovers from host B");
    assert!(from_b > 0, "no lease of host B ({b_owner}) was taken over; takeovers in all: {takeovers:?}");

    let verify = runner(home.path(), &sim, &db, &["audit", "verify"]).output().await.expect("audit verify runs");
    assert_eq!(verify.status.code(), Some(0), "audit verify: {}{}", text(&verify.stdout), text(&verify.stderr));
}

/// The world did what the scenario needs: responses were lost and the quota refused some.
fn assert_scenario_happened(stats: &Stats) {
    assert!(stats.faults_injected.get("lost_response").copied().unwrap_or(0) > 0, "no response was lost");
    assert!(stats.ret_code(2500) > 0, "the quota never refused a request: {:?}", stats.ret_codes);
}

/// Every request of every host, whatever its action and answer, passed one limiter: any window
/// of W seconds holds at most rate × W + burst of them. The arrival times are the simulator's,
/// so each may come a little after its slot (a timer woken late, the trip over loopback); the
/// slack allows for about 75 ms of that, far less than a second host's worth of requests.
fn assert_one_rate(stats: &Stats) {
    assert_eq!(stats.arrivals_not_logged, 0);
    let arrivals = sorted_arrivals(stats);
    assert_eq!(arrivals.len() as u64, stats.requests_total, "every request's arrival was logged");
    const SLACK: f64 = 3.0;
    for window in [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(10)] {
        let most = busiest(&arrivals, window);
        let allowed = RATE_PER_S * window.as_secs_f64() + BURST + SLACK;
        assert!(most as f64 <= allowed, "{most} requests within {window:?}; the shared rate allows {allowed}");
    }
}

fn summary(stats: &Stats, took: Duration, deleted_at_kill: i64, takeovers: Option<i64>) {
    eprintln!(
        "multihost: {:.1} s; {} API calls ({} del_user, {} DescribeJobs); {} refused 2500; {} responses lost; \
         {} deleted when B and C stopped; {} leases taken over; busiest second {} calls",
        took.as_secs_f64(),
        stats.requests_total,
        run_calls(stats),
        stats.requests_of("DescribeJobs"),
        stats.ret_code(2500),
        stats.faults_injected.get("lost_response").copied().unwrap_or(0),
        deleted_at_kill,
        takeovers.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        busiest(&sorted_arrivals(stats), Duration::from_secs(1)),
    );
}

fn sorted_arrivals(stats: &Stats) -> Vec<i64> {
    let mut arrivals = stats.arrivals_ms.clone();
    arrivals.sort_unstable();
    arrivals
}

/// Every connection of every host to the database is cut twice while a run of two hosts goes
/// on (a server restart, a network hiccup): each statement that failed so is tried once more on
/// a new connection, the hosts carry on, and the run ends deleted, each account accepted once.
/// Before, the first cut ended every host with 70 ("a bug").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_carry_on_when_their_database_connections_are_cut() {
    let Some(db) = TestDb::create("hosts_carry_on_when_their_database_connections_are_cut").await else { return };
    let home = tempdir();
    let sim = start_sim(world("seed: 5\njobs: {pending_ms: 30, working_ms: 300}\n")).await;
    let manifest = home.path().join("manifest.yaml");
    std::fs::write(&manifest, manifest_text(20, 3, &["sh1a"])).expect("write the manifest");
    let manifest = manifest.to_str().expect("utf-8 path");
    let tuning = ["--lease", "5s", "--rate", "40/s", "--reconcile-settle", "1s", "--poll-interval", "200ms"];
    let (mut a, mut joiners, mut conn, deadline) = start_hosts(home.path(), &sim, &db, manifest, &tuning, &["B"]).await;
    let mut b = joiners.remove(0);
    for cut in [6, 24] {
        while count(&mut conn, DELETED).await.is_none_or(|n| n < cut) {
            pace("deletions", deadline, &mut [&mut a, &mut b]).await;
        }
        // A burst of cuts, so that some statement is in flight when one lands (an idle
        // connection is replaced unseen); the burst is over before a failed statement's retry.
        for _ in 0..4 {
            cut_all(&mut conn).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    let (sa, sb) = (a.wait_within(Duration::from_secs(120)).await, b.wait_within(Duration::from_secs(120)).await);
    assert!(sa.success() && sb.success(), "A {sa}, B {sb}\n{}\n{}", a.logs(), b.logs());
    assert!(a.logs().contains("trying once more") || b.logs().contains("trying once more"), "a statement was cut");
    let stats = sim.stats();
    assert_all_deleted_exactly_once(&stats, 60);
    assert_eq!(count(&mut conn, DELETED).await, Some(60));
    let verify =
        runner(home.path(), &sim, &db, &["audit", "verify"]).stdout(Stdio::piped()).output().await.expect("verify");
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}

/// Host A runs `manifest` with `tuning`; once its run has begun, each of `joiners` joins it
/// (`resume RUN`). With a connection to the database, and the deadline (60 s from A's start)
/// that A's start was waited for under.
async fn start_hosts(
    home: &Path,
    sim: &SimHandle,
    db: &TestDb,
    manifest: &str,
    tuning: &[&str],
    joiners: &[&'static str],
) -> (Host, Vec<Host>, PgConnection, Instant) {
    let mut conn = db.raw().await;
    let with_tuning = |first: &[&str]| -> Vec<String> { first.iter().chain(tuning).map(|s| s.to_string()).collect() };
    let run_args = with_tuning(&["run", manifest]);
    let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let mut a = Host::spawn("A", runner(home, sim, db, &run_args), home);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&mut conn, STARTED).await.unwrap_or(0) <= 0 {
        pace("host A to start its run", deadline, &mut [&mut a]).await;
    }
    let resume_args = with_tuning(&["resume", RUN]);
    let resume_args: Vec<&str> = resume_args.iter().map(String::as_str).collect();
    let joined = joiners.iter().map(|name| Host::spawn(name, runner(home, sim, db, &resume_args), home)).collect();
    (a, joined, conn, deadline)
}

/// Terminate every connection to the test's database but this one.
async fn cut_all(conn: &mut PgConnection) {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("the hosts' connections");
    for pid in pids {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut *conn).await.expect("cut a connection");
    }
}

/// A host frozen (SIGSTOP) for longer than its lease, then thawed: the other host takes its
/// tasks over, the thawed one writes nothing for them, and both end (a task it claimed again
/// while its last write was being refused used to stay held by it, renewed for ever, and the
/// run never ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_frozen_past_its_lease_neither_writes_nor_holds_the_run_up() {
    let Some(db) = TestDb::create("a_host_frozen_past_its_lease_neither_writes_nor_holds_the_run_up").await else {
        return;
    };
    let home = tempdir();
    let sim = start_sim(world("seed: 8\njobs: {pending_ms: 30, working_ms: 400}\n")).await;
    let manifest = home.path().join("manifest.yaml");
    std::fs::write(&manifest, manifest_text(30, 4, &["sh1a"])).expect("write the manifest");
    let manifest = manifest.to_str().expect("utf-8 path");
    let tuning = ["--lease", "2s", "--rate", "40/s", "--reconcile-settle", "1s", "--poll-interval", "200ms"];
    let (mut a, mut joiners, mut conn, deadline) = start_hosts(home.path(), &sim, &db, manifest, &tuning, &["B"]).await;
    let mut b = joiners.remove(0);
    let b_pid = b.pid();
    while count_for(&mut conn, HOLDS_A_JOB, b_pid).await.unwrap_or(0) == 0 {
        pace("host B to hold a job", deadline, &mut [&mut a, &mut b]).await;
    }
    b.signal(rustix::process::Signal::STOP);
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.signal(rustix::process::Signal::CONT);
    let (sa, sb) = (a.wait_within(Duration::from_secs(120)).await, b.wait_within(Duration::from_secs(120)).await);
    assert!(sa.success() && sb.success(), "A {sa}, B {sb}\n{}\n{}", a.logs(), b.logs());
    assert_all_deleted_exactly_once(&sim.stats(), 120);
    assert_eq!(count(&mut conn, DELETED).await, Some(120));
    let taken = count(&mut conn, "SELECT count(*) FROM audit_log WHERE kind = 'lease_taken_over'").await;
    assert!(taken.unwrap_or(0) > 0, "B's tasks were taken over while it was frozen");
    let verify =
        runner(home.path(), &sim, &db, &["audit", "verify"]).stdout(Stdio::piped()).output().await.expect("verify");
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}
