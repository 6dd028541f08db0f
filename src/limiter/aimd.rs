//! The arithmetic of the effective rate after quota refusals (2500): additive increase,
//! multiplicative decrease, and the memory of the rate refused. Pure: the caller passes the
//! instants; nothing here sleeps or calls the API.

use std::time::Duration;

use tokio::time::Instant;

use super::Rate;

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

    /// Wait until `until` instead of this limiter's own pause (the one every host shares).
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(until);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Answered calls from `t` on, one growth step apart, until the rate reaches the limit; the
    /// time of the last.
    fn climb_to_limit(a: &mut Aimd, mut t: Instant) -> Instant {
        while a.current() < a.limit() {
            t += a.increase_every();
            a.on_success(t);
        }
        t
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
        let mut t = climb_to_limit(&mut a, t0);
        t += a.probe_every();
        assert!(a.on_success(t));
        assert_eq!(a.current(), 8.0);
        // Refused at 8/s: back to the 7.5/s that held through a whole probe wait, not to 6/s.
        t += Duration::from_secs(1);
        assert!(a.on_throttle(t, t));
        assert_eq!((a.current(), a.limit()), (4.0, 7.5));
        t = climb_to_limit(&mut a, t);
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
        let mut t = climb_to_limit(&mut a, t0);
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
}
