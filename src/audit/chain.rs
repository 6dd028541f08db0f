//! The audit chain, pure: how a record is encoded and hashed, and what a checkpoint is. The
//! verifier that walks a chain is [`super::walk`]'s. It must not read or write a database: the
//! store appends and pages, and the audit module decides.
//!
//! # The chain
//!
//! Each record is `(seq, at, run_id, task_id, kind, detail, prev_hash, hash)`. `seq` counts
//! 1, 2, 3… without gaps. `prev_hash` is the `hash` of record `seq - 1`; for record 1 it is 64
//! zeros ([`GENESIS_HASH`]). Both hashes are stored as 64 lower-case hex digits and
//!
//! ```text
//! hash = SHA-256( P ‖ C )
//! P    = the 32 bytes that prev_hash spells in hex
//! C    = be64(seq) ‖ str(at) ‖ opt(run_id) ‖ opt(task_id) ‖ str(kind) ‖ str(detail)
//! str(s)    = be64(number of UTF-8 bytes of s) ‖ the UTF-8 bytes of s
//! opt(None) = 0x00        opt(Some(v)) = 0x01 ‖ be64(v)
//! be64(v)   = v as 8 bytes, two's complement, big-endian
//! ```
//!
//! `at` and `detail` are hashed exactly as stored (`at` like `2026-11-28T12:00:00.000000Z`,
//! `detail` a compact JSON object as serde_json wrote it, keys sorted), so a verifier needs no
//! JSON canonicalisation: it reads the text and hashes the bytes. The length prefixes make the
//! encoding injective: no two different records encode to the same bytes.
//!
//! # What it proves
//!
//! Editing any field of a record, deleting a record, or moving one breaks the chain at that
//! point. Triggers refuse UPDATE and DELETE, so the product itself never rewrites history; someone
//! holding the file can drop them, which is what the chain is for. Two things need an anchor kept
//! outside the database, a checkpoint `SEQ:HASH` from `audit checkpoint`: removing records from
//! the end, and rewriting the whole chain from some point on. Both change the record that the
//! checkpoint names (or remove it), which `audit verify --checkpoint` reports.
//!

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical bytes `C` of a record (see the module documentation).
pub fn canonical_record(
    seq: i64,
    at: &str,
    run_id: Option<i64>,
    task_id: Option<i64>,
    kind: &str,
    detail: &str,
) -> Vec<u8> {
    let fields = Fields { seq, at: at.as_bytes(), run_id, task_id, kind: kind.as_bytes(), detail: detail.as_bytes() };
    let mut out = Vec::with_capacity(64 + at.len() + kind.len() + detail.len());
    fields.encode(|part| out.extend_from_slice(part));
    out
}

/// The hashed fields of a record, borrowed from wherever they were read.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    pub seq: i64,
    pub at: &'a [u8],
    pub run_id: Option<i64>,
    pub task_id: Option<i64>,
    pub kind: &'a [u8],
    pub detail: &'a [u8],
}

impl Fields<'_> {
    /// Emit the canonical encoding piece by piece (no allocation on the verify path).
    fn encode(&self, mut emit: impl FnMut(&[u8])) {
        let text = |s: &[u8], emit: &mut dyn FnMut(&[u8])| {
            emit(&(s.len() as u64).to_be_bytes());
            emit(s);
        };
        emit(&self.seq.to_be_bytes());
        text(self.at, &mut emit);
        for id in [self.run_id, self.task_id] {
            match id {
                None => emit(&[0]),
                Some(v) => {
                    emit(&[1]);
                    emit(&v.to_be_bytes());
                }
            }
        }
        text(self.kind, &mut emit);
        text(self.detail, &mut emit);
    }

    /// The record's hash when chained after `prev`.
    pub fn hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev);
        self.encode(|part| h.update(part));
        h.finalize().into()
    }
}

/// `hash` of a record whose `prev_hash` is `prev_hash` (hex); `None` when `prev_hash` is not 64
/// hex digits.
pub fn record_hash(
    prev_hash: &str,
    seq: i64,
    at: &str,
    run_id: Option<i64>,
    task_id: Option<i64>,
    kind: &str,
    detail: &str,
) -> Option<String> {
    let prev = decode_hash(prev_hash.as_bytes())?;
    let fields = Fields { seq, at: at.as_bytes(), run_id, task_id, kind: kind.as_bytes(), detail: detail.as_bytes() };
    Some(hex::encode(fields.hash(&prev)))
}

/// The 32 bytes that 64 hex digits spell; `None` for anything else.
pub fn decode_hash(s: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A point of the chain kept outside the database: `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for Checkpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not SEQ:HASH (as printed by `audit checkpoint`)");
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if seq < 0 || decode_hash(hash.as_bytes()).is_none() {
            return Err(bad());
        }
        Ok(Checkpoint { seq, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encoding_is_length_prefixed() {
        let c = canonical_record(1, "t", Some(2), None, "k", "{}");
        let mut want = vec![0, 0, 0, 0, 0, 0, 0, 1];
        want.extend([0, 0, 0, 0, 0, 0, 0, 1, b't']);
        want.extend([1, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
        want.extend([0, 0, 0, 0, 0, 0, 0, 1, b'k']);
        want.extend([0, 0, 0, 0, 0, 0, 0, 2, b'{', b'}']);
        assert_eq!(c, want);
        // Moving bytes between fields changes the encoding.
        assert_ne!(canonical_record(1, "ab", None, None, "c", ""), canonical_record(1, "a", None, None, "bc", ""));
    }

    #[test]
    fn hash_of_a_known_record() {
        // Recomputable with any SHA-256 tool: 32 zero bytes followed by the canonical bytes.
        let h =
            record_hash(GENESIS_HASH, 1, "2026-11-28T12:00:00.000000Z", Some(1), None, "run_started", "{}").unwrap();
        let mut bytes = vec![0u8; 32];
        bytes.extend(canonical_record(1, "2026-11-28T12:00:00.000000Z", Some(1), None, "run_started", "{}"));
        assert_eq!(h, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(h.len(), 64);
        assert!(record_hash("xyz", 1, "", None, None, "", "").is_none());
    }

    #[test]
    fn checkpoints_parse() {
        let cp: Checkpoint = format!("12:{}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(cp.seq, 12);
        assert_eq!(cp.hash, "ab".repeat(32));
        assert_eq!(cp.to_string(), format!("12:{}", "ab".repeat(32)));
        for bad in ["12", "x:00", "-1:00", &format!("3:{}", "g".repeat(64)), "3:abcd"] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad}");
        }
    }
}
