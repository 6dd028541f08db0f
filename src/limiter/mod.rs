//! The API rate: parsing `--rate` (`N/s`, `N/m`, `N/h`, [`Rate`]), and the one limiter every API
//! call passes, `DescribeJobs` included.
//!
//! The limiter is a GCRA (governor) at the *effective* rate, wrapped so the rate can change at
//! run time, which governor itself cannot do: on ret_code 2500 (quota exceeded) the effective
//! rate is halved and calls pause for a while; afterwards it climbs back in small steps (AIMD),
//! to just under the rate refused. The arithmetic lives in [`Aimd`], a pure type with unit
//! tests; [`Limiter`] only adds the clock and the governor instance. Both run on tokio's clock,
//! so tests can stop time (`tokio::time::pause`).
//!
//! Hosts that share an account's quota (PostgreSQL mode) give the limiter a [`SharedQuota`]:
//! the GCRA's state is then the database's, one row for all hosts, taken once per call at this
//! host's effective rate; a 2500 pauses that row for every host, and a host that finds a pause
//! it did not set lowers its own rate as if it had been refused.

mod aimd;
mod rate;
mod shared;

pub use aimd::Aimd;
pub use rate::Rate;
pub use shared::{QuotaFuture, SharedQuota, Turn};

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

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

/// A pause found in the shared scope within this of this host's own is this host's own (the
/// database's clock and this one's differ by the latency of the write).
const SHARED_PAUSE_SLACK: Duration = Duration::from_millis(500);

/// The one limiter all API calls pass. Cheap to share behind an `Arc`.
pub struct Limiter {
    burst: NonZeroU32,
    clock: TokioClock,
    state: Mutex<LimiterState>,
    /// Callers wait their turn in arrival order (tokio's mutex is fair): governor alone lets
    /// waiters race for each free slot, so a call could wait many times longer than another
    /// queued after it, and the clusters behind it would trail the end of a run.
    turn: tokio::sync::Mutex<()>,
    /// The quota shared with other hosts, when there is one: the GCRA state is then its.
    shared: Option<std::sync::Arc<dyn SharedQuota>>,
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
        Self {
            burst,
            clock,
            state: Mutex::new(LimiterState { aimd, gcra }),
            turn: tokio::sync::Mutex::new(()),
            shared: None,
        }
    }

    /// A limiter whose GCRA is `shared` with other hosts (one database row per quota scope).
    pub fn shared(rate: Rate, burst: u32, shared: std::sync::Arc<dyn SharedQuota>) -> Self {
        Self { shared: Some(shared), ..Self::new(rate, burst) }
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
        if let Some(shared) = &self.shared {
            return self.ready_shared(shared.as_ref()).await;
        }
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

    /// [`Limiter::ready`] against the shared scope: wait out this host's own pause, then take
    /// the scope's next slot at this host's effective rate and sleep until it. A pause found in
    /// the scope that outlasts this host's own was set by another host's 2500: it lowers this
    /// host's rate too (once per pause). A database that does not answer gives no slot: the call
    /// waits and asks again, never going unmetered.
    async fn ready_shared(&self, shared: &dyn SharedQuota) {
        let mut failures = 0u32;
        loop {
            let (paused, interval) = {
                let s = self.lock();
                (s.aimd.paused_until(), Duration::try_from_secs_f64(1.0 / s.aimd.current()).unwrap_or(Duration::MAX))
            };
            if let Some(until) = paused.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            match shared.take(interval, self.burst.get()).await {
                Ok(turn) => {
                    if let Some(left) = turn.paused_for {
                        let now = Instant::now();
                        let ours = self.lock().aimd.paused_until().unwrap_or(now);
                        if now + left > ours + SHARED_PAUSE_SLACK {
                            // Another host's 2500: slow down as it did. Its pause is already
                            // in the slot this call got.
                            if let Some(rate) = self.on_shared_throttle(now, left) {
                                tracing::warn!(rate_per_s = rate, "another host's quota refusal (2500): rate lowered");
                            }
                        }
                    }
                    if turn.wait.is_zero() {
                        return;
                    }
                    tokio::time::sleep(turn.wait).await;
                    // A pause written while this call slept (a 2500 here or on another host)
                    // outranks the slot it had: wait it out, then take a new one.
                    if self.lock().aimd.paused_until().is_some_and(|u| u > Instant::now()) {
                        continue;
                    }
                    match shared.paused_for().await {
                        Ok(None) => return,
                        Ok(Some(left)) => {
                            let now = Instant::now();
                            let ours = self.lock().aimd.paused_until().unwrap_or(now);
                            if now + left > ours + SHARED_PAUSE_SLACK {
                                if let Some(rate) = self.on_shared_throttle(now, left) {
                                    tracing::warn!(
                                        rate_per_s = rate,
                                        "another host's quota refusal (2500): rate lowered"
                                    );
                                }
                            }
                            tokio::time::sleep(left).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the shared quota did not answer");
                            failures = failures.saturating_add(1);
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(250).saturating_mul(1 << failures.min(6));
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "the shared quota did not answer");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Record a 2500 for a request sent at `sent_at`; returns the new rate when it was lowered.
    /// With a shared quota the pause is also written for every host (in the background: the
    /// caller goes on; a pause that cannot be written is logged, and this host still pauses).
    pub fn on_throttle(&self, sent_at: Instant) -> Option<f64> {
        let mut s = self.lock();
        let now = Instant::now();
        if s.aimd.on_throttle(now, sent_at) {
            s.gcra = governor_for(s.aimd.current(), self.burst, self.clock.clone());
            if let (Some(shared), Some(until)) = (&self.shared, s.aimd.paused_until()) {
                let (shared, pause) = (shared.clone(), until.saturating_duration_since(now));
                let interval = Duration::try_from_secs_f64(1.0 / s.aimd.current()).unwrap_or(Duration::MAX);
                let burst = self.burst.get();
                tokio::spawn(async move {
                    if let Err(e) = shared.pause(pause, interval, burst).await {
                        tracing::warn!(error = %e, "the pause could not be shared with the other hosts");
                    }
                });
            }
            Some(s.aimd.current())
        } else {
            None
        }
    }

    /// Another host's 2500, seen as the scope's pause lasting `left` from `now`: lower this
    /// host's rate as that host did and wait out that same pause; the new rate when it was
    /// lowered. Nothing is written back to the scope: a pause shared again would read, on the
    /// other hosts, as one more refusal, and each echo would lower them all again and double
    /// the pause.
    fn on_shared_throttle(&self, now: Instant, left: Duration) -> Option<f64> {
        let mut s = self.lock();
        if s.aimd.on_throttle(now, now) {
            s.aimd.pause_until(now + left);
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
}
