//! Replaying the audit chain into the rows it proves, and comparing them with the tables.
//!
//! Every row a report reads is written in the same transaction as an audit record describing
//! it: `run_started` / `run_finished` carry a run's metadata and end, `task_created` a task's
//! first values, each transition (`task_state` today, and any record about a task whose detail
//! names a `from` and a `to` state) the resulting value of every column it changed, and
//! `api_call` every API call. Replaying those records in `seq` order rebuilds the rows of `runs`,
//! `run_manifests`, `tasks` and `api_calls` as the product wrote them; any difference from the
//! table is an edit made outside the product (or a row deleted or inserted behind its back).
//!
//! The replay is generic: state names and record kinds are carried as text, so a state or a
//! kind this version does not know replays like any other.
//!
//! Times the product takes from the clock just before writing a row (`runs.started_at`,
//! `runs.finished_at`, `tasks.updated_at`) are not copied into the record; the record's own
//! `at` is taken a moment later in the same transaction. Such a time is checked to lie in its
//! window: after the `at` of the records written before that transaction, and no later than
//! the `at` of the record that describes the change.
//!
//! Records that describe no row but are evidence about one are kept as they were written: a
//! task's latest `preflight` record (what `DescribeClusters` said about its cluster before the
//! first `del_user`) and a run's `preflight_unchecked` records (zones whose lookups got no
//! answer). Their integrity is the chain's: the verifier covers them like any record.
//!
//! The rebuilt rows and the discrepancies are `model`'s types; `records` replays the chain into
//! them and `compare` holds them against the tables, both pure and shared by the two backends;
//! `sqlite` reads the SQLite store's records and rows for them (`store::postgres` reads its own).
//!
//! This module reads; it never writes, and holds no opinion about how a report shows the result.

pub(crate) mod compare;
mod model;
pub(crate) mod records;
mod sqlite;

use super::{Store, StoreError};

pub use model::{AttemptRecord, ChainRow, ChainRun, ChainTask, Discrepancy, EvidenceRecord, Proven, Replay, Window};

impl Store {
    /// Replay the whole chain and compare every row of `runs`, `run_manifests`, `tasks` and
    /// `api_calls` with it, in one read snapshot.
    pub async fn replay(&self) -> Result<Replay, StoreError> {
        let mut tx = self.reader.begin().await?;
        let (mut r, first_call) = sqlite::read(&mut tx).await?;
        sqlite::compare(&mut tx, &mut r, first_call).await?;
        tx.rollback().await?;
        Ok(r)
    }
}
