//! The embedded SQLite database (SPEC §7): the queue of a run's tasks, the record of every API
//! call, and the tamper-evident audit log. All SQL of the product lives in this module.
//!
//! Every change of state is written in one transaction together with the audit record that
//! describes it, so the log and the tables never disagree. Write transactions start with
//! `BEGIN IMMEDIATE` and go through one dedicated connection; reads use a separate pool and, in
//! WAL mode, never wait for a writer.
//!
//! Opening the database, its pragmas and migrations are `open`'s; where the file lives and how
//! it is created `paths`'s; the errors `error`'s. The PostgreSQL backend is `postgres`'s, and
//! `db`'s [`Db`] is either backend for the commands that only read.
//!
//! The file is created with mode 0600 (and its directory with 0700) before SQLite opens it; the
//! WAL and shared-memory files inherit the mode. This module must not talk to the network, and
//! must never be given a secret key: API parameters arrive already stripped of the signature.

mod accounts;
mod adoption;
mod audit;
mod db;
mod details;
mod error;
mod evidence;
mod findings;
mod lock;
pub mod model;
mod open;
mod paths;
pub mod postgres;
mod replay;
mod rows;
mod runs;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};

pub use crate::audit::chain::{canonical_record, record_hash, Checkpoint, GENESIS_HASH};
pub use crate::audit::walk::{Problem, Verification};
pub use crate::runner::state::{Event, Transition};
pub use accounts::{endpoint_identity, AccountKey, Adopted, Prepared, Refusal, Standing};
pub use db::Db;
pub use error::{connection_lost, sqlite_class, sqlite_class_of_code, SqliteClass, StoreError};
pub use evidence::{DeadlineCounts, SeqRange, TaskCall};
pub use findings::{check, Finding, FindingStatus, NewFinding};
pub use lock::{this_host, LockHolder, LockOutcome};
pub use model::{ApiCallRow, Attempts, NewRun, NewTask, ReportFilter, RunRow, TaskChange, TaskRow, TaskState};
pub use open::BUSY_TIMEOUT;
pub use paths::{default_path, refuse_postgres, resolve_path, DB_FILE, SIM_DB_FILE};
pub use replay::{AttemptRecord, ChainRow, ChainRun, ChainTask, Discrepancy, EvidenceRecord, Proven, Replay, Window};

/// The database: a handle that is cheap to clone (it holds connection pools).
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    path: Arc<PathBuf>,
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is a connection checked out (a statement or a transaction under way, or a connection
    /// being opened)? SQLite works on its own thread, which a paused tokio clock cannot see:
    /// the runner's tests hold the clock still while this is true, so that a write takes no
    /// virtual time.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> bool {
        let busy = |pool: &SqlitePool| pool.size() as usize > pool.num_idle();
        busy(&self.writer) || busy(&self.reader)
    }

    /// Close both pools, flushing the WAL into the main file when this is the last connection.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// A write transaction holding SQLite's write lock from its first statement, so that what
    /// it reads (the audit chain's tip, a task's state) cannot change before it commits.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The one text form of an instant in the database: fixed width, so text order is time order.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn opt_ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_one_fixed_width_form() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(ts(t), "2026-11-28T12:00:00.000000Z");
    }
}
