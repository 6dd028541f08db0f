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

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How many finished jobs the model remembers (the most recent ones).
const MEMORY: usize = 1000;

/// The share of jobs expected to have ended when their durations vary.
const QUANTILE: f64 = 0.75;

/// Where the first look of a run falls that has only earlier runs' durations to go by, as a
/// share of them.
const PRIOR_FIRST_LOOK: f64 = 0.9;

/// Margin on an expected end learned from jobs of one fixed duration: measurement jitter (the
/// ages are taken on this side of the network) should not make a round come a moment early.
fn margin(d: Duration) -> Duration {
    d / 50 + Duration::from_millis(5)
}

/// What one finished job showed of its duration: it was still running at age `lo` and had
/// ended at age `hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    lo: Duration,
    hi: Duration,
}

/// The job durations learned in this run, or from earlier runs until this one has its own.
#[derive(Debug, Clone, Default)]
pub struct Durations {
    samples: VecDeque<Sample>,
    /// The samples' `hi`, sorted: the loop asks for every job in flight on every turn, so the
    /// order is kept as samples come and go rather than made per question.
    his: Vec<Duration>,
    /// The largest `lo` of the samples.
    max_lo: Duration,
    prior: Option<Duration>,
}

impl Durations {
    /// A model with an optional prior: how long jobs of this account took in earlier runs.
    pub fn new(prior: Option<Duration>) -> Self {
        Self { prior: prior.filter(|p| !p.is_zero()), ..Self::default() }
    }

    /// A job was listed running at age `lo` (zero if never) and seen ended at age `hi`.
    pub fn learn(&mut self, lo: Duration, hi: Duration) {
        if self.samples.len() == MEMORY {
            if let Some(old) = self.samples.pop_front() {
                if let Ok(i) = self.his.binary_search(&old.hi) {
                    self.his.remove(i);
                }
                if old.lo == self.max_lo {
                    self.max_lo = self.samples.iter().map(|s| s.lo).max().unwrap_or_default();
                }
            }
        }
        let sample = Sample { lo: lo.min(hi), hi };
        self.samples.push_back(sample);
        let at = self.his.partition_point(|h| *h <= hi);
        self.his.insert(at, hi);
        self.max_lo = self.max_lo.max(sample.lo);
    }

    /// How many finished jobs this run has learned from.
    pub fn learned(&self) -> usize {
        self.samples.len()
    }

    /// The age at which a job known to be running at age `lo` is expected to have ended. With
    /// nothing to go on (or a job running longer than every job seen) it is a probe: the first
    /// of `base` · 2, 4, 8, … past `lo`, so a run with no history still reacts quickly.
    pub fn expected_end(&self, lo: Duration, base: Duration) -> Duration {
        if self.samples.is_empty() {
            return match self.prior {
                // Earlier runs measured their jobs from submission to the round that saw them
                // done, a little over the truth: look a little early first, so the estimate
                // does not creep up from run to run.
                Some(p) if lo < p.mul_f64(PRIOR_FIRST_LOOK) => p.mul_f64(PRIOR_FIRST_LOOK),
                Some(p) if lo < p => p + margin(p),
                _ => probe(lo, base),
            };
        }
        // The jobs that ran longer than this one has.
        let later = &self.his[self.his.partition_point(|h| *h <= lo)..];
        let Some(&first) = later.first() else { return probe(lo, base) };
        if self.max_lo < first {
            // Every interval overlaps: the jobs take one duration, at most the shortest `hi`.
            return first + margin(first);
        }
        // Durations vary: when most jobs that ran this long had ended.
        let rank = ((later.len() as f64) * QUANTILE).ceil() as usize;
        later[rank.clamp(1, later.len()) - 1]
    }
}

/// How far past its `create_time` the API may have made a job, as ages go here: an age is
/// counted from when the request was sent, and the job is created once it has arrived.
const CREATE_SLACK: Duration = Duration::from_millis(100);

/// Narrow what a finished job showed of its duration (running at age `lo`, ended by age `hi`)
/// by what the API said of it: `took`, its `status_time` less its `create_time`, is in whole
/// seconds, so the job ran less than a second more or less than that. A probe that overshot
/// (2, 4, 8 × the poll interval) then does not set the pace for the rest of the run. An answer
/// that contradicts what was seen (ended before it was seen running) is ignored.
pub fn narrow(lo: Duration, hi: Duration, took: Option<Duration>) -> (Duration, Duration) {
    let Some(took) = took else { return (lo, hi) };
    let second = Duration::from_secs(1);
    let lo2 = lo.max(took.saturating_sub(second));
    let hi2 = hi.min(took + second + CREATE_SLACK);
    if lo2 > hi2 {
        return (lo, hi);
    }
    (lo2, hi2)
}

/// The first of `base` · 2^k (k ≥ 1) past `lo`, capped at `lo` + 60 s.
fn probe(lo: Duration, base: Duration) -> Duration {
    let base = base.max(Duration::from_millis(1));
    let mut at = base * 2;
    while at <= lo {
        at = at.saturating_mul(2);
    }
    at.min(lo + Duration::from_secs(60))
}

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
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_apis_times_narrow_an_overshooting_probe() {
        // Probed at 6 s (running) and 12 s (done); the API says it took 6 s (whole seconds).
        assert_eq!(narrow(ms(6000), ms(12_000), Some(ms(6000))), (ms(6000), ms(7100)));
        // A job never seen running: the API's second below counts as seen.
        assert_eq!(narrow(ms(0), ms(12_000), Some(ms(9000))), (ms(8000), ms(10_100)));
        // Nothing said, or nothing to add.
        assert_eq!(narrow(ms(300), ms(600), None), (ms(300), ms(600)));
        assert_eq!(narrow(ms(300), ms(600), Some(ms(0))), (ms(300), ms(600)));
        // Seen running past what the API says it took: the API's word is set aside.
        assert_eq!(narrow(ms(9000), ms(12_000), Some(ms(6000))), (ms(9000), ms(12_000)));
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
    fn nothing_known_probes_at_doubling_steps_of_the_base() {
        let m = Durations::new(None);
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), ms(300));
        assert_eq!(m.expected_end(ms(300), ms(150)), ms(600));
        assert_eq!(m.expected_end(ms(650), ms(150)), ms(1200));
        // Long jobs: at most a minute between probes.
        assert_eq!(m.expected_end(Duration::from_secs(1000), ms(150)), Duration::from_secs(1060));
    }

    #[test]
    fn one_fixed_duration_is_expected_at_the_shortest_end_seen() {
        let mut m = Durations::new(None);
        m.learn(ms(300), ms(600));
        m.learn(ms(0), ms(612));
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), ms(600) + margin(ms(600)));
        // A job seen running at 605 ms: only the job that ended later tells about it.
        assert_eq!(m.expected_end(ms(605), ms(150)), ms(612) + margin(ms(612)));
        // Running longer than every job seen: probe on.
        assert_eq!(m.expected_end(ms(700), ms(150)), ms(1200));
    }

    #[test]
    fn varying_durations_are_expected_at_the_quantile() {
        let mut m = Durations::new(None);
        for hi in [500, 900, 1300, 1700] {
            // Each seen running at 450 ms: the intervals do not all overlap.
            m.learn(ms(hi - 100), ms(hi));
        }
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), ms(1300));
        assert_eq!(m.expected_end(ms(1000), ms(150)), ms(1700));
    }

    #[test]
    fn the_prior_serves_until_the_run_has_its_own() {
        let mut m = Durations::new(Some(Duration::from_secs(10)));
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), Duration::from_secs(9));
        assert_eq!(
            m.expected_end(Duration::from_secs(9), ms(150)),
            Duration::from_secs(10) + margin(Duration::from_secs(10))
        );
        assert_eq!(m.expected_end(Duration::from_secs(10), ms(150)), ms(19_200));
        m.learn(ms(300), ms(600));
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), ms(600) + margin(ms(600)));
        assert_eq!(Durations::new(Some(Duration::ZERO)).expected_end(Duration::ZERO, ms(150)), ms(300));
    }

    #[test]
    fn memory_is_bounded_to_the_latest_jobs() {
        let mut m = Durations::new(None);
        m.learn(ms(0), ms(100));
        for _ in 0..MEMORY {
            m.learn(ms(400), ms(500));
        }
        assert_eq!(m.learned(), MEMORY);
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), ms(500) + margin(ms(500)));
        // A forgotten job seen running long ago no longer makes the durations look varied.
        let mut m = Durations::new(None);
        m.learn(ms(900), ms(1000));
        for _ in 0..MEMORY {
            m.learn(ms(100), ms(500));
        }
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), ms(500) + margin(ms(500)));
        assert_eq!(m.expected_end(ms(600), ms(150)), ms(1200));
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
