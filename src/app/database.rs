//! Which database a command opens, and how: `run` creates it when it is missing; `resume` and
//! `retry` need one that exists (a mistyped `--db` must not start an empty one); the read-only
//! commands (`status`, `report`, `audit`) open one that exists and never create or migrate a
//! file; `plan` reads what earlier runs did when there is a database, and nothing otherwise.
//!
//! With `--db postgres://…`: `run` (and `doctor`, which saves its findings there) creates or
//! migrates the schema in the database the URL names; `resume` and `retry` need one that is
//! already qc-offboard's; the read-only commands and `plan` never create or migrate it.
//!
//! All SQL stays in `store`: this module only picks paths and maps a missing database to a
//! configuration error (78), and a PostgreSQL server that does not answer to 69.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::exit::{Coded, Exit};
use crate::store::postgres::{is_postgres_url, OpenError, PgStore};
use crate::store::{self, AccountKey, Db, Standing, Store, StoreError};

/// What earlier runs did with each account: done, or in flight in a run.
pub type Standings = HashMap<AccountKey, Standing>;

/// `--db`, else the default database (the simulator's with `simulate`).
pub fn path(db: Option<&Path>, simulate: bool) -> anyhow::Result<PathBuf> {
    Ok(store::resolve_path(db, simulate)?)
}

/// The PostgreSQL URL `--db` gives, if it gives one.
fn postgres_url(db: Option<&Path>) -> Option<&str> {
    db.and_then(Path::to_str).filter(|s| is_postgres_url(s)).map(str::trim)
}

/// The database a new run is recorded in, created when missing (on PostgreSQL, the schema is
/// created or brought up to date in the database the URL names).
pub async fn open_for_run(db: Option<&Path>, simulate: bool) -> anyhow::Result<Db> {
    if let Some(url) = postgres_url(db) {
        return Ok(PgStore::open(url).await.map_err(pg_open_error)?.into());
    }
    Ok(Store::open(&path(db, simulate)?).await?.into())
}

/// Open a database that must exist (`resume`, `retry`): a mistyped `--db` is a configuration
/// error (78), never a new empty database. On PostgreSQL the database must already be
/// qc-offboard's; it is then brought up to this version.
pub async fn open_recorded(db: Option<&Path>, simulate: bool) -> anyhow::Result<Db> {
    if let Some(url) = postgres_url(db) {
        match PgStore::open_existing(url).await {
            Ok(existing) => existing.close().await,
            Err(e @ OpenError::Older { .. }) => tracing::debug!("{e}: migrating it"),
            Err(OpenError::NotOurs { target, why }) => {
                return Err(Coded::new(
                    Exit::Config,
                    format!(
                        "{target} is not a qc-offboard database ({why}): resume and retry never create one; \
                         check --db / QC_OFFBOARD_DB (`run` starts a database, `db copy` moves an SQLite one there)"
                    ),
                )
                .into())
            }
            Err(e) => return Err(pg_open_error(e)),
        }
        return Ok(PgStore::open(url).await.map_err(pg_open_error)?.into());
    }
    let path = path(db, simulate)?;
    if !path.is_file() {
        return Err(Coded::new(
            Exit::Config,
            format!("no database at {}: check --db / QC_OFFBOARD_DB (nothing was created)", path.display()),
        )
        .into());
    }
    Ok(Store::open(&path).await?.into())
}

/// Open the database the read-only commands look at (with `simulate`, the simulator's default
/// one, `sim-audit.db`, unless `--db` names one); it must exist. A `--db` that is a PostgreSQL
/// URL is opened read-only, and must already hold this version's schema.
pub async fn open_existing(db: Option<&Path>, simulate: bool) -> anyhow::Result<Db> {
    if let Some(url) = db.and_then(Path::to_str).filter(|s| is_postgres_url(s)) {
        return Ok(PgStore::open_existing(url.trim()).await.map_err(pg_open_error)?.into());
    }
    let opened = match store::resolve_path(db, simulate) {
        Ok(path) => Store::open_existing(&path).await,
        Err(e) => Err(e),
    };
    opened.map(Db::from).map_err(|e| match e {
        StoreError::Missing(_) | StoreError::NoHome => Coded::new(Exit::Config, e.to_string()).into(),
        other => anyhow::Error::new(other),
    })
}

/// What opening a PostgreSQL database met, with its exit code: a server that does not answer
/// is 69, anything else (the URL, a database that is not ours or not at this version) 78. The
/// message carries every cause, and the URL in it is redacted.
pub fn pg_open_error(e: OpenError) -> anyhow::Error {
    let exit = if e.is_unreachable() { Exit::Unavailable } else { Exit::Config };
    anyhow::Error::new(Coded::new(exit, with_causes(&e)))
}

/// An error and every cause under it, on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// What earlier runs against `endpoint` with `access_key_id` did with each account, from the
/// database when it exists (the real one: `plan` never looks at the simulator's).
pub async fn standings_at(db: Option<&Path>, endpoint: &str, access_key_id: &str) -> anyhow::Result<Standings> {
    if let Some(url) = postgres_url(db) {
        let store = PgStore::open_existing(url).await.map_err(pg_open_error)?;
        let done = store.standings(endpoint, access_key_id).await?;
        store.close().await;
        return Ok(done);
    }
    let Some(path) = history(db)? else {
        return Ok(Standings::new());
    };
    let store = Store::open_existing(&path).await?;
    let done = store.standings(endpoint, access_key_id).await?;
    store.close().await;
    Ok(done)
}

/// The database `plan` reads earlier runs from (`--db`, else the default, never the
/// simulator's), when it exists (a PostgreSQL URL is taken as existing: reading it says if not).
pub fn history(db: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(url) = postgres_url(db) {
        return Ok(Some(PathBuf::from(url)));
    }
    let path = match db {
        Some(p) => {
            store::refuse_postgres(p)?;
            p.to_path_buf()
        }
        None => store::default_path(false)?,
    };
    Ok(path.exists().then_some(path))
}
