//! The audit evidence, independent of any database: the hash chain ([`chain`]: encoding,
//! hashing, checkpoints), the verifier a backend feeds page by page ([`walk`]) and the key that signs
//! checkpoints kept outside the database ([`key`]). It must not run SQL; the store appends
//! records and pages them to the verifier.

pub mod chain;
pub mod key;
pub mod walk;

pub use chain::{canonical_record, record_hash, Checkpoint, GENESIS_HASH};
pub use walk::{Problem, Record, Verification, Walk};
