//! Where the database lives (SPEC §1): `--db`, else under `XDG_DATA_HOME` or `~/.local/share`,
//! with `sim-audit.db` beside `audit.db` for `--simulate` runs; and creating the file (mode
//! 0600) and its directory (mode 0700) before SQLite opens it.
//!
//! It touches the file system only to create; it never opens a connection.

use std::ffi::OsString;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// File name of the real database inside the data directory.
pub const DB_FILE: &str = "audit.db";
/// File name of the database of `--simulate` runs, beside the real one.
pub const SIM_DB_FILE: &str = "sim-audit.db";

/// The default database path (SPEC §1): `$XDG_DATA_HOME/qc-offboard/audit.db`, else
/// `~/.local/share/qc-offboard/audit.db`; `sim-audit.db` beside it for `--simulate` runs.
pub fn default_path(simulate: bool) -> Result<PathBuf, StoreError> {
    path_in(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"), simulate)
}

fn path_in(xdg_data_home: Option<OsString>, home: Option<OsString>, simulate: bool) -> Result<PathBuf, StoreError> {
    // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    let data = match xdg_data_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(home.filter(|h| !h.is_empty()).ok_or(StoreError::NoHome)?).join(".local/share"),
    };
    Ok(data.join("qc-offboard").join(if simulate { SIM_DB_FILE } else { DB_FILE }))
}

/// `--db` when given, else [`default_path`].
pub fn resolve_path(db: Option<&Path>, simulate: bool) -> Result<PathBuf, StoreError> {
    match db {
        Some(p) => {
            refuse_postgres(p)?;
            Ok(p.to_path_buf())
        }
        None => default_path(simulate),
    }
}

/// A `--db` (or `QC_OFFBOARD_DB`) that is a PostgreSQL URL is refused, never taken for a file
/// name: `postgres://host/db` would otherwise become a new SQLite file under `./postgres:/`.
pub fn refuse_postgres(db: &Path) -> Result<(), StoreError> {
    match db.to_str() {
        Some(s) if super::postgres::is_postgres_url(s) => {
            Err(StoreError::PostgresNotSelectable(super::postgres::redacted(s)))
        }
        Some(s) if super::postgres::looks_like_url(s) => Err(StoreError::NotAFilePath),
        _ => Ok(()),
    }
}

pub(super) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
    }
    // `create` without `truncate`: an existing database is opened as it is.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::CreateFile { path: path.to_path_buf(), source })?;
    if let Ok(meta) = file.metadata() {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "the database is readable by other users; `chmod 600` it"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_follow_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(path_in(os("/x"), os("/h"), false).unwrap(), PathBuf::from("/x/qc-offboard/audit.db"));
        assert_eq!(path_in(os("/x"), os("/h"), true).unwrap(), PathBuf::from("/x/qc-offboard/sim-audit.db"));
        let home = PathBuf::from("/h/.local/share/qc-offboard/audit.db");
        assert_eq!(path_in(None, os("/h"), false).unwrap(), home);
        assert_eq!(path_in(os("rel"), os("/h"), false).unwrap(), home, "a relative XDG_DATA_HOME is ignored");
        assert!(matches!(path_in(None, None, false), Err(StoreError::NoHome)));
        assert_eq!(resolve_path(Some(Path::new("/d/my.db")), true).unwrap(), PathBuf::from("/d/my.db"));
    }
}
