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
use crate::store::postgres::{copy_from_sqlite, is_postgres_url, redacted, Copied, CopyError, PgStore};
use crate::store::Store;

/// What was copied, and where to (the target's URL without its password).
pub struct CopyDone {
    pub copied: Copied,
    pub target: String,
}

pub async fn copy(from: &Path, to: &str) -> anyhow::Result<CopyDone> {
    // Checked here, not by the argument parser, which would echo the value (and its password).
    if !is_postgres_url(to) {
        return Err(Coded::new(Exit::Usage, "give --to as a postgres:// or postgresql:// URL").into());
    }
    let source = Store::open_existing(from).await.map_err(|e| match e {
        crate::store::StoreError::Missing(_) => anyhow::Error::new(Coded::new(Exit::Config, e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    // A run writing to the source while it is read would leave the copy a snapshot of work in
    // flight that goes on without it.
    match source.lock_holder().await {
        Ok(Some(h)) if h.may_be_running() => {
            source.close().await;
            return Err(Coded::new(
                Exit::Locked,
                format!(
                    "run {} (pid {} on {}, since {}) holds {}: copy it once that run has ended",
                    h.run_id,
                    h.pid,
                    h.host,
                    h.started_at,
                    from.display()
                ),
            )
            .into());
        }
        Ok(_) => {}
        Err(e) => {
            source.close().await;
            return Err(e.into());
        }
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
    let copied = copied.map_err(|e| {
        let exit = match &e {
            CopyError::SourceBroken(_) | CopyError::Mismatch { .. } => Some(Exit::AuditBroken),
            CopyError::NotEmpty { .. } => Some(Exit::Config),
            CopyError::Unreadable { .. } | CopyError::TwoLiveOnOneCluster { .. } => Some(Exit::DataErr),
            CopyError::Store(_) => None,
        };
        match exit {
            Some(exit) => anyhow::Error::new(Coded::new(exit, e.to_string())),
            None => anyhow::Error::new(e),
        }
    })?;
    Ok(CopyDone { copied, target: redacted(to) })
}
