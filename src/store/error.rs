//! What can go wrong with the database, in the words a user acts on ([`StoreError`]), and what
//! an SQLite error says about the environment ([`SqliteClass`]: busy, full, I/O, corrupt,
//! denied), from its primary result code.
//!
//! It classifies; it opens nothing and retries nothing.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no home directory for the database: pass --db, or set QC_OFFBOARD_DB, XDG_DATA_HOME or HOME")]
    NoHome,
    /// `--db` names a PostgreSQL database where an SQLite file is needed (every command opens
    /// a URL itself before it asks for a file's path, so this is a guard, never a user's path).
    #[error("{0} is a PostgreSQL database, where an SQLite file (--db PATH) is needed")]
    PostgresNotSelectable(String),
    /// `--db` looks like a URL, but not a PostgreSQL one this version reads.
    #[error(
        "--db (or QC_OFFBOARD_DB) looks like a URL, not a file: give the SQLite file's PATH, or a \
         postgres:// URL (the value is not shown: it may hold a password)"
    )]
    NotAFilePath,
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
    #[error(
        "the database {path} was written by a newer version of qc-offboard (it has migration {version}, which \
         this version does not know); use that version, or another --db"
    )]
    Newer { path: PathBuf, version: i64 },
    #[error(
        "the database {path} was written by an older version of qc-offboard (migration {version} is missing) and \
         reading never changes it; read it with the version that wrote it, or upgrade a copy by running \
         `qc-offboard resume` on it with this version"
    )]
    Older { path: PathBuf, version: i64 },
    #[error(
        "the database {path} lost records this process wrote: its audit log ends at record {written} as this \
         process sees it, but {on_disk} in the file{cause}. The file or its -wal file was changed or removed while the run was writing \
         (restored, copied over, deleted). The summary is not printed, since the database does not hold it; do \
         not resume from this file: tasks it forgot would be sent again. Keep this output, check the accounts \
         with `report` on this file, and look for what touched it"
    )]
    Lost { path: PathBuf, written: i64, on_disk: String, cause: String },
    #[error(
        "the database {path} has a -wal file beside it with changes not yet in the main file, and its directory \
         is read-only, so SQLite cannot read them; copy the database with its -wal (and -shm) file to writable \
         storage and read the copy"
    )]
    ReadOnlyWal { path: PathBuf },
    #[error("{path} is not a qc-offboard database ({why}); pass --db or set QC_OFFBOARD_DB to the file a run wrote")]
    NotOurs { path: PathBuf, why: String },
    #[error("database error")]
    Sql(#[from] sqlx::Error),
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("no run {0} in the database")]
    NoSuchRun(i64),
    #[error("cannot encode JSON for the database")]
    Json(#[from] serde_json::Error),
    /// A state change the task state table does not allow (a bug: nothing was written).
    #[error(transparent)]
    Illegal(#[from] crate::runner::state::Illegal),
}

/// What an SQLite error says about the environment, when it is about the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteClass {
    /// Another connection holds the lock for longer than [`BUSY_TIMEOUT`](super::BUSY_TIMEOUT) (or a snapshot went
    /// stale while waiting for it).
    Busy,
    /// The disk (or a quota) is full.
    Full,
    /// Reading or writing the file failed below SQLite.
    Io,
    /// The file is damaged, or not an SQLite database.
    Corrupt,
    /// The file or its directory cannot be written, or cannot be opened at all.
    Denied,
}

/// The class of an SQLite error, from its primary result code.
pub fn sqlite_class(err: &sqlx::Error) -> Option<SqliteClass> {
    let sqlx::Error::Database(db) = err else { return None };
    // Only SQLite's numeric codes: PostgreSQL's SQLSTATEs (`22021`) are not SQLite codes.
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    sqlite_class_of_code(db.code()?.parse().ok()?)
}

/// Did the connection to a database server fail (it was cut, the server shut down or restarted,
/// no connection could be had in time), as opposed to a statement being refused? A statement
/// that failed so may be tried again on a new connection; what it wrote is either committed or
/// not, never half of it.
pub fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() => {
            // Class 08: connection exception; 57P01–57P03: the server is shutting down, crashed,
            // or cannot take connections yet.
            db.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

impl StoreError {
    /// Whether this is [`connection_lost`].
    pub fn connection_lost(&self) -> bool {
        matches!(self, StoreError::Sql(e) if connection_lost(e))
    }
}

/// The class of an SQLite (extended) result code.
pub fn sqlite_class_of_code(code: i64) -> Option<SqliteClass> {
    Some(match code & 0xff {
        5 | 6 => SqliteClass::Busy,             // SQLITE_BUSY, SQLITE_LOCKED
        13 => SqliteClass::Full,                // SQLITE_FULL
        10 => SqliteClass::Io,                  // SQLITE_IOERR
        11 | 26 => SqliteClass::Corrupt,        // SQLITE_CORRUPT, SQLITE_NOTADB
        3 | 8 | 14 | 23 => SqliteClass::Denied, // SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH
        _ => return None,
    })
}
