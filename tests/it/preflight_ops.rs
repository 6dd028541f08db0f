//! Preflight and discovery, broken the way a hostile operator (or a hostile API) would: Ctrl-C,
//! SIGTERM and SIGKILL while clusters are being looked up, `retry` and `run` again over
//! `not_ready` and refused tasks while the world changes, an account already gone on a
//! discovered cluster, every pessimistic `api:` option and fault while DescribeClusters and
//! DescribeTags answer, a discovery listing cut off mid-pages, and an approved plan run after its
//! clusters changed. The promise checked everywhere (SPEC §8): per account, at most one accepted
//! `del_user`, none to a cluster that is ceased, stopped, not MySQL Plus or unknown — unless the
//! run recorded that it could not check that cluster (`preflight_unchecked`) — and every run
//! ends. The simulator's `/sim/stats` and the database are the oracles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use qc_offboard::sim::Stats;
use sqlx::Row;

use crate::helpers::{eventually, raw_connection, start_sim, world};
use crate::runner::{code, run_calls, text, Rig};

/// Zones of the slow-preflight worlds: one DescribeClusters per zone.
const ZONES: [&str; 8] = ["sh1a", "pek3", "gd2", "ap2a", "pek3a", "sh1b", "gd2a", "ap1"];

/// One active MySQL Plus cluster per zone of [`ZONES`], with `bob@%` on each, and a manifest
/// naming them: at `--rate 2/s` its preflight takes about 3.5 s (eight calls).
fn eight_zones() -> (String, String) {
    let mut w = String::from("jobs: {pending_ms: 20, working_ms: 30}\nclusters:\n");
    let mut m = String::from("version: 1\nticket: OPS-16\nrequested_by: hr@example.com\nclusters:\n");
    for (i, z) in ZONES.iter().enumerate() {
        w.push_str(&format!("  - {{id: cl-z{i}, zone: {z}, users: ['bob@%']}}\n"));
        m.push_str(&format!("  - {{id: cl-z{i}, zone: {z}, users: [bob]}}\n"));
    }
    (w, m)
}

fn signal(child: &tokio::process::Child, sig: rustix::process::Signal) {
    let pid = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)).expect("child pid");
    rustix::process::kill_process(pid, sig).expect("send the signal");
}

async fn wait(child: tokio::process::Child) -> Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run ends")
        .expect("wait for the run")
}

fn describe_clusters(stats: &Stats) -> u64 {
    stats.requests_of("DescribeClusters")
}

/// Accepted `del_user` per (cluster, user), summed over several simulators (a world replaced
/// by a restart starts counting again).
fn accepted(stats: &[&Stats]) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for s in stats {
        for a in &s.accounts {
            *out.entry((a.cluster.clone(), a.user.clone())).or_default() += a.del_user_accepted;
        }
    }
    out
}

fn accepted_of(map: &BTreeMap<(String, String), u64>, cluster: &str, user: &str) -> u64 {
    map.get(&(cluster.to_owned(), user.to_owned())).copied().unwrap_or(0)
}

/// Every `RunClusterCustomService` request the simulator received, by cluster.
fn requests_to(stats: &Stats) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in stats.requests.iter().filter(|r| r.action == "RunClusterCustomService") {
        *out.entry(r.cluster.clone()).or_default() += 1;
    }
    out
}

/// `(cluster, state)` of the tasks of `run_id`, sorted.
async fn task_states(db: &Path, run_id: i64) -> Vec<(String, String)> {
    let mut conn = raw_connection(db).await;
    let rows = sqlx::query("SELECT cluster, state FROM tasks WHERE run_id = ? ORDER BY cluster, user")
        .bind(run_id)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.iter().map(|r| (r.get("cluster"), r.get("state"))).collect()
}

fn state_of(states: &[(String, String)], cluster: &str) -> Option<String> {
    states.iter().find(|(c, _)| c == cluster).map(|(_, s)| s.clone())
}

/// The clusters every run's `preflight_unchecked` records name (run id → clusters).
async fn unchecked(db: &Path) -> BTreeMap<i64, BTreeSet<String>> {
    let mut conn = raw_connection(db).await;
    let rows = sqlx::query("SELECT run_id, detail FROM audit_log WHERE kind = 'preflight_unchecked'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut out: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        let detail: serde_json::Value = serde_json::from_str(&r.get::<String, _>("detail")).unwrap();
        let clusters = detail["clusters"].as_array().cloned().unwrap_or_default();
        out.entry(r.get("run_id")).or_default().extend(clusters.iter().filter_map(|c| c.as_str().map(str::to_owned)));
    }
    out
}

/// `(run_id, cluster)` of every `RunClusterCustomService` the runs recorded.
async fn recorded_requests(db: &Path) -> Vec<(i64, String)> {
    let mut conn = raw_connection(db).await;
    let rows = sqlx::query("SELECT run_id, params FROM api_calls WHERE action = 'RunClusterCustomService'")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let params: serde_json::Value = serde_json::from_str(&r.get::<String, _>("params")).unwrap();
            (r.get("run_id"), params["cluster"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

async fn audit_kinds(db: &Path, run_id: i64, kind: &str) -> i64 {
    let mut conn = raw_connection(db).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE run_id = ? AND kind = ?")
        .bind(run_id)
        .bind(kind)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn assert_chain_intact(rig: &Rig, what: &str) {
    let verify = rig.audit_verify().await;
    assert_eq!(code(&verify), 0, "{what}: audit verify: {}{}", text(&verify.stdout), text(&verify.stderr));
}

fn show(out: &Output) -> String {
    format!("exit {}\nstdout: {}\nstderr: {}", code(out), text(&out.stdout), text(&out.stderr))
}

/// Replace the simulator behind `rig` by one of `world_yaml` on the same port, so the endpoint
/// (and so the identity of every account) stays the same. Returns the old one's last stats.
async fn restart_with(rig: &mut Rig, world_yaml: &str) -> Stats {
    let addr = rig.sim.addr;
    let old = std::mem::replace(&mut rig.sim, start_sim(world("{}")).await);
    let stats = old.stats();
    old.shutdown().await;
    rig.sim = qc_offboard::sim::start(world(world_yaml), addr).await.expect("the same port again");
    stats
}

// ---------------------------------------------------------------------------------------------
// 1. A signal while preflight looks clusters up.

/// SIGINT and SIGTERM while DescribeClusters is still being asked: the run stops before any
/// `del_user`, records the stop, exits 75 and is resumable; `resume` deletes every account
/// exactly once and the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_during_preflight_stops_before_any_del_user_and_resume_finishes() {
    use rustix::process::Signal;
    for sig in [Signal::INT, Signal::TERM] {
        let (w, m) = eight_zones();
        let rig = Rig::new(&w, &m).await;
        let child = rig.run_cmd(&["--rate", "2/s"]).spawn().expect("run starts");
        eventually("preflight under way", || async { (describe_clusters(&rig.stats()) >= 2).then_some(()) }).await;
        signal(&child, sig);
        let at_signal = describe_clusters(&rig.stats());
        let out = wait(child).await;
        assert_eq!(code(&out), 75, "{sig:?}: {}", show(&out));
        assert!(text(&out.stdout).contains("stopped by a signal"), "{sig:?}: {}", show(&out));
        assert!(text(&out.stdout).contains("resume 1"), "{sig:?}: the summary says how to go on: {}", show(&out));
        let stats = rig.stats();
        assert_eq!(run_calls(&stats), 0, "{sig:?}: no del_user after a stop during preflight");
        assert!(describe_clusters(&stats) <= at_signal + 1, "{sig:?}: preflight went on after the signal");
        let st = task_states(&rig.db, 1).await;
        assert!(st.iter().all(|(_, s)| s == "pending"), "{sig:?}: {st:?}");
        assert!(audit_kinds(&rig.db, 1, "run_stopping").await >= 1, "{sig:?}: the stop is audited");

        let out = rig.resume(&[]).await;
        assert_eq!(code(&out), 0, "{sig:?} resume: {}", show(&out));
        let stats = rig.stats();
        let acc = accepted(&[&stats]);
        for i in 0..ZONES.len() {
            assert_eq!(accepted_of(&acc, &format!("cl-z{i}"), "bob"), 1, "{sig:?}: cl-z{i}: {acc:?}");
        }
        assert_chain_intact(&rig, &format!("{sig:?}")).await;
    }
}

/// A signal while `discover:` selectors are being expanded (before the run exists): nothing is
/// sent, and the command ends by itself with a code instead of dying with the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_during_discovery_sends_nothing_and_exits_with_a_code() {
    let mut w = String::from("jobs: {pending_ms: 20, working_ms: 30}\nclusters:\n");
    for (i, z) in ZONES.iter().enumerate() {
        w.push_str(&format!("  - {{id: cl-d{i}, zone: {z}, tags: [prod], users: ['bob@%']}}\n"));
    }
    let zones = ZONES.join(", ");
    let m = format!("version: 1\ndiscover:\n  - zones: [{zones}]\n    tags: [prod]\n    users: [bob]\n");
    let rig = Rig::new(&w, &m).await;
    let child = rig.run_cmd(&["--rate", "2/s"]).spawn().expect("run starts");
    eventually("discovery under way", || async { (rig.stats().requests_of("DescribeTags") >= 2).then_some(()) }).await;
    signal(&child, rustix::process::Signal::INT);
    let out = wait(child).await;
    assert_eq!(run_calls(&rig.stats()), 0, "{}", show(&out));
    assert_eq!(code(&out), 75, "{}", show(&out));
    // Nothing to resume: no run holds tasks, and a later run does everything once.
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "{}", show(&out));
    let acc = accepted(&[&rig.stats()]);
    assert!(acc.values().all(|n| *n == 1) && acc.len() == ZONES.len(), "{acc:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. SIGKILL, then a plain `run`, then `resume`.

/// SIGKILL while preflight looks clusters up; then a plain `run` of the same manifest and a
/// `resume` of the killed run: each account accepted exactly once, the resume sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_preflight_then_run_then_resume_deletes_each_account_once() {
    let (w, m) = eight_zones();
    let rig = Rig::new(&w, &m).await;
    let mut child = rig.run_cmd(&["--rate", "2/s"]).spawn().expect("run starts");
    eventually("preflight under way", || async { (describe_clusters(&rig.stats()) >= 2).then_some(()) }).await;
    child.kill().await.expect("SIGKILL");
    let _ = child.wait().await;
    assert_eq!(run_calls(&rig.stats()), 0);

    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "second run: {}", show(&out));
    let sent = run_calls(&rig.stats());
    assert_eq!(sent, ZONES.len() as u64);
    let out = rig.resume(&[]).await;
    assert_eq!(code(&out), 0, "resume of the killed run: {}", show(&out));
    assert_eq!(run_calls(&rig.stats()), sent, "resume sends nothing the second run did");
    let st = task_states(&rig.db, 1).await;
    assert!(st.iter().all(|(_, s)| s == "skipped"), "the killed run's tasks are skipped: {st:?}");
    let acc = accepted(&[&rig.stats()]);
    assert!(acc.values().all(|n| *n == 1), "{acc:?}");
    assert_chain_intact(&rig, "sigkill during preflight").await;
}

/// SIGKILL after some `del_user` were sent, in a run that also names a stopped, a ceased and a
/// Redis cluster; then a plain `run` and a `resume`: no account is accepted twice, none of the
/// three clusters gets a request, and their verdicts are the same in every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_run_then_resume_keeps_verdicts_and_sends_once() {
    let mut w = String::from("jobs: {pending_ms: 200, working_ms: 300}\nclusters:\n");
    let mut m = String::from("version: 1\ndefaults: {zone: sh1a}\nclusters:\n");
    for i in 0..12 {
        w.push_str(&format!("  - {{id: cl-a{i:02}, zone: sh1a, users: ['bob@%']}}\n"));
        m.push_str(&format!("  - {{id: cl-a{i:02}, users: [bob]}}\n"));
    }
    w.push_str("  - {id: cl-stop, zone: sh1a, status: stopped, users: ['bob@%']}\n");
    w.push_str("  - {id: cl-gone, zone: sh1a, status: ceased, users: ['bob@%']}\n");
    w.push_str("  - {id: cl-redis, zone: sh1a, app_id: app-redis0001, users: ['bob@%']}\n");
    m.push_str("  - {id: cl-stop, users: [bob]}\n  - {id: cl-gone, users: [bob]}\n  - {id: cl-redis, users: [bob]}\n");
    let rig = Rig::new(&w, &m).await;
    let mut child = rig.run_cmd(&["--rate", "6/s"]).spawn().expect("run starts");
    eventually("some submissions", || async { (run_calls(&rig.stats()) >= 3).then_some(()) }).await;
    child.kill().await.expect("SIGKILL");
    let _ = child.wait().await;

    let second = rig.run(&[]).await;
    assert_eq!(code(&second), 1, "the ceased and Redis clusters fail: {}", show(&second));
    let resumed = rig.resume(&["1"]).await;
    assert!(matches!(code(&resumed), 0 | 1 | 75), "{}", show(&resumed));
    let stats = rig.stats();
    let acc = accepted(&[&stats]);
    for i in 0..12 {
        assert_eq!(accepted_of(&acc, &format!("cl-a{i:02}"), "bob"), 1, "cl-a{i:02}: {acc:?}");
    }
    let to = requests_to(&stats);
    for c in ["cl-stop", "cl-gone", "cl-redis"] {
        assert_eq!(to.get(c), None, "{c} got a del_user: {to:?}");
    }
    for run in [1, 2] {
        let st = task_states(&rig.db, run).await;
        assert_eq!(state_of(&st, "cl-stop").as_deref(), Some("not_ready"), "run {run}: {st:?}");
        assert_eq!(state_of(&st, "cl-gone").as_deref(), Some("failed"), "run {run}: {st:?}");
        assert_eq!(state_of(&st, "cl-redis").as_deref(), Some("failed"), "run {run}: {st:?}");
        assert!(st.iter().all(|(_, s)| !["pending", "submitting", "submitted", "retry_wait"].contains(&s.as_str())));
    }
    assert_chain_intact(&rig, "sigkill mid-run").await;
}

// ---------------------------------------------------------------------------------------------
// 3. `retry` and `run` again over `not_ready` and refused tasks, while the world changes.

const THREE: &str = "version: 1
defaults: {zone: sh1a}
users:
  - user: bob
    clusters: [cl-act, cl-stop, cl-gone]
";

fn three_world(stop_status: &str) -> String {
    format!(
        "jobs: {{pending_ms: 10, working_ms: 10}}
clusters:
  - {{id: cl-act, zone: sh1a, users: ['bob@%']}}
  - {{id: cl-stop, zone: sh1a, status: {stop_status}, users: ['bob@%']}}
  - {{id: cl-gone, zone: sh1a, status: ceased, users: ['bob@%']}}
"
    )
}

/// A run leaves a stopped cluster `not_ready` and a ceased one `failed`. `retry` twice and
/// `run` twice send nothing to either; `retry` takes only the failed task (as the README says:
/// `not_ready` is for a later run of the manifest). Once the cluster runs again (same endpoint,
/// same database), the next `run` deletes the account once, and the run after it skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_run_again_over_not_ready_and_ceased_clusters() {
    let mut rig = Rig::new(&three_world("stopped"), THREE).await;
    let first = rig.run(&[]).await;
    assert_eq!(code(&first), 1, "{}", show(&first));
    let st = task_states(&rig.db, 1).await;
    assert_eq!(state_of(&st, "cl-act").as_deref(), Some("deleted"));
    assert_eq!(state_of(&st, "cl-stop").as_deref(), Some("not_ready"));
    assert_eq!(state_of(&st, "cl-gone").as_deref(), Some("failed"));

    let retry = |rig: &Rig, n: &'static str| {
        rig.cmd(&["retry", n, "--poll-interval", "50ms", "--rate", "200/s", "--reconcile-settle", "1s"])
    };
    // retry 1 (run 2), retry 1 again (run 3): only the ceased cluster's task, refused again.
    for run in [2, 3] {
        let out = Rig::output(retry(&rig, "1")).await;
        assert_eq!(code(&out), 1, "retry → run {run}: {}", show(&out));
        assert!(text(&out.stdout).contains("retries the 1 failed task(s) of run 1"), "{}", show(&out));
        let st = task_states(&rig.db, run).await;
        assert_eq!(st, [("cl-gone".to_owned(), "failed".to_owned())], "run {run}");
    }
    // run twice (runs 4, 5): the stopped cluster is still not ready.
    for run in [4, 5] {
        let out = rig.run(&[]).await;
        assert_eq!(code(&out), 1, "run {run}: {}", show(&out));
        let st = task_states(&rig.db, run).await;
        assert_eq!(state_of(&st, "cl-act").as_deref(), Some("skipped"), "run {run}");
        assert_eq!(state_of(&st, "cl-stop").as_deref(), Some("not_ready"), "run {run}");
        assert_eq!(state_of(&st, "cl-gone").as_deref(), Some("failed"), "run {run}");
    }
    let before = restart_with(&mut rig, &three_world("active")).await;
    assert_eq!(requests_to(&before).keys().collect::<Vec<_>>(), ["cl-act"], "{:?}", requests_to(&before));

    // The cluster runs again. `retry` of the first run still takes only the failed task.
    let out = Rig::output(retry(&rig, "1")).await;
    assert_eq!(code(&out), 1, "retry → run 6: {}", show(&out));
    assert_eq!(run_calls(&rig.stats()), 0, "retry sent nothing: the ceased cluster is refused, the other is not its");
    // A run of the manifest deletes the account on it once (run 7), the next skips it (run 8).
    for (run, deleted) in [(7, "deleted"), (8, "skipped")] {
        let out = rig.run(&[]).await;
        assert_eq!(code(&out), 1, "run {run}: {}", show(&out));
        let st = task_states(&rig.db, run).await;
        assert_eq!(state_of(&st, "cl-stop").as_deref(), Some(deleted), "run {run}: {st:?}");
        assert_eq!(state_of(&st, "cl-gone").as_deref(), Some("failed"), "run {run}: {st:?}");
    }
    let after = rig.stats();
    let acc = accepted(&[&before, &after]);
    assert_eq!(accepted_of(&acc, "cl-act", "bob"), 1, "{acc:?}");
    assert_eq!(accepted_of(&acc, "cl-stop", "bob"), 1, "{acc:?}");
    assert_eq!(accepted_of(&acc, "cl-gone", "bob"), 0, "{acc:?}");
    assert_eq!(requests_to(&after).get("cl-gone"), None);
    assert_chain_intact(&rig, "retry and run again").await;
}

// ---------------------------------------------------------------------------------------------
// 4. An account already gone on a discovered cluster.

/// bob exists on one discovered cluster and not on the other: `absent` there after exactly one
/// `del_user`, exit 0; the next run skips both without a del_user, a DescribeJobs or a preflight
/// lookup. Under both answers the simulator can give for a missing account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_already_gone_on_a_discovered_cluster_is_absent_once() {
    for missing in ["fail_job", "reject"] {
        let w = format!(
            "jobs: {{pending_ms: 10, working_ms: 10}}
api: {{missing_account: {missing}}}
clusters:
  - {{id: cl-has, zone: sh1a, name: orders-1, tags: [prod], users: ['bob@%']}}
  - {{id: cl-gone, zone: sh1a, name: orders-2, tags: [prod], users: ['carol@%']}}
"
        );
        let m = "version: 1\ndiscover:\n  - zones: [sh1a]\n    tags: [prod]\n    users: [bob]\n";
        let rig = Rig::new(&w, m).await;
        let out = rig.run(&[]).await;
        assert_eq!(code(&out), 0, "{missing}: {}", show(&out));
        assert!(text(&out.stdout).contains("1 deleted") && text(&out.stdout).contains("1 absent"), "{}", show(&out));
        let stats = rig.stats();
        assert_eq!(requests_to(&stats).get("cl-gone"), Some(&1), "{missing}: one del_user for the absent account");
        let acc = accepted(&[&stats]);
        let expected_gone = u64::from(missing == "fail_job");
        assert_eq!(accepted_of(&acc, "cl-gone", "bob"), expected_gone, "{missing}: {acc:?}");
        assert_eq!(accepted_of(&acc, "cl-has", "bob"), 1, "{missing}: {acc:?}");
        let st = task_states(&rig.db, 1).await;
        assert_eq!(state_of(&st, "cl-gone").as_deref(), Some("absent"), "{missing}: {st:?}");

        let before = rig.stats();
        let again = rig.run(&[]).await;
        assert_eq!(code(&again), 0, "{missing}: {}", show(&again));
        assert!(text(&again.stdout).contains("0 deleted, 2 skipped"), "{}", show(&again));
        let after = rig.stats();
        for action in ["RunClusterCustomService", "DescribeJobs"] {
            assert_eq!(after.requests_of(action), before.requests_of(action), "{missing}: {action} in the second run");
        }
        // Discovery lists the zone again (one page); preflight has nothing left to look up.
        assert_eq!(describe_clusters(&after), describe_clusters(&before) + 1, "{missing}");
        assert_chain_intact(&rig, missing).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Pessimistic API behaviour and faults while clusters are looked up.

/// Manifest of [`hostile_world`]: a discover selector in two zones plus listed clusters, among
/// them a stopped, a ceased, a Redis and an unknown one.
const HOSTILE_MANIFEST: &str = "version: 1
discover:
  - zones: [sh1a, pek3]
    tags: [prod]
    users: [bob]
clusters:
  - {id: cl-l0, zone: sh1a, users: [carol]}
  - {id: cl-l1, zone: pek3, users: [carol]}
  - {id: cl-xstop, zone: sh1a, users: [carol]}
  - {id: cl-xgone, zone: pek3, users: [carol]}
  - {id: cl-xredis, zone: sh1a, users: [carol]}
  - {id: cl-xnone, zone: pek3, users: [carol]}
";

/// Clusters that must never get a `del_user` unless the run could not check them.
const BAD: [&str; 4] = ["cl-xstop", "cl-xgone", "cl-xredis", "cl-xnone"];

fn hostile_world(extra: &str) -> String {
    let mut w = format!("jobs: {{pending_ms: 20, working_ms: 40}}\n{extra}clusters:\n");
    for i in 0..4 {
        let z = if i % 2 == 0 { "sh1a" } else { "pek3" };
        w.push_str(&format!("  - {{id: cl-d{i}, zone: {z}, tags: [prod], users: ['bob@%']}}\n"));
    }
    w.push_str("  - {id: cl-dstop, zone: pek3, tags: [prod], status: stopped, users: ['bob@%']}\n");
    w.push_str("  - {id: cl-l0, zone: sh1a, users: ['carol@%']}\n  - {id: cl-l1, zone: pek3, users: ['carol@%']}\n");
    w.push_str("  - {id: cl-xstop, zone: sh1a, status: stopped, users: ['carol@%']}\n");
    w.push_str("  - {id: cl-xgone, zone: pek3, status: ceased, users: ['carol@%']}\n");
    w.push_str("  - {id: cl-xredis, zone: sh1a, app_id: app-redis0001, users: ['carol@%']}\n");
    w
}

/// The promise under one hostile world: the run ends, no account is accepted twice, and a
/// cluster that cannot take the request gets one only when the run recorded it unchecked.
async fn hostile_cell(name: &str, extra: &str, args: &[&str]) -> (Output, Rig) {
    let rig = Rig::new(&hostile_world(extra), HOSTILE_MANIFEST).await;
    let out = Rig::output_within(rig.run_cmd(args), Duration::from_secs(90)).await;
    assert!(matches!(code(&out), 0 | 1 | 69 | 75), "{name}: {}", show(&out));
    let stats = rig.stats();
    let acc = accepted(&[&stats]);
    for ((cluster, user), n) in &acc {
        assert!(*n <= 1, "{name}: {user} on {cluster} accepted {n} times");
    }
    let unchecked = unchecked(&rig.db).await;
    for (run, cluster) in recorded_requests(&rig.db).await {
        if BAD.contains(&cluster.as_str()) || cluster == "cl-dstop" {
            let why = unchecked.get(&run).is_some_and(|c| c.contains(&cluster));
            assert!(
                why,
                "{name}: run {run} sent a del_user to {cluster} without recording it unchecked: {}",
                show(&out)
            );
        }
    }
    // Every request the simulator saw for those clusters is one the runs recorded.
    let recorded: usize = recorded_requests(&rig.db).await.iter().filter(|(_, c)| BAD.contains(&c.as_str())).count();
    let seen: u64 = BAD.iter().map(|c| requests_to(&stats).get(*c).copied().unwrap_or(0)).sum();
    assert_eq!(seen, recorded as u64, "{name}");
    assert!(stats.requests_total < 2000, "{name}: {} requests: a loop spending the quota", stats.requests_total);
    (out, rig)
}

/// The simulator's pessimistic `api:` options and a clock difference the API accepts, while
/// discovery and preflight ask their questions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pessimistic_api_options_during_lookups_never_send_to_a_bad_cluster() {
    let cells: [(&str, &str); 5] = [
        ("documented", ""),
        (
            "unknown ids dropped, oldest first",
            "api: {describe_jobs_unknown_id: drop, describe_jobs_order: oldest_first}\n",
        ),
        ("random order, job_action ignored", "api: {describe_jobs_order: random, job_action_filter: false}\n"),
        ("listing lag, omissions", "api: {list_lag_ms: 800, describe_jobs_omit_every: 3}\n"),
        ("clock 45 s ahead", "clock_offset_s: 45\n"),
    ];
    for (name, extra) in cells {
        let (out, rig) = hostile_cell(name, extra, &["--reconcile-settle", "2s", "--job-timeout", "3s"]).await;
        assert!(matches!(code(&out), 0 | 1), "{name}: {}", show(&out));
        assert!(unchecked(&rig.db).await.is_empty(), "{name}: nothing is left unchecked: {}", show(&out));
        assert!(BAD.iter().all(|c| !requests_to(&rig.stats()).contains_key(*c)), "{name}: {}", show(&out));
    }
}

/// Faults at rates an unhealthy endpoint has, alone and with every pessimistic option, while
/// discovery and preflight ask their questions: a bad cluster gets a del_user only when the run
/// recorded that it could not check it, and discovery either selects or ends the command loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_lookups_never_send_to_a_bad_cluster_unrecorded() {
    let cells: [(&str, &str); 4] = [
        ("lost responses", "seed: 3\nfaults: {lost_response_rate: 0.3}\n"),
        ("resets and 502", "seed: 4\nfaults: {reset_rate: 0.2, http_502_rate: 0.2}\n"),
        ("5000 and 5100", "seed: 5\nfaults: {internal_rate: 0.25, busy_rate: 0.25}\n"),
        (
            "all together",
            "seed: 6\napi: {describe_jobs_unknown_id: drop, describe_jobs_order: random, job_action_filter: false, \
             list_lag_ms: 800, describe_jobs_omit_every: 4}\nclock_offset_s: -45\n\
             faults: {lost_response_rate: 0.15, reset_rate: 0.1, http_502_rate: 0.1, internal_rate: 0.1}\n",
        ),
    ];
    for (name, extra) in cells {
        let (out, rig) = hostile_cell(name, extra, &["--reconcile-settle", "2s", "--job-timeout", "3s"]).await;
        if code(&out) == 69 {
            // Discovery got no answer in its tries: loud, and nothing was sent.
            assert!(text(&out.stderr).contains("nothing was selected"), "{name}: {}", show(&out));
            assert_eq!(run_calls(&rig.stats()), 0, "{name}");
        }
    }
}

/// The endpoint answers HTML to everything: discovery ends the command with 69, nothing sent;
/// without discovery, preflight leaves the clusters unchecked and the run stops with 69 on the
/// first answers, again with nothing accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_answering_endpoint_during_lookups_ends_the_run_with_69() {
    let (out, rig) = hostile_cell("html", "api: {html_everywhere: true}\n", &[]).await;
    assert_eq!(code(&out), 69, "{}", show(&out));
    assert!(accepted(&[&rig.stats()]).values().all(|n| *n == 0));
    let listed = "version: 1\nclusters:\n  - {id: cl-xredis, zone: sh1a, users: [carol]}\n  - {id: cl-l0, zone: sh1a, users: [carol]}\n";
    let rig = Rig::new(&hostile_world("api: {html_everywhere: true}\n"), listed).await;
    let out = Rig::output_within(rig.run_cmd(&[]), Duration::from_secs(60)).await;
    assert_eq!(code(&out), 69, "{}", show(&out));
    assert!(accepted(&[&rig.stats()]).values().all(|n| *n == 0));
    assert!(audit_kinds(&rig.db, 1, "preflight_unchecked").await >= 1);
}

/// A quota refusal (2500) is not an answer: it never leaves a cluster unchecked. The quota here
/// admits one request per window, so preflight's lookup of the second zone (sh1a, after pek3)
/// is refused at first; the Redis and stopped clusters there must still be refused before any
/// del_user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refusal_during_preflight_does_not_leave_clusters_unchecked() {
    for quota in ["{requests: 1, window_s: 1.5}", "{requests: 1, window_s: 1, penalty_s: 2}"] {
        let w = format!(
            "jobs: {{pending_ms: 10, working_ms: 10}}
quota: {quota}
clusters:
  - {{id: cl-ok, zone: pek3, users: ['bob@%']}}
  - {{id: cl-redis, zone: sh1a, app_id: app-redis0001, users: ['bob@%']}}
  - {{id: cl-stop, zone: sh1a, status: stopped, users: ['bob@%']}}
"
        );
        let m =
            "version: 1\nusers:\n  - user: bob\n    clusters: [{id: cl-ok, zone: pek3}, {id: cl-redis, zone: sh1a}, \
                 {id: cl-stop, zone: sh1a}]\n";
        let rig = Rig::new(&w, m).await;
        let out = Rig::output_within(rig.run_cmd(&[]), Duration::from_secs(90)).await;
        let stats = rig.stats();
        assert!(stats.ret_code(2500) > 0, "{quota}: the quota was hit: {:?}", stats.ret_codes);
        assert_eq!(requests_to(&stats).keys().collect::<Vec<_>>(), ["cl-ok"], "{quota}: {}", show(&out));
        assert!(unchecked(&rig.db).await.is_empty(), "{quota}: a 2500 left clusters unchecked");
        assert_eq!(code(&out), 1, "{quota}: {}", show(&out));
        let st = task_states(&rig.db, 1).await;
        assert_eq!(state_of(&st, "cl-redis").as_deref(), Some("failed"), "{quota}: {st:?}");
        assert_eq!(state_of(&st, "cl-stop").as_deref(), Some("not_ready"), "{quota}: {st:?}");
        assert_eq!(state_of(&st, "cl-ok").as_deref(), Some("deleted"), "{quota}: {st:?}");
    }
}

/// The API's clock is five minutes off ours (beyond the 60 s the API accepts) and no `doctor`
/// measured it: the first lookups are refused with 1300. Discovery and preflight sign again with
/// the API's clock, as the runner does, instead of giving up: discovery still selects, and the
/// bad clusters are still refused before any del_user, with nothing left unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_five_minutes_off_does_not_defeat_discovery_or_preflight() {
    for offset in ["300", "-300"] {
        let name = format!("clock {offset} s");
        let (out, rig) = hostile_cell(&name, &format!("clock_offset_s: {offset}\n"), &[]).await;
        assert_eq!(code(&out), 1, "{name}: the ceased, Redis and unknown clusters fail: {}", show(&out));
        let stats = rig.stats();
        assert!(stats.ret_code(1300) > 0, "{name}: the clock was refused at first: {:?}", stats.ret_codes);
        assert!(unchecked(&rig.db).await.is_empty(), "{name}: {}", show(&out));
        let to = requests_to(&stats);
        for c in BAD {
            assert_eq!(to.get(c), None, "{name}: {c} got a del_user");
        }
        let acc = accepted(&[&stats]);
        for c in ["cl-d0", "cl-d1", "cl-d2", "cl-d3"] {
            assert_eq!(accepted_of(&acc, c, "bob"), 1, "{name}: {c}: {acc:?}");
        }
        for c in ["cl-l0", "cl-l1"] {
            assert_eq!(accepted_of(&acc, c, "carol"), 1, "{name}: {c}: {acc:?}");
        }
    }
}

/// 250 tagged clusters: three DescribeClusters pages. A page lost, reset or refused for quota
/// mid-listing never yields a partial list: discovery either selects all 250 or ends the
/// command (69) with nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_cut_off_mid_pages_is_never_pinned_as_partial() {
    let mut clusters = String::from("clusters:\n");
    for i in 0..250 {
        clusters.push_str(&format!("  - {{id: cl-p{i:03}, zone: sh1a, tags: [prod], users: ['bob@%']}}\n"));
    }
    let m = "version: 1\ndiscover:\n  - zones: [sh1a]\n    tags: [prod]\n    users: [bob]\n";
    let cells = [
        ("lost", "seed: 21\nfaults: {lost_response_rate: 0.3}\n"),
        ("reset", "seed: 22\nfaults: {reset_rate: 0.3}\n"),
        ("502", "seed: 23\nfaults: {http_502_rate: 0.4}\n"),
        // DescribeTags and two pages fit the window; the third page is refused, every try.
        ("quota", "quota: {requests: 3, window_s: 60}\n"),
        ("quota penalty", "quota: {requests: 3, window_s: 60, penalty_s: 30}\n"),
    ];
    for (name, extra) in cells {
        let w = format!("jobs: {{pending_ms: 5, working_ms: 5}}\n{extra}{clusters}");
        let rig = Rig::new(&w, m).await;
        let plan = rig.home.path().join("plan.json");
        let mf = rig.manifest.to_str().unwrap().to_owned();
        let made = Rig::output_within(
            rig.cmd(&["plan", &mf, "--out", plan.to_str().unwrap(), "--no-preflight", "--rate", "200/s"]),
            Duration::from_secs(60),
        )
        .await;
        match code(&made) {
            0 => {
                let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
                let n = file["discovered"]["found"].as_array().map_or(0, Vec::len);
                assert_eq!(n, 250, "{name}: the plan pinned a partial list: {}", show(&made));
                assert_eq!(file["tasks"].as_array().map_or(0, Vec::len), 250, "{name}");
            }
            69 => {
                assert!(text(&made.stderr).contains("nothing was selected"), "{name}: {}", show(&made));
                assert!(!plan.exists(), "{name}: no plan file for a failed discovery");
            }
            c => panic!("{name}: plan exit {c}: {}", show(&made)),
        }
        assert_eq!(run_calls(&rig.stats()), 0, "{name}: plan sends nothing");
        if name.starts_with("quota") {
            assert_eq!(code(&made), 69, "{name}: the third page is refused in every try: {}", show(&made));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. An approved plan run after the world changed.

/// A plan pins three discovered clusters; by the time it runs, one is stopped and one ceased:
/// nothing is sent to them, the stopped one is `not_ready`, the ceased one `failed`, in every
/// run of the plan. Once the stopped one runs again, the same plan deletes the account there
/// once, and a further run of the plan sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_run_after_its_clusters_stopped_or_ceased_sends_nothing_to_them() {
    let cluster_lines = |a02: &str| {
        format!(
            "jobs: {{pending_ms: 5, working_ms: 5}}
clusters:
  - {{id: cl-a01, zone: sh1a, name: orders-a, tags: [prod], users: ['bob@%']}}
  - {{id: cl-a02, zone: sh1a, name: orders-b, tags: [prod], status: {a02}, users: ['bob@%']}}
  - {{id: cl-a03, zone: sh1a, name: orders-c, tags: [prod], status: ceased, users: ['bob@%']}}
"
        )
    };
    let before = "jobs: {pending_ms: 5, working_ms: 5}
clusters:
  - {id: cl-a01, zone: sh1a, name: orders-a, tags: [prod], users: ['bob@%']}
  - {id: cl-a02, zone: sh1a, name: orders-b, tags: [prod], users: ['bob@%']}
  - {id: cl-a03, zone: sh1a, name: orders-c, tags: [prod], users: ['bob@%']}
";
    let m = "version: 1\ndiscover:\n  - zones: [sh1a]\n    tags: [prod]\n    users: [bob]\n";
    let mut rig = Rig::new(before, m).await;
    let plan = rig.home.path().join("plan.json");
    let mf = rig.manifest.to_str().unwrap().to_owned();
    let made = Rig::output(rig.cmd(&["plan", &mf, "--out", plan.to_str().unwrap()])).await;
    assert_eq!(code(&made), 0, "{}", show(&made));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(file["tasks"].as_array().map_or(0, Vec::len), 3);
    let run_plan =
        |rig: &Rig| rig.cmd(&["run", "--plan", plan.to_str().unwrap(), "--poll-interval", "20ms", "--rate", "200/s"]);
    let pair = |c: &str, s: &str| (c.to_owned(), s.to_owned());

    // a02 stopped, a03 ceased: only a01 gets a del_user, in the first run and none in the second.
    let s0 = restart_with(&mut rig, &cluster_lines("stopped")).await;
    assert_eq!(run_calls(&s0), 0, "plan sends nothing");
    for (run, a01) in [(1, "deleted"), (2, "skipped")] {
        let out = Rig::output(run_plan(&rig)).await;
        assert_eq!(code(&out), 1, "run {run}: {}", show(&out));
        let st = task_states(&rig.db, run).await;
        assert_eq!(st, [pair("cl-a01", a01), pair("cl-a02", "not_ready"), pair("cl-a03", "failed")], "run {run}");
        assert_eq!(requests_to(&rig.stats()).keys().collect::<Vec<_>>(), ["cl-a01"], "run {run}");
        assert_eq!(run_calls(&rig.stats()), 1, "run {run}");
    }

    // a02 runs again: the plan deletes bob there once; a further run of the plan sends nothing.
    let s1 = restart_with(&mut rig, &cluster_lines("active")).await;
    for (run, a02) in [(3, "deleted"), (4, "skipped")] {
        let out = Rig::output(run_plan(&rig)).await;
        assert_eq!(code(&out), 1, "run {run}: {}", show(&out));
        let st = task_states(&rig.db, run).await;
        assert_eq!(st, [pair("cl-a01", "skipped"), pair("cl-a02", a02), pair("cl-a03", "failed")], "run {run}");
    }
    let s2 = rig.stats();
    let acc = accepted(&[&s0, &s1, &s2]);
    assert_eq!(accepted_of(&acc, "cl-a01", "bob"), 1, "{acc:?}");
    assert_eq!(accepted_of(&acc, "cl-a02", "bob"), 1, "{acc:?}");
    assert_eq!(accepted_of(&acc, "cl-a03", "bob"), 0, "{acc:?}");
    assert_eq!(requests_to(&s2).get("cl-a03"), None);
    assert_chain_intact(&rig, "plan after the world changed").await;
}
