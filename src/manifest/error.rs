//! Why a manifest is refused: one reason with its file, line and column, and every reason of
//! a set of manifests (all of them, not only the first).
//!
//! Plain data; finding the reasons and their positions is the loaders'.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::Pos;

/// One reason a manifest is refused, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.reason)
    }
}

/// Every error found in a set of manifests (all of them, not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} manifest error{}; nothing was sent", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

impl ManifestError {
    pub(super) fn at(file: &Path, pos: Pos, reason: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line: pos.line, column: pos.column, reason: reason.into() }
    }
}
