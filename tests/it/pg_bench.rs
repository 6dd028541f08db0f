//! Figures for BENCHMARKS.md's PostgreSQL section, not tests: ignored by default, they print what
//! they measured and assert nothing about speed. Run with
//! `QC_OFFBOARD_TEST_PG=postgres://root@127.0.0.1:5432/test cargo test --test it pg_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use qc_offboard::store::postgres::PgStore;
use qc_offboard::store::TaskState;
use serde_json::json;

use crate::helpers::{new_run, new_task};
use crate::pg_db::TestDb;

fn per_second(n: usize, took: Duration) -> String {
    format!("{n} in {:.2} s = {:.0}/s", took.as_secs_f64(), n as f64 / took.as_secs_f64())
}

/// `workers` workers on each of `hosts` pools, each running `each` rounds of `work`.
async fn spread<F, Fut>(db: &TestDb, hosts: usize, workers: usize, each: usize, work: F) -> Duration
where
    F: Fn(PgStore, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut stores = Vec::new();
    for _ in 0..hosts {
        stores.push(db.open().await);
    }
    let started = Instant::now();
    let mut running = Vec::new();
    for store in &stores {
        for _ in 0..workers {
            let (store, work) = (store.clone(), work.clone());
            running.push(tokio::spawn(async move {
                for i in 0..each {
                    work(store.clone(), i).await;
                }
            }));
        }
    }
    for r in running {
        r.await.unwrap();
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a test"]
async fn pg_bench_figures() {
    let Some(db) = TestDb::create("pg_bench_figures").await else { return };
    let store = db.open().await;

    let took = spread(&db, 1, 1, 2_000, |s, i| async move {
        s.audit_event(None, None, "note", json!({"i": i})).await.unwrap();
    })
    .await;
    println!("audit append, 1 host x 1 writer, one transaction each: {}", per_second(2_000, took));
    let took = spread(&db, 4, 4, 250, |s, i| async move {
        s.audit_event(None, None, "note", json!({"i": i})).await.unwrap();
    })
    .await;
    println!("audit append, 4 hosts x 4 writers, one transaction each: {}", per_second(4_000, took));

    let tasks: Vec<_> = (0..100_000).map(|i| new_task(&format!("cl-b{i}"), "bob")).collect();
    let started = Instant::now();
    let run = store.create_run(&new_run(None), &tasks).await.unwrap();
    println!("create_run, 100,000 tasks (a row and an audit record each): {}", per_second(100_001, started.elapsed()));

    let records = store.audit_len().await.unwrap() as usize;
    let started = Instant::now();
    assert!(store.verify_audit(None).await.unwrap().is_intact());
    println!("verify_audit: {}", per_second(records, started.elapsed()));

    let took = spread(&db, 2, 4, 250, move |s, _| async move {
        let owner = format!("host-{:p}", &s);
        s.claim(Some(run), &[TaskState::Pending], &owner, Duration::from_secs(60), 10).await.unwrap();
    })
    .await;
    println!("claim, 2 hosts x 4 claimers, 10 tasks per claim: {}", per_second(2 * 4 * 250 * 10, took));

    let took = spread(&db, 4, 4, 500, |s, _| async move {
        s.take_slot("bench", Duration::from_micros(1), 1).await.unwrap();
    })
    .await;
    println!("take_slot, 4 hosts x 4 callers on one scope: {}", per_second(8_000, took));
}
