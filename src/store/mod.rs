//! The embedded SQLite database (SPEC §7): the queue of a run's tasks, the record of every API
//! call, and the tamper-evident audit log. All SQL of the product lives in this module.
//!
//! Every change of state is written in one transaction together with the audit record that
//! describes it, so the log and the tables never disagree. Write transactions start with
//! `BEGIN IMMEDIATE` and go through one dedicated connection; reads use a separate pool and, in
//! WAL mode, never wait for a writer.
//!
//! Pragmas (set on [`SqliteConnectOptions`], once per connection):
//! - `journal_mode=WAL`: readers (`status`, `report`, `audit verify` from another shell) work
//!   while a run writes.
//! - `synchronous=FULL`: the WAL is synced at every commit. With `NORMAL` a power loss may roll
//!   back the last commits, among them the `submitting` intent recorded *before* a `del_user`
//!   request left; the task would then look untouched and could be sent twice, and audit records
//!   would vanish. Commits here are few per API call, so the fsync costs little (BENCHMARKS.md).
//! - `foreign_keys=ON`, `busy_timeout=10s` (another process holding the write lock briefly).
//!
//! The file is created with mode 0600 (and its directory with 0700) before SQLite opens it; the
//! WAL and shared-memory files inherit the mode. This module must not talk to the network, and
//! must never be given a secret key: API parameters arrive already stripped of the signature.

mod audit;
mod evidence;
mod lock;
mod model;
mod replay;
mod runs;
mod tasks;

use std::ffi::OsString;
use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

pub use audit::{canonical_record, record_hash, Checkpoint, Problem, Verification, GENESIS_HASH};
pub use evidence::{DeadlineCounts, SeqRange, TaskCall};
pub use lock::{this_host, LockHolder, LockOutcome};
pub use model::{
    ApiCallRow, Attempts, NewRun, NewTask, ReportFilter, RunRow, TaskChange, TaskRow, TaskState, Transition,
};
pub use replay::{AttemptRecord, ChainRow, ChainRun, ChainTask, Discrepancy, Proven, Replay, Window};

/// File name of the real database inside the data directory.
pub const DB_FILE: &str = "audit.db";
/// File name of the database of `--simulate` runs, beside the real one.
pub const SIM_DB_FILE: &str = "sim-audit.db";

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections for reads; writes have their own single connection.
const READ_CONNECTIONS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no home directory for the database: pass --db, or set QC_OFFBOARD_DB, XDG_DATA_HOME or HOME")]
    NoHome,
    #[error("no database at {0} (pass --db or set QC_OFFBOARD_DB to the file a run wrote)")]
    Missing(PathBuf),
    #[error("cannot create the database directory {path}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot create the database file {path}")]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("cannot open the database {path}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot bring the database {path} up to date")]
    Migrate { path: PathBuf, source: sqlx::migrate::MigrateError },
    #[error("database error")]
    Sql(#[from] sqlx::Error),
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("no run {0} in the database")]
    NoSuchRun(i64),
    #[error("cannot encode JSON for the database")]
    Json(#[from] serde_json::Error),
}

/// The database: a handle that is cheap to clone (it holds connection pools).
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    path: Arc<PathBuf>,
}

/// The default database path (SPEC §1): `$XDG_DATA_HOME/qc-offboard/audit.db`, else
/// `~/.local/share/qc-offboard/audit.db`; `sim-audit.db` beside it for `--simulate` runs.
pub fn default_path(simulate: bool) -> Result<PathBuf, StoreError> {
    path_in(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"), simulate)
}

fn path_in(xdg_data_home: Option<OsString>, home: Option<OsString>, simulate: bool) -> Result<PathBuf, StoreError> {
    // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    let data = match xdg_data_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(home.filter(|h| !h.is_empty()).ok_or(StoreError::NoHome)?).join(".local/share"),
    };
    Ok(data.join("qc-offboard").join(if simulate { SIM_DB_FILE } else { DB_FILE }))
}

/// `--db` when given, else [`default_path`].
pub fn resolve_path(db: Option<&Path>, simulate: bool) -> Result<PathBuf, StoreError> {
    match db {
        Some(p) => Ok(p.to_path_buf()),
        None => default_path(simulate),
    }
}

impl Store {
    /// Open the database, creating it (mode 0600) and its directory (mode 0700) when missing,
    /// and apply the migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let writer =
            SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await.map_err(open_err)?;
        sqlx::migrate!("./migrations")
            .run(&writer)
            .await
            .map_err(|source| StoreError::Migrate { path: path.to_path_buf(), source })?;
        let reader = SqlitePoolOptions::new().max_connections(READ_CONNECTIONS).connect_lazy_with(options);
        Ok(Store { writer, reader, path: Arc::new(path.to_path_buf()) })
    }

    /// Open a database that must already exist (the read-only commands: `status`, `report`,
    /// `audit`), so that a mistyped path is an error rather than a new empty database.
    pub async fn open_existing(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        Store::open(path).await
    }

    pub fn path(&self) -> &Path {
        &self.path
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

fn create_private_file(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
    }
    // `create` without `truncate`: an existing database is opened as it is.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::CreateFile { path: path.to_path_buf(), source })?;
    if let Ok(meta) = file.metadata() {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "the database is readable by other users; `chmod 600` it"
            );
        }
    }
    Ok(())
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

    #[tokio::test]
    async fn connections_carry_the_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("a/b/audit.db")).await.unwrap();
        for pool in [&store.writer, &store.reader] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
            assert_eq!(mode, "wal");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.unwrap();
            assert_eq!(fk, 1);
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
            assert_eq!(sync, 2, "FULL");
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(pool).await.unwrap();
            assert_eq!(busy, 10_000);
        }
        let dir_mode = std::fs::metadata(dir.path().join("a/b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode & 0o077, 0, "directory mode {dir_mode:o}");
    }

    #[test]
    fn default_paths_follow_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(path_in(os("/x"), os("/h"), false).unwrap(), PathBuf::from("/x/qc-offboard/audit.db"));
        assert_eq!(path_in(os("/x"), os("/h"), true).unwrap(), PathBuf::from("/x/qc-offboard/sim-audit.db"));
        let home = PathBuf::from("/h/.local/share/qc-offboard/audit.db");
        assert_eq!(path_in(None, os("/h"), false).unwrap(), home);
        assert_eq!(path_in(os("rel"), os("/h"), false).unwrap(), home, "a relative XDG_DATA_HOME is ignored");
        assert!(matches!(path_in(None, None, false), Err(StoreError::NoHome)));
        assert_eq!(resolve_path(Some(Path::new("/d/my.db")), true).unwrap(), PathBuf::from("/d/my.db"));
    }

    #[test]
    fn timestamps_have_one_fixed_width_form() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(ts(t), "2026-11-28T12:00:00.000000Z");
    }
}
