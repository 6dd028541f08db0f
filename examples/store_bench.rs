//! Store throughput: audit records appended per second, and `audit verify` over a large log.
//!
//! ```text
//! cargo run --release --example store_bench -- [RECORDS] [DB_PATH]
//! ```
//!
//! RECORDS (default 1000000) is the size of the log verified at the end. DB_PATH (default a
//! temporary file) is kept when given, so `qc-offboard audit verify --db DB_PATH` can be timed on
//! it too. Numbers depend on the disk: every commit is fsynced (`synchronous=FULL`).

use std::time::Instant;

use qc_offboard::runner::state;
use qc_offboard::store::{Event, NewRun, NewTask, Store, TaskChange, TaskState, Transition};
use serde_json::json;

fn run() -> NewRun {
    NewRun {
        manifests: vec![("bench.yaml".into(), "ab".repeat(32))],
        ticket: Some("BENCH-1".into()),
        requested_by: Some("bench@example.com".into()),
        reason: Some("benchmark".into()),
        due_by: None,
        operator: "bench".into(),
        host: "bench".into(),
        endpoint: "http://127.0.0.1:1/iaas/".into(),
        access_key_id: "QYACCESSKEYIDEXAMPLE".into(),
        options: json!({}),
        retry_of: None,
        simulated: false,
        discovered: None,
    }
}

fn tasks(n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask {
            cluster: format!("cl-{:08x}", i / 50),
            zone: "sh1a".into(),
            user: format!("user{i}"),
            host: "%".into(),
            state: TaskState::Pending,
            not_before: None,
            due_by: None,
        })
        .collect()
}

fn rate(records: usize, secs: f64) -> String {
    format!("{records} records in {secs:.2} s = {:.0} records/s", records as f64 / secs)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = args.next().map(std::path::PathBuf::from).unwrap_or_else(|| dir.path().join("bench.db"));
    let _ = std::fs::remove_file(&path);
    let store = Store::open(&path).await?;

    // 1. A run of 100,000 tasks: one transaction, one task row and one audit record per task.
    let n = 100_000;
    let t = Instant::now();
    let run_id = store.create_run(&run(), &tasks(n)).await?;
    println!("create_run, {n} tasks in one transaction: {}", rate(n + 1, t.elapsed().as_secs_f64()));

    // 2. Guarded transitions in batches of 500 (one transaction each), as the runner batches them.
    let ids: Vec<i64> = store.tasks(run_id).await?.iter().map(|t| t.id).collect();
    let change = TaskChange::new().increment_attempts().intent_at(chrono::Utc::now());
    let t = Instant::now();
    for chunk in ids.chunks(500) {
        let batch: Vec<Transition> = chunk
            .iter()
            .map(|&id| state::transition(id, &[TaskState::Pending], Event::Intent, change.clone(), json!({})))
            .collect::<Result<_, _>>()?;
        store.steps(&batch).await?;
    }
    println!("steps (guarded transitions), batches of 500: {}", rate(ids.len(), t.elapsed().as_secs_f64()));

    // 3. Single transitions, one transaction (and one fsync) each.
    let single = 2_000;
    let t = Instant::now();
    for &id in &ids[..single] {
        store.step(id, Event::Accepted, &TaskChange::new().job_id("j-x"), json!({})).await?;
    }
    println!("step, one per transaction: {}", rate(single, t.elapsed().as_secs_f64()));

    // 4. Grow the log to `total` records and verify it.
    let have = store.audit_len().await? as usize;
    if total > have {
        let more = total - have - 1;
        let t = Instant::now();
        store.create_run(&run(), &tasks(more)).await?;
        println!("create_run, {more} tasks in one transaction: {}", rate(more + 1, t.elapsed().as_secs_f64()));
    }
    let records = store.audit_len().await?;
    let t = Instant::now();
    let v = store.verify_audit(None).await?;
    let secs = t.elapsed().as_secs_f64();
    assert!(v.is_intact(), "{:?}", v.problem);
    println!(
        "verify_audit: {} records in {secs:.2} s = {:.0} records/s, tip {}",
        records,
        records as f64 / secs,
        v.tip
    );
    store.close().await;
    println!("database: {} ({} MB)", path.display(), std::fs::metadata(&path)?.len() / 1_000_000);
    Ok(())
}
