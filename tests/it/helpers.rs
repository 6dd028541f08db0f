//! Shared test helpers.

#![allow(dead_code)]

use std::path::Path;

use assert_cmd::Command;

/// The real binary with an environment scrubbed of everything that could change its behaviour:
/// no credentials, no config, no database path from the outer shell, HOME pointing at `home`.
pub fn qc(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("qc-offboard").expect("binary built");
    cmd.env_clear()
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0");
    cmd
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}
