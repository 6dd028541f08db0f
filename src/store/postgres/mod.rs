//! The PostgreSQL backend (`--db postgres://…`): one queue, one API quota and one audit chain
//! shared by several runner hosts. It owns its own migrations (`migrations/postgres/`), the
//! pool, and the SQL that sharing needs: the audit chain appended under an advisory lock
//! ([`audit`]), runs and tasks ([`runs`]), tasks claimed under a lease with every write fenced
//! by its owner and epoch ([`lease`], [`write`]), the shared GCRA ([`quota`]), and the copy of
//! an SQLite evidence database up to PostgreSQL ([`copy`]). [`PgStore::open`] applies the
//! migrations; [`PgStore::open_existing`], for the commands that only read, applies none and
//! refuses a database whose migrations are not this version's.
//!
//! Beside those it offers the SQLite store's public API under the same names and types, so one
//! caller can use either: guarded steps without a lease ([`steps`]), API calls ([`calls`]), the
//! questions about runs ([`queries`]) and accounts ([`accounts`]), doctor's findings
//! ([`findings`]), the auditor's questions ([`evidence`]), the table-against-chain replay
//! ([`replay`]) and the run lock until per-host leases replace it ([`lock`]). What they decide is shared with SQLite (`store::details`, `store::adoption`,
//! `store::replay`); these files hold SQL.
//!
//! The chain's encoding and hashing (`audit::chain`) and its verifier (`audit::walk`) are the
//! same for both backends; the rows are the SQLite store's (`store::model`). Times that decide anything across
//! hosts (leases, the quota, the audit record's `at`) are read from the database's clock, never
//! a host's. This module must not talk to the API, must not decide what a task's next state is
//! (the runner does), and must never be given a secret key; the URL's password never appears in
//! an error or a log line ([`redacted`]).

mod accounts;
mod audit;
mod calls;
mod copy;
mod evidence;
mod findings;
mod hosts;
mod lease;
mod lock;
mod queries;
mod quota;
mod replay;
mod runs;
mod steps;
mod write;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

pub use copy::{check_source, copy_from_sqlite, Copied, CopyError};
pub use hosts::{HostLease, Joined};
pub use lease::{Claim, Lease};
pub use quota::{PgQuota, Slot};
pub use write::{LeasedTransition, LeasedWrite};

/// The migrations this version applies, in order (sqlx takes an advisory lock while it applies
/// them, so hosts started at once on a new database wait for each other).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Connections per host: concurrent workers each hold one only for a statement or a short
/// transaction.
const CONNECTIONS: u32 = 10;
/// How long opening the database waits for the server's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Does `--db` name a PostgreSQL database rather than an SQLite file? (Spaces around the value,
/// as a copied line may carry, do not turn a URL into a file name.)
pub fn is_postgres_url(db: &str) -> bool {
    let scheme = db.trim().split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    matches!(scheme.as_deref(), Some("postgres" | "postgresql"))
}

/// Does a `--db` value look like a URL of any kind (`scheme://…`, or `postgres:…` without the
/// slashes)? Such a value is never taken for an SQLite file name: the file would carry the URL,
/// password and all, in its name.
pub fn looks_like_url(db: &str) -> bool {
    let db = db.trim().to_ascii_lowercase();
    db.contains("://") || db.starts_with("postgres:") || db.starts_with("postgresql:") || db.starts_with("pg:")
}

/// The URL as it may be shown: without its password (and without query parameters, which may
/// carry one too).
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(e) => format!("(a URL that does not parse: {e})"),
    }
}

/// Why a PostgreSQL database could not be opened. The target is shown without its password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{target} is not a usable PostgreSQL URL: {source}")]
    Url { target: String, source: sqlx::Error },
    #[error("cannot connect to the PostgreSQL database {target}; check that the server runs and the URL is right")]
    Connect { target: String, source: sqlx::Error },
    #[error("cannot bring the PostgreSQL database {target} up to date")]
    Migrate { target: String, source: sqlx::migrate::MigrateError },
    #[error(
        "{target} is not a qc-offboard database ({why}); reading never creates one: \
         `qc-offboard db copy --from sqlite:PATH --to URL` moves an SQLite database there"
    )]
    NotOurs { target: String, why: String },
    #[error(
        "the PostgreSQL database {target} was written by a newer version of qc-offboard (it has migration \
         {version}, which this version does not know); use that version, or another --db"
    )]
    Newer { target: String, version: i64 },
    #[error(
        "the PostgreSQL database {target} was written by an older version of qc-offboard (migration {version} \
         is missing) and reading never changes it; read it with the version that wrote it"
    )]
    Older { target: String, version: i64 },
}

impl OpenError {
    /// Whether the server could not be reached at all (as opposed to a URL or a database that
    /// is not what this version reads or writes).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, OpenError::Connect { .. })
    }
}

/// A PostgreSQL database: a handle that is cheap to clone (it holds a pool).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    target: Arc<str>,
}

impl PgStore {
    /// Connect to the database at `url` and apply this version's migrations.
    pub async fn open(url: &str) -> Result<PgStore, OpenError> {
        let target = redacted(url);
        let options =
            PgConnectOptions::from_str(url).map_err(|source| OpenError::Url { target: target.clone(), source })?;
        let pool = connect(options, &target).await?;
        if let Err(source) = MIGRATOR.run(&pool).await {
            pool.close().await;
            return Err(OpenError::Migrate { target, source });
        }
        Ok(PgStore { pool, target: target.into() })
    }

    /// Open a database that must already hold this version's schema, for reading only
    /// (`status`, `report`, `audit`): nothing is created or migrated, every connection is
    /// read-only (`default_transaction_read_only`), and a database without our migrations, or
    /// with others than this version's, is refused rather than misread.
    pub async fn open_existing(url: &str) -> Result<PgStore, OpenError> {
        let target = redacted(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|source| OpenError::Url { target: target.clone(), source })?
            .options([("default_transaction_read_only", "on")]);
        let pool = connect(options, &target).await?;
        if let Err(e) = check_migrations(&pool, &target).await {
            pool.close().await;
            return Err(e);
        }
        Ok(PgStore { pool, target: target.into() })
    }

    /// The database's URL without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction. READ COMMITTED, so that each statement sees what committed before
    /// it: the audit append reads the chain's tip after taking its lock and must see the
    /// previous holder's records (under REPEATABLE READ its snapshot would predate the lock).
    async fn write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await
    }
}

/// The pool on `options`, after one connection has proven the server answers: a server that
/// refuses or a database that does not exist is said at once (within CONNECT_TIMEOUT), where
/// the pool would keep trying for ACQUIRE_TIMEOUT.
async fn connect(options: PgConnectOptions, target: &str) -> Result<PgPool, OpenError> {
    let unreachable = |source| OpenError::Connect { target: target.to_owned(), source };
    let first =
        tokio::time::timeout(CONNECT_TIMEOUT, <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)).await;
    match first {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(source)) => return Err(unreachable(source)),
        Err(_) => return Err(unreachable(sqlx::Error::PoolTimedOut)),
    }
    PgPoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(unreachable)
}

/// A reader's check that the database holds exactly this version's migrations (the check
/// `MIGRATOR.run` makes, without applying anything, and without touching a database that has
/// no migration table at all).
async fn check_migrations(pool: &PgPool, target: &str) -> Result<(), OpenError> {
    let not_ours = |why: String| OpenError::NotOurs { target: target.to_owned(), why };
    let sql_failed = |e: sqlx::Error| OpenError::Connect { target: target.to_owned(), source: e };
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(sql_failed)?;
    if !has_table {
        return Err(not_ours("it has no migration table".into()));
    }
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| not_ours(format!("its migration table cannot be read: {e}")))?;
    let known: Vec<_> = MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).collect();
    for (version, checksum) in &applied {
        match known.iter().find(|m| m.version == *version) {
            None => return Err(OpenError::Newer { target: target.to_owned(), version: *version }),
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                return Err(not_ours(format!("its migration {version} differs from this version's")))
            }
            Some(_) => {}
        }
    }
    if let Some(m) = known.iter().find(|m| !applied.iter().any(|(v, _)| *v == m.version)) {
        let version = m.version;
        return Err(if applied.is_empty() {
            not_ours("no migration was applied to it".into())
        } else {
            OpenError::Older { target: target.to_owned(), version }
        });
    }
    Ok(())
}

/// A duration as whole microseconds for SQL (`$n * interval '1 microsecond'`), the precision of
/// TIMESTAMPTZ; saturates instead of overflowing.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(redacted("postgres://u:s3cret@db:5432/q?password=x"), "postgres://u:***@db:5432/q");
        assert_eq!(redacted("postgres://root@127.0.0.1:5432/test"), "postgres://root@127.0.0.1:5432/test");
        assert!(!redacted("postgres://u:s3cret@[::1").contains("s3cret"));
        assert!(is_postgres_url("postgresql://h/db") && !is_postgres_url("/var/lib/audit.db"));
    }
}
