//! Which database a command opens, and how: `run` creates it when it is missing; `resume` and
//! `retry` need one that exists (a mistyped `--db` must not start an empty one); the read-only
//! commands (`status`, `report`, `audit`) open one that exists and never create or migrate a
//! file; `plan` reads what earlier runs did when there is a database, and nothing otherwise.
//!
//! All SQL stays in `store`: this module only picks paths and maps a missing database to a
//! configuration error (78).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::exit::{Coded, Exit};
use crate::store::{self, AccountKey, Standing, Store, StoreError};

/// What earlier runs did with each account: done, or in flight in a run.
pub type Standings = HashMap<AccountKey, Standing>;

/// `--db`, else the default database (the simulator's with `simulate`).
pub fn path(db: Option<&Path>, simulate: bool) -> anyhow::Result<PathBuf> {
    Ok(store::resolve_path(db, simulate)?)
}

/// The database a new run is recorded in, created when missing.
pub async fn open_for_run(db: Option<&Path>, simulate: bool) -> anyhow::Result<Store> {
    Ok(Store::open(&path(db, simulate)?).await?)
}

/// Open a database that must exist (`resume`, `retry`): a mistyped `--db` is a configuration
/// error (78), never a new empty database.
pub async fn open_recorded(db: Option<&Path>, simulate: bool) -> anyhow::Result<Store> {
    let path = path(db, simulate)?;
    if !path.is_file() {
        return Err(Coded::new(
            Exit::Config,
            format!("no database at {}: check --db / QC_OFFBOARD_DB (nothing was created)", path.display()),
        )
        .into());
    }
    Ok(Store::open(&path).await?)
}

/// Open the database the read-only commands look at (with `simulate`, the simulator's default
/// one, `sim-audit.db`, unless `--db` names one); it must exist.
pub async fn open_existing(db: Option<&Path>, simulate: bool) -> anyhow::Result<Store> {
    let opened = match store::resolve_path(db, simulate) {
        Ok(path) => Store::open_existing(&path).await,
        Err(e) => Err(e),
    };
    opened.map_err(|e| match e {
        StoreError::Missing(_) | StoreError::NoHome => Coded::new(Exit::Config, e.to_string()).into(),
        other => anyhow::Error::new(other),
    })
}

/// What earlier runs against `endpoint` with `access_key_id` did with each account, from the
/// database when it exists (the real one: `plan` never looks at the simulator's).
pub async fn standings_at(db: Option<&Path>, endpoint: &str, access_key_id: &str) -> anyhow::Result<Standings> {
    let Some(path) = history(db)? else {
        return Ok(Standings::new());
    };
    let store = Store::open_existing(&path).await?;
    let done = store.standings(endpoint, access_key_id).await?;
    store.close().await;
    Ok(done)
}

/// The database `plan` reads earlier runs from (`--db`, else the default, never the
/// simulator's), when it exists.
pub fn history(db: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    let path = match db {
        Some(p) => {
            store::refuse_postgres(p)?;
            p.to_path_buf()
        }
        None => store::default_path(false)?,
    };
    Ok(path.exists().then_some(path))
}
