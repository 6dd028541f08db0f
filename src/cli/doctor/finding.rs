//! One finding of `doctor` as it is built and printed: name, `ok` / `warn` / `fail`, the value
//! runs read, a summary, what to do, and the details kept in the database.
//!
//! It shapes and prints; it probes nothing.

use crate::store::{FindingStatus, NewFinding};

pub(super) fn print_finding(f: &NewFinding) {
    println!("{:<5} {}: {}", f.status.as_str(), f.name, f.summary);
    if let Some(advice) = &f.advice {
        println!("      what to do: {advice}");
    }
}

pub(super) fn finding(
    name: &str,
    status: FindingStatus,
    value: &str,
    summary: String,
    advice: Option<String>,
    detail: serde_json::Value,
) -> NewFinding {
    NewFinding { name: name.to_owned(), status, value: value.to_owned(), summary, advice, detail }
}
