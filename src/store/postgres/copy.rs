//! `db copy`: an SQLite evidence database moved up to an empty PostgreSQL database with every
//! table, every id, and the audit log byte for byte, then the chain verified on the PostgreSQL
//! side against the last record copied.
//!
//! The source's chain is verified before anything is written (a broken chain is not carried
//! over), the source is read in one snapshot, and everything is written in one transaction that
//! holds the chain's advisory lock, so no host appends in between. Times are checked to be in the
//! one text form the SQLite store writes, so that none changes on the way (a time that would is
//! refused, not rounded). This module copies; it never writes to the source.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{PgConnection, Row, SqliteConnection};

use super::audit::{Columns, CHAIN_LOCK};
use super::PgStore;
use crate::audit::chain::Checkpoint;
use crate::audit::walk::Problem;
use crate::store::{ts, LockHolder, Store, StoreError};

/// Rows per INSERT and per page read from the source.
const CHUNK: i64 = 5_000;

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    /// TEXT in SQLite's one form (`2026-11-28T12:00:00.000000Z`), TIMESTAMPTZ here.
    Time,
    /// `YYYY-MM-DD` text, DATE here.
    Date,
    /// 0 or 1, BOOLEAN here.
    Bool,
}

use Kind::{Bool, Date, Int, Text, Time};

/// A column and how it moves.
type Column = (&'static str, Kind);
/// A table: its name, what orders its rows, whether it has an identity to move past the copied
/// ids, and its columns.
type Table = (&'static str, &'static str, bool, &'static [Column]);

/// Every table but the audit log, parents before children (a test checks the list against the
/// SQLite schema, so a new table or column cannot be left behind).
#[rustfmt::skip]
const TABLES: &[Table] = &[
    ("runs", "id", true, &[
        ("id", Int), ("started_at", Time), ("finished_at", Time), ("exit_code", Int), ("ticket", Text),
        ("requested_by", Text), ("reason", Text), ("due_by", Time), ("operator", Text), ("host", Text),
        ("endpoint", Text), ("access_key_id", Text), ("options", Text), ("summary", Text), ("retry_of", Int),
        ("simulated", Bool),
    ]),
    ("run_manifests", "run_id, ord", false, &[("run_id", Int), ("ord", Int), ("path", Text), ("sha256", Text)]),
    ("tasks", "id", true, &[
        ("id", Int), ("run_id", Int), ("cluster", Text), ("zone", Text), ("user", Text), ("host", Text),
        ("state", Text), ("prev_state", Text), ("not_before", Date), ("due_by", Time), ("attempts", Int),
        ("job_id", Text), ("last_ret_code", Int), ("last_message", Text), ("started_at", Time), ("intent_at", Time),
        ("submitted_at", Time), ("next_attempt_at", Time), ("finished_at", Time), ("updated_at", Time),
        ("adopted_from", Int), ("unresolved", Text),
    ]),
    ("api_calls", "id", true, &[
        ("id", Int), ("run_id", Int), ("task_id", Int), ("action", Text), ("params", Text), ("http_status", Int),
        ("ret_code", Int), ("message", Text), ("job_id", Text), ("started_at", Time), ("latency_ms", Int),
    ]),
    ("run_lock", "id", false, &[("id", Int), ("run_id", Int), ("pid", Int), ("host", Text), ("started_at", Time)]),
    ("doctor_checkups", "id", true, &[
        ("id", Int), ("checked_at", Time), ("endpoint", Text), ("access_key_id", Text), ("zone", Text),
    ]),
    ("doctor_findings", "checkup_id, ord", false, &[
        ("checkup_id", Int), ("ord", Int), ("name", Text), ("status", Text), ("value", Text), ("summary", Text),
        ("advice", Text), ("detail", Text),
    ]),
];

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Rows per table, in copy order, the audit log last.
    pub rows: Vec<(&'static str, u64)>,
    /// The last audit record, as verified on the PostgreSQL side.
    pub tip: Checkpoint,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the source's audit chain does not verify ({0}); nothing was copied: a copy would carry the break")]
    SourceBroken(Problem),
    #[error(
        "the PostgreSQL database {target} already holds data (runs, audit records, doctor findings, a run lock or \
         quota state); copy into an empty database"
    )]
    NotEmpty { target: String },
    #[error("{table}.{column} holds {value:?}, not in the form this version writes; nothing was copied")]
    Unreadable { table: &'static str, column: &'static str, value: String },
    #[error(
        "after the copy, the chain on {target} does not end at the last record copied ({copied}): {found}; \
         do not use that database"
    )]
    Mismatch { target: String, copied: Checkpoint, found: String },
    #[error(
        "the source has two tasks live (submitting or submitted) on one cluster at once, which PostgreSQL \
         refuses (one job per cluster); let their runs end (resume or retry them) and copy again: {detail}"
    )]
    TwoLiveOnOneCluster { detail: String },
    #[error("{}", held_message(.holder, *.live))]
    Held { holder: LockHolder, live: bool },
    #[error(
        "the source's tables do not agree with its audit chain ({count} rows; `qc-offboard audit verify` names \
         them, the first: {first}); nothing was copied: a copy would carry the edits"
    )]
    TablesEdited { count: usize, first: String },
    #[error("{table} holds a value that cannot be carried over unchanged ({detail}); nothing was copied")]
    BadValue { table: &'static str, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A value the source holds that PostgreSQL refuses (a NUL byte, text that is not UTF-8: SQLSTATE
/// class 22) or that cannot be read as its column's type (edited behind the product) is data,
/// not a failure of the copy.
fn bad_value(table: &'static str, e: CopyError) -> CopyError {
    match e {
        CopyError::Store(StoreError::Sql(sqlx::Error::Database(db)))
            if db.code().is_some_and(|c| c.starts_with("22")) =>
        {
            CopyError::BadValue { table, detail: db.message().to_owned() }
        }
        CopyError::Store(StoreError::Sql(e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)))) => {
            CopyError::BadValue { table, detail: e.to_string() }
        }
        other => other,
    }
}

fn held_message(h: &LockHolder, live: bool) -> String {
    if live {
        format!(
            "run {} (pid {} on {}, since {}) holds the source: copy it once that run has ended",
            h.run_id, h.pid, h.host, h.started_at
        )
    } else {
        format!(
            "run {} holds the source's run lock, but its process (pid {} on {}) is gone: the run was interrupted; \
             `qc-offboard resume` finishes it (or the next run takes the lock over), then copy",
            h.run_id, h.pid, h.host
        )
    }
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Store(e.into())
    }
}

/// Copy every table of `from` (an SQLite store) into `to`, which must hold no runs and no audit
/// records, then verify the chain there.
pub async fn copy_from_sqlite(from: &Store, to: &PgStore) -> Result<Copied, CopyError> {
    let checked = check_source(from).await?;
    let mut src = from.reader.begin().await?;
    // The run lock is read first in the copy's read transaction, whose snapshot the copy then
    // reads from: a run that started before the snapshot is seen holding it (and refused), one
    // that starts after it is not in the copy at all.
    let holder = sqlx::query("SELECT run_id, pid, host, started_at FROM run_lock WHERE id = 1")
        .fetch_optional(&mut *src)
        .await?
        .map(|r| -> Result<LockHolder, sqlx::Error> {
            Ok(LockHolder {
                run_id: r.try_get("run_id")?,
                pid: r.try_get("pid")?,
                host: r.try_get("host")?,
                started_at: r.try_get("started_at")?,
            })
        })
        .transpose()?;
    if let Some(holder) = holder {
        return Err(CopyError::Held { live: holder.may_be_running(), holder });
    }
    let mut dst = to.write().await?;
    // Held until the commit, so that no host appends before the copied chain.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *dst).await?;
    let used: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM runs) OR EXISTS (SELECT 1 FROM audit_log) OR EXISTS (SELECT 1 FROM doctor_checkups) \
         OR EXISTS (SELECT 1 FROM run_lock) OR EXISTS (SELECT 1 FROM run_hosts) OR EXISTS (SELECT 1 FROM quota)",
    )
    .fetch_one(&mut *dst)
    .await?;
    if used {
        return Err(CopyError::NotEmpty { target: to.target().to_owned() });
    }
    let mut rows = Vec::with_capacity(TABLES.len() + 1);
    for &(table, order, identity, columns) in TABLES {
        let n = match copy_table(&mut src, &mut dst, table, order, columns).await {
            Err(CopyError::Store(StoreError::Sql(sqlx::Error::Database(e))))
                if e.constraint() == Some(super::write::ONE_JOB_PER_CLUSTER) =>
            {
                return Err(CopyError::TwoLiveOnOneCluster { detail: e.message().to_owned() });
            }
            other => other.map_err(|e| bad_value(table, e))?,
        };
        if identity {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT MAX(id) FROM {table}), 1), EXISTS (SELECT 1 FROM {table}))"
            ))
            .execute(&mut *dst)
            .await?;
        }
        rows.push((table, n));
    }
    let (records, copied) = copy_audit(&mut src, &mut dst).await.map_err(|e| bad_value("audit_log", e))?;
    rows.push(("audit_log", records));
    dst.commit().await?;
    src.rollback().await?;

    let verified = to.verify_audit(Some(&copied)).await?;
    let mismatch =
        |found: String| CopyError::Mismatch { target: to.target().to_owned(), copied: copied.clone(), found };
    match verified.problem {
        Some(problem) => Err(mismatch(problem.to_string())),
        // Records appended after the commit by a host already using the database are fine: the
        // checkpoint check above proved the copied tip is still in the chain.
        None if verified.tip.seq < copied.seq || copied.seq < checked.tip.seq => {
            Err(mismatch(format!("it ends at {}", verified.tip)))
        }
        None => Ok(Copied { rows, tip: copied }),
    }
}

/// The source's chain verified and its tables replayed against it, as `audit verify` does: a
/// broken chain or an edited row is not carried over. Returns the chain's verification.
pub async fn check_source(from: &Store) -> Result<crate::audit::walk::Verification, CopyError> {
    let checked = from.verify_audit(None).await?;
    if let Some(problem) = checked.problem {
        return Err(CopyError::SourceBroken(problem));
    }
    let replay = from.replay().await?;
    if let Some(first) = replay.discrepancies.first() {
        return Err(CopyError::TablesEdited { count: replay.discrepancies.len(), first: first.to_string() });
    }
    Ok(checked)
}

/// One column's values, as PostgreSQL takes them.
enum Values {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Date(Vec<Option<NaiveDate>>),
    Bool(Vec<Option<bool>>),
}

async fn copy_table(
    src: &mut SqliteConnection,
    dst: &mut PgConnection,
    table: &'static str,
    order: &str,
    columns: &'static [Column],
) -> Result<u64, CopyError> {
    let names: Vec<String> = columns.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let names = names.join(", ");
    let casts: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            let ty = match kind {
                Int => "bigint",
                Text => "text",
                Time => "timestamptz",
                Date => "date",
                Bool => "boolean",
            };
            format!("${}::{ty}[]", i + 1)
        })
        .collect();
    let insert = format!("INSERT INTO {table} ({names}) SELECT * FROM unnest({})", casts.join(", "));
    let select = format!("SELECT {names} FROM {table} ORDER BY {order} LIMIT ? OFFSET ?");
    let mut copied = 0u64;
    loop {
        let page = sqlx::query(&select).bind(CHUNK).bind(copied as i64).fetch_all(&mut *src).await?;
        if page.is_empty() {
            return Ok(copied);
        }
        let mut q = sqlx::query(&insert);
        for &(column, kind) in columns {
            q = match read_column(&page, table, column, kind)? {
                Values::Int(v) => q.bind(v),
                Values::Text(v) => q.bind(v),
                Values::Time(v) => q.bind(v),
                Values::Date(v) => q.bind(v),
                Values::Bool(v) => q.bind(v),
            };
        }
        q.execute(&mut *dst).await?;
        copied += page.len() as u64;
    }
}

/// One column of a page of SQLite rows, checked to survive the move unchanged.
fn read_column(page: &[SqliteRow], table: &'static str, column: &'static str, kind: Kind) -> Result<Values, CopyError> {
    let bad = |value: String| CopyError::Unreadable { table, column, value };
    let text = |r: &SqliteRow| r.try_get::<Option<String>, _>(column);
    Ok(match kind {
        Int => Values::Int(page.iter().map(|r| r.try_get(column)).collect::<Result<_, _>>()?),
        Text => Values::Text(page.iter().map(text).collect::<Result<_, _>>()?),
        Time => Values::Time(
            page.iter()
                .map(|r| match text(r)? {
                    None => Ok(None),
                    Some(s) => match DateTime::parse_from_rfc3339(&s) {
                        Ok(t) if ts(t.with_timezone(&Utc)) == s => Ok(Some(t.with_timezone(&Utc))),
                        _ => Err(bad(s)),
                    },
                })
                .collect::<Result<_, CopyError>>()?,
        ),
        Date => Values::Date(
            page.iter()
                .map(|r| match text(r)? {
                    None => Ok(None),
                    Some(s) => match NaiveDate::parse_from_str(&s, "%F") {
                        Ok(d) if d.format("%F").to_string() == s => Ok(Some(d)),
                        _ => Err(bad(s)),
                    },
                })
                .collect::<Result<_, CopyError>>()?,
        ),
        Bool => Values::Bool(
            page.iter()
                .map(|r| match r.try_get::<Option<i64>, _>(column)? {
                    None => Ok(None),
                    Some(0) => Ok(Some(false)),
                    Some(1) => Ok(Some(true)),
                    Some(n) => Err(bad(n.to_string())),
                })
                .collect::<Result<_, CopyError>>()?,
        ),
    })
}

/// The audit log, record by record as stored; returns how many and the last one.
async fn copy_audit(src: &mut SqliteConnection, dst: &mut PgConnection) -> Result<(u64, Checkpoint), CopyError> {
    let mut last = Checkpoint { seq: 0, hash: crate::audit::chain::GENESIS_HASH.to_owned() };
    let mut copied = 0u64;
    loop {
        let page = sqlx::query(
            "SELECT seq, at, run_id, task_id, kind, detail, prev_hash, hash FROM audit_log \
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(last.seq)
        .bind(CHUNK)
        .fetch_all(&mut *src)
        .await?;
        if page.is_empty() {
            return Ok((copied, last));
        }
        let mut cols = Columns::with_capacity(page.len());
        for r in &page {
            let (seq, hash): (i64, String) = (r.try_get("seq")?, r.try_get("hash")?);
            cols.push_stored(
                seq,
                r.try_get("at")?,
                r.try_get("run_id")?,
                r.try_get("task_id")?,
                r.try_get("kind")?,
                r.try_get("detail")?,
                r.try_get("prev_hash")?,
                &hash,
            );
            last = Checkpoint { seq, hash };
        }
        cols.insert(&mut *dst).await?;
        copied += page.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_sqlite_table_and_column_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("audit.db")).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT IN ('_sqlx_migrations', 'audit_log') ORDER BY name",
        )
        .fetch_all(&store.reader)
        .await
        .unwrap();
        let mut listed: Vec<&str> = TABLES.iter().map(|t| t.0).collect();
        listed.sort();
        assert_eq!(tables, listed);
        for (table, _, _, columns) in TABLES {
            let mut have: Vec<String> = sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .fetch_all(&store.reader)
                .await
                .unwrap();
            let mut copied: Vec<&str> = columns.iter().map(|c| c.0).collect();
            have.sort();
            copied.sort();
            assert_eq!(have, copied, "{table}");
        }
        store.close().await;
    }
}
