//! Opening the database: the writer's single connection and the readers' pool, the pragmas every
//! connection carries, the migrations (applied, or checked when reading only), and the check
//! that what this process wrote is in the file on disk.
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
//! It opens and checks; every other statement is the other store files'.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::error::{sqlite_class, SqliteClass, StoreError};
use super::paths::create_private_file;
use super::Store;

/// How long a statement waits for another process's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Processes started at once on a new database race to apply the migrations; the losers see
/// "table already exists" or a busy snapshot, and try again this many times (the winner's
/// migrations are then found applied).
const MIGRATION_ATTEMPTS: u32 = 8;

/// The migrations this version applies, in order.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// Connections for reads; writes have their own single connection.
const READ_CONNECTIONS: u32 = 4;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
