//! `discover:` selectors: clusters found through DescribeTags and DescribeClusters at `plan`
//! and `run` time, expanded into ordinary tasks, pinned by a plan file. Checked through the
//! simulator's request records.

use std::collections::BTreeSet;

use crate::helpers::{start_sim, world};
use crate::runner::{code, text, Rig};

const MANIFEST: &str = "version: 1
ticket: OPS-9
requested_by: hr@example.com
discover:
  - zones: [sh1a, pek3]
    tags: [prod]
    name_matches: \"^orders-\"
    users: [bob]
";

/// sh1a: 130 MySQL Plus clusters tagged prod (two pages of 100), every third named `batch-…`,
/// plus 10 untagged `orders-…` ones; pek3: 3 active, a stopped one and a Redis one, all prod.
fn world_text() -> String {
    let mut w = String::from("jobs: {pending_ms: 5, working_ms: 5}\nclusters:\n");
    for i in 0..130 {
        let name = if i % 3 == 0 { format!("batch-{i}") } else { format!("orders-{i}") };
        w.push_str(&format!("  - {{id: cl-s{i:03}, zone: sh1a, name: {name}, tags: [prod, eu], users: ['bob@%']}}\n"));
    }
    for i in 0..10 {
        w.push_str(&format!("  - {{id: cl-u{i:03}, zone: sh1a, name: orders-u{i}, users: ['bob@%']}}\n"));
    }
    for i in 0..3 {
        w.push_str(&format!("  - {{id: cl-p{i:03}, zone: pek3, name: orders-p{i}, tags: [prod], users: ['bob@%']}}\n"));
    }
    w.push_str("  - {id: cl-pstop, zone: pek3, name: orders-stop, status: stopped, tags: [prod], users: ['bob@%']}\n");
    w.push_str(
        "  - {id: cl-predis, zone: pek3, name: orders-redis, app_id: app-redis0001, tags: [prod], users: ['bob@%']}\n",
    );
    w
}

fn expected() -> BTreeSet<String> {
    let mut s: BTreeSet<String> = (0..130).filter(|i| i % 3 != 0).map(|i| format!("cl-s{i:03}")).collect();
    s.extend((0..3).map(|i| format!("cl-p{i:03}")));
    s
}

fn sent(rig: &Rig) -> Vec<String> {
    rig.sim
        .stats()
        .requests
        .iter()
        .filter(|r| r.action == "RunClusterCustomService")
        .map(|r| r.cluster.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_across_two_zones_with_tags_and_paging_deletes_exactly_the_selected_clusters() {
    let rig = Rig::new(&world_text(), MANIFEST).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let got = sent(&rig);
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "one del_user per cluster");
    assert_eq!(unique, expected(), "tagged, named orders-…, active MySQL Plus, in either zone");
    let stats = rig.sim.stats();
    assert_eq!(stats.requests_of("DescribeTags"), 2, "one tag name, two zones");
    // Discovery: sh1a's 130 tagged clusters in two pages, pek3's in one; preflight: the 87
    // selected sh1a clusters in one call, pek3's 3 in one.
    assert_eq!(stats.requests_of("DescribeClusters"), 5, "{:?}", stats.requests_by_action);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cl-pstop"), "the stopped cluster is named: {stderr}");
    // The discovery calls are on record with the run, and the chain verifies.
    let verify = rig.audit_verify().await;
    assert!(verify.status.success(), "{}{}", text(&verify.stdout), text(&verify.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_file_pins_the_discovered_list_against_a_changed_world() {
    let before = "jobs: {pending_ms: 5, working_ms: 5}
clusters:
  - {id: cl-a01, zone: sh1a, name: orders-a, tags: [prod], users: ['bob@%']}
  - {id: cl-a02, zone: sh1a, name: orders-b, tags: [prod], users: ['bob@%']}
";
    let mut rig = Rig::new(before, MANIFEST).await;
    let plan = rig.home.path().join("plan.json");
    let m = rig.manifest.to_str().unwrap().to_owned();
    let made = Rig::output(rig.cmd(&["plan", &m, "--out", plan.to_str().unwrap(), "--output", "json"])).await;
    assert_eq!(code(&made), 0, "{}", text(&made.stderr));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let found: Vec<&str> =
        file["discovered"]["found"].as_array().unwrap().iter().map(|f| f["cluster"].as_str().unwrap()).collect();
    assert_eq!(found, ["cl-a01", "cl-a02"]);
    assert_eq!(file["tasks"].as_array().unwrap().len(), 2);

    // The same endpoint, a changed world: cl-a02 ceased, cl-a03 appeared.
    let after = "jobs: {pending_ms: 5, working_ms: 5}
clusters:
  - {id: cl-a01, zone: sh1a, name: orders-a, tags: [prod], users: ['bob@%']}
  - {id: cl-a02, zone: sh1a, name: orders-b, tags: [prod], status: ceased, users: ['bob@%']}
  - {id: cl-a03, zone: sh1a, name: orders-c, tags: [prod], users: ['bob@%']}
";
    let addr: std::net::SocketAddr =
        rig.sim.endpoint().trim_start_matches("http://").trim_end_matches("/iaas/").parse().unwrap();
    let old = std::mem::replace(&mut rig.sim, start_sim(world("{}")).await);
    old.shutdown().await;
    rig.sim = qc_offboard::sim::start(world(after), addr).await.expect("the same port again");

    let out = Rig::output(rig.cmd(&["run", "--plan", plan.to_str().unwrap(), "--poll-interval", "20ms"])).await;
    assert_eq!(code(&out), 1, "the ceased cluster fails at preflight: {}", text(&out.stderr));
    assert_eq!(sent(&rig), ["cl-a01"], "not the new cluster, not the ceased one");
    let report = rig.report().await;
    let state =
        |c: &str| report.iter().find(|r| r["cluster"] == c).map(|r| r["state"].as_str().unwrap_or("").to_owned());
    assert_eq!(state("cl-a01").as_deref(), Some("deleted"));
    assert_eq!(state("cl-a02").as_deref(), Some("failed"));
    assert_eq!(state("cl-a03"), None, "a cluster that appeared after the plan is not in the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_no_cluster_has_stops_the_run_before_anything_is_sent() {
    let rig = Rig::new("clusters:\n  - {id: cl-a01, zone: sh1a, tags: [dev], users: ['bob@%']}\n", MANIFEST).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 65, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no tag named \"prod\""), "{}", text(&out.stderr));
    assert!(sent(&rig).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_a_selector_without_the_api() {
    let rig =
        Rig::new("{}", "version: 1\ndiscover:\n  - zones: []\n    name_matches: \"(\"\n    users: [root]\n").await;
    let m = rig.manifest.to_str().unwrap().to_owned();
    let out = Rig::output(rig.cmd(&["validate", &m])).await;
    assert_eq!(code(&out), 65);
    let err = text(&out.stderr);
    assert!(err.contains("has no `zones`"), "{err}");
    assert!(err.contains("not a regular expression"), "{err}");
    assert!(err.contains(":5:"), "the users line is named: {err}");
    assert!(rig.sim.stats().requests_total == 0, "validate calls no API");

    std::fs::write(&rig.manifest, MANIFEST).unwrap();
    let ok = Rig::output(rig.cmd(&["validate", &m])).await;
    assert_eq!(code(&ok), 0, "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("1 discover selector"), "{}", text(&ok.stdout));
}
