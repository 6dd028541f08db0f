//! The audit log's storage: appending records inside the caller's transaction, and reading
//! the chain page by page for [`crate::audit::walk::Walk`], which decides whether it is intact.
//! The encoding, the hashing and the verdicts live in `audit::chain`; this module holds the SQL.
//!
//! Appends happen in the same transaction as the change they describe, and read the chain's tip
//! inside that (write-locked) transaction, so concurrent writers cannot fork the chain.

use chrono::Utc;
use sqlx::{Row, SqliteConnection};

use super::{ts, Store, StoreError};
use crate::audit::chain::{decode_hash, Checkpoint, Fields, GENESIS_HASH};
use crate::audit::walk::{Problem, Record, Verification, Walk};

/// Rows per multi-row INSERT: 8 parameters each, far below SQLite's 32766.
const INSERT_CHUNK: usize = 500;
/// Rows per page when verifying.
const VERIFY_PAGE: i64 = 5_000;

/// A record to append; `detail` is already JSON text.
pub(crate) struct Entry {
    pub run_id: Option<i64>,
    pub task_id: Option<i64>,
    pub kind: &'static str,
    pub detail: String,
}

impl Entry {
    pub fn new(run_id: Option<i64>, task_id: Option<i64>, kind: &'static str, detail: &serde_json::Value) -> Self {
        Entry { run_id, task_id, kind, detail: detail.to_string() }
    }
}

/// Add the run's ticket to an audit record's detail (SPEC §3: ticket metadata is copied into
/// every audit record of the run). A detail that is not an object is kept under `"value"`.
pub(crate) fn with_ticket(detail: serde_json::Value, ticket: Option<&str>) -> serde_json::Value {
    let mut obj = match detail {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("value".to_string(), other)]),
    };
    if let Some(t) = ticket {
        obj.insert("ticket".into(), t.into());
    }
    serde_json::Value::Object(obj)
}

/// The ticket of run `run_id`, which every audit record of the run carries ([`with_ticket`]).
pub(crate) async fn run_ticket(conn: &mut SqliteConnection, run_id: i64) -> Result<Option<String>, StoreError> {
    let t: Option<Option<String>> =
        sqlx::query_scalar("SELECT ticket FROM runs WHERE id = ?").bind(run_id).fetch_optional(&mut *conn).await?;
    Ok(t.flatten())
}

/// The tickets of the runs a transaction writes audit records for, each read once.
#[derive(Default)]
pub(crate) struct Tickets(std::collections::HashMap<i64, Option<String>>);

impl Tickets {
    /// Run `run_id`'s ticket ([`run_ticket`]), read on first use.
    pub(crate) async fn of(&mut self, conn: &mut SqliteConnection, run_id: i64) -> Result<Option<String>, StoreError> {
        if let Some(t) = self.0.get(&run_id) {
            return Ok(t.clone());
        }
        let t = run_ticket(conn, run_id).await?;
        self.0.insert(run_id, t.clone());
        Ok(t)
    }
}

/// Append `entries` to the chain. Must run inside a write (`BEGIN IMMEDIATE`) transaction,
/// which is what makes reading the tip here safe.
pub(crate) async fn append(conn: &mut SqliteConnection, entries: &[Entry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let tip =
        sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *conn).await?;
    let (mut seq, mut prev) = match tip {
        None => (0, [0u8; 32]),
        Some(row) => {
            let hash: String = row.try_get("hash")?;
            let prev =
                decode_hash(hash.as_bytes()).ok_or_else(|| StoreError::Corrupt(format!("audit tip hash {hash:?}")))?;
            (row.try_get::<i64, _>("seq")?, prev)
        }
    };
    let at = ts(Utc::now());
    for chunk in entries.chunks(INSERT_CHUNK) {
        let mut sql =
            String::from("INSERT INTO audit_log (seq, at, run_id, task_id, kind, detail, prev_hash, hash) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?,?,?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?,?,?)" });
        }
        let mut q = sqlx::query(&sql);
        for e in chunk {
            seq += 1;
            let hash = e.hash(seq, &at, &prev);
            q = q
                .bind(seq)
                .bind(at.as_str())
                .bind(e.run_id)
                .bind(e.task_id)
                .bind(e.kind)
                .bind(e.detail.as_str())
                .bind(hex::encode(prev))
                .bind(hex::encode(hash));
            prev = hash;
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// The newest record as a checkpoint (`0:000…` when the log is empty).
    pub async fn audit_checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.reader)
            .await?;
        Ok(match row {
            None => Checkpoint { seq: 0, hash: GENESIS_HASH.into() },
            Some(r) => Checkpoint { seq: r.try_get("seq")?, hash: r.try_get("hash")? },
        })
    }

    /// Number of records in the audit log.
    pub async fn audit_len(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(&self.reader).await?)
    }

    /// Recompute the whole chain, page by page in one read snapshot, and stop at the first
    /// problem. With a checkpoint, also check that its record is still there with its hash.
    pub async fn verify_audit(&self, checkpoint: Option<&Checkpoint>) -> Result<Verification, StoreError> {
        let mut tx = self.reader.begin().await?;
        let mut walk = Walk::new(checkpoint);
        loop {
            let page = sqlx::query(PACKED_PAGE).bind(walk.next_seq() - 1).bind(VERIFY_PAGE).fetch_one(&mut *tx).await?;
            let count: i64 = page.try_get(0)?;
            if count == 0 {
                break;
            }
            let packed: &[u8] = page.try_get(1)?;
            let mut records = Packed { buf: packed };
            for _ in 0..count {
                let record = match records.next() {
                    Ok(r) => r,
                    Err((seq, what)) => {
                        return Ok(walk.fail(Problem::Malformed { seq: seq.unwrap_or(walk.next_seq()), what }))
                    }
                };
                if let Err(problem) = walk.feed(&record) {
                    let problem = match problem {
                        Problem::HashMismatch { seq } => match self.written_as(&mut tx, &record).await? {
                            Some(written_as) if written_as != seq => Problem::Reordered { seq, written_as },
                            _ => problem,
                        },
                        other => other,
                    };
                    return Ok(walk.fail(problem));
                }
            }
            if !records.buf.is_empty() {
                let what = "a page of records does not parse".to_string();
                return Ok(walk.fail(Problem::Malformed { seq: walk.next_seq(), what }));
            }
        }
        tx.rollback().await?;
        Ok(walk.finish())
    }

    /// For a record that does not hash under its own seq: the seq it was written under, found
    /// from its `prev_hash` (the record it was chained after) and confirmed by its hash.
    async fn written_as(&self, conn: &mut SqliteConnection, record: &Record<'_>) -> Result<Option<i64>, StoreError> {
        let after: Option<i64> = if record.prev_hash == [0u8; 32] {
            Some(0)
        } else {
            sqlx::query_scalar("SELECT seq FROM audit_log WHERE hash = ? LIMIT 1")
                .bind(hex::encode(record.prev_hash))
                .fetch_optional(&mut *conn)
                .await?
        };
        Ok(after.map(|k| k + 1).filter(|&seq| Fields { seq, ..record.fields }.hash(&record.prev_hash) == record.hash))
    }
}

/// One page of the log packed by SQLite into a single value, because a row per record costs
/// the driver far more than the hashing (measured: 1,000,000 records in about 2 s packed, 7 s
/// as rows). Each record is
/// `SEQ|RUN|TASK|len(at)|len(kind)|len(detail)|len(prev_hash)|len(hash)|` followed by the five
/// texts back to back. `RUN`/`TASK` are `n` for NULL and `x` for anything not an integer; the
/// lengths are in bytes, so any content (even `|`) parses unambiguously. NULL texts read as
/// empty, which then fails its hash.
const PACKED_PAGE: &str = "SELECT count(*), ifnull(group_concat(rec, '' ORDER BY seq), '') FROM ( \
    SELECT seq, printf('%d|%s|%s|%d|%d|%d|%d|%d|', seq, \
        CASE typeof(run_id) WHEN 'integer' THEN run_id WHEN 'null' THEN 'n' ELSE 'x' END, \
        CASE typeof(task_id) WHEN 'integer' THEN task_id WHEN 'null' THEN 'n' ELSE 'x' END, \
        octet_length(ifnull(at, '')), octet_length(ifnull(kind, '')), octet_length(ifnull(detail, '')), \
        octet_length(ifnull(prev_hash, '')), octet_length(ifnull(hash, ''))) \
        || ifnull(at, '') || ifnull(kind, '') || ifnull(detail, '') || ifnull(prev_hash, '') || ifnull(hash, '') AS rec \
    FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?)";

/// A reader over a packed page (see [`PACKED_PAGE`]).
struct Packed<'a> {
    buf: &'a [u8],
}

impl<'a> Packed<'a> {
    /// The next record, or the seq (when it could be read) and what is wrong.
    fn next(&mut self) -> Result<Record<'a>, (Option<i64>, String)> {
        let seq = self.number().ok_or((None, "unreadable seq".to_string()))?;
        let bad = |what: &str| (Some(seq), what.to_string());
        let id = |p: &mut Self, name: &str| match p.token() {
            Some(b"n") => Ok(None),
            Some(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|t| t.parse().ok())
                .map(Some)
                .ok_or_else(|| bad(&format!("{name} is not an integer"))),
            None => Err(bad(name)),
        };
        let run_id = id(self, "run_id")?;
        let task_id = id(self, "task_id")?;
        let mut lens = [0usize; 5];
        for len in &mut lens {
            *len = self.number().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| bad("unreadable field length"))?;
        }
        let mut texts = [&[][..]; 5];
        for (text, len) in texts.iter_mut().zip(lens) {
            if self.buf.len() < len {
                return Err(bad("record cut short"));
            }
            let (head, rest) = self.buf.split_at(len);
            *text = head;
            self.buf = rest;
        }
        let [at, kind, detail, prev_hash, hash] = texts;
        Ok(Record {
            fields: Fields { seq, at, run_id, task_id, kind, detail },
            prev_hash: decode_hash(prev_hash).ok_or_else(|| bad("prev_hash is not 64 hex digits"))?,
            hash: decode_hash(hash).ok_or_else(|| bad("hash is not 64 hex digits"))?,
        })
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let end = self.buf.iter().position(|&b| b == b'|')?;
        let (token, rest) = self.buf.split_at(end);
        self.buf = &rest[1..];
        Some(token)
    }

    fn number(&mut self) -> Option<i64> {
        std::str::from_utf8(self.token()?).ok()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_is_added_to_every_detail() {
        let v = with_ticket(serde_json::json!({"a": 1}), Some("HR-1"));
        assert_eq!(v, serde_json::json!({"a": 1, "ticket": "HR-1"}));
        assert_eq!(with_ticket(serde_json::json!(3), None), serde_json::json!({"value": 3}));
    }
}
