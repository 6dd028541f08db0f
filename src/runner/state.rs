//! The task state machine as one table: which [`Event`] may move a task out of which
//! [`TaskState`], and into which. Every state change the runner (and the store's adoption of
//! another run's attempt) writes is built here with [`transition`], so its guard — the states
//! the database row must be in for the write to apply — is a subset of what the table allows.
//!
//! It owns the legality of moves only: what a move writes besides the state (attempts, job id,
//! times, messages) is the caller's, and so is the decision which event happened. It must not
//! read the clock, the database or the API; it is pure, and its unit test lists every (state,
//! event) pair.

use crate::store::model::{TaskChange, TaskState};

/// Something that happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A `not_due` task's date has come (a resumed run).
    Due,
    /// The intent to submit is recorded and committed before the request leaves.
    Intent,
    /// The API accepted the request, or the job of a submission in doubt was found: the job id
    /// is known.
    Accepted,
    /// The request never left (a stop, the run's credentials refused, the last check could not
    /// be made): the task is back in the queue with no attempt used.
    Withdrawn,
    /// A transient failure, or a cluster busy with another job: wait, then submit again.
    Backoff,
    /// The job ended successfully: the account is gone.
    Succeeded,
    /// The account did not exist on the cluster.
    FoundAbsent,
    /// A permanent error, `--max-attempts` used, or a timeout: the task ends `failed`.
    GiveUp,
    /// Another run deleted the account (or found it absent): nothing to do.
    DoneElsewhere,
    /// Preflight found the cluster unknown, not MySQL Plus, or gone, or an earlier run's attempt
    /// at the account could not be adopted in time: nothing is sent.
    Refused,
    /// Preflight found the cluster not ready (stopped, in transition): a later run tries again.
    NotReady,
    /// A later run adopted this task's live (or unresolved) attempt.
    HandOver,
    /// This task adopts another run's submission in doubt: reconcile before anything is sent.
    AdoptInDoubt,
    /// This task adopts another run's job in flight: follow it.
    AdoptJob,
}

impl Event {
    pub const ALL: [Event; 14] = [
        Event::Due,
        Event::Intent,
        Event::Accepted,
        Event::Withdrawn,
        Event::Backoff,
        Event::Succeeded,
        Event::FoundAbsent,
        Event::GiveUp,
        Event::DoneElsewhere,
        Event::Refused,
        Event::NotReady,
        Event::HandOver,
        Event::AdoptInDoubt,
        Event::AdoptJob,
    ];
}

use TaskState as S;

/// The table: per event, the states it may leave and the state it enters.
const fn rule(event: Event) -> (&'static [TaskState], TaskState) {
    match event {
        Event::Due => (&[S::NotDue], S::Pending),
        Event::Intent => (&[S::Pending, S::RetryWait], S::Submitting),
        Event::Accepted => (&[S::Submitting], S::Submitted),
        Event::Withdrawn => (&[S::Submitting], S::Pending),
        Event::Backoff => (&[S::Submitting, S::Submitted], S::RetryWait),
        Event::Succeeded => (&[S::Submitted], S::Deleted),
        Event::FoundAbsent => (&[S::Submitting, S::Submitted], S::Absent),
        Event::GiveUp => (&[S::Submitting, S::Submitted], S::Failed),
        Event::DoneElsewhere => (&[S::Pending, S::RetryWait, S::Submitting], S::Skipped),
        Event::Refused => (&[S::Pending, S::RetryWait], S::Failed),
        Event::NotReady => (&[S::Pending, S::RetryWait], S::NotReady),
        Event::HandOver => (&[S::Submitting, S::Submitted, S::Failed], S::HandedOver),
        Event::AdoptInDoubt => (&[S::Pending, S::RetryWait], S::Submitting),
        Event::AdoptJob => (&[S::Pending, S::RetryWait], S::Submitted),
    }
}

/// Where an event moves a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub to: TaskState,
}

/// An event that the table does not allow in a state: a bug in the caller, never data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal task transition: {event:?} in state {state}")]
pub struct Illegal {
    pub state: TaskState,
    pub event: Event,
}

/// One guarded state change, built only here from the table: applied only while the task is in
/// one of `from`, every one of which allows the event. The store takes nothing else, so no write
/// can move a task the table does not allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    task_id: i64,
    from: Vec<TaskState>,
    event: Event,
    to: TaskState,
    change: TaskChange,
    detail: serde_json::Value,
}

impl Transition {
    pub fn task_id(&self) -> i64 {
        self.task_id
    }
    /// The states the row must be in for the write to apply.
    pub fn from(&self) -> &[TaskState] {
        &self.from
    }
    pub fn event(&self) -> Event {
        self.event
    }
    pub fn to(&self) -> TaskState {
        self.to
    }
    /// What the write changes besides the state.
    pub fn change(&self) -> &TaskChange {
        &self.change
    }
    /// Extra facts for the audit record (an object's keys are merged into the record's detail).
    pub fn detail(&self) -> &serde_json::Value {
        &self.detail
    }
}

/// The step `event` makes from `state`.
pub fn apply(state: TaskState, event: Event) -> Result<Step, Illegal> {
    let (from, to) = rule(event);
    if from.contains(&state) {
        Ok(Step { to })
    } else {
        Err(Illegal { state, event })
    }
}

/// The states `event` may leave.
pub fn sources(event: Event) -> &'static [TaskState] {
    rule(event).0
}

/// A guarded write of `event` for a task expected in one of `from`: applied only while the row is
/// in one of them. Every state of `from` must allow the event, and all must lead to one state.
pub fn transition(
    task_id: i64,
    from: &[TaskState],
    event: Event,
    change: TaskChange,
    detail: serde_json::Value,
) -> Result<Transition, Illegal> {
    let (_, to) = rule(event);
    for &state in from {
        apply(state, event)?;
    }
    Ok(Transition { task_id, from: from.to_vec(), event, to, change, detail })
}

/// [`transition`] from every state the table allows for `event`.
pub fn from_any(task_id: i64, event: Event, change: TaskChange, detail: serde_json::Value) -> Transition {
    let (from, to) = rule(event);
    Transition { task_id, from: from.to_vec(), event, to, change, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (state, event) pair, written out: the row of an event names, for each state in the
    /// order of `TaskState::ALL`, the state it moves to, or `-` where the event is illegal.
    const EXPECTED: &str = "
        event          pending  not_due  skipped  submitting  submitted   retry_wait  deleted  failed       absent  handed_over  not_ready
        Due            -        pending  -        -           -           -           -        -            -       -            -
        Intent         submitting -      -        -           -           submitting  -        -            -       -            -
        Accepted       -        -        -        submitted   -           -           -        -            -       -            -
        Withdrawn      -        -        -        pending     -           -           -        -            -       -            -
        Backoff        -        -        -        retry_wait  retry_wait  -           -        -            -       -            -
        Succeeded      -        -        -        -           deleted     -           -        -            -       -            -
        FoundAbsent    -        -        -        absent      absent      -           -        -            -       -            -
        GiveUp         -        -        -        failed      failed      -           -        -            -       -            -
        DoneElsewhere  skipped  -        -        skipped     -           skipped     -        -            -       -            -
        Refused        failed   -        -        -           -           failed      -        -            -       -            -
        NotReady       not_ready -       -        -           -           not_ready   -        -            -       -            -
        HandOver       -        -        -        handed_over handed_over -           -        handed_over  -       -            -
        AdoptInDoubt   submitting -      -        -           -           submitting  -        -            -       -            -
        AdoptJob       submitted -       -        -           -           submitted   -        -            -       -            -
    ";

    fn expected() -> Vec<(String, Vec<Option<TaskState>>)> {
        let mut lines = EXPECTED.lines().map(str::trim).filter(|l| !l.is_empty());
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().skip(1).collect();
        let states: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(header, states, "the table's columns are TaskState::ALL in order");
        lines
            .map(|l| {
                let mut cells = l.split_whitespace();
                let event = cells.next().unwrap().to_string();
                let row: Vec<Option<TaskState>> =
                    cells.map(|c| if c == "-" { None } else { Some(c.parse().unwrap()) }).collect();
                assert_eq!(row.len(), TaskState::ALL.len(), "row {event}");
                (event, row)
            })
            .collect()
    }

    #[test]
    fn every_state_and_event_pair_is_as_written() {
        let table = expected();
        assert_eq!(table.len(), Event::ALL.len(), "one row per event");
        for ((name, row), event) in table.iter().zip(Event::ALL) {
            assert_eq!(name, &format!("{event:?}"));
            for (state, want) in TaskState::ALL.into_iter().zip(row) {
                let got = apply(state, event).ok().map(|s| s.to);
                assert_eq!(got, *want, "{event:?} in {state}");
            }
        }
    }

    #[test]
    fn final_states_only_leave_by_hand_over() {
        for state in TaskState::ALL.into_iter().filter(|s| s.is_final() && *s != TaskState::NotDue) {
            for event in Event::ALL {
                if let Ok(step) = apply(state, event) {
                    assert_eq!((state, event, step.to), (TaskState::Failed, Event::HandOver, TaskState::HandedOver));
                }
            }
        }
    }

    #[test]
    fn nothing_reaches_a_live_state_without_an_intent_or_an_adoption() {
        for event in Event::ALL {
            let (_, to) = rule(event);
            if TaskState::LIVE.contains(&to) {
                assert!(
                    matches!(event, Event::Intent | Event::Accepted | Event::AdoptInDoubt | Event::AdoptJob),
                    "{event:?} enters {to}"
                );
            }
        }
    }

    #[test]
    fn a_guard_wider_than_the_table_is_refused() {
        let t = transition(7, &[TaskState::Submitted], Event::Succeeded, TaskChange::new(), serde_json::json!({}));
        assert_eq!(t.unwrap().to, TaskState::Deleted);
        let wide = transition(
            7,
            &[TaskState::Submitted, TaskState::Pending],
            Event::Succeeded,
            TaskChange::new(),
            serde_json::json!({}),
        );
        assert_eq!(wide.unwrap_err(), Illegal { state: TaskState::Pending, event: Event::Succeeded });
        let any = from_any(7, Event::Intent, TaskChange::new(), serde_json::json!({}));
        assert_eq!((any.from, any.to), (vec![TaskState::Pending, TaskState::RetryWait], TaskState::Submitting));
    }
}
