//! The API rate: parsing `--rate` (`N/s`, `N/m`, `N/h`), and the one limiter every API call
//! passes, `DescribeJobs` included.
//!
//! The limiter is a GCRA (governor) at the *effective* rate, wrapped so the rate can change at
//! run time, which governor itself cannot do: on ret_code 2500 (quota exceeded) the effective
//! rate is halved and calls pause for a while; afterwards it climbs back toward the ceiling in
//! small steps (AIMD). The arithmetic lives in [`Aimd`], a pure type with unit tests; [`Limiter`]
//! only adds the clock and the governor instance.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// A ceiling of `count` calls per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// The product default against the real API: 1800 calls per hour, below the documented
    /// quota of 2000 per hour so that other tools sharing the key keep some room.
    pub const DEFAULT: Rate = Rate { count: 1800, period: Duration::from_secs(3600) };
    /// The default against the simulator (`--simulate`).
    pub const SIMULATE: Rate = Rate { count: 50, period: Duration::from_secs(1) };

    /// Calls per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.period.as_secs_f64()
    }

    /// The time between two calls at this rate. A count of 0 (which parsing refuses) is read
    /// as 1 rather than dividing by zero.
    pub fn interval(&self) -> Duration {
        self.period / self.count.max(1)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a rate; write N/s, N/m or N/h (for example 1800/h)");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("{s:?}: the rate must be at least 1 call per period"));
        }
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

/// Additive-increase / multiplicative-decrease of the effective rate (calls per second).
///
/// * A throttle (2500) halves the rate, down to a floor of 1/32 of the ceiling, and asks callers
///   to pause: 2 s after the first throttle, doubling with each throttle in a row, at most 5 min.
///   Throttles answering requests sent before the last decrease are ignored, since they say
///   nothing about the new rate (many calls may be in flight when the quota runs out).
/// * After [`Aimd::increase_every`] without a throttle, the rate grows by a tenth of the ceiling,
///   never above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    ceiling: f64,
    current: f64,
    consecutive: u32,
    last_decrease: Option<Instant>,
    last_change: Option<Instant>,
    paused_until: Option<Instant>,
}

impl Aimd {
    pub const PAUSE_BASE: Duration = Duration::from_secs(2);
    pub const PAUSE_CAP: Duration = Duration::from_secs(300);

    pub fn new(ceiling: Rate) -> Self {
        let c = ceiling.per_second();
        Self { ceiling: c, current: c, consecutive: 0, last_decrease: None, last_change: None, paused_until: None }
    }

    pub fn ceiling(&self) -> f64 {
        self.ceiling
    }

    /// The effective rate in calls per second.
    pub fn current(&self) -> f64 {
        self.current
    }

    pub fn floor(&self) -> f64 {
        self.ceiling / 32.0
    }

    /// How long the rate must hold without a throttle before it grows: ten calls' worth at the
    /// current rate, but at least 5 s and at most 2 min.
    pub fn increase_every(&self) -> Duration {
        // A NaN rate (which parsing rules out) would make the clamp NaN: take the longest wait.
        Duration::try_from_secs_f64((10.0 / self.current).clamp(5.0, 120.0)).unwrap_or(Duration::from_secs(120))
    }

    /// Callers must not send before this instant.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// A 2500 arrived for a request sent at `sent_at`. Returns true when the rate was lowered.
    pub fn on_throttle(&mut self, now: Instant, sent_at: Instant) -> bool {
        if self.last_decrease.is_some_and(|d| sent_at < d) {
            return false;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.current = (self.current / 2.0).max(self.floor());
        self.last_decrease = Some(now);
        self.last_change = Some(now);
        let pause = Self::PAUSE_BASE.saturating_mul(1 << (self.consecutive - 1).min(16)).min(Self::PAUSE_CAP);
        self.paused_until = Some(now + pause);
        true
    }

    /// A call was answered without a throttle. Returns true when the rate was raised.
    pub fn on_success(&mut self, now: Instant) -> bool {
        self.consecutive = 0;
        if self.current >= self.ceiling {
            return false;
        }
        let since = self.last_change.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if since < self.increase_every() {
            return false;
        }
        self.current = (self.current + self.ceiling / 10.0).min(self.ceiling);
        self.last_change = Some(now);
        true
    }
}

fn governor_for(per_second: f64, burst: NonZeroU32) -> DefaultDirectRateLimiter {
    // A rate of zero, negative or NaN (which parsing and the AIMD floor rule out) has no
    // period: read it as one call a day instead of panicking.
    let period = Duration::try_from_secs_f64(1.0 / per_second)
        .unwrap_or(Duration::from_secs(24 * 3600))
        .max(Duration::from_nanos(1));
    // with_period only fails for a zero period, excluded just above.
    let quota = Quota::with_period(period).expect("non-zero period").allow_burst(burst);
    RateLimiter::direct(quota)
}

/// The one limiter all API calls pass. Cheap to share behind an `Arc`.
pub struct Limiter {
    burst: NonZeroU32,
    state: Mutex<LimiterState>,
    /// Callers wait their turn in arrival order (tokio's mutex is fair): governor alone lets
    /// waiters race for each free slot, so a call could wait many times longer than another
    /// queued after it, and the clusters behind it would trail the end of a run.
    turn: tokio::sync::Mutex<()>,
}

struct LimiterState {
    aimd: Aimd,
    gcra: Arc<DefaultDirectRateLimiter>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("rate_per_s", &self.current_rate()).finish()
    }
}

impl Limiter {
    pub fn new(rate: Rate, burst: u32) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let aimd = Aimd::new(rate);
        let gcra = Arc::new(governor_for(aimd.current(), burst));
        Self { burst, state: Mutex::new(LimiterState { aimd, gcra }), turn: tokio::sync::Mutex::new(()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        // A panic while holding this lock leaves only numbers behind; keep going with them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until one more call may be sent. Callers are served in the order they arrived.
    pub async fn ready(&self) {
        let _turn = self.turn.lock().await;
        loop {
            let (paused, gcra) = {
                let s = self.lock();
                (s.aimd.paused_until(), Arc::clone(&s.gcra))
            };
            if let Some(until) = paused {
                if until > Instant::now() {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
            }
            gcra.until_ready().await;
            return;
        }
    }

    /// Record a 2500 for a request sent at `sent_at`; returns the new rate when it was lowered.
    pub fn on_throttle(&self, sent_at: Instant) -> Option<f64> {
        let mut s = self.lock();
        if s.aimd.on_throttle(Instant::now(), sent_at) {
            s.gcra = Arc::new(governor_for(s.aimd.current(), self.burst));
            Some(s.aimd.current())
        } else {
            None
        }
    }

    /// Record an answered call; returns the new rate when it was raised.
    pub fn on_success(&self) -> Option<f64> {
        let mut s = self.lock();
        if s.aimd.on_success(Instant::now()) {
            s.gcra = Arc::new(governor_for(s.aimd.current(), self.burst));
            Some(s.aimd.current())
        } else {
            None
        }
    }

    /// The effective rate in calls per second.
    pub fn current_rate(&self) -> f64 {
        self.lock().aimd.current()
    }

    pub fn ceiling(&self) -> f64 {
        self.lock().aimd.ceiling()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_what_parsing_allows_do_not_panic() {
        let zero = Rate { count: 0, period: Duration::from_secs(1) };
        assert_eq!(zero.interval(), Duration::from_secs(1));
        let limiter = Limiter::new(zero, 1);
        assert_eq!(limiter.current_rate(), 0.0);
        let nan = Rate { count: 0, period: Duration::ZERO };
        assert_eq!(Aimd::new(nan).increase_every(), Duration::from_secs(120));
        drop(governor_for(f64::NAN, NonZeroU32::MIN));
        drop(governor_for(-1.0, NonZeroU32::MIN));
    }

    #[test]
    fn aimd_halves_pauses_and_recovers() {
        let t0 = Instant::now();
        let mut a = Aimd::new("10/s".parse().unwrap());
        assert!(a.on_throttle(t0, t0));
        assert_eq!(a.current(), 5.0);
        assert_eq!(a.paused_until(), Some(t0 + Duration::from_secs(2)));
        // A throttle for a request sent before the decrease says nothing new.
        assert!(!a.on_throttle(t0 + Duration::from_millis(10), t0 - Duration::from_millis(1)));
        assert_eq!(a.current(), 5.0);
        // A second throttle in a row halves again and doubles the pause.
        let t1 = t0 + Duration::from_secs(3);
        assert!(a.on_throttle(t1, t1));
        assert_eq!(a.current(), 2.5);
        assert_eq!(a.paused_until(), Some(t1 + Duration::from_secs(4)));
        // Too soon to grow.
        assert!(!a.on_success(t1 + Duration::from_secs(1)));
        // Then additive growth of a tenth of the ceiling per step, up to the ceiling.
        let mut t = t1;
        let mut steps = 0;
        while a.current() < a.ceiling() {
            t += a.increase_every();
            assert!(a.on_success(t));
            steps += 1;
        }
        assert_eq!(steps, 8);
        assert_eq!(a.current(), 10.0);
        assert!(!a.on_success(t + Duration::from_secs(600)));
    }

    #[test]
    fn aimd_has_a_floor() {
        let t0 = Instant::now();
        let mut a = Aimd::new("32/s".parse().unwrap());
        for i in 0..20 {
            let t = t0 + Duration::from_secs(i * 1000);
            a.on_throttle(t, t);
        }
        assert_eq!(a.current(), 1.0);
        assert_eq!(a.paused_until(), Some(t0 + Duration::from_secs(19_000) + Aimd::PAUSE_CAP));
    }

    #[tokio::test]
    async fn limiter_spaces_calls_and_lowers_on_throttle() {
        let l = Limiter::new("1000/s".parse().unwrap(), 1);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            l.ready().await;
        }
        // Five calls at 1000/s with burst 1 cannot take less than four intervals.
        assert!(start.elapsed() >= Duration::from_millis(4));
        assert_eq!(l.on_throttle(Instant::now()), Some(500.0));
        assert_eq!(l.current_rate(), 500.0);
    }

    #[test]
    fn parses_rates() {
        assert_eq!("1800/h".parse::<Rate>(), Ok(Rate::DEFAULT));
        assert_eq!("50/s".parse::<Rate>(), Ok(Rate::SIMULATE));
        assert_eq!("30/m".parse::<Rate>().map(|r| r.per_second()), Ok(0.5));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10".parse::<Rate>().is_err());
        assert!("10/d".parse::<Rate>().is_err());
        assert_eq!(Rate::DEFAULT.to_string(), "1800/h");
        assert_eq!(Rate::DEFAULT.interval(), Duration::from_secs(2));
    }
}
