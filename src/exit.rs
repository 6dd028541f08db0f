//! Exit codes of SPEC §2 and the one place where errors become exit codes and hints.
//!
//! Commands return `anyhow::Result<Exit>`; typed errors of each layer are found by downcasting
//! here. Nothing else in the crate calls `std::process::exit`.

use std::fmt;

/// The process exit codes the product promises (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Every task is done: deleted now, or skipped as already done.
    Ok = 0,
    /// Finished, but some tasks ended `failed`.
    TasksFailed = 1,
    /// Usage error (clap's own).
    Usage = 2,
    /// A manifest or plan file is invalid; nothing was sent.
    DataErr = 65,
    /// The API refused the credentials or could not be reached at all.
    Unavailable = 69,
    /// Internal error (a bug).
    Software = 70,
    /// Another run holds the database's run lock.
    Locked = 73,
    /// Stopped with tasks still pending; `resume` continues.
    TempFail = 75,
    /// Configuration error.
    Config = 78,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that already knows its exit code. Layers wrap their own errors in this (or
/// implement [`ExitHint`]) when the mapping is not obvious from the type.
#[derive(Debug)]
pub struct Coded {
    pub exit: Exit,
    pub message: String,
}

impl Coded {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into() }
    }
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// Map an error to its exit code by looking at every error in its chain.
pub fn code_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(coded) = cause.downcast_ref::<Coded>() {
            return coded.exit;
        }
        if cause.downcast_ref::<crate::manifest::ManifestErrors>().is_some() {
            return Exit::DataErr;
        }
        if let Some(e) = cause.downcast_ref::<crate::planfile::PlanFileError>() {
            return e.exit();
        }
        if cause.downcast_ref::<crate::qingcloud::config::ConfigError>().is_some() {
            return Exit::Config;
        }
        // A database that cannot be found or created where it was asked for is a matter of
        // configuration (--db, QC_OFFBOARD_DB, HOME), not a bug.
        if let Some(e) = cause.downcast_ref::<crate::store::StoreError>() {
            use crate::store::StoreError as S;
            if matches!(e, S::NoHome | S::Missing(_) | S::CreateDir { .. } | S::CreateFile { .. } | S::Open { .. }) {
                return Exit::Config;
            }
        }
    }
    Exit::Software
}

/// Print an error (if any) to stderr and return the exit code for the process.
pub fn report(outcome: anyhow::Result<Exit>) -> Exit {
    match outcome {
        Ok(exit) => exit,
        Err(err) => {
            let exit = code_for(&err);
            // `{:#}` prints the whole context chain on one line: "what: why".
            eprintln!("error: {err:#}");
            if exit == Exit::Software {
                eprintln!("this is a bug in qc-offboard; nothing recorded in the database is lost");
            }
            exit
        }
    }
}
