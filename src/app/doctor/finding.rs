//! One finding of `doctor` as it is built: name, `ok` / `warn` / `fail`, the value runs read, a
//! summary, what to do, and the details kept in the database.
//!
//! It shapes; it probes nothing and prints nothing (printing is `cli`'s).

use crate::store::{FindingStatus, NewFinding};

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
