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

/// A database path inside `dir` (the file does not exist yet).
pub fn db_path(dir: &Path) -> std::path::PathBuf {
    dir.join("data/audit.db")
}

/// An instant written in RFC 3339.
pub fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).expect("RFC 3339").with_timezone(&chrono::Utc)
}

/// A run as the runner would record it, with a ticket.
pub fn new_run(ticket: Option<&str>) -> qc_offboard::store::NewRun {
    qc_offboard::store::NewRun {
        manifests: vec![("manifests/hr-4711.yaml".into(), "ab".repeat(32))],
        ticket: ticket.map(String::from),
        requested_by: Some("alice@example.com".into()),
        reason: Some("bob left".into()),
        due_by: Some(at("2026-11-28T12:00:00Z")),
        operator: "ops".into(),
        host: "build-1".into(),
        endpoint: "http://127.0.0.1:1/iaas/".into(),
        access_key_id: "QYACCESSKEYIDEXAMPLE".into(),
        options: serde_json::json!({"rate": "50/s", "max_in_flight": 20}),
        retry_of: None,
        simulated: false,
    }
}

/// A pending task removing `user`@% from `cluster`.
pub fn new_task(cluster: &str, user: &str) -> qc_offboard::store::NewTask {
    qc_offboard::store::NewTask {
        cluster: cluster.into(),
        zone: "sh1a".into(),
        user: user.into(),
        host: "%".into(),
        state: qc_offboard::store::TaskState::Pending,
        not_before: None,
        due_by: Some(at("2026-11-28T12:00:00Z")),
    }
}

/// A connection that bypasses the product, as someone holding the database file could open it.
pub async fn raw_connection(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new().filename(path).connect().await.expect("raw connection")
}
