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

mod accounts;
mod audit;
mod evidence;
mod findings;
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

pub use crate::audit::chain::{canonical_record, record_hash, Checkpoint, Problem, Verification, GENESIS_HASH};
pub use accounts::{endpoint_identity, AccountKey, Prepared, Refusal, Standing};
pub use evidence::{DeadlineCounts, SeqRange, TaskCall};
pub use findings::{check, Finding, FindingStatus, NewFinding};
pub use lock::{this_host, LockHolder, LockOutcome};
pub use model::{
    ApiCallRow, Attempts, NewRun, NewTask, ReportFilter, RunRow, TaskChange, TaskRow, TaskState, Transition,
};
pub use replay::{AttemptRecord, ChainRow, ChainRun, ChainTask, Discrepancy, EvidenceRecord, Proven, Replay, Window};

/// File name of the real database inside the data directory.
pub const DB_FILE: &str = "audit.db";
/// File name of the database of `--simulate` runs, beside the real one.
pub const SIM_DB_FILE: &str = "sim-audit.db";

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Processes started at once on a new database race to apply the migrations; the losers see
/// "table already exists" or a busy snapshot, and try again this many times (the winner's
/// migrations are then found applied).
const MIGRATION_ATTEMPTS: u32 = 8;

/// The migrations this version applies, in order.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
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
            connect_retrying(SqlitePoolOptions::new().max_connections(1), options.clone()).await.map_err(open_err)?;
        migrate(&writer, path).await?;
        let reader = SqlitePoolOptions::new().max_connections(READ_CONNECTIONS).connect_lazy_with(options);
        Ok(Store { writer, reader, path: Arc::new(path.to_path_buf()) })
    }

    /// Open a database that must already exist, for reading only (`status`, `report`, `audit`,
    /// `plan`): evidence is often a copy on read-only media, and reading it must not change a
    /// byte. Nothing is created (a mistyped path is an error, not a new empty database),
    /// nothing is migrated, and SQLite opens the file read-only; a database whose migrations
    /// differ from this version's is refused rather than misread.
    pub async fn open_existing(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(StoreError::NotOurs { path: path.to_path_buf(), why: "not a regular file".into() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(path.to_path_buf())),
            Err(source) => return Err(StoreError::CreateFile { path: path.to_path_buf(), source }),
        }
        let pool = match connect_reader(path, false).await {
            // A WAL database needs its -shm file, which a read-only directory cannot hold. With
            // no -wal file (or an empty one) the main file is the whole database, and SQLite
            // may read it as immutable: without locks or the -shm file.
            Err(StoreError::Sql(e)) if sqlite_class(&e) == Some(SqliteClass::Denied) => {
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(StoreError::ReadOnlyWal { path: path.to_path_buf() });
                }
                connect_reader(path, true).await?
            }
            other => other?,
        };
        // Both handles read: a write through this store fails (SQLITE_READONLY) instead of
        // changing evidence.
        Ok(Store { writer: pool.clone(), reader: pool, path: Arc::new(path.to_path_buf()) })
    }

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

    /// Check that the file on disk holds the newest audit record this process sees through its
    /// own connection, by reading it back through a new connection. A deleted or replaced -wal
    /// file is outside what SQLite guarantees: the process keeps writing to the file it has
    /// open and sees its commits, while the database keeps none of them. Called before a run
    /// reports what it did.
    pub async fn check_written_to_disk(&self) -> Result<(), StoreError> {
        use sqlx::{ConnectOptions, Connection};
        let Some((written, hash)) =
            sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.writer)
                .await?
        else {
            return Ok(());
        };
        let lost = |on_disk: String, cause: String| StoreError::Lost {
            path: self.path.to_path_buf(),
            written,
            on_disk,
            cause,
        };
        let options = SqliteConnectOptions::new().filename(&*self.path).read_only(true).busy_timeout(BUSY_TIMEOUT);
        let mut conn = options.connect().await.map_err(|e| lost("cannot be read".into(), format!(" ({e})")))?;
        let read = async {
            let found: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = ?")
                .bind(written)
                .fetch_optional(&mut conn)
                .await?;
            let tip: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log").fetch_one(&mut conn).await?;
            Ok::<_, sqlx::Error>((found, tip))
        }
        .await;
        let _ = conn.close().await;
        match read {
            Ok((Some(found), _)) if found == hash => Ok(()),
            Ok((_, tip)) => Err(lost(format!("ends at record {}", tip.unwrap_or(0)), String::new())),
            Err(e) => Err(lost("cannot be read".into(), format!(" ({e})"))),
        }
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

/// A read-only pool on an existing database, checked to be one of ours at this version.
async fn connect_reader(path: &Path, immutable: bool) -> Result<SqlitePool, StoreError> {
    // No journal mode is set: it is the file's own (WAL), and changing it would write.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(immutable)
        .create_if_missing(false)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(READ_CONNECTIONS)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
    if let Err(e) = check_migrations(&pool, path).await {
        pool.close().await;
        return Err(e);
    }
    Ok(pool)
}

/// Connect, trying again while another process holds the lock that switching a new file to
/// WAL needs (processes started at once on a new database).
async fn connect_retrying(pool: SqlitePoolOptions, options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let mut attempt = 0;
    loop {
        let began = std::time::Instant::now();
        match pool.clone().connect_with(options.clone()).await {
            Err(e) if attempt < MIGRATION_ATTEMPTS && conflict_at_once(&e, began) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

/// A lock conflict that SQLite reported without waiting out [`BUSY_TIMEOUT`] (a snapshot that
/// went stale, a lock upgrade it refuses to wait for): another process is setting the file up
/// at this moment, and trying again soon succeeds. A holder that kept the lock for the whole
/// timeout is not waited for again.
fn conflict_at_once(err: &sqlx::Error, began: std::time::Instant) -> bool {
    sqlite_class(err) == Some(SqliteClass::Busy) && began.elapsed() < BUSY_TIMEOUT / 2
}

/// Apply this version's migrations, trying again when another process applied one meanwhile.
async fn migrate(writer: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    use sqlx::migrate::MigrateError as M;
    let mut attempt = 0;
    loop {
        let began = std::time::Instant::now();
        let err = match MIGRATOR.run(writer).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let raced = match &err {
            M::Execute(e) | M::ExecuteMigration(e, _) => {
                conflict_at_once(e, began)
                    || matches!(e, sqlx::Error::Database(d) if d.message().contains("already exists") || d.is_unique_violation())
            }
            _ => false,
        };
        if raced && attempt < MIGRATION_ATTEMPTS {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
            continue;
        }
        return Err(match err {
            M::VersionMissing(version) => StoreError::Newer { path: path.to_path_buf(), version },
            source => StoreError::Migrate { path: path.to_path_buf(), source },
        });
    }
}

/// A reader's check that the file is a qc-offboard database with exactly this version's
/// migrations (the check `migrate` makes, without applying anything).
async fn check_migrations(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let not_ours = |why: &str| StoreError::NotOurs { path: path.to_path_buf(), why: why.to_owned() };
    let applied: Vec<(i64, Vec<u8>)> =
        match sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => {
                return Err(not_ours("it has no migration table"))
            }
            Err(e) => return Err(StoreError::Sql(e)),
        };
    let known: Vec<_> = MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).collect();
    for (version, checksum) in &applied {
        match known.iter().find(|m| m.version == *version) {
            None => return Err(StoreError::Newer { path: path.to_path_buf(), version: *version }),
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                return Err(not_ours(&format!("its migration {version} differs from this version's")))
            }
            Some(_) => {}
        }
    }
    if let Some(m) = known.iter().find(|m| !applied.iter().any(|(v, _)| *v == m.version)) {
        return Err(StoreError::Older { path: path.to_path_buf(), version: m.version });
    }
    Ok(())
}

/// What an SQLite error says about the environment, when it is about the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteClass {
    /// Another connection holds the lock for longer than [`BUSY_TIMEOUT`] (or a snapshot went
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
    sqlite_class_of_code(db.code()?.parse().ok()?)
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
