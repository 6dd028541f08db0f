//! The plan: what a run of a set of manifests would do, without doing it. Pure: the set of
//! manifests, "today" (UTC) and what is already done come in as arguments; nothing here reads
//! the clock, the database or the network.
//!
//! Each task is `pending`, `not_due` (its `not_before` is after today) or `skipped` (already
//! done, as told by the `is_done` seam, which the database answers once it exists). The plan
//! carries the [`estimate`] of what its pending tasks cost; [`file`] is its serialization (the
//! plan file an approver signs, [`approval`]).

pub mod approval;
pub mod estimate;
pub mod file;

pub use estimate::{estimate, Estimate, EstimateInputs, PREFLIGHT_BATCH};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::manifest::{ClusterId, ManifestSet, Task, TaskKey, Zone};

/// What a run would do with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    /// Would be submitted.
    Pending,
    /// `not_before` is after today.
    NotDue,
    /// Already done by an earlier run.
    Skipped,
}

impl PlanState {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanState::Pending => "pending",
            PlanState::NotDue => "not_due",
            PlanState::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTask {
    pub task: Task,
    pub state: PlanState,
    /// A pending task whose account has a live attempt in this earlier run: the run adopts that
    /// attempt (reconciles or follows it) instead of sending `del_user` again.
    pub in_flight_run: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanManifest {
    pub path: String,
    pub sha256: String,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub due_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub today: NaiveDate,
    pub manifests: Vec<PlanManifest>,
    pub tasks: Vec<PlannedTask>,
    pub warnings: Vec<String>,
    pub inputs: EstimateInputs,
    pub estimate: Estimate,
}

/// Expand a set of manifests into a plan. `is_done` says whether a task was already done by
/// an earlier run; such a task is `skipped` whatever its dates.
pub fn build(set: &ManifestSet, today: NaiveDate, is_done: impl Fn(&TaskKey) -> bool, inputs: &EstimateInputs) -> Plan {
    let tasks: Vec<PlannedTask> = set
        .tasks
        .iter()
        .map(|t| {
            let state = if is_done(&t.key()) {
                PlanState::Skipped
            } else if t.is_not_due(today) {
                PlanState::NotDue
            } else {
                PlanState::Pending
            };
            PlannedTask { task: t.clone(), state, in_flight_run: None }
        })
        .collect();
    let estimate = estimate(tasks.iter().filter(|p| p.state == PlanState::Pending).map(|p| &p.task), inputs);
    let manifests = set
        .files
        .iter()
        .map(|f| PlanManifest {
            path: f.path.display().to_string(),
            sha256: f.sha256.clone(),
            ticket: f.ticket.clone(),
            requested_by: f.requested_by.clone(),
            reason: f.reason.clone(),
            due_by: f.due_by,
        })
        .collect();
    Plan { today, manifests, tasks, warnings: set.warnings.clone(), inputs: *inputs, estimate }
}

impl Plan {
    /// Mark the pending tasks whose account has a live attempt in another run (`in_flight`
    /// answers with that run's id).
    pub fn mark_in_flight(&mut self, in_flight: impl Fn(&TaskKey) -> Option<i64>) {
        for p in &mut self.tasks {
            if p.state == PlanState::Pending {
                p.in_flight_run = in_flight(&p.task.key());
            }
        }
    }
}

impl Plan {
    pub fn count(&self, state: PlanState) -> usize {
        self.tasks.iter().filter(|t| t.state == state).count()
    }

    /// The plan as a stable JSON document (pretty-printed, fields in a fixed order).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Doc<'a> {
            today: NaiveDate,
            manifests: Vec<Manifest<'a>>,
            rate: String,
            counts: Counts,
            tasks: Vec<TaskDoc<'a>>,
            warnings: &'a [String],
            estimate: EstimateDoc,
        }
        #[derive(Serialize)]
        struct Manifest<'a> {
            path: &'a str,
            sha256: &'a str,
            ticket: Option<&'a str>,
            requested_by: Option<&'a str>,
            reason: Option<&'a str>,
            due_by: Option<DateTime<Utc>>,
        }
        #[derive(Serialize)]
        struct Counts {
            total: usize,
            pending: usize,
            not_due: usize,
            skipped: usize,
        }
        #[derive(Serialize)]
        struct TaskDoc<'a> {
            cluster: &'a str,
            zone: &'a str,
            user: &'a str,
            host: &'a str,
            state: PlanState,
            not_before: Option<NaiveDate>,
            due_by: Option<DateTime<Utc>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            in_flight_run: Option<i64>,
        }
        #[derive(Serialize)]
        struct EstimateDoc {
            api_calls: u64,
            preflight_calls: u64,
            submit_calls: u64,
            describe_calls: u64,
            duration_s: u64,
            max_in_flight: u32,
            poll_interval_s: f64,
            job_duration_s: f64,
        }
        let doc = Doc {
            today: self.today,
            manifests: self
                .manifests
                .iter()
                .map(|m| Manifest {
                    path: &m.path,
                    sha256: &m.sha256,
                    ticket: m.ticket.as_deref(),
                    requested_by: m.requested_by.as_deref(),
                    reason: m.reason.as_deref(),
                    due_by: m.due_by,
                })
                .collect(),
            rate: self.inputs.rate.to_string(),
            counts: Counts {
                total: self.tasks.len(),
                pending: self.count(PlanState::Pending),
                not_due: self.count(PlanState::NotDue),
                skipped: self.count(PlanState::Skipped),
            },
            tasks: self
                .tasks
                .iter()
                .map(|p| TaskDoc {
                    cluster: p.task.cluster.as_str(),
                    zone: p.task.zone.as_str(),
                    user: p.task.user.as_str(),
                    host: p.task.host.as_str(),
                    state: p.state,
                    not_before: p.task.not_before,
                    due_by: p.task.due_by,
                    in_flight_run: p.in_flight_run,
                })
                .collect(),
            warnings: &self.warnings,
            estimate: EstimateDoc {
                api_calls: self.estimate.api_calls,
                preflight_calls: self.estimate.preflight_calls,
                submit_calls: self.estimate.submit_calls,
                describe_calls: self.estimate.describe_calls,
                duration_s: duration_s(self.estimate.duration),
                max_in_flight: self.inputs.max_in_flight,
                poll_interval_s: self.inputs.poll_interval.as_secs_f64(),
                job_duration_s: self.inputs.job_duration.as_secs_f64(),
            },
        };
        // Structs of strings, integers, floats and dates with string keys: serde_json cannot
        // fail on them (a non-finite float is written as null).
        serde_json::to_string_pretty(&doc).expect("plain data always serializes")
    }

    /// The plan for people: tasks grouped by zone and cluster, then counts and the estimate.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let n = self.manifests.len();
        let _ = writeln!(out, "Plan for {n} manifest{} (today is {} UTC)", if n == 1 { "" } else { "s" }, self.today);
        for m in &self.manifests {
            let mut line = format!("  {}  sha256 {}", m.path, &m.sha256[..m.sha256.len().min(12)]);
            if let Some(t) = &m.ticket {
                let _ = write!(line, "  ticket {t}");
            }
            if let Some(r) = &m.requested_by {
                let _ = write!(line, "  requested by {r}");
            }
            let _ = writeln!(out, "{line}");
        }
        let mut groups: BTreeMap<&Zone, BTreeMap<&ClusterId, Vec<&PlannedTask>>> = BTreeMap::new();
        for p in &self.tasks {
            groups.entry(&p.task.zone).or_default().entry(&p.task.cluster).or_default().push(p);
        }
        let width = self.tasks.iter().map(|p| p.task.user.as_str().len() + 1 + p.task.host.as_str().len()).max();
        let width = width.unwrap_or(0).min(48);
        for (zone, clusters) in &groups {
            let _ = writeln!(out, "\nzone {zone}");
            for (cluster, tasks) in clusters {
                let _ = writeln!(out, "  {cluster}");
                for p in tasks {
                    let account = format!("{}@{}", p.task.user, p.task.host);
                    let mut state = match p.state {
                        PlanState::Pending => match p.in_flight_run {
                            Some(run) => format!("pending (in flight in run {run}: adopted, not sent again)"),
                            None => "pending".to_owned(),
                        },
                        PlanState::Skipped => "skipped (already done)".to_owned(),
                        PlanState::NotDue => {
                            format!("not due until {}", p.task.not_before.map(|d| d.to_string()).unwrap_or_default())
                        }
                    };
                    if let (Some(due), PlanState::Pending | PlanState::NotDue) = (p.task.due_by, p.state) {
                        let _ = write!(state, ", due by {}", due.format("%Y-%m-%dT%H:%M:%SZ"));
                    }
                    let _ = writeln!(out, "    {account:<width$}  {state}");
                }
            }
        }
        let _ = writeln!(
            out,
            "\n{} task{}: {} pending, {} not due, {} skipped",
            self.tasks.len(),
            if self.tasks.len() == 1 { "" } else { "s" },
            self.count(PlanState::Pending),
            self.count(PlanState::NotDue),
            self.count(PlanState::Skipped),
        );
        let e = &self.estimate;
        let _ = writeln!(
            out,
            "Estimate at {}: {} API calls ({} DescribeClusters preflight, {} RunClusterCustomService, {} DescribeJobs), \
             at least {}",
            self.inputs.rate,
            e.api_calls,
            e.preflight_calls,
            e.submit_calls,
            e.describe_calls,
            humantime::format_duration(Duration::from_secs(duration_s(e.duration))),
        );
        let _ = writeln!(
            out,
            "  assuming at most {} jobs in flight (one per cluster), {} per job, each polled when it should have ended",
            self.inputs.max_in_flight,
            humantime::format_duration(self.inputs.job_duration),
        );
        out
    }
}

/// Whole seconds, rounded up.
fn duration_s(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::{HostSpec, UserName};

    pub(crate) fn task(cluster: &str, zone: &str, user: &str, not_before: Option<&str>) -> Task {
        Task {
            cluster: ClusterId::parse(cluster).unwrap(),
            zone: Zone::parse(zone).unwrap(),
            user: UserName::parse(user).unwrap(),
            host: HostSpec::parse("%").unwrap(),
            not_before: not_before.map(|d| d.parse().unwrap()),
            due_by: None,
            account: None,
        }
    }

    pub(crate) fn inputs() -> EstimateInputs {
        EstimateInputs::default()
    }

    #[test]
    fn states_follow_done_then_dates() {
        let set = ManifestSet {
            files: Vec::new(),
            tasks: vec![
                task("cl-a", "sh1a", "u1", None),
                task("cl-a", "sh1a", "u2", Some("2026-12-01")),
                task("cl-a", "sh1a", "u3", Some("2026-11-30")),
                task("cl-a", "sh1a", "u4", Some("2026-12-01")),
            ],
            warnings: Vec::new(),
            selectors: Vec::new(),
        };
        let today: NaiveDate = "2026-11-30".parse().unwrap();
        let plan = build(&set, today, |k| k.user.as_str() == "u4", &inputs());
        let states: Vec<_> = plan.tasks.iter().map(|p| p.state).collect();
        assert_eq!(states, [PlanState::Pending, PlanState::NotDue, PlanState::Pending, PlanState::Skipped]);
        assert_eq!(plan.estimate.submit_calls, 2);
        let json: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
        assert_eq!(json["tasks"][1]["state"], "not_due");
        assert_eq!(json["counts"]["skipped"], 1);
        assert_eq!(json["estimate"]["api_calls"], plan.estimate.api_calls);
        assert!(plan.to_human().contains("u2@%  not due until 2026-12-01"));
    }
}
