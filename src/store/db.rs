//! One handle over both backends for what the read-only commands (`status`, `report`, `audit`)
//! ask: [`Db`] is the SQLite store or the PostgreSQL one, and each of its methods hands the
//! question to the backend's method of the same name, which answers it the same way
//! (`tests/it/store_conformance/` holds them to that).
//!
//! It only dispatches: no SQL, no opening (that is `Store::open_existing`'s and
//! `PgStore::open_existing`'s), and nothing that writes; the commands that write keep working on
//! `Store` until per-host leases come.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::postgres::PgStore;
use super::{
    Checkpoint, DeadlineCounts, Replay, ReportFilter, RunRow, Store, StoreError, TaskCall, TaskRow, TaskState,
    Verification,
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
