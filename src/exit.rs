//! Exit codes of SPEC §2 and the one place where errors become exit codes and hints.
//!
//! Commands return `anyhow::Result<Exit>`; typed errors of each layer are found by downcasting
//! here (a layer whose error carries no type of its own wraps it in [`Coded`]). Nothing else in
//! the crate calls `std::process::exit`, prints an error's hint, or decides that an error is a
//! bug. A closed standard output (`qc-offboard report | head`) is not an error: the reader
//! asked for no more, and the process ends quietly with 0.

use std::fmt;

/// The process exit codes the product promises (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every task is done: deleted now, or skipped as already done.
    Ok,
    /// Finished, but some tasks ended `failed`.
    TasksFailed,
    /// `audit verify` found the chain broken, a row the chain does not prove, or a checkpoint
    /// that is not the product's. Its own variant, with the code SPEC §2 gives `audit verify`.
    AuditBroken,
    /// Usage error (clap's own).
    Usage,
    /// A manifest or plan file is invalid; nothing was sent.
    DataErr,
    /// The API refused the credentials or could not be reached at all.
    Unavailable,
    /// Internal error (a bug).
    Software,
    /// Another run holds the database's run lock.
    Locked,
    /// Stopped with tasks still pending; `resume` continues.
    TempFail,
    /// Configuration error.
    Config,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::TasksFailed | Exit::AuditBroken => 1,
            Exit::Usage => 2,
            Exit::DataErr => 65,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::Locked => 73,
            Exit::TempFail => 75,
            Exit::Config => 78,
        }
    }
}

/// An error that already knows its exit code. Layers wrap their own errors in this when the
/// mapping is not obvious from the type.
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
    classify(err).0
}

/// The exit code of an error, and what the operator can do about it when the code alone does
/// not say (printed after the error).
fn classify(err: &anyhow::Error) -> (Exit, Option<&'static str>) {
    for cause in err.chain() {
        if let Some(coded) = cause.downcast_ref::<Coded>() {
            return (coded.exit, None);
        }
        if cause.downcast_ref::<crate::manifest::ManifestErrors>().is_some() {
            return (Exit::DataErr, None);
        }
        if let Some(e) = cause.downcast_ref::<crate::plan::file::PlanFileError>() {
            return (e.exit(), None);
        }
        if cause.downcast_ref::<crate::qingcloud::config::ConfigError>().is_some() {
            return (Exit::Config, None);
        }
    }
    // Output that cannot be written because the disk is full is the environment's, not a bug.
    for cause in err.chain() {
        if cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull) {
            return (Exit::TempFail, Some("the output could not be written: the disk is full"));
        }
    }
    // What SQLite says about the environment decides first: a busy lock, a full disk or a
    // damaged file are not bugs, wherever in the chain they were wrapped.
    for cause in err.chain() {
        if let Some(class) = cause.downcast_ref::<sqlx::Error>().and_then(crate::store::sqlite_class) {
            return environmental(class);
        }
    }
    // A database server that went away is the environment's too: nothing committed is lost.
    for cause in err.chain() {
        if cause.downcast_ref::<sqlx::Error>().is_some_and(crate::store::connection_lost) {
            return (Exit::TempFail, Some(CONNECTION_LOST));
        }
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<crate::store::StoreError>() {
            use crate::store::StoreError as S;
            match e {
                // A database that cannot be found or created where it was asked for is a
                // matter of configuration (--db, QC_OFFBOARD_DB, HOME), not a bug.
                S::NoHome
                | S::PostgresNotSelectable(_)
                | S::NotAFilePath
                | S::Missing(_)
                | S::CreateDir { .. }
                | S::CreateFile { .. }
                | S::Open { .. } => return (Exit::Config, None),
                S::Newer { .. } | S::Older { .. } | S::NotOurs { .. } | S::Lost { .. } | S::ReadOnlyWal { .. } => {
                    return (Exit::Config, None)
                }
                // The database's record of migrations does not match this version's (a migration
                // that fails to execute is a bug, and stays 70).
                S::Migrate { source, .. }
                    if !matches!(
                        source,
                        sqlx::migrate::MigrateError::Execute(_) | sqlx::migrate::MigrateError::ExecuteMigration(..)
                    ) =>
                {
                    return (Exit::Config, Some(MIGRATIONS_DIFFER))
                }
                _ => {}
            }
        }
    }
    (Exit::Software, None)
}

const CONNECTION_LOST: &str =
    "the connection to the database server was lost (and was lost again when tried once more); everything \
     committed is kept: once the server answers, `qc-offboard resume` continues (on a shared run the other hosts \
     take this host's tasks over when its leases run out)";

const MIGRATIONS_DIFFER: &str =
    "the database's migrations do not match this version's: use the version of qc-offboard that wrote it, or another --db";

fn environmental(class: crate::store::SqliteClass) -> (Exit, Option<&'static str>) {
    use crate::store::SqliteClass as C;
    match class {
        C::Busy => (
            Exit::Locked,
            Some(
                "another process has held the database's write lock for more than 10 s (a run, or a process that \
                 is stopped or hung inside a transaction); `qc-offboard status` shows the runs; try again when it \
                 has finished",
            ),
        ),
        C::Full => (
            Exit::TempFail,
            Some(
                "the disk (or quota) holding the database is full; everything committed is kept: free space, \
                 then `qc-offboard resume` continues",
            ),
        ),
        C::Io => (
            Exit::TempFail,
            Some(
                "reading or writing the database file failed (disk full, removed, or failing); everything \
                 committed is kept: fix the storage, then `qc-offboard resume` continues",
            ),
        ),
        C::Corrupt => (
            Exit::Config,
            Some(
                "the database file is damaged or is not a qc-offboard database; restore it from a backup \
                 (keep the damaged copy as evidence), or pass --db with the right file",
            ),
        ),
        C::Denied => (
            Exit::Config,
            Some("the database file or its directory cannot be opened or written; check --db, the permissions and the mount"),
        ),
    }
}

/// Did the error come from writing to a reader that went away (`EPIPE`)?
fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// `text` with the password of every URL in it masked (`scheme://user:***@host`, and the value
/// of any `password=` parameter): errors may quote what the user typed, and a database URL can
/// carry a password.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || "/?#'\"`".contains(c)).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@').and_then(|a| authority[..a].find(':').map(|c| (c, a))) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    mask_password_parameters(&out)
}

fn mask_password_parameters(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find("password=") {
        let value = from + found + "password=".len();
        out.push_str(&text[from..value]);
        let end =
            text[value..].find(|c: char| c.is_whitespace() || "&#'\"`".contains(c)).map_or(text.len(), |e| value + e);
        if end > value {
            out.push_str("***");
        }
        from = end;
    }
    out.push_str(&text[from..]);
    out
}

/// Print an error (if any) to stderr and return the exit code for the process.
pub fn report(outcome: anyhow::Result<Exit>) -> Exit {
    match outcome {
        Ok(exit) => exit,
        // The reader of our output stopped reading (`report | head`): what it wanted it has.
        Err(err) if closed_pipe(&err) => Exit::Ok,
        Err(err) => {
            let (exit, hint) = classify(&err);
            // `{:#}` prints the whole context chain on one line: "what: why". A URL it quotes
            // keeps its password to itself.
            eprintln!("error: {}", redact_urls(&format!("{err:#}")));
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            if exit == Exit::Software {
                eprintln!("this is a bug in qc-offboard; nothing recorded in the database is lost");
            }
            exit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real SQLite failure, typed all the way from the store through the runner's error: the
    /// code decides, not the words.
    #[tokio::test]
    async fn environmental_failures_are_not_bugs() {
        use crate::runner::error::RunnerError;
        use crate::store::StoreError;
        use sqlx::{Connection, Executor};

        let dir = tempfile::tempdir().unwrap();
        let through_the_runner =
            |e: sqlx::Error| anyhow::Error::new(RunnerError::Store(StoreError::from(e))).context("the run stopped");

        // Not a database (SQLITE_NOTADB): a damaged file is the operator's to fix, not a bug.
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", junk.display())).await.unwrap();
        let e = c.execute("SELECT * FROM sqlite_master").await.unwrap_err();
        assert_eq!(code_for(&through_the_runner(e)), Exit::Config);

        // Locked by another writer (SQLITE_BUSY).
        let db = dir.path().join("busy.db");
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
        holder.execute("CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1)").await.unwrap();
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        other.execute("PRAGMA busy_timeout = 0").await.unwrap();
        let e = other.execute("INSERT INTO t VALUES (2)").await.unwrap_err();
        assert_eq!(code_for(&through_the_runner(e)), Exit::Locked);
        // The same store error through the last check before sending.
        let e = other.execute("INSERT INTO t VALUES (3)").await.unwrap_err();
        let unchecked = RunnerError::Unchecked(std::sync::Arc::new(StoreError::from(e)));
        assert_eq!(code_for(&anyhow::Error::new(unchecked)), Exit::Locked);

        // Words that only look like SQLite's decide nothing; a bug stays a bug.
        let words = anyhow::Error::msg("error returned from database: (code: 13) database or disk is full");
        assert_eq!(code_for(&words), Exit::Software);
        let illegal = crate::runner::state::apply(crate::store::TaskState::Deleted, crate::store::Event::Intent);
        assert_eq!(code_for(&anyhow::Error::new(RunnerError::from(illegal.unwrap_err()))), Exit::Software);
        let newer = StoreError::Newer { path: "/d/audit.db".into(), version: 9 };
        assert_eq!(code_for(&anyhow::Error::new(newer)), Exit::Config);
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            redact_urls("invalid value 'postgres://root:S3cret@127.0.0.1:5432/x' for '--from'"),
            "invalid value 'postgres://root:***@127.0.0.1:5432/x' for '--from'"
        );
        assert_eq!(redact_urls("a@b pg://u:p:w@h@h2/d and http://h/p"), "a@b pg://u:***@h2/d and http://h/p");
        assert_eq!(redact_urls("postgres:///d?host=/s&Password=x y"), "postgres:///d?host=/s&Password=*** y");
        assert_eq!(redact_urls("no url here: user:pw"), "no url here: user:pw");
        assert_eq!(redact_urls("postgres://user@h/d"), "postgres://user@h/d");
    }

    #[test]
    fn a_closed_output_ends_quietly() {
        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "Broken pipe (os error 32)");
        assert_eq!(report(Err(anyhow::Error::new(pipe).context("writing the report"))), Exit::Ok);
        let other = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert_eq!(report(Err(anyhow::Error::new(other).context("writing the report"))), Exit::Software);
    }

    #[test]
    fn every_exit_has_the_code_the_spec_gives() {
        let all = [
            (Exit::Ok, 0),
            (Exit::TasksFailed, 1),
            (Exit::AuditBroken, 1),
            (Exit::Usage, 2),
            (Exit::DataErr, 65),
            (Exit::Unavailable, 69),
            (Exit::Software, 70),
            (Exit::Locked, 73),
            (Exit::TempFail, 75),
            (Exit::Config, 78),
        ];
        for (exit, code) in all {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }
}
