//! The store's public API as one local trait over both backends, so that every scenario of the
//! conformance suite is written once: [`Lite`] (the SQLite store in a temporary directory) and
//! [`Pg`] (the PostgreSQL store on a fresh database) delegate each method to the store's own
//! method of the same name. `records` reads the audit log's (kind, detail) sequence past the
//! product, to compare what the two backends wrote.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use qc_offboard::audit::Verification;
use qc_offboard::store::postgres::PgStore;
use qc_offboard::store::{
    AccountKey, Adopted, ApiCallRow, Db, DeadlineCounts, Event, Finding, LockHolder, LockOutcome, NewFinding, NewRun,
    NewTask, Prepared, Refusal, Replay, ReportFilter, RunRow, SeqRange, Standing, Store, StoreError, TaskCall,
    TaskChange, TaskRow, TaskState, Transition,
};
use serde_json::Value;
use sqlx::Connection;

use crate::pg_db::TestDb;

pub type R<T> = Result<T, StoreError>;

/// The SQLite store.
pub struct Lite {
    pub store: Store,
    _dir: tempfile::TempDir,
}

impl Lite {
    pub async fn new() -> Lite {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("audit.db")).await.unwrap();
        Lite { store, _dir: dir }
    }

    async fn raw_records(&self) -> Vec<(String, String)> {
        let url = format!("sqlite://{}?mode=ro", self.store.path().display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_as("SELECT kind, detail FROM audit_log ORDER BY seq").fetch_all(&mut conn).await.unwrap()
    }
}

/// The PostgreSQL store.
pub struct Pg {
    pub store: PgStore,
    db: TestDb,
}

impl Pg {
    /// `None` (with a line saying so) when `QC_OFFBOARD_TEST_PG` is unset.
    pub async fn new(test: &str) -> Option<Pg> {
        let db = TestDb::create(test).await?;
        Some(Pg { store: db.open().await, db })
    }

    async fn raw_records(&self) -> Vec<(String, String)> {
        let mut conn = self.db.raw().await;
        sqlx::query_as("SELECT kind, detail FROM audit_log ORDER BY seq").fetch_all(&mut conn).await.unwrap()
    }
}

/// The methods the product calls on a store, with the SQLite store's signatures.
#[allow(dead_code)]
pub trait Backend {
    async fn records(&self) -> Vec<(String, String)>;
    async fn create_run(&self, run: &NewRun, tasks: &[NewTask]) -> R<i64>;
    async fn tasks(&self, run_id: i64) -> R<Vec<TaskRow>>;
    async fn task(&self, task_id: i64) -> R<Option<TaskRow>>;
    async fn step(&self, task_id: i64, event: Event, change: &TaskChange, detail: Value) -> R<Option<TaskRow>>;
    async fn steps(&self, transitions: &[Transition]) -> R<Vec<Option<TaskRow>>>;
    async fn record_call(&self, run_id: i64, task_id: Option<i64>, call: &ApiCallRow) -> R<()>;
    async fn record_calls(&self, calls: &[(i64, Option<i64>, ApiCallRow)]) -> R<()>;
    async fn calls(&self, run_id: i64) -> R<Vec<(Option<i64>, ApiCallRow)>>;
    async fn finish_run(&self, run_id: i64, exit_code: i64, summary: Value) -> R<()>;
    async fn audit_event(&self, run: Option<i64>, task: Option<i64>, kind: &'static str, detail: Value) -> R<()>;
    async fn audit_events(&self, run_id: i64, kind: &'static str, events: &[(Option<i64>, Value)]) -> R<()>;
    async fn run(&self, run_id: i64) -> R<Option<RunRow>>;
    async fn runs(&self) -> R<Vec<RunRow>>;
    async fn newest_unfinished_run(&self) -> R<Option<RunRow>>;
    async fn counts(&self, run_id: i64) -> R<BTreeMap<TaskState, i64>>;
    async fn counts_by_run(&self) -> R<HashMap<i64, BTreeMap<TaskState, i64>>>;
    async fn failed_tasks(&self, run_id: i64) -> R<Vec<TaskRow>>;
    async fn report_tasks(&self, filter: &ReportFilter) -> R<Vec<(TaskRow, Option<String>)>>;
    async fn identity_runs(&self, endpoint: &str, key: &str) -> R<Vec<i64>>;
    async fn done_keys(&self, endpoint: &str, key: &str) -> R<HashSet<AccountKey>>;
    async fn standings(&self, endpoint: &str, key: &str) -> R<HashMap<AccountKey, Standing>>;
    async fn prepare_run(&self, run_id: i64, identity_runs: &[i64]) -> R<Prepared>;
    async fn adopt_deferred(&self, run_id: i64, task_id: i64, identity_runs: &[i64]) -> R<Adopted>;
    async fn known_jobs(&self, identity_runs: &[i64]) -> R<HashMap<AccountKey, HashSet<String>>>;
    async fn recent_job_duration(&self, identity_runs: &[i64]) -> R<Option<Duration>>;
    async fn lineage(&self, task_id: i64) -> R<Vec<i64>>;
    async fn last_check(&self, task_id: i64, identity_runs: &[i64]) -> R<Result<(), Refusal>>;
    async fn record_findings(&self, e: &str, k: &str, zone: Option<&str>, f: &[NewFinding]) -> R<i64>;
    async fn latest_findings(&self, e: &str, k: &str) -> R<Vec<Finding>>;
    async fn latest_finding(&self, e: &str, k: &str, name: &str) -> R<Option<Finding>>;
    async fn task_calls(&self, task_ids: &[i64]) -> R<HashMap<i64, Vec<TaskCall>>>;
    async fn task_audit_ranges(&self, task_ids: &[i64]) -> R<HashMap<i64, SeqRange>>;
    async fn run_audit_ranges(&self, run_ids: &[i64]) -> R<HashMap<i64, SeqRange>>;
    async fn deadline_counts(&self, run_id: Option<i64>, now: DateTime<Utc>) -> R<HashMap<i64, DeadlineCounts>>;
    async fn verify_audit(&self) -> R<Verification>;
    async fn audit_len(&self) -> R<i64>;
    async fn replay(&self) -> R<Replay>;
    async fn create_run_locked(&self, run: &NewRun, tasks: &[NewTask], pid: i64, host: &str) -> R<(i64, LockOutcome)>;
    async fn acquire_lock(&self, run_id: i64, pid: i64, host: &str) -> R<LockOutcome>;
    async fn release_lock(&self, run_id: i64) -> R<bool>;
    async fn lock_holder(&self) -> R<Option<LockHolder>>;
}

macro_rules! delegate {
    ($ty:ty) => {
        impl Backend for $ty {
            async fn records(&self) -> Vec<(String, String)> {
                self.raw_records().await
            }
            async fn create_run(&self, run: &NewRun, tasks: &[NewTask]) -> R<i64> {
                self.store.create_run(run, tasks).await
            }
            async fn tasks(&self, run_id: i64) -> R<Vec<TaskRow>> {
                self.store.tasks(run_id).await
            }
            async fn task(&self, task_id: i64) -> R<Option<TaskRow>> {
                self.store.task(task_id).await
            }
            async fn step(&self, id: i64, event: Event, change: &TaskChange, detail: Value) -> R<Option<TaskRow>> {
                self.store.step(id, event, change, detail).await
            }
            async fn steps(&self, transitions: &[Transition]) -> R<Vec<Option<TaskRow>>> {
                self.store.steps(transitions).await
            }
            async fn record_call(&self, run_id: i64, task_id: Option<i64>, call: &ApiCallRow) -> R<()> {
                self.store.record_call(run_id, task_id, call).await
            }
            async fn record_calls(&self, calls: &[(i64, Option<i64>, ApiCallRow)]) -> R<()> {
                self.store.record_calls(calls).await
            }
            async fn calls(&self, run_id: i64) -> R<Vec<(Option<i64>, ApiCallRow)>> {
                self.store.calls(run_id).await
            }
            async fn finish_run(&self, run_id: i64, exit_code: i64, summary: Value) -> R<()> {
                self.store.finish_run(run_id, exit_code, summary).await
            }
            async fn audit_event(&self, r: Option<i64>, t: Option<i64>, kind: &'static str, d: Value) -> R<()> {
                self.store.audit_event(r, t, kind, d).await
            }
            async fn audit_events(&self, run_id: i64, kind: &'static str, e: &[(Option<i64>, Value)]) -> R<()> {
                self.store.audit_events(run_id, kind, e).await
            }
            async fn run(&self, run_id: i64) -> R<Option<RunRow>> {
                self.store.run(run_id).await
            }
            async fn runs(&self) -> R<Vec<RunRow>> {
                self.store.runs().await
            }
            async fn newest_unfinished_run(&self) -> R<Option<RunRow>> {
                self.store.newest_unfinished_run().await
            }
            async fn counts(&self, run_id: i64) -> R<BTreeMap<TaskState, i64>> {
                self.store.counts(run_id).await
            }
            async fn counts_by_run(&self) -> R<HashMap<i64, BTreeMap<TaskState, i64>>> {
                self.store.counts_by_run().await
            }
            async fn failed_tasks(&self, run_id: i64) -> R<Vec<TaskRow>> {
                self.store.failed_tasks(run_id).await
            }
            async fn report_tasks(&self, filter: &ReportFilter) -> R<Vec<(TaskRow, Option<String>)>> {
                self.store.report_tasks(filter).await
            }
            async fn identity_runs(&self, endpoint: &str, key: &str) -> R<Vec<i64>> {
                self.store.identity_runs(endpoint, key).await
            }
            async fn done_keys(&self, endpoint: &str, key: &str) -> R<HashSet<AccountKey>> {
                self.store.done_keys(endpoint, key).await
            }
            async fn standings(&self, endpoint: &str, key: &str) -> R<HashMap<AccountKey, Standing>> {
                self.store.standings(endpoint, key).await
            }
            async fn prepare_run(&self, run_id: i64, identity_runs: &[i64]) -> R<Prepared> {
                self.store.prepare_run(run_id, identity_runs).await
            }
            async fn adopt_deferred(&self, run_id: i64, task_id: i64, identity_runs: &[i64]) -> R<Adopted> {
                Db::from(&self.store).adopt_deferred(run_id, task_id, identity_runs).await
            }
            async fn known_jobs(&self, identity_runs: &[i64]) -> R<HashMap<AccountKey, HashSet<String>>> {
                self.store.known_jobs(identity_runs).await
            }
            async fn recent_job_duration(&self, identity_runs: &[i64]) -> R<Option<Duration>> {
                self.store.recent_job_duration(identity_runs).await
            }
            async fn lineage(&self, task_id: i64) -> R<Vec<i64>> {
                self.store.lineage(task_id).await
            }
            async fn last_check(&self, task_id: i64, identity_runs: &[i64]) -> R<Result<(), Refusal>> {
                self.store.last_check(task_id, identity_runs).await
            }
            async fn record_findings(&self, e: &str, k: &str, zone: Option<&str>, f: &[NewFinding]) -> R<i64> {
                self.store.record_findings(e, k, zone, f).await
            }
            async fn latest_findings(&self, e: &str, k: &str) -> R<Vec<Finding>> {
                self.store.latest_findings(e, k).await
            }
            async fn latest_finding(&self, e: &str, k: &str, name: &str) -> R<Option<Finding>> {
                self.store.latest_finding(e, k, name).await
            }
            async fn task_calls(&self, task_ids: &[i64]) -> R<HashMap<i64, Vec<TaskCall>>> {
                self.store.task_calls(task_ids).await
            }
            async fn task_audit_ranges(&self, task_ids: &[i64]) -> R<HashMap<i64, SeqRange>> {
                self.store.task_audit_ranges(task_ids).await
            }
            async fn run_audit_ranges(&self, run_ids: &[i64]) -> R<HashMap<i64, SeqRange>> {
                self.store.run_audit_ranges(run_ids).await
            }
            async fn deadline_counts(&self, run: Option<i64>, now: DateTime<Utc>) -> R<HashMap<i64, DeadlineCounts>> {
                self.store.deadline_counts(run, now).await
            }
            async fn verify_audit(&self) -> R<Verification> {
                self.store.verify_audit(None).await
            }
            async fn audit_len(&self) -> R<i64> {
                self.store.audit_len().await
            }
            async fn replay(&self) -> R<Replay> {
                self.store.replay().await
            }
            async fn create_run_locked(
                &self,
                r: &NewRun,
                t: &[NewTask],
                pid: i64,
                host: &str,
            ) -> R<(i64, LockOutcome)> {
                self.store.create_run_locked(r, t, pid, host).await
            }
            async fn acquire_lock(&self, run_id: i64, pid: i64, host: &str) -> R<LockOutcome> {
                self.store.acquire_lock(run_id, pid, host).await
            }
            async fn release_lock(&self, run_id: i64) -> R<bool> {
                self.store.release_lock(run_id).await
            }
            async fn lock_holder(&self) -> R<Option<LockHolder>> {
                self.store.lock_holder().await
            }
        }
    };
}

delegate!(Lite);
delegate!(Pg);
