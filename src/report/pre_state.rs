//! The pre-state: what preflight saw of a task's cluster before the first `del_user` of its run,
//! shown as evidence beside the outcome.
//!
//! It is read from the audit chain replayed (a task's `preflight` record, a run's
//! `preflight_unchecked` records), never from a table, so a row that shows it is verified only
//! when the chain vouches for the record it comes from. This module only reads those records and
//! words them; it decides nothing about the task.
//!
//! The words, for people and machines alike: the cluster's `status`, with its
//! `transition_status` in parentheses when it had one (`active`, `stopped`, `active (updating)`);
//! `, app APP` after it when the cluster was not MySQL Plus (`active, app app-redis0001`);
//! `not found` when `DescribeClusters` did not know the cluster in the task's zone; `unchecked`
//! when the zone's lookups got no answer. A run started with `--no-preflight` (or a task that was
//! not waiting when preflight ran) has none.

use serde_json::{Map, Value};

use crate::qingcloud::types::MYSQL_PLUS_APP_ID;
use crate::store::{ChainRun, ChainTask};

/// What preflight saw of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreState {
    /// `DescribeClusters` returned the cluster.
    Seen { status: String, transition_status: String, app_id: String },
    /// `DescribeClusters` did not return it (unknown, or in another zone).
    NotFound,
    /// The zone's lookups got no usable answer: the cluster was not checked.
    Unchecked,
    /// A `preflight` record whose detail this version cannot read.
    Unreadable,
}

impl PreState {
    /// The pre-state a `preflight` record's detail tells
    /// (`{"seen": {"found": true, "status", "transition_status", "app_id", …} | {"found": false}}`).
    pub fn of_record(detail: &Map<String, Value>) -> PreState {
        let Some(seen) = detail.get("seen").and_then(Value::as_object) else { return PreState::Unreadable };
        let text = |k: &str| seen.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        match seen.get("found").and_then(Value::as_bool) {
            Some(true) if !text("status").is_empty() => PreState::Seen {
                status: text("status"),
                transition_status: text("transition_status"),
                app_id: text("app_id"),
            },
            Some(false) => PreState::NotFound,
            _ => PreState::Unreadable,
        }
    }

    /// The pre-state in words (see the module documentation).
    pub fn describe(&self) -> String {
        match self {
            PreState::Seen { status, transition_status, app_id } => {
                let mut s = status.clone();
                if !transition_status.is_empty() {
                    s.push_str(&format!(" ({transition_status})"));
                }
                if !app_id.is_empty() && app_id != MYSQL_PLUS_APP_ID {
                    s.push_str(&format!(", app {app_id}"));
                }
                s
            }
            PreState::NotFound => "not found".into(),
            PreState::Unchecked => "unchecked".into(),
            PreState::Unreadable => "unreadable preflight record".into(),
        }
    }
}

/// Does a `preflight_unchecked` record's detail (`{"zone", "clusters": [..]}`) name the cluster?
fn names(detail: &Map<String, Value>, zone: &str, cluster: &str) -> bool {
    detail.get("zone").and_then(Value::as_str) == Some(zone)
        && detail
            .get("clusters")
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|c| c.as_str() == Some(cluster)))
}

/// The pre-state of a task on `cluster` in `zone`, and the `seq` of the record it comes from:
/// the latest of the task's own `preflight` record and its run's `preflight_unchecked` records
/// naming the cluster (a resumed run checks again, and the latest check is the one its requests
/// followed). `None` when neither exists.
pub fn of_task(task: Option<&ChainTask>, run: Option<&ChainRun>, zone: &str, cluster: &str) -> Option<(PreState, i64)> {
    let own = task.and_then(|t| t.preflight.as_ref()).map(|r| (PreState::of_record(&r.detail), r.seq));
    let unchecked = run
        .into_iter()
        .flat_map(|r| r.preflight_unchecked.iter())
        .filter(|r| names(&r.detail, zone, cluster))
        .map(|r| (PreState::Unchecked, r.seq));
    own.into_iter().chain(unchecked).max_by_key(|(_, seq)| *seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EvidenceRecord;
    use serde_json::json;

    fn detail(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn seen(status: &str, transition: &str, app: &str) -> String {
        let d = json!({"cluster": "cl-a", "zone": "sh1a", "verdict": "ready", "seen": {
            "found": true, "status": status, "transition_status": transition, "app_id": app, "name": "orders",
        }});
        PreState::of_record(&detail(d)).describe()
    }

    #[test]
    fn the_status_reads_with_its_transition_and_a_foreign_app() {
        assert_eq!(seen("active", "", MYSQL_PLUS_APP_ID), "active");
        assert_eq!(seen("stopped", "", MYSQL_PLUS_APP_ID), "stopped");
        assert_eq!(seen("active", "updating", MYSQL_PLUS_APP_ID), "active (updating)");
        assert_eq!(seen("active", "", "app-other"), "active, app app-other");
        assert_eq!(seen("stopped", "starting", "app-other"), "stopped (starting), app app-other");
        assert_eq!(seen("ceased", "", ""), "ceased", "no app id: nothing to say about it");
        let not_found = json!({"cluster": "cl-a", "zone": "sh1a", "seen": {"found": false}, "verdict": "failed"});
        assert_eq!(PreState::of_record(&detail(not_found)).describe(), "not found");
        assert_eq!(PreState::Unchecked.describe(), "unchecked");
        for odd in [json!({}), json!({"seen": "active"}), json!({"seen": {"found": true}})] {
            assert_eq!(PreState::of_record(&detail(odd)), PreState::Unreadable);
        }
    }

    fn record(seq: i64, v: Value) -> EvidenceRecord {
        EvidenceRecord { seq, detail: detail(v) }
    }

    #[test]
    fn the_latest_check_of_the_task_or_its_zone_decides() {
        let task = ChainTask {
            preflight: Some(record(5, json!({"seen": {"found": true, "status": "stopped"}}))),
            ..ChainTask::default()
        };
        let run = ChainRun {
            preflight_unchecked: vec![
                record(3, json!({"zone": "sh1a", "clusters": ["cl-a", "cl-b"]})),
                record(9, json!({"zone": "pek3", "clusters": ["cl-a"]})),
            ],
            ..ChainRun::default()
        };
        let got = |t: Option<&ChainTask>, cluster: &str| {
            of_task(t, Some(&run), "sh1a", cluster).map(|(p, seq)| (p.describe(), seq))
        };
        assert_eq!(got(Some(&task), "cl-a"), Some(("stopped".into(), 5)), "checked after the unchecked try");
        assert_eq!(got(None, "cl-b"), Some(("unchecked".into(), 3)));
        assert_eq!(got(None, "cl-c"), None, "another cluster of the zone");
        let later = ChainRun {
            preflight_unchecked: vec![record(7, json!({"zone": "sh1a", "clusters": ["cl-a"]}))],
            ..run.clone()
        };
        assert_eq!(
            of_task(Some(&task), Some(&later), "sh1a", "cl-a").map(|(p, s)| (p.describe(), s)),
            Some(("unchecked".into(), 7))
        );
        assert_eq!(of_task(None, None, "sh1a", "cl-a"), None, "no preflight: no pre-state");
    }
}
