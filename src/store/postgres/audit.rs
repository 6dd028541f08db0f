//! The audit log on PostgreSQL: appending records inside the caller's transaction, serialised
//! across hosts with a transaction-level advisory lock, and reading the chain page by page for
//! [`Walk`], the verifier the SQLite store feeds too. Hashing is `audit::chain`'s and the
//! verdicts `audit::walk`'s; this module holds the SQL only.
//!
//! An append takes the lock, then reads the tip and the database's clock, then writes: every
//! appender of every host waits for the one before it to commit, so the chain never forks and
//! `seq` never skips (it is computed here, never drawn from a sequence). `at` is the database's
//! clock in the SQLite store's text form, so one host's skewed clock cannot put a record
//! "before" the one it follows.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::PgStore;
use crate::audit::chain::{decode_hash, Checkpoint, Fields, GENESIS_HASH};
use crate::audit::walk::{Problem, Record, Verification, Walk};
use crate::store::audit::{with_ticket, Entry};
use crate::store::{ts, StoreError};

/// The advisory lock key of the audit chain ("qcoffaud" in ASCII); no other lock uses it.
pub(super) const CHAIN_LOCK: i64 = 0x7163_6f66_6661_7564;
/// Rows per INSERT: one array parameter per column, so the size is a matter of memory only.
const INSERT_CHUNK: usize = 5_000;
/// Rows per page when verifying.
const VERIFY_PAGE: i64 = 5_000;

/// Take the chain's lock in the caller's transaction (held until it ends) and read the
/// database's clock under it: a time taken now is later than every record already appended and
/// no later than the `at` of the records this transaction appends. Take row locks before it,
/// never after (every writer does, so none waits for a row while holding the chain).
pub(super) async fn lock_chain(conn: &mut PgConnection) -> Result<DateTime<Utc>, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *conn).await?;
    Ok(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut *conn).await?)
}

/// Append `entries` to the chain inside the caller's (READ COMMITTED) transaction. The lock is
/// held until that transaction ends, so the caller should commit soon after.
pub(super) async fn append(conn: &mut PgConnection, entries: &[Entry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *conn).await?;
    let tip = sqlx::query(
        "SELECT clock_timestamp() AS now, t.seq, t.hash FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS t ON true",
    )
    .fetch_one(&mut *conn)
    .await?;
    let now: DateTime<Utc> = tip.try_get("now")?;
    let (mut seq, mut prev) = match tip.try_get::<Option<i64>, _>("seq")? {
        None => (0, [0u8; 32]),
        Some(seq) => {
            let hash: String = tip.try_get("hash")?;
            let prev =
                decode_hash(hash.as_bytes()).ok_or_else(|| StoreError::Corrupt(format!("audit tip hash {hash:?}")))?;
            (seq, prev)
        }
    };
    let at = ts(now);
    for chunk in entries.chunks(INSERT_CHUNK) {
        let mut cols = Columns::with_capacity(chunk.len());
        for e in chunk {
            seq += 1;
            let hash = e.hash(seq, &at, &prev);
            cols.push(seq, &at, e, &prev, &hash);
            prev = hash;
        }
        cols.insert(&mut *conn).await?;
    }
    Ok(())
}

/// The ticket of run `run_id`, which every audit record of the run carries.
pub(super) async fn run_ticket(conn: &mut PgConnection, run_id: i64) -> Result<Option<String>, StoreError> {
    let t: Option<Option<String>> =
        sqlx::query_scalar("SELECT ticket FROM runs WHERE id = $1").bind(run_id).fetch_optional(&mut *conn).await?;
    Ok(t.flatten())
}

/// The tickets of the runs a transaction writes audit records for, each read once.
#[derive(Default)]
pub(super) struct Tickets(std::collections::HashMap<i64, Option<String>>);

impl Tickets {
    /// Run `run_id`'s ticket ([`run_ticket`]), read on first use.
    pub(super) async fn of(&mut self, conn: &mut PgConnection, run_id: i64) -> Result<Option<String>, StoreError> {
        if let Some(t) = self.0.get(&run_id) {
            return Ok(t.clone());
        }
        let t = run_ticket(conn, run_id).await?;
        self.0.insert(run_id, t.clone());
        Ok(t)
    }
}

/// Audit rows as one array per column, for `INSERT … SELECT FROM unnest(…)`.
#[derive(Default)]
pub(super) struct Columns {
    seq: Vec<i64>,
    at: Vec<String>,
    run_id: Vec<Option<i64>>,
    task_id: Vec<Option<i64>>,
    kind: Vec<String>,
    detail: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl Columns {
    pub(super) fn with_capacity(n: usize) -> Self {
        let mut c = Columns::default();
        c.seq.reserve(n);
        c.detail.reserve(n);
        c
    }

    fn push(&mut self, seq: i64, at: &str, e: &Entry, prev: &[u8; 32], hash: &[u8; 32]) {
        self.push_stored(seq, at, e.run_id, e.task_id, e.kind, &e.detail, &hex::encode(prev), &hex::encode(hash));
    }

    /// A record exactly as stored elsewhere (the copy from SQLite).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_stored(
        &mut self,
        seq: i64,
        at: &str,
        run_id: Option<i64>,
        task_id: Option<i64>,
        kind: &str,
        detail: &str,
        prev_hash: &str,
        hash: &str,
    ) {
        self.seq.push(seq);
        self.at.push(at.to_owned());
        self.run_id.push(run_id);
        self.task_id.push(task_id);
        self.kind.push(kind.to_owned());
        self.detail.push(detail.to_owned());
        self.prev_hash.push(prev_hash.to_owned());
        self.hash.push(hash.to_owned());
    }

    pub(super) async fn insert(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit_log (seq, at, run_id, task_id, kind, detail, prev_hash, hash) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
             $7::text[], $8::text[])",
        )
        .bind(self.seq)
        .bind(self.at)
        .bind(self.run_id)
        .bind(self.task_id)
        .bind(self.kind)
        .bind(self.detail)
        .bind(self.prev_hash)
        .bind(self.hash)
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl PgStore {
    /// Record a notable event (a lease taken over, the quota paused…). The run's ticket is
    /// added to `detail`.
    pub async fn audit_event(
        &self,
        run_id: Option<i64>,
        task_id: Option<i64>,
        kind: &'static str,
        detail: Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let ticket = match run_id {
            Some(id) => run_ticket(&mut tx, id).await?,
            None => None,
        };
        let entry = Entry::new(run_id, task_id, kind, &with_ticket(detail, ticket.as_deref()));
        append(&mut tx, std::slice::from_ref(&entry)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Several audit records of one `kind` for one run, in one transaction: (task, detail) each.
    /// The run's ticket is added to each detail.
    pub async fn audit_events(
        &self,
        run_id: i64,
        kind: &'static str,
        events: &[(Option<i64>, Value)],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        let ticket = run_ticket(&mut tx, run_id).await?;
        let entries: Vec<Entry> = events
            .iter()
            .map(|(task_id, detail)| {
                Entry::new(Some(run_id), *task_id, kind, &with_ticket(detail.clone(), ticket.as_deref()))
            })
            .collect();
        append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest record as a checkpoint (`0:000…` when the log is empty).
    pub async fn audit_checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => Checkpoint { seq: 0, hash: GENESIS_HASH.into() },
            Some((seq, hash)) => Checkpoint { seq, hash },
        })
    }

    /// Number of records in the audit log.
    pub async fn audit_len(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(&self.pool).await?)
    }

    /// Recompute the whole chain, page by page in one snapshot, and stop at the first problem;
    /// with a checkpoint, also check that its record is still there with its hash.
    pub async fn verify_audit(&self, checkpoint: Option<&Checkpoint>) -> Result<Verification, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let mut walk = Walk::new(checkpoint);
        loop {
            let rows = sqlx::query(
                "SELECT seq, at, run_id, task_id, kind, detail, prev_hash, hash FROM audit_log \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(walk.next_seq() - 1)
            .bind(VERIFY_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let stored = Stored::read(row)?;
                let record = match stored.record() {
                    Ok(r) => r,
                    Err(what) => return Ok(walk.fail(Problem::Malformed { seq: stored.seq, what })),
                };
                if let Err(problem) = walk.feed(&record) {
                    let problem = match problem {
                        Problem::HashMismatch { seq } => match written_as(&mut tx, &record).await? {
                            Some(written_as) if written_as != seq => Problem::Reordered { seq, written_as },
                            _ => problem,
                        },
                        other => other,
                    };
                    return Ok(walk.fail(problem));
                }
            }
        }
        tx.rollback().await?;
        Ok(walk.finish())
    }
}

/// A record's columns as read.
struct Stored {
    seq: i64,
    at: String,
    run_id: Option<i64>,
    task_id: Option<i64>,
    kind: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl Stored {
    fn read(row: &PgRow) -> Result<Stored, sqlx::Error> {
        Ok(Stored {
            seq: row.try_get("seq")?,
            at: row.try_get("at")?,
            run_id: row.try_get("run_id")?,
            task_id: row.try_get("task_id")?,
            kind: row.try_get("kind")?,
            detail: row.try_get("detail")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    fn record(&self) -> Result<Record<'_>, String> {
        let fields = Fields {
            seq: self.seq,
            at: self.at.as_bytes(),
            run_id: self.run_id,
            task_id: self.task_id,
            kind: self.kind.as_bytes(),
            detail: self.detail.as_bytes(),
        };
        Ok(Record {
            fields,
            prev_hash: decode_hash(self.prev_hash.as_bytes()).ok_or("prev_hash is not 64 hex digits")?,
            hash: decode_hash(self.hash.as_bytes()).ok_or("hash is not 64 hex digits")?,
        })
    }
}

/// For a record that does not hash under its own seq: the seq it was written under, found from
/// its `prev_hash` (the record it was chained after) and confirmed by its hash.
async fn written_as(conn: &mut PgConnection, record: &Record<'_>) -> Result<Option<i64>, StoreError> {
    let after: Option<i64> = if record.prev_hash == [0u8; 32] {
        Some(0)
    } else {
        sqlx::query_scalar("SELECT seq FROM audit_log WHERE hash = $1 LIMIT 1")
            .bind(hex::encode(record.prev_hash))
            .fetch_optional(&mut *conn)
            .await?
    };
    Ok(after.map(|k| k + 1).filter(|&seq| Fields { seq, ..record.fields }.hash(&record.prev_hash) == record.hash))
}
