//! What the replay rebuilds and finds: the rows the chain proves (a column's value and the
//! record that set it, or the window a clock time must lie in), each run's and task's story,
//! the records kept as evidence, and every discrepancy between the chain and the tables.
//!
//! Plain data with the small rules of its own (a window holds a time); it reads nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// A time the chain bounds rather than states: `lower <= t <= upper` (text order is time
/// order). The texts are shared by every record of one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The `at` of the last record written before the transaction (`None` at the start).
    pub lower: Option<Arc<str>>,
    /// The `at` of the record describing the change.
    pub upper: Arc<str>,
    /// The record describing the change.
    pub seq: i64,
}

impl Window {
    pub(super) fn holds(&self, t: &str) -> bool {
        self.lower.as_deref().is_none_or(|l| t >= l) && t <= &*self.upper
    }
}

/// A column's value as the chain proves it, and the record that set it last.
#[derive(Debug, Clone, PartialEq)]
pub struct Proven {
    pub value: Value,
    pub seq: i64,
}

/// One failed or retried attempt of a task, as its transition record tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub seq: i64,
    pub at: String,
    pub from: String,
    pub to: String,
    pub attempts: Option<i64>,
    pub job_id: Option<String>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
}

/// A row rebuilt from the chain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainRow {
    /// Column name → proven value.
    pub columns: BTreeMap<&'static str, Proven>,
    /// Columns the chain bounds by a window.
    pub windows: BTreeMap<&'static str, Window>,
    /// First and last record naming the row, and how many.
    pub first_seq: i64,
    pub last_seq: i64,
    pub records: i64,
}

impl ChainRow {
    pub(super) fn set(&mut self, column: &'static str, value: Value, seq: i64) {
        self.columns.insert(column, Proven { value, seq });
    }

    pub(super) fn touch(&mut self, seq: i64) {
        if self.records == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        self.records += 1;
    }

    /// The proven text of a column (`None` when absent or not text).
    pub fn text(&self, column: &str) -> Option<&str> {
        self.columns.get(column).and_then(|p| p.value.as_str())
    }

    /// The proven integer of a column.
    pub fn int(&self, column: &str) -> Option<i64> {
        self.columns.get(column).and_then(|p| p.value.as_i64())
    }
}

/// An audit record kept as evidence: its `seq` and its detail as written.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRecord {
    pub seq: i64,
    pub detail: Map<String, Value>,
}

/// A task rebuilt from the chain, with the story of its transitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainTask {
    pub run_id: Option<i64>,
    pub row: ChainRow,
    /// Every transition that carries an API answer other than success (a message, or a
    /// ret_code other than 0), oldest first: the attempts that did not delete the account.
    pub transitions: Vec<AttemptRecord>,
    /// The task's latest `preflight` record: what preflight saw of its cluster.
    pub preflight: Option<EvidenceRecord>,
}

/// A run rebuilt from the chain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainRun {
    pub row: ChainRow,
    /// (path, sha256) of its manifests, in order.
    pub manifests: Vec<(String, String)>,
    /// The `at` of its `run_started` record.
    pub started_record_at: Option<String>,
    /// Its `preflight_unchecked` records (`zone`, `clusters`), oldest first.
    pub preflight_unchecked: Vec<EvidenceRecord>,
}

/// A row that disagrees with the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub table: &'static str,
    pub row: i64,
    /// The column, or `None` when the whole row is missing or unknown to the chain.
    pub field: Option<String>,
    /// The run the row belongs to, when known.
    pub run_id: Option<i64>,
    /// The task the row belongs to (a `tasks` row, or an API call made for a task).
    pub task_id: Option<i64>,
    pub what: String,
}

impl std::fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} row {}, {field}: {}", self.table, self.row, self.what),
            None => write!(f, "{} row {}: {}", self.table, self.row, self.what),
        }
    }
}

/// The chain replayed, and where the tables disagree with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub runs: BTreeMap<i64, ChainRun>,
    pub tasks: BTreeMap<i64, ChainTask>,
    pub calls: BTreeMap<i64, ChainRow>,
    pub discrepancies: Vec<Discrepancy>,
    /// `api_calls` rows older than the first chained call: recorded by a version that did not
    /// chain API calls, so nothing proves them.
    pub unchained_calls: i64,
    /// Records read.
    pub records: i64,
}

impl Replay {
    /// Discrepancies of one task: its row and the API calls made for it.
    pub fn task_discrepancies(&self, task_id: i64) -> impl Iterator<Item = &Discrepancy> {
        self.discrepancies.iter().filter(move |d| d.task_id == Some(task_id))
    }

    /// Discrepancies of a run's own rows (`runs`, `run_manifests`).
    pub fn run_discrepancies(&self, run_id: i64) -> impl Iterator<Item = &Discrepancy> {
        self.discrepancies.iter().filter(move |d| d.run_id == Some(run_id) && d.task_id.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_bound_times_on_both_sides() {
        let w = Window {
            lower: Some("2026-01-01T00:00:00.000000Z".into()),
            upper: "2026-01-01T00:00:01.000000Z".into(),
            seq: 3,
        };
        assert!(w.holds("2026-01-01T00:00:00.500000Z"));
        assert!(w.holds("2026-01-01T00:00:01.000000Z"));
        assert!(!w.holds("2026-01-01T00:00:01.000001Z"));
        assert!(!w.holds("2025-12-31T23:59:59.999999Z"));
        let open = Window { lower: None, ..w };
        assert!(open.holds("2000-01-01T00:00:00.000000Z"));
    }
}
