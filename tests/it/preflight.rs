//! Preflight: before the first `del_user`, every cluster of the run is checked with
//! `DescribeClusters` (batched by zone, at most 100 ids a call); a cluster that is unknown, not
//! MySQL Plus, ceased or not active gets no `del_user`. Checked through the simulator's request
//! records and counters.

use serde_json::Value;

use crate::runner::{code, text, Rig};

/// bob on five clusters: one that can take the request and four that cannot.
const MANIFEST: &str = "version: 1
ticket: OPS-7
requested_by: hr@example.com
defaults: {zone: sh1a}
users:
  - user: bob
    clusters: [cl-ok, cl-ceased, cl-stopped, cl-redis, cl-unknown]
";

const WORLD: &str = "jobs: {pending_ms: 10, working_ms: 10}
clusters:
  - {id: cl-ok, zone: sh1a, users: ['bob@%']}
  - {id: cl-ceased, zone: sh1a, status: ceased, users: ['bob@%']}
  - {id: cl-stopped, zone: sh1a, status: stopped, users: ['bob@%']}
  - {id: cl-redis, zone: sh1a, app_id: app-redis0001, users: ['bob@%']}
";

fn outcomes(report: &[Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = report
        .iter()
        .map(|r| {
            (
                r["cluster"].as_str().unwrap_or("").to_owned(),
                r["state"].as_str().unwrap_or("").to_owned(),
                r["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_del_user_reaches_a_ceased_stopped_foreign_or_unknown_cluster() {
    let rig = Rig::new(WORLD, MANIFEST).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 1, "one task failed at least: {}", text(&out.stderr));
    let stats = rig.sim.stats();
    let sent: Vec<&str> =
        stats.requests.iter().filter(|r| r.action == "RunClusterCustomService").map(|r| r.cluster.as_str()).collect();
    assert_eq!(sent, ["cl-ok"], "del_user went only to the active MySQL Plus cluster");
    assert_eq!(stats.requests_of("DescribeClusters"), 1, "five clusters of one zone: one call");

    let got = outcomes(&rig.report().await);
    let state = |c: &str| got.iter().find(|(cl, _, _)| cl == c).map(|(_, s, m)| (s.clone(), m.clone())).unwrap();
    assert_eq!(state("cl-ok").0, "deleted");
    let (s, m) = state("cl-ceased");
    assert!(s == "failed" && m.contains("ceased"), "{s}: {m}");
    let (s, m) = state("cl-redis");
    assert!(s == "failed" && m.contains("not a MySQL Plus cluster"), "{s}: {m}");
    let (s, m) = state("cl-unknown");
    assert!(s == "failed" && m.contains("not found in zone sh1a"), "{s}: {m}");
    let (s, m) = state("cl-stopped");
    assert!(s == "not_ready" && m.contains("stopped"), "{s}: {m}");

    // What preflight saw is in the audit chain, and the chain (with the new state) verifies.
    let verify = rig.audit_verify().await;
    assert!(verify.status.success(), "audit verify: {}{}", text(&verify.stdout), text(&verify.stderr));

    // A later run of the manifest tries the not-ready cluster again once it is active: here it
    // is still stopped, so again nothing is sent to it, and nothing is sent twice to cl-ok.
    let again = rig.run(&[]).await;
    assert_eq!(code(&again), 1, "{}", text(&again.stderr));
    let stats = rig.sim.stats();
    assert_eq!(stats.requests_of("RunClusterCustomService"), 1, "{:?}", stats.requests_by_action);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_preflight_the_simulator_refuses_a_cluster_that_is_not_active() {
    let rig = Rig::new(WORLD, MANIFEST).await;
    let out = rig.run(&["--no-preflight"]).await;
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let stats = rig.sim.stats();
    assert_eq!(stats.requests_of("DescribeClusters"), 0, "--no-preflight sends no DescribeClusters");
    let stopped: Vec<_> = stats.requests.iter().filter(|r| r.cluster == "cl-stopped").collect();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].ret_code, Some(1400), "a stopped cluster refuses the custom service");
    let got = outcomes(&rig.report().await);
    let (_, s, m) = got.iter().find(|(c, _, _)| c == "cl-stopped").unwrap();
    assert!(s == "failed" && m.contains("[stopped]"), "{s}: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_costs_one_call_per_hundred_clusters_per_zone() {
    // 150 stopped clusters in sh1a and 3 in pek3: ceil(150/100) + ceil(3/100) = 3 calls, and
    // no del_user at all.
    let mut world = String::from("jobs: {pending_ms: 10, working_ms: 10}\nclusters:\n");
    let mut manifest = String::from("version: 1\nticket: OPS-8\nrequested_by: hr@example.com\nclusters:\n");
    for i in 0..153 {
        let zone = if i < 150 { "sh1a" } else { "pek3" };
        world.push_str(&format!("  - {{id: cl-s{i:03}, zone: {zone}, status: stopped, users: ['bob@%']}}\n"));
        manifest.push_str(&format!("  - {{id: cl-s{i:03}, zone: {zone}, users: [bob]}}\n"));
    }
    let rig = Rig::new(&world, &manifest).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 75, "not-ready tasks are for a later run: {}", text(&out.stderr));
    let stats = rig.sim.stats();
    assert_eq!(stats.requests_of("DescribeClusters"), 3, "{:?}", stats.requests_by_action);
    assert_eq!(stats.requests_of("RunClusterCustomService"), 0);
    let report = rig.report().await;
    assert_eq!(report.len(), 153);
    assert!(report.iter().all(|r| r["state"] == "not_ready"), "{:?}", report.first());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_makes_the_preflight_and_names_what_a_run_would_not_send() {
    let rig = Rig::new(WORLD, MANIFEST).await;
    let m = rig.manifest.to_str().unwrap().to_owned();
    let out = Rig::output(rig.cmd(&["plan", &m])).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("would fail: preflight: cluster cl-ceased is ceased"), "{err}");
    assert!(err.contains("would fail: preflight: cluster cl-unknown not found"), "{err}");
    assert!(err.contains("would fail: preflight: cluster cl-redis is not a MySQL Plus cluster"), "{err}");
    assert!(err.contains("not ready: preflight: cluster cl-stopped is stopped"), "{err}");
    assert!(err.contains("5 clusters checked in 1 DescribeClusters calls: 3 tasks would fail, 1 not ready"), "{err}");
    let stats = rig.sim.stats();
    assert_eq!(stats.requests_of("DescribeClusters"), 1);
    assert_eq!(stats.requests_of("RunClusterCustomService"), 0, "plan sends nothing");

    let skipped = Rig::output(rig.cmd(&["plan", &m, "--no-preflight"])).await;
    assert_eq!(code(&skipped), 0);
    assert!(!text(&skipped.stderr).contains("preflight"), "{}", text(&skipped.stderr));
    assert_eq!(rig.sim.stats().requests_of("DescribeClusters"), 1, "--no-preflight calls nothing");
}
