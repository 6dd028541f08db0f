//! One handle over both backends: [`Db`] is the SQLite store or the PostgreSQL one, and each of
//! its methods hands the question (or the write) to the backend's method of the same name, which
//! does it the same way (`tests/it/store_conformance/` holds them to that). The read-only
//! commands (`status`, `report`, `audit`) and the runner work through it.
//!
//! It only dispatches: no SQL and no opening (that is `Store::open`'s and `PgStore::open`'s).
//! What only one backend has (the run lock of SQLite, the leases of PostgreSQL) is reached
//! through the backend's own type.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::postgres::PgStore;
use super::{
    AccountKey, Adopted, ApiCallRow, Checkpoint, DeadlineCounts, Finding, NewFinding, Prepared, Refusal, Replay,
    ReportFilter, RunRow, Standing, Store, StoreError, TaskCall, TaskRow, TaskState, Transition, Verification,
};

/// The database a read-only command looks at: an SQLite file or a PostgreSQL database.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(Store),
    Postgres(PgStore),
}

/// Methods that call the backend's method of the same name with the same arguments.
macro_rules! delegate {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            $(#[$doc])*
            pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                match self {
                    Db::Sqlite(s) => s.$name($($arg),*).await,
                    Db::Postgres(s) => s.$name($($arg),*).await,
                }
            }
        )*
    };
}

impl Db {
    /// Where the database is, as it may be shown: the file's path, or the URL without its
    /// password.
    pub fn location(&self) -> String {
        match self {
            Db::Sqlite(s) => s.path().display().to_string(),
            Db::Postgres(s) => s.target().to_owned(),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(s) => s.close().await,
            Db::Postgres(s) => s.close().await,
        }
    }

    delegate! {
        /// Recompute the chain (up to `checkpoint`, which must be present).
        fn verify_audit(&self, checkpoint: Option<&Checkpoint>) -> Result<Verification, StoreError>;
        /// The newest record as `SEQ:HASH`.
        fn audit_checkpoint(&self) -> Result<Checkpoint, StoreError>;
        /// The tables replayed against the chain.
        fn replay(&self) -> Result<Replay, StoreError>;
        /// One run.
        fn run(&self, run_id: i64) -> Result<Option<RunRow>, StoreError>;
        /// Every run, newest first.
        fn runs(&self) -> Result<Vec<RunRow>, StoreError>;
        /// One run's tasks counted by state.
        fn counts(&self, run_id: i64) -> Result<BTreeMap<TaskState, i64>, StoreError>;
        /// Every run's tasks counted by state.
        fn counts_by_run(&self) -> Result<HashMap<i64, BTreeMap<TaskState, i64>>, StoreError>;
        /// Deadline counts per run as they stand at `now`.
        fn deadline_counts(&self, run_id: Option<i64>, now: DateTime<Utc>) -> Result<HashMap<i64, DeadlineCounts>, StoreError>;
        /// The tasks `filter` selects, with their run's ticket.
        fn report_tasks(&self, filter: &ReportFilter) -> Result<Vec<(TaskRow, Option<String>)>, StoreError>;
        /// The API calls behind each of `task_ids`.
        fn task_calls(&self, task_ids: &[i64]) -> Result<HashMap<i64, Vec<TaskCall>>, StoreError>;
        /// One run's tasks, in id order.
        fn tasks(&self, run_id: i64) -> Result<Vec<TaskRow>, StoreError>;
        /// One run's API calls, with their task.
        fn calls(&self, run_id: i64) -> Result<Vec<(Option<i64>, ApiCallRow)>, StoreError>;
        /// Record API calls (run, task, row).
        fn record_calls(&self, calls: &[(i64, Option<i64>, ApiCallRow)]) -> Result<(), StoreError>;
        /// Guarded steps in one transaction (on PostgreSQL only of tasks no host holds).
        fn steps(&self, transitions: &[Transition]) -> Result<Vec<Option<TaskRow>>, StoreError>;
        /// Append one audit record.
        fn audit_event(&self, run_id: Option<i64>, task_id: Option<i64>, kind: &'static str, detail: Value) -> Result<(), StoreError>;
        /// Append audit records of one kind for one run.
        fn audit_events(&self, run_id: i64, kind: &'static str, events: &[(Option<i64>, Value)]) -> Result<(), StoreError>;
        /// The runs of one endpoint identity and access key.
        fn identity_runs(&self, endpoint: &str, access_key_id: &str) -> Result<Vec<i64>, StoreError>;
        /// Skip what other runs did, adopt what they left in flight.
        fn prepare_run(&self, run_id: i64, identity_runs: &[i64]) -> Result<Prepared, StoreError>;
        /// The jobs already seen per account.
        fn known_jobs(&self, identity_runs: &[i64]) -> Result<HashMap<AccountKey, HashSet<String>>, StoreError>;
        /// The last check before a request is signed.
        fn last_check(&self, task_id: i64, identity_runs: &[i64]) -> Result<Result<(), Refusal>, StoreError>;
        /// The tasks a task adopted, and itself.
        fn lineage(&self, task_id: i64) -> Result<Vec<i64>, StoreError>;
        /// A recent job duration of this identity's runs.
        fn recent_job_duration(&self, identity_runs: &[i64]) -> Result<Option<std::time::Duration>, StoreError>;
        /// The newest finding of one check against an endpoint and key.
        fn latest_finding(&self, endpoint: &str, access_key_id: &str, name: &str) -> Result<Option<Finding>, StoreError>;
        /// Accounts done by this identity's runs.
        fn done_keys(&self, endpoint: &str, access_key_id: &str) -> Result<HashSet<AccountKey>, StoreError>;
        /// What this identity's runs did with each account.
        fn standings(&self, endpoint: &str, access_key_id: &str) -> Result<HashMap<AccountKey, Standing>, StoreError>;
        /// The newest run with work left.
        fn newest_unfinished_run(&self) -> Result<Option<RunRow>, StoreError>;
        /// A run's failed tasks.
        fn failed_tasks(&self, run_id: i64) -> Result<Vec<TaskRow>, StoreError>;
        /// Save one checkup of `doctor`'s findings; its id.
        fn record_findings(&self, endpoint: &str, access_key_id: &str, zone: Option<&str>, findings: &[NewFinding]) -> Result<i64, StoreError>;
        /// Close a run with its exit code and summary.
        fn finish_run(&self, run_id: i64, exit_code: i64, summary: Value) -> Result<(), StoreError>;
    }

    /// The processes working on run `run_id` now, as (host, pid): on PostgreSQL its live host
    /// leases, on SQLite the run lock's holder when it holds this run (whether or not that
    /// process is still alive: `status` says what the lock says).
    pub async fn live_hosts(&self, run_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(match self {
            Db::Sqlite(s) => {
                s.lock_holder().await?.filter(|h| h.run_id == run_id).map(|h| (h.host, h.pid)).into_iter().collect()
            }
            Db::Postgres(s) => s.live_hosts(run_id).await?.into_iter().map(|h| (h.host, h.pid)).collect(),
        })
    }

    /// The deferred adoption of one task (see `Prepared::deferred`). On PostgreSQL only of a task
    /// no host holds; a host of a shared run adopts through `Shared::adopt_deferred`.
    pub async fn adopt_deferred(
        &self,
        run_id: i64,
        task_id: i64,
        identity_runs: &[i64],
    ) -> Result<Adopted, StoreError> {
        match self {
            Db::Sqlite(s) => s.adopt_deferred(run_id, task_id, identity_runs).await,
            Db::Postgres(s) => s.adopt_deferred(run_id, task_id, identity_runs, None).await,
        }
    }

    /// The PostgreSQL store, if this is one.
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(s) => Some(s),
        }
    }

    /// On SQLite, that what this process committed is still in the file (see
    /// `Store::check_written_to_disk`); a server database has nothing to check.
    pub async fn check_written_to_disk(&self) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(s) => s.check_written_to_disk().await,
            Db::Postgres(_) => Ok(()),
        }
    }
}

impl From<Store> for Db {
    fn from(store: Store) -> Db {
        Db::Sqlite(store)
    }
}

impl From<PgStore> for Db {
    fn from(store: PgStore) -> Db {
        Db::Postgres(store)
    }
}

/// A handle shares its pools with its clones, so borrowing one as a `Db` costs a clone.
impl From<&Store> for Db {
    fn from(store: &Store) -> Db {
        Db::Sqlite(store.clone())
    }
}

impl From<&PgStore> for Db {
    fn from(store: &PgStore) -> Db {
        Db::Postgres(store.clone())
    }
}

impl From<&Db> for Db {
    fn from(db: &Db) -> Db {
        db.clone()
    }
}
