//! The estimate of a plan: the API calls and time a run of its pending tasks takes at least.
//! Pure: it reads no clock, database or network.
//!
//! # How it is made
//!
//! [`estimate`] replays the runner's schedule on a virtual clock, with these rules:
//! - every API call takes one slot of the rate (calls are at least `1/rate` apart; burst 1);
//! - the preflight costs one `DescribeClusters` per zone and per 100 of its clusters (counted
//!   in the calls; its few seconds are left out of the time);
//! - one `RunClusterCustomService` per pending task, submitted when fewer than
//!   `max_in_flight` jobs are in flight and the task's cluster has none (one job per cluster);
//! - a job takes `job_duration` (default 6 s: the `add_user` transcript in the API reference
//!   shows a MySQL account custom service finishing about 6 s after it was created);
//! - while nothing can be submitted, the run's own poll scheduler
//!   ([`crate::runner::poll_plan::decide`]) times the next `DescribeJobs` round, knowing the job
//!   duration as a run does from its earlier runs: a round when the first job whose end frees
//!   work (its cluster has more tasks, or ready work waits for a slot) has ended, or, when none
//!   does, one round when all have; a round is one call per zone and per 100 of its jobs, and a
//!   job is seen finished by the first call made at or after its end, which frees its slot and
//!   its cluster;
//! - submissions go first: a round waits until nothing can be submitted (all slots taken, or
//!   every cluster with work left has a job running), so under a tight rate the calls go to new
//!   work; the idle cluster with the most tasks left is submitted first, as the run's queue does.
//!
//! It assumes every job succeeds at the first attempt and no quota error happens: it is the
//! least a run will take, not a promise.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use crate::limiter::Rate;
use crate::manifest::{ClusterId, Task};
use crate::runner::poll_plan::{decide, Durations, JobView, Situation, IDS_PER_CALL};

/// The assumptions of the estimate; `run --dry-run` passes its own options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateInputs {
    pub rate: Rate,
    /// Jobs in flight over all clusters (never more than one per cluster).
    pub max_in_flight: u32,
    pub poll_interval: Duration,
    /// How long one `del_user` job takes.
    pub job_duration: Duration,
}

impl EstimateInputs {
    /// Observed in the API reference's job transcript.
    pub const JOB_DURATION: Duration = Duration::from_secs(6);
}

impl Default for EstimateInputs {
    fn default() -> Self {
        Self {
            rate: Rate::DEFAULT,
            max_in_flight: 20,
            poll_interval: Duration::from_secs(3),
            job_duration: Self::JOB_DURATION,
        }
    }
}

/// API calls and time a run of the pending tasks would take at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    /// `preflight_calls + submit_calls + describe_calls`.
    pub api_calls: u64,
    /// `DescribeClusters` of the preflight: ceil(clusters / 100) per zone.
    pub preflight_calls: u64,
    /// `RunClusterCustomService`: one per pending task.
    pub submit_calls: u64,
    /// `DescribeJobs` polling rounds' calls.
    pub describe_calls: u64,
    /// From the first call until the last job is seen finished.
    pub duration: Duration,
}

/// Cluster ids per preflight `DescribeClusters` call.
pub const PREFLIGHT_BATCH: u64 = 100;

/// A job of the replay, in flight: times on the virtual clock, in microseconds.
struct Flight {
    cluster: usize,
    submitted: u64,
    ends: u64,
    /// Its age at the last round that saw it running (0 if none did).
    seen_running: u64,
}

/// Replay the schedule of the module doc for `tasks` (all of them to be submitted).
pub fn estimate<'a>(tasks: impl IntoIterator<Item = &'a Task>, inputs: &EstimateInputs) -> Estimate {
    // Virtual time in microseconds. Sums saturate: absurd durations (a poll interval of
    // millennia) give an absurd estimate, not an overflow.
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let interval = us(inputs.rate.interval()).max(1);
    let job = us(inputs.job_duration);
    let max_in_flight = inputs.max_in_flight.max(1) as usize;

    // Clusters in first-seen order: (zone, tasks left).
    let mut cluster_ix: HashMap<&ClusterId, usize> = HashMap::new();
    let mut clusters: Vec<(&str, u64)> = Vec::new();
    let mut submit_calls = 0u64;
    for t in tasks {
        let nc = cluster_ix.len();
        let c = *cluster_ix.entry(&t.cluster).or_insert(nc);
        if c == clusters.len() {
            clusters.push((t.zone.as_str(), 0));
        }
        clusters[c].1 += 1;
        submit_calls += 1;
    }
    // Preflight: one DescribeClusters per 100 clusters of a zone, before the first submission.
    let mut per_zone: HashMap<&str, u64> = HashMap::new();
    for &(zone, _) in &clusters {
        *per_zone.entry(zone).or_default() += 1;
    }
    let preflight_calls: u64 = per_zone.values().map(|n| n.div_ceil(PREFLIGHT_BATCH)).sum();

    // Idle clusters with work, the queue's order: most tasks left first, then first come.
    let mut ready: BinaryHeap<(u64, Reverse<u64>, usize)> = BinaryHeap::new();
    let mut seq = 0u64;
    for (c, &(_, left)) in clusters.iter().enumerate() {
        seq += 1;
        ready.push((left, Reverse(seq), c));
    }
    let mut in_flight: BTreeMap<i64, Flight> = BTreeMap::new();
    let mut next_id = 0i64;
    // The scheduler knows the job duration, as a run does from its earlier runs' jobs.
    let mut model = Durations::new(None);
    model.learn(inputs.job_duration, inputs.job_duration);
    let mut describe_calls = 0u64;
    let mut next_call = 0u64; // earliest time the rate allows the next call
                              // The time of the latest call: calls only go later, so the last one ends the estimate.
    let mut now = 0u64;

    while !ready.is_empty() || !in_flight.is_empty() {
        if in_flight.len() < max_in_flight {
            if let Some((_, _, cluster)) = ready.pop() {
                now = next_call;
                next_call = now.saturating_add(interval);
                clusters[cluster].1 -= 1;
                next_id += 1;
                in_flight.insert(
                    next_id,
                    Flight { cluster, submitted: now, ends: now.saturating_add(job), seen_running: 0 },
                );
                continue;
            }
        }
        // Nothing can be submitted: the poll scheduler times the round, as in a run.
        let slots_full = in_flight.len() >= max_in_flight;
        let views: Vec<JobView<'_>> = in_flight
            .iter()
            .map(|(&id, f)| JobView {
                id,
                zone: clusters[f.cluster].0,
                age: Duration::from_micros(now.saturating_sub(f.submitted)),
                lo: Duration::from_micros(f.seen_running),
                unblocks: clusters[f.cluster].1 > 0 || (slots_full && !ready.is_empty()),
            })
            .collect();
        let situation = Situation {
            jobs: &views,
            pipeline: 0,
            rate: inputs.rate.per_second(),
            base: inputs.poll_interval,
            job_timeout: Duration::MAX,
            not_before: Duration::ZERO,
        };
        let decision = decide(&situation, &model).expect("jobs are in flight");
        let start = now.saturating_add(us(decision.delay));
        // One call per zone and per 100 of the round's ids, each taking a slot of the rate.
        let mut by_zone: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for id in &decision.jobs {
            if let Some(f) = in_flight.get(id) {
                by_zone.entry(clusters[f.cluster].0).or_default().push(*id);
            }
        }
        for ids in by_zone.values() {
            for batch in ids.chunks(IDS_PER_CALL) {
                now = start.max(next_call);
                next_call = now.saturating_add(interval);
                describe_calls += 1;
                for id in batch {
                    let Some(f) = in_flight.get_mut(id) else { continue };
                    let age = now.saturating_sub(f.submitted);
                    if f.ends > now {
                        f.seen_running = age;
                        continue;
                    }
                    model.learn(Duration::from_micros(f.seen_running), Duration::from_micros(age));
                    let c = f.cluster;
                    in_flight.remove(id);
                    if clusters[c].1 > 0 {
                        seq += 1;
                        ready.push((clusters[c].1, Reverse(seq), c));
                    }
                }
            }
        }
    }
    Estimate {
        api_calls: preflight_calls + submit_calls + describe_calls,
        preflight_calls,
        submit_calls,
        describe_calls,
        duration: Duration::from_micros(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{inputs, task};

    #[test]
    fn preflight_costs_a_call_per_hundred_clusters_of_a_zone() {
        let mut tasks = Vec::new();
        for i in 0..150 {
            tasks.push(task(&format!("cl-s{i}"), "sh1a", "u1", None));
            tasks.push(task(&format!("cl-s{i}"), "sh1a", "u2", None));
        }
        tasks.push(task("cl-p1", "pek3", "u1", None));
        let e = estimate(&tasks, &inputs());
        assert_eq!(e.preflight_calls, 3, "ceil(150/100) + ceil(1/100)");
        assert_eq!(e.api_calls, e.preflight_calls + e.submit_calls + e.describe_calls);
    }

    #[test]
    fn absurd_durations_saturate_instead_of_overflowing() {
        let huge = Duration::from_secs(u64::MAX / 1000);
        let tasks = [task("cl-a", "sh1a", "u1", None), task("cl-a", "sh1a", "u2", None)];
        let e = estimate(&tasks, &EstimateInputs { poll_interval: huge, job_duration: huge, ..inputs() });
        assert_eq!((e.submit_calls, e.describe_calls), (2, 2));
        assert_eq!(e.duration, Duration::from_micros(u64::MAX));
    }

    #[test]
    fn one_task_is_one_submit_and_one_poll() {
        // Submit at 0 s; one poll at 6 s, when the job has ended.
        let e = estimate(&[task("cl-a", "sh1a", "u1", None)], &inputs());
        assert_eq!((e.submit_calls, e.describe_calls, e.duration), (1, 1, Duration::from_secs(6)));
        assert_eq!(e.preflight_calls, 1, "one cluster: one DescribeClusters");
        assert_eq!(e.api_calls, 3);
    }

    #[test]
    fn two_clusters_run_side_by_side() {
        // Submits at 0 s and 2 s (the rate's 2 s interval). Neither job's end frees work, so one
        // round settles both at 8 s, when the later one has ended.
        let e = estimate(&[task("cl-a", "sh1a", "u1", None), task("cl-b", "sh1a", "u1", None)], &inputs());
        assert_eq!((e.submit_calls, e.describe_calls, e.duration), (2, 1, Duration::from_secs(8)));
    }

    #[test]
    fn submissions_go_before_a_poll() {
        // Submits at 0, 2 and 4 s (a's job ends at 6 s, after them); one round at 10 s.
        let tasks =
            [task("cl-a", "sh1a", "u1", None), task("cl-b", "sh1a", "u1", None), task("cl-c", "sh1a", "u1", None)];
        let e = estimate(&tasks, &inputs());
        assert_eq!((e.submit_calls, e.describe_calls, e.duration), (3, 1, Duration::from_secs(10)));
    }

    #[test]
    fn one_cluster_runs_one_job_at_a_time() {
        // u1: submit 0, seen done at 6 (its end lets u2 go); u2: submit 8 (the rate), done at 14.
        let e = estimate(&[task("cl-a", "sh1a", "u1", None), task("cl-a", "sh1a", "u2", None)], &inputs());
        assert_eq!((e.submit_calls, e.describe_calls, e.duration), (2, 2, Duration::from_secs(14)));
    }

    #[test]
    fn each_zone_is_polled_on_its_own() {
        let fast = EstimateInputs { rate: "100/s".parse().unwrap(), ..inputs() };
        let e = estimate(&[task("cl-a", "sh1a", "u1", None), task("cl-b", "pek3", "u1", None)], &fast);
        // One round when both have ended: a call for each zone.
        assert_eq!(e.describe_calls, 2);
    }

    #[test]
    fn describe_jobs_batches_at_most_100_ids() {
        let fast = EstimateInputs { rate: "1000/s".parse().unwrap(), max_in_flight: 250, ..inputs() };
        let tasks: Vec<Task> = (0..250).map(|i| task(&format!("cl-{i}"), "sh1a", "u1", None)).collect();
        let e = estimate(&tasks, &fast);
        // All 250 are submitted within 0.25 s and end by 6.25 s: one round then, of three calls
        // (100 + 100 + 50 ids).
        assert_eq!((e.submit_calls, e.describe_calls), (250, 3));
    }

    #[test]
    fn the_rate_bounds_a_large_run() {
        let tasks: Vec<Task> =
            (0..1000).map(|i| task(&format!("cl-{}", i % 100), "sh1a", &format!("u{i}"), None)).collect();
        let e = estimate(&tasks, &inputs());
        assert_eq!(e.submit_calls, 1000);
        // Every call costs 2 s at 1800/h, so the run takes at least 2 s per call made.
        assert!(e.duration >= Duration::from_secs(2 * (e.api_calls - 1)), "{e:?}");
        assert!(e.describe_calls > 0);
    }

    #[test]
    fn a_round_settles_about_as_many_jobs_as_are_in_flight() {
        // 100 clusters of 3 accounts at 10/s, 0.5 s jobs, 20 in flight: the rate binds, and a
        // round goes when the slots are taken, so calls come near 1 + 1/20 per account.
        let fast = EstimateInputs {
            rate: "10/s".parse().unwrap(),
            job_duration: Duration::from_millis(500),
            poll_interval: Duration::from_millis(150),
            ..inputs()
        };
        let tasks: Vec<Task> =
            (0..300).map(|i| task(&format!("cl-{}", i % 100), "sh1a", &format!("u{i}"), None)).collect();
        let e = estimate(&tasks, &fast);
        assert_eq!(e.submit_calls, 300);
        assert!((15..=25).contains(&e.describe_calls), "{e:?}");
    }

    #[test]
    fn one_cluster_costs_a_poll_per_account() {
        let tasks: Vec<Task> = (0..10).map(|i| task("cl-a", "sh1a", &format!("u{i}"), None)).collect();
        let e = estimate(&tasks, &inputs());
        assert_eq!((e.submit_calls, e.describe_calls), (10, 10));
    }

    #[test]
    fn nothing_to_do_costs_nothing() {
        assert_eq!(estimate(&[], &inputs()), Estimate::default());
    }
}
