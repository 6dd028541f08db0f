//! The pre-state in `report`: what preflight saw of each cluster, read from the audit chain, in
//! every format; empty for a run with `--no-preflight`; not verified once its record is edited.

use serde_json::Value;

use crate::helpers::raw_connection;
use crate::runner::{code, text, Rig};

const MANIFEST: &str = "version: 1
ticket: OPS-16
requested_by: hr@example.com
defaults: {zone: sh1a}
users:
  - user: bob
    clusters: [cl-ok, cl-stopped, cl-unknown]
";

const WORLD: &str = "jobs: {pending_ms: 10, working_ms: 10}
clusters:
  - {id: cl-ok, zone: sh1a, users: ['bob@%']}
  - {id: cl-stopped, zone: sh1a, status: stopped, users: ['bob@%']}
";

async fn report(rig: &Rig, format: &str) -> String {
    let out = Rig::output(rig.cmd(&["report", "--format", format])).await;
    assert!(out.status.success(), "report --format {format}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// (cluster, pre_state, verified) of every row, sorted by cluster.
async fn pre_states(rig: &Rig) -> Vec<(String, Value, bool)> {
    let rows: Vec<Value> = serde_json::from_str(&report(rig, "json").await).expect("report JSON");
    let mut v: Vec<_> = rows
        .iter()
        .map(|r| (r["cluster"].as_str().unwrap_or("").to_owned(), r["pre_state"].clone(), r["verified"] == true))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// cluster → pre_state, from the CSV (the column is looked up by name, and is the last one).
fn csv_pre_states(csv: &str) -> Vec<(String, String)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    assert_eq!(header.last(), Some(&"pre_state"), "{header:?}");
    let cluster = header.iter().position(|h| *h == "cluster").expect("cluster column");
    let mut v: Vec<(String, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[cluster].to_owned(), f.last().copied().unwrap_or("").to_owned())
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_shows_what_preflight_saw_of_each_cluster() {
    let rig = Rig::new(WORLD, MANIFEST).await;
    let out = rig.run(&[]).await;
    assert_eq!(code(&out), 1, "the unknown cluster failed: {}", text(&out.stderr));

    let rows = pre_states(&rig).await;
    let expected = [("cl-ok", "active"), ("cl-stopped", "stopped"), ("cl-unknown", "not found")];
    for ((cluster, pre, verified), (want_cluster, want)) in rows.iter().zip(expected) {
        assert_eq!((cluster.as_str(), pre.as_str()), (want_cluster, Some(want)), "{rows:?}");
        assert!(verified, "{cluster}: proven by the chain");
    }
    assert_eq!(rows.len(), 3);

    let csv = report(&rig, "csv").await;
    assert_eq!(
        csv_pre_states(&csv),
        [
            ("cl-ok".into(), "active".into()),
            ("cl-stopped".into(), "stopped".into()),
            ("cl-unknown".into(), "not found".into())
        ]
    );

    let html = report(&rig, "html").await;
    assert!(html.contains("<h2>Clusters at preflight</h2>"), "{html}");
    for (cluster, pre) in expected {
        assert!(html.contains(&format!("<td>{cluster} (sh1a)</td><td>{pre}</td>")), "{cluster}: {html}");
    }
    assert!(html.contains("Cluster at preflight: stopped (audit record"), "{html}");

    let table = report(&rig, "table").await;
    assert!(table.lines().next().is_some_and(|h| h.contains("PRE-STATE")), "{table}");

    // Someone rewrites what preflight saw of the stopped cluster: the row no longer verifies.
    let mut raw = raw_connection(&rig.db).await;
    sqlx::query("DROP TRIGGER audit_log_no_update").execute(&mut raw).await.expect("drop trigger");
    let edited = sqlx::query(
        "UPDATE audit_log SET detail = replace(detail, '\"stopped\"', '\"active\"') \
         WHERE kind = 'preflight' AND detail LIKE '%cl-stopped%'",
    )
    .execute(&mut raw)
    .await
    .expect("edit");
    assert_eq!(edited.rows_affected(), 1);
    drop(raw);
    let rows = pre_states(&rig).await;
    let stopped = rows.iter().find(|(c, _, _)| c == "cl-stopped").expect("row");
    assert!(!stopped.2, "an edited preflight record is not proven: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_preflight_the_pre_state_is_empty() {
    let rig = Rig::new(WORLD, MANIFEST.replace("[cl-ok, cl-stopped, cl-unknown]", "[cl-ok]").as_str()).await;
    let out = rig.run(&["--no-preflight"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let rows = pre_states(&rig).await;
    assert_eq!(rows, [("cl-ok".to_owned(), Value::Null, true)]);
    assert_eq!(csv_pre_states(&report(&rig, "csv").await), [("cl-ok".into(), String::new())]);
    let html = report(&rig, "html").await;
    assert!(!html.contains("Clusters at preflight"), "no preflight, no section");
}
