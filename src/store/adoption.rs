//! What both backends decide alike about an account across runs, from rows they have read:
//! where each account stands ([`standings`]), which transitions prepare a run (`skipped` for an
//! account done elsewhere, adoption of another run's live attempt: [`plan`]), what the last
//! check refuses ([`refusal`]), and the median job duration ([`median`]). Pure: the SQL that
//! reads the rows and applies the transitions is each backend's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{AccountKey, Refusal, Standing, StoreError, TaskChange, TaskRow, TaskState, Transition};
use crate::runner::state::{self, Event};

/// Is this row a live attempt: a request may exist that nobody has seen the end of?
fn is_live(t: &TaskRow) -> bool {
    TaskState::LIVE.contains(&t.state) || (t.state == TaskState::Failed && t.unresolved.is_some())
}

/// Fold (account, run, state) rows of done or live tasks, oldest first, into standings: an
/// account done anywhere is `Done`, whatever else holds it.
pub(crate) fn standings(rows: impl IntoIterator<Item = (AccountKey, i64, TaskState)>) -> HashMap<AccountKey, Standing> {
    let mut out: HashMap<AccountKey, Standing> = HashMap::new();
    for (key, run_id, state) in rows {
        let standing = if state.is_done() { Standing::Done { run_id } } else { Standing::InFlight { run_id } };
        match out.get(&key) {
            Some(Standing::Done { .. }) => {}
            _ => {
                out.insert(key, standing);
            }
        }
    }
    out
}

/// The jobs slots taken, per (cluster, zone): tasks `submitting` or `submitted`, in any run.
pub(crate) type Occupied = HashMap<(String, String), usize>;

/// [`Occupied`] from `SLOTS_SQL`'s rows.
pub(crate) fn occupied(slots: Vec<(String, String, i64)>) -> Occupied {
    slots.into_iter().map(|(c, z, n)| ((c, z), usize::try_from(n).unwrap_or(0))).collect()
}

/// One account's adoption: its transitions (the other runs' attempts handed over, then this
/// run's task taking the newest) apply together or not at all.
#[derive(Debug)]
pub(crate) struct Adoption {
    pub mine: i64,
    pub from_run: i64,
    pub transitions: Vec<Transition>,
}

/// How run `run_id` is prepared: the tasks done elsewhere to skip (each on its own), and the
/// adoptions (each all or nothing).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub skips: Vec<Transition>,
    pub adoptions: Vec<Adoption>,
}

/// The plan that prepares run `run_id`, from `found`: per open task of the run (`mine`), the
/// tasks of other runs at its account that are done or live, oldest first. Tasks of runs not in
/// `others` are ignored. `occupied` counts the job slots taken per cluster before the plan:
/// an adoption takes its cluster's slot (one job per cluster holds for adopted attempts too), so
/// an adoption on a cluster whose slot another task holds, or an earlier adoption of this plan
/// took, waits: its task is `deferred`, and adopted when the run hands it out
/// (`adopt_deferred`), after the cluster's job has ended.
pub(crate) fn plan(
    run_id: i64,
    others: &HashSet<i64>,
    found: impl IntoIterator<Item = (i64, TaskRow)>,
    mut occupied: Occupied,
) -> Result<(Plan, Vec<i64>), StoreError> {
    let mut by_mine: BTreeMap<i64, Vec<TaskRow>> = BTreeMap::new();
    for (mine, other) in found {
        if others.contains(&other.run_id) {
            by_mine.entry(mine).or_default().push(other);
        }
    }
    let mut plan = Plan::default();
    let mut deferred = Vec::new();
    for (mine, found) in by_mine {
        let open = [TaskState::Pending, TaskState::RetryWait];
        if let Some(done) = found.iter().find(|o| o.state.is_done()) {
            plan.skips.push(state::transition(
                mine,
                &open,
                Event::DoneElsewhere,
                TaskChange::new().message(format!("already done by run {}", done.run_id)),
                json!({ "reason": "done by another run", "by_run": done.run_id, "by_task": done.id }),
            )?);
            continue;
        }
        // The newest live attempt is adopted; older live ones (a database written before this
        // rule existed) are handed over too, their jobs known to the adopting task.
        let found: Vec<&TaskRow> = found.iter().filter(|o| is_live(o)).collect();
        let Some(newest) = found.iter().copied().max_by_key(|o| (o.intent_at, o.id)) else { continue };
        // The slots the handed-over attempts free, and the one the adoption takes.
        let slot = (newest.cluster.clone(), newest.zone.clone());
        let freed = found
            .iter()
            .filter(|o| TaskState::LIVE.contains(&o.state) && (&o.cluster, &o.zone) == (&slot.0, &slot.1))
            .count();
        let taken = occupied.get(&slot).copied().unwrap_or(0);
        if taken > freed {
            deferred.push(mine);
            continue;
        }
        occupied.insert(slot, taken - freed + 1);
        let mut transitions = Vec::with_capacity(found.len() + 1);
        for o in &found {
            transitions.push(state::from_any(
                o.id,
                Event::HandOver,
                TaskChange::new().message(format!("handed over to run {run_id}")),
                json!({ "reason": "adopted by a later run", "to_run": run_id, "to_task": mine }),
            ));
        }
        let mut change = TaskChange::new().attempts(newest.attempts).adopted_from(newest.id);
        if let Some(t) = newest.intent_at {
            change = change.intent_at(t);
        }
        if let Some(j) = &newest.job_id {
            change = change.job_id(j.clone());
        }
        if let Some(t) = newest.submitted_at {
            change = change.submitted_at(t);
        }
        // A failed attempt whose job may still take effect is followed again (`job`) or
        // reconciled again (`in_doubt`); a live one continues as it was.
        let adopt = match (newest.state, newest.unresolved.as_deref()) {
            (TaskState::Failed, Some("job")) if newest.job_id.is_some() => Event::AdoptJob,
            (TaskState::Failed | TaskState::Submitting, _) => Event::AdoptInDoubt,
            _ => Event::AdoptJob,
        };
        if adopt == Event::AdoptInDoubt && newest.state == TaskState::Failed {
            // The stale job id of an earlier attempt must not be followed as this one's.
            change.job_id = None;
            change.submitted_at = None;
        }
        transitions.push(state::transition(
            mine,
            &open,
            adopt,
            change,
            json!({
                "reason": "adopted the live attempt of an earlier run",
                "from_run": newest.run_id,
                "from_task": newest.id,
                "handed_over": found.iter().map(|o| o.id).collect::<Vec<_>>(),
            }),
        )?);
        plan.adoptions.push(Adoption { mine, from_run: newest.run_id, transitions });
    }
    Ok((plan, deferred))
}

/// The last check's verdict on another run's task at the account (the done one first, else the
/// oldest live one), if any.
pub(crate) fn refusal(other: Option<(i64, TaskState)>) -> Result<(), Refusal> {
    match other {
        None => Ok(()),
        Some((run_id, state)) if state.is_done() => Err(Refusal::DoneElsewhere { run_id }),
        Some((run_id, _)) => Err(Refusal::InFlightElsewhere { run_id }),
    }
}

/// The median of the (submitted, finished) durations, `None` without any.
pub(crate) fn median(rows: Vec<(DateTime<Utc>, DateTime<Utc>)>) -> Option<Duration> {
    let mut took: Vec<Duration> = rows.into_iter().filter_map(|(from, to)| (to - from).to_std().ok()).collect();
    if took.is_empty() {
        return None;
    }
    took.sort_unstable();
    Some(took[took.len() / 2])
}
