//! The runner's small pure decisions: how long to back off before a retry, how long to wait
//! between `DescribeJobs` rounds, and when `--max-fail` stops a run. No clock and no I/O;
//! randomness is passed in.

use std::time::Duration;

use rand::Rng;

/// Base of the exponential backoff between attempts (SPEC §4).
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Cap of the exponential backoff between attempts (SPEC §4).
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Exponential backoff with full jitter: a uniform draw from `[0, min(cap, base · 2^(n-1))]`,
/// where `failures` (≥ 1) counts the failed attempts so far and `base` is `--retry-base`
/// ([`BACKOFF_BASE`] unless given).
pub fn backoff(base: Duration, failures: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = backoff_ceiling(base, failures);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// The upper bound of [`backoff`] after `failures` failed attempts.
pub fn backoff_ceiling(base: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
}

/// The wait before the next `DescribeJobs` round after rounds whose calls failed: `base`,
/// growing by half each further failed round, up to ten times `base` (at most 60 s, but never
/// below `base`). A failing endpoint is not hammered; the first answer ends the wait.
pub fn next_poll_delay(base: Duration, failed_rounds: u32) -> Duration {
    let cap = base.saturating_mul(10).min(Duration::from_secs(60)).max(base);
    let factor = 1.5f64.powi(i32::try_from(failed_rounds.min(32)).unwrap_or(32));
    Duration::from_secs_f64((base.as_secs_f64() * factor).min(cap.as_secs_f64()))
}

/// `--max-fail`: an absolute count or a percentage of the run's tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFail {
    Count(u64),
    Percent(f64),
}

impl std::str::FromStr for MaxFail {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("{s:?} is not N or N%"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?}: a percentage must be between 0 and 100"));
            }
            Ok(MaxFail::Percent(v))
        } else {
            s.trim().parse().map(MaxFail::Count).map_err(|_| format!("{s:?} is not N or N%"))
        }
    }
}

impl MaxFail {
    /// Has this many failures out of `total` tasks reached the brake?
    pub fn reached(self, failed: u64, total: u64) -> bool {
        match self {
            MaxFail::Count(n) => failed >= n,
            MaxFail::Percent(p) => total > 0 && (failed as f64) * 100.0 >= p * (total as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_ceiling_doubles_to_the_cap() {
        assert_eq!(backoff_ceiling(BACKOFF_BASE, 1), Duration::from_secs(2));
        assert_eq!(backoff_ceiling(BACKOFF_BASE, 2), Duration::from_secs(4));
        assert_eq!(backoff_ceiling(BACKOFF_BASE, 5), Duration::from_secs(32));
        assert_eq!(backoff_ceiling(BACKOFF_BASE, 9), Duration::from_secs(300));
        assert_eq!(backoff_ceiling(BACKOFF_BASE, u32::MAX), Duration::from_secs(300));
        // `--retry-base 100ms`: the same doubling from a smaller base, under the same cap.
        assert_eq!(backoff_ceiling(Duration::from_millis(100), 3), Duration::from_millis(400));
        assert_eq!(backoff_ceiling(Duration::from_millis(100), 30), Duration::from_secs(300));
    }

    #[test]
    fn backoff_is_jittered_within_the_ceiling() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..200).map(|_| backoff(BACKOFF_BASE, 3, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(8)));
        // Full jitter spreads over the whole range, not around one value.
        assert!(draws.iter().any(|d| *d < Duration::from_secs(2)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(6)));
    }

    #[test]
    fn poll_delay_backs_off_while_rounds_fail() {
        let base = Duration::from_secs(3);
        assert_eq!(next_poll_delay(base, 0), base);
        assert_eq!(next_poll_delay(base, 1), Duration::from_millis(4500));
        assert_eq!(next_poll_delay(base, 50), Duration::from_secs(30));
        assert_eq!(next_poll_delay(Duration::from_secs(20), 9), Duration::from_secs(60));
        assert_eq!(next_poll_delay(Duration::from_secs(90), 3), Duration::from_secs(90));
    }
}
