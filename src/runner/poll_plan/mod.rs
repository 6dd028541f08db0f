//! When to poll, and which jobs: the poll scheduler's pure decision. No clock, no I/O; the loop
//! passes in what it knows (jobs in flight with their ages, the durations learned so far, the
//! rate, the work waiting) and gets back a delay and a list of jobs.
//!
//! The account's quota is the resource: every `DescribeJobs` spent is a `del_user` not sent. So
//! a round is only worth a call when it frees something — a cluster with more work waiting on
//! its running job, a slot of `--max-in-flight` while ready work waits for one, or, when no job's
//! end unblocks anything (the end of the run, a stop), the last jobs all at once. The round is
//! timed by when the jobs are *expected* to have ended, learned from what earlier rounds saw:
//! each finished job gives an interval (the age at the last round that listed it running, the
//! age at the round that saw it done) that holds its true duration. While submissions wait for
//! the rate limiter, a round would only queue behind them (the limiter is first come, first
//! served) and miss the jobs they start, so it is asked for when the queue has drained.
//!
//! What it must not do: know about the store, the API or the clock.
//!
//! The durations model is `durations`'s.

mod api_clock;
mod durations;

use std::collections::BTreeMap;
use std::time::Duration;

pub use api_clock::ApiClock;
pub use durations::{narrow, Durations};

/// One job in flight, as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView<'a> {
    pub id: i64,
    pub zone: &'a str,
    /// Time since it was submitted.
    pub age: Duration,
    /// The age at the last round that listed it running (zero if none did).
    pub lo: Duration,
    /// Would its end let a submission go (its cluster has work waiting, or ready work waits
    /// for a slot of `--max-in-flight`)?
    pub unblocks: bool,
}

/// What the loop knows when it asks.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub jobs: &'a [JobView<'a>],
    /// Submissions handed out and not yet answered: they wait for the limiter before a poll.
    pub pipeline: usize,
    /// The limiter's rate, calls per second.
    pub rate: f64,
    /// `--poll-interval`: the step of the probes when nothing is known.
    pub base: Duration,
    /// `--job-timeout`: a job this old is settled by the next round, so it is due by then.
    pub job_timeout: Duration,
    /// No round before this (after rounds whose calls failed).
    pub not_before: Duration,
}

/// The next round: start it after `delay`, with these jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub delay: Duration,
    pub jobs: Vec<i64>,
}

/// How many ids one `DescribeJobs` call carries.
pub const IDS_PER_CALL: usize = crate::qingcloud::client::MAX_JOBS_PER_CALL;

/// Decide the next round. `None` when no job is in flight.
pub fn decide(s: &Situation<'_>, model: &Durations) -> Option<Decision> {
    if s.jobs.is_empty() {
        return None;
    }
    // Time left until each job is expected to have ended.
    let left: Vec<Duration> =
        s.jobs.iter().map(|j| model.expected_end(j.lo, s.base).min(s.job_timeout).saturating_sub(j.age)).collect();
    let unblocking = s.jobs.iter().zip(&left).filter(|(j, _)| j.unblocks).map(|(_, l)| *l).min();
    let mut delay = match unblocking {
        Some(first) => {
            // Worth a call as soon as one job that frees work has ended, but not while
            // submissions queue at the limiter: the round would wait behind them anyway and
            // miss the jobs they start.
            let queued = s.pipeline.saturating_sub(1) as f64;
            let drain = if s.rate > 0.0 { Duration::from_secs_f64(queued / s.rate) } else { Duration::ZERO };
            first.max(drain)
        }
        // Nothing waits on any of them: one round when they all should have ended.
        None => left.iter().copied().max().unwrap_or_default(),
    };
    delay = delay.max(s.not_before);
    // The jobs due by then, and in their zones every other job too while a call has room: an
    // id more in a call costs nothing and tells how far that job has got.
    let slack = Duration::from_millis(1);
    let mut zones: BTreeMap<&str, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
    for (j, l) in s.jobs.iter().zip(&left) {
        let entry = zones.entry(j.zone).or_default();
        if *l <= delay + slack {
            entry.0.push(j.id);
        } else {
            entry.1.push(j.id);
        }
    }
    let mut jobs = Vec::new();
    for (due, rest) in zones.into_values() {
        if due.is_empty() {
            continue;
        }
        let room = due.len().div_ceil(IDS_PER_CALL) * IDS_PER_CALL - due.len();
        jobs.extend(due);
        jobs.extend(rest.into_iter().take(room));
    }
    Some(Decision { delay, jobs })
}

#[cfg(test)]
mod tests {
    use super::durations::margin;
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn after_a_narrowed_first_job_the_next_is_polled_when_it_should_have_ended() {
        // One cluster, 6.5 s jobs, a 3 s poll interval: the first job was probed at 6 s and
        // 12 s; the API's times put its end at most 7.1 s after submission.
        let mut model = Durations::new(None);
        let (lo, hi) = narrow(ms(6000), ms(12_000), Some(ms(6000)));
        model.learn(lo, hi);
        let jobs = [job(2, "sh1a", 0, 0, true)];
        let s = Situation {
            jobs: &jobs,
            pipeline: 0,
            rate: 0.5,
            base: ms(3000),
            job_timeout: ms(600_000),
            not_before: Duration::ZERO,
        };
        let d = decide(&s, &model).unwrap();
        assert!(d.delay < ms(7300) && d.delay >= ms(7100), "{d:?}");
    }

    fn job(id: i64, zone: &'static str, age: u64, lo: u64, unblocks: bool) -> JobView<'static> {
        JobView { id, zone, age: ms(age), lo: ms(lo), unblocks }
    }

    fn situation<'a>(jobs: &'a [JobView<'a>]) -> Situation<'a> {
        Situation {
            jobs,
            pipeline: 0,
            rate: 10.0,
            base: ms(150),
            job_timeout: Duration::from_secs(1800),
            not_before: Duration::ZERO,
        }
    }

    #[test]
    fn no_jobs_no_round() {
        assert_eq!(decide(&situation(&[]), &Durations::new(None)), None);
    }

    #[test]
    fn a_cluster_with_work_waiting_is_polled_when_its_job_should_have_ended() {
        let mut m = Durations::new(None);
        m.learn(ms(300), ms(600));
        let jobs = [job(1, "sh1a", 100, 0, true)];
        let d = decide(&situation(&jobs), &m).unwrap();
        assert_eq!(d.delay, ms(600) + margin(ms(600)) - ms(100));
        assert_eq!(d.jobs, vec![1]);
    }

    #[test]
    fn jobs_whose_end_unblocks_nothing_wait_for_one_last_round() {
        let mut m = Durations::new(None);
        m.learn(ms(300), ms(600));
        let e = ms(600) + margin(ms(600));
        let jobs = [job(1, "sh1a", 500, 0, false), job(2, "sh1a", 100, 0, false), job(3, "pek3", 550, 0, false)];
        let d = decide(&situation(&jobs), &m).unwrap();
        // When the youngest should have ended, every job at once: one call per zone.
        assert_eq!(d.delay, e - ms(100));
        assert_eq!(d.jobs, vec![3, 1, 2]);
    }

    #[test]
    fn the_first_job_that_frees_work_decides_and_its_zone_rides_along() {
        let mut m = Durations::new(None);
        m.learn(ms(300), ms(600));
        let e = ms(600) + margin(ms(600));
        let jobs = [job(1, "sh1a", 100, 0, false), job(2, "sh1a", 400, 0, true), job(3, "pek3", 200, 0, false)];
        let d = decide(&situation(&jobs), &m).unwrap();
        assert_eq!(d.delay, e - ms(400));
        // Job 1 costs nothing more in sh1a's call; pek3 gets no call for a job not yet due.
        assert_eq!(d.jobs, vec![2, 1]);
    }

    #[test]
    fn a_round_waits_until_queued_submissions_have_gone() {
        let mut m = Durations::new(None);
        m.learn(ms(300), ms(600));
        let jobs = [job(1, "sh1a", 900, 0, true), job(2, "sh1a", 800, 0, true)];
        let mut s = situation(&jobs);
        s.pipeline = 6;
        // Five submissions ahead of it at 10/s.
        assert_eq!(decide(&s, &m).unwrap().delay, ms(500));
        s.pipeline = 1;
        assert_eq!(decide(&s, &m).unwrap().delay, Duration::ZERO);
        // Nothing it frees: the queue does not matter.
        let idle = [job(1, "sh1a", 900, 0, false)];
        let mut s = situation(&idle);
        s.pipeline = 6;
        assert_eq!(decide(&s, &m).unwrap().delay, Duration::ZERO);
    }

    #[test]
    fn a_timed_out_job_is_due_and_failed_rounds_hold_the_next_back() {
        let m = Durations::new(None);
        let jobs = [job(1, "sh1a", 2000, 1900, true)];
        let mut s = situation(&jobs);
        s.job_timeout = ms(2000);
        assert_eq!(decide(&s, &m).unwrap().delay, Duration::ZERO);
        s.not_before = ms(300);
        assert_eq!(decide(&s, &m).unwrap().delay, ms(300));
    }

    #[test]
    fn free_riders_only_fill_the_last_call() {
        let mut m = Durations::new(None);
        m.learn(ms(300), ms(600));
        let mut jobs: Vec<JobView<'_>> = (0..150).map(|i| job(i, "sh1a", 700, 0, true)).collect();
        jobs.extend((150..300).map(|i| job(i, "sh1a", 10, 0, true)));
        let d = decide(&situation(&jobs), &m).unwrap();
        assert_eq!(d.delay, Duration::ZERO);
        assert_eq!(d.jobs.len(), 200);
        assert!(d.jobs[..150].iter().all(|&id| id < 150));
    }
}
