//! Where a task ended, as the report names it ([`Outcome`], folding the in-progress states into
//! `pending` and keeping the name of a state this version does not know), and whether the
//! account was removed by its `due_by` ([`late`]; the rules are in the `report` module
//! documentation).
//!
//! Pure: the clock is passed in; nothing here reads the database or writes a format.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::{TaskRow, TaskState};

/// Where a task ended, as the report names it. Built from the state's name, so a state this
/// version does not know is shown under its own name instead of breaking the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    /// The account did not exist: counts as done.
    Absent,
    Failed,
    Skipped,
    Pending,
    NotDue,
    /// The task's live attempt was adopted by a later run.
    HandedOver,
    /// The cluster was not ready at preflight; a later run tries again.
    NotReady,
    /// A state this version does not know.
    Other(String),
}

impl Outcome {
    pub fn of(state: TaskState) -> Outcome {
        Outcome::of_state(state.as_str())
    }

    /// The outcome of a state named as the database stores it.
    pub fn of_state(state: &str) -> Outcome {
        match state {
            "deleted" => Outcome::Deleted,
            "absent" => Outcome::Absent,
            "failed" => Outcome::Failed,
            "skipped" => Outcome::Skipped,
            "not_due" => Outcome::NotDue,
            "handed_over" => Outcome::HandedOver,
            "not_ready" => Outcome::NotReady,
            other if other.parse::<TaskState>().is_ok_and(TaskState::is_open) => Outcome::Pending,
            other => Outcome::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Pending => "pending",
            Outcome::NotDue => "not_due",
            Outcome::HandedOver => "handed_over",
            Outcome::NotReady => "not_ready",
            Outcome::Other(s) => s,
        }
    }

    /// The outcome in words for people (tables and HTML).
    pub fn label(&self) -> &str {
        match self {
            Outcome::Absent => "account not found",
            Outcome::NotReady => "cluster not ready",
            other => other.as_str(),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Was the account not removed by `due_by`? (See the module documentation.) `updated_at` stands
/// in for a `deleted` task's missing `finished_at`.
pub fn late(
    outcome: &Outcome,
    due_by: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let Some(due) = due_by else { return false };
    match outcome {
        Outcome::Deleted => finished_at.unwrap_or(updated_at) > due,
        Outcome::Skipped | Outcome::Absent | Outcome::HandedOver => false,
        Outcome::Failed | Outcome::Pending | Outcome::NotDue | Outcome::NotReady | Outcome::Other(_) => now > due,
    }
}

/// Was the account not removed by `due_by`? (See the module documentation.)
pub fn is_late(task: &TaskRow, now: DateTime<Utc>) -> bool {
    late(&Outcome::of(task.state), task.due_by, task.finished_at, task.updated_at, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: TaskState, due: Option<&str>, finished: Option<&str>) -> TaskRow {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        TaskRow {
            id: 1,
            run_id: 1,
            cluster: "cl-a".into(),
            zone: "sh1a".into(),
            user: "bob".into(),
            host: "%".into(),
            state,
            not_before: None,
            due_by: due.map(t),
            attempts: 1,
            job_id: None,
            last_ret_code: None,
            last_message: None,
            started_at: None,
            intent_at: None,
            submitted_at: None,
            next_attempt_at: None,
            finished_at: finished.map(t),
            updated_at: t("2026-01-01T00:00:00Z"),
            adopted_from: None,
            unresolved: None,
        }
    }

    #[test]
    fn lateness() {
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let due = Some("2026-05-01T00:00:00Z");
        assert!(!is_late(&task(TaskState::Deleted, due, Some("2026-04-30T00:00:00Z")), now));
        assert!(is_late(&task(TaskState::Deleted, due, Some("2026-05-02T00:00:00Z")), now));
        assert!(!is_late(&task(TaskState::Skipped, due, Some("2026-05-02T00:00:00Z")), now));
        assert!(is_late(&task(TaskState::Failed, due, Some("2026-04-02T00:00:00Z")), now));
        assert!(is_late(&task(TaskState::RetryWait, due, None), now));
        assert!(!is_late(&task(TaskState::Pending, Some("2026-07-01T00:00:00Z"), None), now));
        assert!(!is_late(&task(TaskState::Pending, None, None), now));
    }

    #[test]
    fn in_progress_states_report_as_pending() {
        for s in [TaskState::Pending, TaskState::Submitting, TaskState::Submitted, TaskState::RetryWait] {
            assert_eq!(Outcome::of(s), Outcome::Pending);
        }
        assert_eq!(Outcome::of(TaskState::NotDue).as_str(), "not_due");
    }

    #[test]
    fn states_this_version_does_not_know_keep_their_name() {
        assert_eq!(Outcome::of_state("absent"), Outcome::Absent);
        assert_eq!(Outcome::of_state("absent").label(), "account not found");
        assert_eq!(Outcome::of_state("handed_over").as_str(), "handed_over");
        let other = Outcome::of_state("parked");
        assert_eq!(other.as_str(), "parked");
        assert_eq!(serde_json::to_value(&other).unwrap(), serde_json::json!("parked"));
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let (due, now) = (Some(t("2026-01-01T00:00:00Z")), t("2026-02-01T00:00:00Z"));
        assert!(late(&other, due, None, now, now), "an unknown state is still open");
        assert!(!late(&Outcome::Absent, due, None, now, now));
    }
}
