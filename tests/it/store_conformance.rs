//! The store conformance suite: every scenario is written once, over the local `Backend` trait
//! (`backend`), and run against the SQLite store and the PostgreSQL store (the latter only when
//! `QC_OFFBOARD_TEST_PG` names a server; otherwise it prints that it was skipped). After each
//! scenario both audit chains must verify, the tables must agree with their chain (the replay
//! `audit verify` does), and the two chains must hold the same (kind, detail) records in the
//! same order (but for the time a run lock was taken, each backend's own clock reading): one
//! verifier and one evidence reader serve both backends.

mod backend;
mod scenarios;

use backend::{Backend, Lite, Pg};

/// The chain intact, the tables as the chain proves them, and the records written.
async fn checked<B: Backend>(b: &B, backend: &str) -> Vec<(String, String)> {
    let verified = b.verify_audit().await.unwrap();
    assert!(verified.is_intact(), "{backend}: {verified:?}");
    assert_eq!(verified.checked as i64, b.audit_len().await.unwrap(), "{backend}");
    let replay = b.replay().await.unwrap();
    assert!(replay.discrepancies.is_empty(), "{backend}: {:#?}", replay.discrepancies);
    assert_eq!(replay.records, b.audit_len().await.unwrap(), "{backend}");
    b.records().await.into_iter().map(|(kind, detail)| (kind, comparable(&detail))).collect()
}

/// A record's detail without the one value that is each backend's own clock reading: when a
/// run lock's holder took it.
fn comparable(detail: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(detail).unwrap();
    for path in ["/holder", "/summary/holder", "/previous"] {
        if let Some(serde_json::Value::Object(holder)) = v.pointer_mut(path) {
            holder.remove("started_at");
        }
    }
    v.to_string()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let lite = Lite::new().await;
            scenarios::$name(&lite).await;
            let want = checked(&lite, "sqlite").await;
            let Some(pg) = Pg::new(concat!("store_conformance::", stringify!($name))).await else { return };
            scenarios::$name(&pg).await;
            let got = checked(&pg, "postgres").await;
            assert_eq!(got.len(), want.len(), "both backends write as many audit records");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "audit record {} differs between PostgreSQL and SQLite", i + 1);
            }
            lite.store.close().await;
            pg.store.close().await;
        }
    )*};
}

conformance!(
    guarded_steps_walk_the_state_table,
    batched_steps_apply_in_order,
    api_calls_are_recorded_and_read_back,
    runs_finish_and_are_counted,
    accounts_are_adopted_across_runs,
    adoptions_wait_for_their_cluster,
    the_last_check_refuses,
    doctor_findings_are_kept,
    report_tasks_are_filtered,
    the_run_lock_is_one_at_a_time,
);
