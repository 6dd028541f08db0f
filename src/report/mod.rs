//! The evidence export (`report`): one row per task with its outcome, as a table for people,
//! JSON, or CSV (RFC 4180).
//!
//! A row's `outcome` folds the task states into what an auditor asks about: `deleted`, `absent`
//! (the account did not exist), `failed`, `skipped` (already removed by an earlier run),
//! `not_due`, `handed_over`, and `pending` for everything still in progress (`pending`,
//! `submitting`, `submitted`, `retry_wait`).
//!
//! `late` answers "was the account not removed by `due_by`?": a `deleted` task is late when it
//! finished after `due_by`; a `skipped` task never is (nothing was left to do); a `failed`,
//! `pending` or `not_due` task is late once `due_by` has passed, since the account still exists;
//! `absent` and `handed_over` tasks are never late (nothing was left to do in their run).
//! A task without `due_by` is never late.
//!
//! Every format reads its rows from the audit chain replayed and checked against the tables
//! ([`evidence::gather`]): a row is `verified` only when the chain proves every value it shows,
//! and `not_verified` says why otherwise. State names are carried as text, so a state this
//! version does not know is reported under its own name.
//!
//! `pre_state` is the status preflight saw of the task's cluster before the first `del_user`
//! (`active`, `stopped`, `active (updating)`, `not found`, `unchecked`…), read from the audit
//! chain like every other value ([`pre_state`]); empty for a run started with `--no-preflight`.
//!
//! With `--user`, and always in HTML, each row comes with its evidence ([`evidence`]): the
//! requester, approver (signed or not) and operator, when the request went out, every failed
//! attempt, the API calls behind it, and its audit records. [`latest`] rolls the rows up into
//! one standing per account across runs (`--latest`); [`html`] renders the auditor's page.
//!
//! The outcome and lateness are `outcome`'s, the row `row`'s, the filter `filter`'s, the export
//! formats `table` and `csv` (JSON is the row's own serialization), and the text of an instant
//! `instant`'s.
//!
//! This module reads through `store` and formats; it holds no SQL.

pub mod evidence;
pub mod html;
pub mod latest;
pub mod pre_state;

mod csv;
mod filter;
mod instant;
mod outcome;
mod row;
mod table;

use chrono::{DateTime, Utc};

use crate::store::{Db, ReportFilter, StoreError};

pub use self::csv::{write_csv, write_csv_records, CSV_HEADER};
pub use filter::Filter;
pub(crate) use instant::ser_time;
pub use instant::time;
pub use outcome::{is_late, late, Outcome};
pub use row::{write_json, ReportRow};
pub use table::write_table;

/// The report's rows for `filter`, with `late` judged at `now`: read from the audit chain and
/// checked against the tables (see [`evidence::gather`]), on either backend (`&Store`,
/// `&PgStore` or `&Db`).
pub async fn rows(
    store: impl Into<Db>,
    filter: &ReportFilter,
    now: DateTime<Utc>,
) -> Result<Vec<ReportRow>, StoreError> {
    rows_where(&store.into(), &Filter::from(filter), now).await
}

/// [`rows`] with the full filter.
pub async fn rows_where(store: &Db, filter: &Filter, now: DateTime<Utc>) -> Result<Vec<ReportRow>, StoreError> {
    Ok(evidence::gather_where(store, filter, now).await?.rows())
}
