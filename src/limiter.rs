//! The API rate: parsing `--rate` (`N/s`, `N/m`, `N/h`), and the one limiter every API call
//! passes, `DescribeJobs` included.
//!
//! The limiter is a GCRA (governor) at the *effective* rate, wrapped so the rate can change at
//! run time, which governor itself cannot do: on ret_code 2500 (quota exceeded) the effective
//! rate is halved and calls pause for a while; afterwards it climbs back in small steps (AIMD),
//! to just under the rate refused. The arithmetic lives in [`Aimd`], a pure type with unit
//! tests; [`Limiter`] only adds the clock and the governor instance. Both run on tokio's clock,
//! so tests can stop time (`tokio::time::pause`).

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
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

/// Additive-increase / multiplicative-decrease of the effective rate (calls per second), with
/// a memory of the rate a 2500 refused.
///
/// * A throttle (2500) halves the rate, down to a floor of 1/32 of the ceiling, and asks callers
///   to pause: 2 s after the first throttle, doubling with each throttle in a row, at most 5 min.
///   Throttles answering requests sent before the last decrease are ignored, since they say
///   nothing about the new rate (many calls may be in flight when the quota runs out).
/// * The first throttle after an answered call also sets the *limit* where growth stops: three
///   quarters of the rate it refused, halfway between the halved rate and the refused one. A
///   fixed quota anywhere from 3/4 of the refused rate up to it costs that one refusal, where
///   climbing back to the ceiling paid one refusal per climb.
/// * After [`Aimd::increase_every`] without a throttle, the rate grows by a tenth of the ceiling,
///   never above the limit.
/// * Once the rate has held at the limit for [`Aimd::probe_every`] without a throttle, that
///   rate counts as *proven* and the limit rises by a twentieth of the ceiling (a probe), never
///   above the ceiling. A throttle above the proven rate sets the limit back to it and doubles
///   the wait before the next probe; a throttle at or below it forgets it (the quota shrank, or
///   another tool shares the key) and the limit becomes 3/4 of the rate refused, as above.
///
/// The 2500 answer names no quota, window or retry time (reference §5.2), so the only thing a
/// refusal teaches is that the rate in force was too high: the limit is derived from that, not
/// from a guess at the quota.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    ceiling: f64,
    current: f64,
    /// Where additive growth stops: the ceiling until a throttle.
    limit: f64,
    /// The highest rate that held at the limit through a whole probe wait; 0 when none has
    /// since the last throttle at or below it.
    proven: f64,
    failed_probes: u32,
    consecutive: u32,
    last_decrease: Option<Instant>,
    last_change: Option<Instant>,
    paused_until: Option<Instant>,
}

impl Aimd {
    pub const PAUSE_BASE: Duration = Duration::from_secs(2);
    pub const PAUSE_CAP: Duration = Duration::from_secs(300);
    /// The share of a refused rate where growth stops after the refusal.
    pub const LIMIT_SHARE: f64 = 0.75;
    /// The longest wait before a probe, however many probes failed.
    pub const PROBE_CAP: Duration = Duration::from_secs(3600);

    pub fn new(ceiling: Rate) -> Self {
        let c = ceiling.per_second();
        Self {
            ceiling: c,
            current: c,
            limit: c,
            proven: 0.0,
            failed_probes: 0,
            consecutive: 0,
            last_decrease: None,
            last_change: None,
            paused_until: None,
        }
    }

    pub fn ceiling(&self) -> f64 {
        self.ceiling
    }

    /// The effective rate in calls per second.
    pub fn current(&self) -> f64 {
        self.current
    }

    /// Where additive growth stops: the ceiling until a 2500, then below the rate refused.
    pub fn limit(&self) -> f64 {
        self.limit
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

    /// How long the rate must hold at the limit without a throttle before the limit is probed:
    /// a hundred calls' worth at the current rate, at least 1 min, doubled for each probe that
    /// failed, at most [`Aimd::PROBE_CAP`].
    pub fn probe_every(&self) -> Duration {
        let base = (100.0 / self.current).clamp(60.0, Self::PROBE_CAP.as_secs_f64());
        let wait = base * f64::from(1u32 << self.failed_probes.min(16));
        Duration::try_from_secs_f64(wait.min(Self::PROBE_CAP.as_secs_f64())).unwrap_or(Self::PROBE_CAP)
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
        if self.consecutive == 1 {
            // The rate that had been answered is too high (later throttles in a row only say
            // that the quota is still exhausted).
            let refused = self.current;
            if self.proven > 0.0 && refused > self.proven {
                self.limit = self.proven;
                self.failed_probes = self.failed_probes.saturating_add(1);
            } else {
                self.limit = (refused * Self::LIMIT_SHARE).max(self.floor());
                self.proven = 0.0;
            }
        }
        self.current = (self.current / 2.0).max(self.floor()).min(self.limit);
        self.last_decrease = Some(now);
        self.last_change = Some(now);
        let pause = Self::PAUSE_BASE.saturating_mul(1 << (self.consecutive - 1).min(16)).min(Self::PAUSE_CAP);
        self.paused_until = Some(now + pause);
        true
    }

    /// A call was answered without a throttle. Returns true when the rate was raised.
    pub fn on_success(&mut self, now: Instant) -> bool {
        self.consecutive = 0;
        let since = self.last_change.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if self.current < self.limit {
            if since < self.increase_every() {
                return false;
            }
            self.current = (self.current + self.ceiling / 10.0).min(self.limit);
        } else if self.limit < self.ceiling {
            if since < self.probe_every() {
                return false;
            }
            self.proven = self.current;
            self.limit = (self.limit + self.ceiling / 20.0).min(self.ceiling);
            self.current = self.limit;
        } else {
            return false;
        }
        self.last_change = Some(now);
        true
    }
}

/// governor's clock read from tokio's: the GCRA, the pauses and the callers' sleeps keep one
/// time, which tests can stop and advance.
///
/// While a caller that slept until its turn checks the GCRA, the clock reads the turn it slept
/// to, if the timer woke it at most [`TokioClock::SLACK`] after it. tokio's timer has 1 ms
/// ticks and rounds up: with burst 1 the GCRA counts the next interval from the moment a call
/// goes, so the timer's lateness would be added to every interval (about 1 % of the rate at
/// 10/s, 5 % at 50/s). A call still never goes before its turn.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: Instant,
    /// The turn a caller slept to, in nanoseconds after `origin`, while it checks; 0: none.
    woke_for: Arc<AtomicU64>,
}

impl TokioClock {
    const SLACK: Duration = Duration::from_millis(2);

    fn new() -> Self {
        Self { origin: Instant::now(), woke_for: Arc::new(AtomicU64::new(0)) }
    }

    /// The instant `at` (a time of this clock) stands for.
    fn instant(&self, at: Duration) -> Instant {
        self.origin + at
    }

    fn set_woke_for(&self, turn: Option<Duration>) {
        let nanos = turn.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.woke_for.store(nanos, Ordering::Relaxed);
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        let now = Instant::now().saturating_duration_since(self.origin);
        let turn = Duration::from_nanos(self.woke_for.load(Ordering::Relaxed));
        match now.checked_sub(turn) {
            Some(late) if !turn.is_zero() && late <= Self::SLACK => turn,
            _ => now,
        }
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

fn governor_for(per_second: f64, burst: NonZeroU32, clock: TokioClock) -> Gcra {
    // A rate of zero, negative or NaN (which parsing and the AIMD floor rule out) has no
    // period: read it as one call a day instead of panicking.
    let period = Duration::try_from_secs_f64(1.0 / per_second)
        .unwrap_or(Duration::from_secs(24 * 3600))
        .max(Duration::from_nanos(1));
    // with_period only fails for a zero period, excluded just above.
    let quota = Quota::with_period(period).expect("non-zero period").allow_burst(burst);
    RateLimiter::direct_with_clock(quota, clock)
}

/// The one limiter all API calls pass. Cheap to share behind an `Arc`.
pub struct Limiter {
    burst: NonZeroU32,
    clock: TokioClock,
    state: Mutex<LimiterState>,
    /// Callers wait their turn in arrival order (tokio's mutex is fair): governor alone lets
    /// waiters race for each free slot, so a call could wait many times longer than another
    /// queued after it, and the clusters behind it would trail the end of a run.
    turn: tokio::sync::Mutex<()>,
}

struct LimiterState {
    aimd: Aimd,
    gcra: Gcra,
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
        let clock = TokioClock::new();
        let gcra = governor_for(aimd.current(), burst, clock.clone());
        Self { burst, clock, state: Mutex::new(LimiterState { aimd, gcra }), turn: tokio::sync::Mutex::new(()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        // A panic while holding this lock leaves only numbers behind; keep going with them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until one more call may be sent. Callers are served in the order they arrived.
    ///
    /// The pause and the GCRA are looked at again after every wait: a call waiting for its
    /// turn at the old rate when a 2500 arrives waits out the pause and goes at the new rate,
    /// instead of being sent into the quota that just ran out.
    pub async fn ready(&self) {
        let _turn = self.turn.lock().await;
        // The GCRA turn this caller slept to, if it did.
        let mut turn = None;
        loop {
            let until = {
                let s = self.lock();
                match s.aimd.paused_until() {
                    Some(until) if until > Instant::now() => {
                        turn = None;
                        until
                    }
                    _ => {
                        self.clock.set_woke_for(turn);
                        let checked = s.gcra.check();
                        self.clock.set_woke_for(None);
                        match checked {
                            Ok(()) => return,
                            Err(not_until) => {
                                turn = Some(not_until.earliest_possible());
                                self.clock.instant(not_until.earliest_possible())
                            }
                        }
                    }
                }
            };
            tokio::time::sleep_until(until).await;
        }
    }

    /// Record a 2500 for a request sent at `sent_at`; returns the new rate when it was lowered.
    pub fn on_throttle(&self, sent_at: Instant) -> Option<f64> {
        let mut s = self.lock();
        if s.aimd.on_throttle(Instant::now(), sent_at) {
            s.gcra = governor_for(s.aimd.current(), self.burst, self.clock.clone());
            Some(s.aimd.current())
        } else {
            None
        }
    }

    /// Record an answered call; returns the new rate when it was raised.
    pub fn on_success(&self) -> Option<f64> {
        let mut s = self.lock();
        if s.aimd.on_success(Instant::now()) {
            s.gcra = governor_for(s.aimd.current(), self.burst, self.clock.clone());
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

    /// Where the rate stops climbing after a 2500 (the ceiling before any).
    pub fn limit(&self) -> f64 {
        self.lock().aimd.limit()
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
        let clock = TokioClock::new();
        assert!(governor_for(f64::NAN, NonZeroU32::MIN, clock.clone()).check().is_ok());
        assert!(governor_for(-1.0, NonZeroU32::MIN, clock).check().is_ok());
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
        // Then additive growth of a tenth of the ceiling per step, up to the limit the first
        // throttle of the two set: 3/4 of the 10/s it refused.
        let mut t = t1;
        let mut steps = 0;
        while a.current() < a.limit() {
            t += a.increase_every();
            assert!(a.on_success(t));
            steps += 1;
        }
        assert_eq!(steps, 5);
        assert_eq!(a.current(), 7.5);
    }

    #[test]
    fn growth_after_a_refusal_stops_below_the_rate_refused() {
        let t0 = Instant::now();
        let mut a = Aimd::new("10/s".parse().unwrap());
        assert_eq!(a.limit(), 10.0);
        // Refused at 9/s (say, after an earlier decrease and a climb): growth stops at 6.75/s.
        a.current = 9.0;
        a.on_throttle(t0, t0);
        assert_eq!((a.current(), a.limit()), (4.5, 6.75));
        let mut t = t0;
        let mut rates = vec![];
        while a.current() < a.limit() {
            t += a.increase_every();
            assert!(a.on_success(t));
            rates.push(a.current());
        }
        assert_eq!(rates, [5.5, 6.5, 6.75]);
        // It holds there, whatever the number of quiet growth periods, until a probe is due.
        let probe_at = t + a.probe_every();
        assert_eq!(a.probe_every(), Duration::from_secs(60));
        while t + a.increase_every() < probe_at {
            t += a.increase_every();
            assert!(!a.on_success(t));
            assert_eq!(a.current(), 6.75);
        }
        // A probe: the limit and the rate rise by a twentieth of the ceiling.
        assert!(a.on_success(probe_at));
        assert_eq!((a.current(), a.limit()), (7.25, 7.25));
    }

    #[test]
    fn throttles_in_a_row_keep_the_limit_the_first_one_set() {
        let t0 = Instant::now();
        let mut a = Aimd::new("10/s".parse().unwrap());
        a.on_throttle(t0, t0);
        for i in 1..4 {
            let t = t0 + Duration::from_secs(10 * i);
            assert!(a.on_throttle(t, t));
        }
        // The quota still exhausted after each pause says nothing about 5/s, 2.5/s or 1.25/s.
        assert_eq!((a.current(), a.limit()), (0.625, 7.5));
        // An answered call ends the streak: the next throttle sets the limit from its rate.
        let t = t0 + Duration::from_secs(100);
        a.on_success(t);
        assert_eq!(a.current(), 1.625);
        a.on_throttle(t, t);
        assert_eq!(a.limit(), 1.625 * 0.75);
    }

    #[test]
    fn a_failed_probe_falls_back_to_the_proven_rate_and_waits_twice_as_long() {
        let t0 = Instant::now();
        let mut a = Aimd::new("10/s".parse().unwrap());
        a.on_throttle(t0, t0);
        let mut t = t0;
        while a.current() < a.limit() {
            t += a.increase_every();
            a.on_success(t);
        }
        t += a.probe_every();
        assert!(a.on_success(t));
        assert_eq!(a.current(), 8.0);
        // Refused at 8/s: back to the 7.5/s that held through a whole probe wait, not to 6/s.
        t += Duration::from_secs(1);
        assert!(a.on_throttle(t, t));
        assert_eq!((a.current(), a.limit()), (4.0, 7.5));
        while a.current() < a.limit() {
            t += a.increase_every();
            a.on_success(t);
        }
        assert_eq!(a.probe_every(), Duration::from_secs(120));
        assert!(!a.on_success(t + Duration::from_secs(119)));
        t += Duration::from_secs(120);
        assert!(a.on_success(t));
        assert_eq!(a.current(), 8.0);
        // Each failed probe doubles the wait, up to an hour.
        a.failed_probes = 10;
        assert_eq!(a.probe_every(), Aimd::PROBE_CAP);
    }

    #[test]
    fn a_refusal_at_or_below_the_proven_rate_forgets_it() {
        let t0 = Instant::now();
        let mut a = Aimd::new("10/s".parse().unwrap());
        a.on_throttle(t0, t0);
        let mut t = t0;
        while a.current() < a.limit() {
            t += a.increase_every();
            a.on_success(t);
        }
        t += a.probe_every();
        a.on_success(t);
        assert_eq!((a.current(), a.proven), (8.0, 7.5));
        t += Duration::from_secs(1);
        a.on_throttle(t, t);
        // Climbing back, 7/s is refused, below the 7.5/s that had held: the quota shrank (or
        // another tool now shares the key), so 7.5/s proves nothing any more.
        t += Duration::from_secs(10);
        a.on_success(t);
        t += Duration::from_secs(10);
        a.on_success(t);
        t += Duration::from_secs(10);
        a.on_success(t);
        assert_eq!(a.current(), 7.0);
        a.on_throttle(t, t);
        assert_eq!((a.current(), a.limit(), a.proven), (3.5, 5.25, 0.0));
    }

    /// A request quota in fixed windows, as the simulator keeps it: a window opens with the
    /// first request after the previous one closed and admits `per_window` requests.
    struct FixedWindows {
        per_window: u32,
        window: Duration,
        opened: Option<(Instant, u32)>,
    }

    impl FixedWindows {
        fn admit(&mut self, t: Instant) -> bool {
            let (start, used) = match self.opened {
                Some((start, used)) if t.saturating_duration_since(start) < self.window => (start, used),
                _ => (t, 0),
            };
            // Refused requests do not count.
            let admitted = used < self.per_window;
            self.opened = Some((start, used + u32::from(admitted)));
            admitted
        }
    }

    /// One caller sending back to back at the AIMD's rate (waiting out its pauses) until
    /// `answered` calls were admitted: the rates in force at each refusal.
    fn refusals_under(quota: &mut FixedWindows, a: &mut Aimd, answered: usize) -> Vec<f64> {
        let mut t = Instant::now();
        let mut refused = vec![];
        let mut n = 0;
        while n < answered {
            t = t.max(a.paused_until().unwrap_or(t));
            if quota.admit(t) {
                a.on_success(t);
                n += 1;
            } else {
                refused.push(a.current());
                a.on_throttle(t, t);
            }
            t += Duration::from_secs_f64(1.0 / a.current());
        }
        refused
    }

    #[test]
    fn a_fixed_quota_costs_one_refusal_not_one_per_climb() {
        // 10/s configured, 40 requests per 5 s allowed (the benchmark's quota-2500 regime).
        let mut quota = FixedWindows { per_window: 40, window: Duration::from_secs(5), opened: None };
        let mut a = Aimd::new("10/s".parse().unwrap());
        assert_eq!(refusals_under(&mut quota, &mut a, 320), [10.0]);
        assert_eq!(a.current(), 7.5);
        // An hour of it: the probes above the proven rate fail ever more rarely.
        let mut quota = FixedWindows { per_window: 40, window: Duration::from_secs(5), opened: None };
        let mut a = Aimd::new("10/s".parse().unwrap());
        let refused = refusals_under(&mut quota, &mut a, 8 * 3600);
        // 8/s held through a minute at the limit (exactly the quota); each later refusal is a
        // probe one step above it, after a wait doubled each time.
        assert_eq!(refused[0], 10.0);
        assert!(refused[1..].iter().all(|&r| r == 8.5), "{refused:?}");
        assert!(refused.len() <= 7, "{refused:?}");
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

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_calls_and_lowers_on_throttle() {
        let l = Limiter::new("10/s".parse().unwrap(), 1);
        let start = Instant::now();
        for _ in 0..5 {
            l.ready().await;
        }
        // Five calls at 10/s with burst 1 take four intervals.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        let at = Instant::now();
        assert_eq!(l.on_throttle(at), Some(5.0));
        assert_eq!((l.current_rate(), l.limit()), (5.0, 7.5));
        // The next call waits out the 2 s pause, then goes at once (a new GCRA).
        l.ready().await;
        assert_eq!(at.elapsed(), Duration::from_secs(2));
        l.ready().await;
        assert_eq!(at.elapsed(), Duration::from_millis(2200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_the_timer_wakes_late_is_counted_at_its_turn() {
        let clock = TokioClock::new();
        let gcra = governor_for(10.0, NonZeroU32::MIN, clock.clone());
        assert!(gcra.check().is_ok());
        let turn = gcra.check().unwrap_err().earliest_possible();
        assert_eq!(turn, Duration::from_millis(100));
        // Woken 1.5 ms after its turn (tokio's timer rounds up to its 1 ms ticks): the call goes,
        // and the next turn is a whole interval after the turn, not after the wake-up.
        tokio::time::advance(Duration::from_micros(101_500)).await;
        clock.set_woke_for(Some(turn));
        assert!(gcra.check().is_ok());
        clock.set_woke_for(None);
        assert_eq!(gcra.check().unwrap_err().earliest_possible(), Duration::from_millis(200));
        // Woken much later (a stalled process): counted when it goes, so no burst follows.
        tokio::time::advance(Duration::from_millis(150)).await;
        clock.set_woke_for(Some(Duration::from_millis(200)));
        assert!(gcra.check().is_ok());
        clock.set_woke_for(None);
        assert_eq!(gcra.check().unwrap_err().earliest_possible(), Duration::from_micros(351_500));
        // Never before the turn: a clock that says the caller slept to a later turn than now
        // reads now.
        clock.set_woke_for(Some(Duration::from_secs(10)));
        assert_eq!(clock.now(), Duration::from_micros(251_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waiting_its_turn_when_a_2500_arrives_waits_out_the_pause() {
        let l = Arc::new(Limiter::new("1/s".parse().unwrap(), 1));
        l.ready().await;
        let t0 = Instant::now();
        // The next call's turn at 1/s is at t0 + 1 s; it is waiting for it when, at t0 + 0.5 s,
        // the answer to the first call is a 2500.
        let waiting = tokio::spawn({
            let l = Arc::clone(&l);
            async move {
                l.ready().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(l.on_throttle(t0), Some(0.5));
        let sent = waiting.await.unwrap();
        // Not at t0 + 1 s into the quota just exhausted: after the 2 s pause.
        assert_eq!(sent - t0, Duration::from_millis(2500));
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
