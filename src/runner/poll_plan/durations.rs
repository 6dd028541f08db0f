//! The job durations the poll scheduler learns as a run goes (and from earlier runs until this
//! one has its own), and when a job is therefore expected to have ended. Each finished job gives
//! an interval (the age at the last round that listed it running, the age at the round that saw
//! it done) that holds its true duration, narrowed by the API's own times where it gives them.
//!
//! What it must not do: know about the store, the API or the clock; decide rounds (`poll_plan`).

use std::collections::VecDeque;
use std::time::Duration;

/// How many finished jobs the model remembers (the most recent ones).
const MEMORY: usize = 1000;

/// The share of jobs expected to have ended when their durations vary.
const QUANTILE: f64 = 0.75;

/// Margin on an expected end learned from jobs of one fixed duration: measurement jitter (the
/// ages are taken on this side of the network) should not make a round come a moment early.
pub(super) fn margin(d: Duration) -> Duration {
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
                // done: the truth, plus the margin that round was given and the time its
                // outcome took to be written. Look first one margin under that, so the
                // estimate does not grow by a margin from run to run; then one over it.
                Some(p) if lo < p.saturating_sub(margin(p)) => p.saturating_sub(margin(p)),
                Some(p) if lo < p + margin(p) => p + margin(p),
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
        let p = Duration::from_secs(10);
        let mut m = Durations::new(Some(p));
        // Just under what earlier runs measured (those figures hold their own margin), then
        // just over it.
        assert_eq!(m.expected_end(Duration::ZERO, ms(150)), p - margin(p));
        assert_eq!(m.expected_end(p - margin(p), ms(150)), p + margin(p));
        assert_eq!(m.expected_end(p + margin(p), ms(150)), ms(19_200));
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
}
