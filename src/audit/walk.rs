//! The chain's verifier ([`Walk`]): any backend feeds it its records in `seq` order, page by
//! page, and it finds the first problem (a gap, a record moved, edited, or unlinked) and checks
//! a checkpoint kept outside the database against the end. How a record is encoded and hashed is
//! [`super::chain`]'s. It must not read or write a database.

use std::fmt;

use super::chain::{Checkpoint, Fields, GENESIS_HASH};

/// The first thing wrong with the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Records `expected..seq` are missing: `seq` follows a record it should not.
    Gap { seq: i64, expected: i64 },
    /// The record stored at `seq` is intact but was written as record `written_as`.
    Reordered { seq: i64, written_as: i64 },
    /// The record's fields do not hash to its stored hash: it was edited.
    HashMismatch { seq: i64 },
    /// The record is intact but its `prev_hash` is not the hash of the record before it.
    BrokenLink { seq: i64 },
    /// A field cannot be read at all (wrong type, hash not hex).
    Malformed { seq: i64, what: String },
    /// The checkpoint's record is gone: records were removed from the end.
    Truncated { checkpoint: Checkpoint, last_seq: i64 },
    /// The checkpoint's record exists with another hash: history was rewritten up to it.
    CheckpointMismatch { checkpoint: Checkpoint, found: String },
}

impl Problem {
    /// The sequence number of the first bad record.
    pub fn seq(&self) -> i64 {
        match self {
            Problem::Gap { seq, .. }
            | Problem::Reordered { seq, .. }
            | Problem::HashMismatch { seq }
            | Problem::BrokenLink { seq }
            | Problem::Malformed { seq, .. } => *seq,
            Problem::Truncated { checkpoint, .. } | Problem::CheckpointMismatch { checkpoint, .. } => checkpoint.seq,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Gap { seq, expected } if seq - expected == 1 => {
                write!(f, "record {seq}: gap in seq, record {expected} is missing (deleted)")
            }
            Problem::Gap { seq, expected } => {
                write!(f, "record {seq}: gap in seq, records {expected} to {} are missing (deleted)", seq - 1)
            }
            Problem::Reordered { seq, written_as } => {
                write!(f, "record {seq}: reordered, it holds the record written as {written_as}")
            }
            Problem::HashMismatch { seq } => {
                write!(f, "record {seq}: hash mismatch, its fields do not hash to its stored hash (edited)")
            }
            Problem::BrokenLink { seq } => {
                write!(f, "record {seq}: broken link, its prev_hash is not the hash of record {}", seq - 1)
            }
            Problem::Malformed { seq, what } => write!(f, "record {seq}: malformed, {what}"),
            Problem::Truncated { checkpoint, last_seq } => write!(
                f,
                "record {}: missing, the log ends at record {last_seq} but checkpoint {checkpoint} names it (truncated)",
                checkpoint.seq
            ),
            Problem::CheckpointMismatch { checkpoint, found } => write!(
                f,
                "record {}: hash {found} differs from checkpoint {checkpoint} (history rewritten)",
                checkpoint.seq
            ),
        }
    }
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records found intact (before the problem, if any).
    pub checked: u64,
    /// The last intact record (`0:000…` for an empty log).
    pub tip: Checkpoint,
    pub problem: Option<Problem>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// One record as read from storage: its hashed fields and the two hashes it carries.
pub struct Record<'a> {
    pub fields: Fields<'a>,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The chain walked record by record, in `seq` order, from whatever pages a backend reads. It
/// stops at the first problem; [`Walk::finish`] checks the checkpoint against the end.
pub struct Walk<'c> {
    checkpoint: Option<&'c Checkpoint>,
    prev: [u8; 32],
    last_seq: i64,
    checked: u64,
}

impl<'c> Walk<'c> {
    pub fn new(checkpoint: Option<&'c Checkpoint>) -> Self {
        Walk { checkpoint, prev: [0u8; 32], last_seq: 0, checked: 0 }
    }

    /// The `seq` the next record must have.
    pub fn next_seq(&self) -> i64 {
        self.last_seq + 1
    }

    /// Check the next record. A [`Problem::HashMismatch`] may be refined by the caller into
    /// [`Problem::Reordered`] once it knows where the record was written.
    pub fn feed(&mut self, record: &Record<'_>) -> Result<(), Problem> {
        let seq = record.fields.seq;
        let expected = self.next_seq();
        if seq != expected {
            return Err(Problem::Gap { seq, expected });
        }
        if record.fields.hash(&record.prev_hash) != record.hash {
            return Err(Problem::HashMismatch { seq });
        }
        if record.prev_hash != self.prev {
            return Err(Problem::BrokenLink { seq });
        }
        if let Some(cp) = self.checkpoint.filter(|cp| cp.seq == seq) {
            let found = hex::encode(record.hash);
            if found != cp.hash {
                return Err(Problem::CheckpointMismatch { checkpoint: cp.clone(), found });
            }
        }
        self.prev = record.hash;
        self.last_seq = seq;
        self.checked += 1;
        Ok(())
    }

    /// The walk's result when it stopped at `problem`.
    pub fn fail(&self, problem: Problem) -> Verification {
        Verification { checked: self.checked, tip: self.tip(), problem: Some(problem) }
    }

    /// The walk's result after the last record.
    pub fn finish(self) -> Verification {
        let problem = match self.checkpoint {
            Some(cp) if cp.seq > self.last_seq => {
                Some(Problem::Truncated { checkpoint: cp.clone(), last_seq: self.last_seq })
            }
            Some(cp) if cp.seq == 0 && cp.hash != GENESIS_HASH => {
                Some(Problem::CheckpointMismatch { checkpoint: cp.clone(), found: GENESIS_HASH.into() })
            }
            _ => None,
        };
        Verification { checked: self.checked, tip: self.tip(), problem }
    }

    fn tip(&self) -> Checkpoint {
        Checkpoint { seq: self.last_seq, hash: hex::encode(self.prev) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored record: (seq, kind, detail, prev_hash, hash); `at` is `t`, run 1, no task.
    type Row = (i64, String, String, [u8; 32], [u8; 32]);

    /// A chain of `n` records as stored.
    fn chain(n: i64) -> Vec<Row> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|seq| {
                let detail = format!("{{\"n\":{seq}}}");
                let fields =
                    Fields { seq, at: b"t", run_id: Some(1), task_id: None, kind: b"k", detail: detail.as_bytes() };
                let hash = fields.hash(&prev);
                let row = (seq, "k".to_string(), detail, prev, hash);
                prev = hash;
                row
            })
            .collect()
    }

    fn walk(rows: &[Row], checkpoint: Option<&Checkpoint>) -> Verification {
        let mut w = Walk::new(checkpoint);
        for (seq, kind, detail, prev_hash, hash) in rows {
            let fields = Fields {
                seq: *seq,
                at: b"t",
                run_id: Some(1),
                task_id: None,
                kind: kind.as_bytes(),
                detail: detail.as_bytes(),
            };
            if let Err(p) = w.feed(&Record { fields, prev_hash: *prev_hash, hash: *hash }) {
                return w.fail(p);
            }
        }
        w.finish()
    }

    #[test]
    fn a_walk_finds_the_first_problem() {
        let good = chain(4);
        let v = walk(&good, None);
        assert!(v.is_intact() && v.checked == 4 && v.tip.seq == 4, "{v:?}");
        assert_eq!(v.tip.hash, hex::encode(good[3].4));

        let mut edited = good.clone();
        edited[2].2 = "{\"n\":99}".into();
        assert_eq!(walk(&edited, None).problem, Some(Problem::HashMismatch { seq: 3 }));

        let mut gap = good.clone();
        gap.remove(1);
        assert_eq!(walk(&gap, None).problem, Some(Problem::Gap { seq: 3, expected: 2 }));

        let mut relinked = good.clone();
        relinked[3].3 = [7u8; 32];
        let fields =
            Fields { seq: 4, at: b"t", run_id: Some(1), task_id: None, kind: b"k", detail: relinked[3].2.as_bytes() };
        relinked[3].4 = fields.hash(&relinked[3].3);
        let v = walk(&relinked, None);
        assert_eq!((v.problem, v.checked, v.tip.seq), (Some(Problem::BrokenLink { seq: 4 }), 3, 3));
    }

    #[test]
    fn a_checkpoint_catches_truncation_and_rewriting() {
        let good = chain(4);
        let cp = Checkpoint { seq: 4, hash: hex::encode(good[3].4) };
        assert!(walk(&good, Some(&cp)).is_intact());
        assert_eq!(
            walk(&good[..3], Some(&cp)).problem,
            Some(Problem::Truncated { checkpoint: cp.clone(), last_seq: 3 })
        );
        let forged = Checkpoint { seq: 2, hash: "ab".repeat(32) };
        let found = hex::encode(good[1].4);
        assert_eq!(walk(&good, Some(&forged)).problem, Some(Problem::CheckpointMismatch { checkpoint: forged, found }));
        let empty_forged = Checkpoint { seq: 0, hash: "cd".repeat(32) };
        assert!(matches!(walk(&[], Some(&empty_forged)).problem, Some(Problem::CheckpointMismatch { .. })));
    }
}
