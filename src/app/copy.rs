//! `db copy`: an SQLite database moved up to an empty PostgreSQL database, every table and the
//! audit log byte for byte, the chain verified before (on the source) and after (on the target).
//! The copy itself is `store::postgres::copy_from_sqlite`'s; this opens both ends and maps what
//! can go wrong to the exit codes of SPEC §2: a source chain that does not verify, or a target
//! whose chain does not end where the copy did, is a broken audit log (1); a source that is not
//! there, or a target that already holds data or cannot be brought up to date, is
//! configuration (78); a server that does not answer is 69; a value the copy cannot carry
//! unchanged is invalid data (65).
//!
//! It must not print (that is `cli`'s) and never writes to the source.

use std::path::Path;

use crate::exit::{Coded, Exit};
use crate::store::postgres::{check_source, copy_from_sqlite, is_postgres_url, redacted, Copied, CopyError, PgStore};
use crate::store::Store;

/// What was copied, and where to (the target's URL without its password).
pub struct CopyDone {
    pub copied: Copied,
    pub target: String,
}

pub async fn copy(from: &Path, to: &str) -> anyhow::Result<CopyDone> {
    // Checked here, not by the argument parser, which would echo the value (and its password).
    let to = to.trim();
    if !is_postgres_url(to) {
        return Err(Coded::new(Exit::Usage, "give --to as a postgres:// or postgresql:// URL").into());
    }
    let source = Store::open_existing(from).await.map_err(|e| match e {
        crate::store::StoreError::Missing(_) => anyhow::Error::new(Coded::new(Exit::Config, e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    // Everything that can refuse the source is checked before the target is opened (opening
    // it creates the schema): a live or interrupted run holding it, a broken chain, edited
    // rows. The copy checks the lock again inside its own snapshot.
    let early = match source.lock_holder().await {
        Ok(Some(holder)) => Err(CopyError::Held { live: holder.may_be_running(), holder }),
        Ok(None) => check_source(&source).await.map(|_| ()),
        Err(e) => Err(CopyError::Store(e)),
    };
    if let Err(e) = early {
        source.close().await;
        return Err(coded(e));
    }
    let target = PgStore::open(to).await.map_err(super::database::pg_open_error);
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(e);
        }
    };
    let copied = copy_from_sqlite(&source, &target).await;
    source.close().await;
    target.close().await;
    let copied = copied.map_err(coded)?;
    Ok(CopyDone { copied, target: redacted(to) })
}

/// A copy's refusal with its exit code (SPEC §2).
fn coded(e: CopyError) -> anyhow::Error {
    let exit = match &e {
        CopyError::SourceBroken(_) | CopyError::Mismatch { .. } | CopyError::TablesEdited { .. } => {
            Some(Exit::AuditBroken)
        }
        CopyError::NotEmpty { .. } => Some(Exit::Config),
        CopyError::Held { .. } => Some(Exit::Locked),
        CopyError::Unreadable { .. } | CopyError::TwoLiveOnOneCluster { .. } | CopyError::BadValue { .. } => {
            Some(Exit::DataErr)
        }
        CopyError::Store(_) => None,
    };
    match exit {
        Some(exit) => anyhow::Error::new(Coded::new(exit, e.to_string())),
        None => anyhow::Error::new(e),
    }
}
