//! What can end a run's work with an error, typed: the store (a write through the journal, or a
//! read), the database's answer at the last check before sending, a row the runner cannot read,
//! an illegal move (a bug), the stop signals that cannot be listened for, or one of the runner's own tasks panicking (a bug). Everything the
//! API answers is data the runner decides on, never one of these.
//!
//! It keeps the store's own error, so the exit code is chosen from what SQLite said (a busy
//! lock, a full disk) rather than from words; it must not choose exit codes itself (that is
//! `exit`'s).

use std::fmt;
use std::sync::Arc;

use crate::store::StoreError;

use super::journal::JournalError;
use super::state::Illegal;

#[derive(Debug)]
pub enum RunnerError {
    /// A change could not be committed (through the journal).
    Journal(JournalError),
    /// A read of the database failed.
    Store(StoreError),
    /// The last check before sending could not be made (the database did not answer): the task
    /// went back to `pending` and nothing was sent on a guess.
    Unchecked(Arc<StoreError>),
    /// A row holds what this version cannot read (edited by hand, or written by a newer one).
    BadRow(String),
    /// A move the state table does not allow: a bug.
    Illegal(Illegal),
    /// The stop signals (SIGINT, SIGTERM, SIGHUP) could not be listened for.
    Signals(std::io::Error),
    /// One of the runner's own tasks panicked: a bug.
    Panicked { what: &'static str, detail: String },
}

impl fmt::Display for RunnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The journal's own words ("the change could not be committed"), said once.
            RunnerError::Journal(e) => e.fmt(f),
            RunnerError::Store(_) => f.write_str("the database could not be read"),
            RunnerError::Unchecked(_) => f.write_str("the last check before sending could not be made"),
            RunnerError::BadRow(why) => write!(f, "a row the runner cannot read: {why}"),
            RunnerError::Illegal(e) => e.fmt(f),
            RunnerError::Signals(_) => f.write_str("the stop signals could not be listened for"),
            RunnerError::Panicked { what, detail } => write!(f, "{what} panicked: {detail}"),
        }
    }
}

/// The store's own error is the next link of the chain (not its text), so the exit code is
/// chosen from what SQLite said.
impl std::error::Error for RunnerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunnerError::Journal(e) => e.source(),
            RunnerError::Store(e) => Some(e),
            RunnerError::Unchecked(e) => Some(e.as_ref()),
            RunnerError::Signals(e) => Some(e),
            RunnerError::BadRow(_) | RunnerError::Illegal(_) | RunnerError::Panicked { .. } => None,
        }
    }
}

impl From<JournalError> for RunnerError {
    fn from(e: JournalError) -> Self {
        RunnerError::Journal(e)
    }
}

impl From<StoreError> for RunnerError {
    fn from(e: StoreError) -> Self {
        RunnerError::Store(e)
    }
}

impl From<Illegal> for RunnerError {
    fn from(e: Illegal) -> Self {
        RunnerError::Illegal(e)
    }
}

impl From<std::io::Error> for RunnerError {
    fn from(e: std::io::Error) -> Self {
        RunnerError::Signals(e)
    }
}

impl RunnerError {
    /// Is it a bug of this program (an illegal move, a panic), not the environment's doing?
    pub fn is_bug(&self) -> bool {
        matches!(self, RunnerError::Illegal(_) | RunnerError::Panicked { .. })
    }
}

pub type Result<T, E = RunnerError> = std::result::Result<T, E>;
