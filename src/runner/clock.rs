//! Time as the runner reads it: wall time (what the database records and what is compared with
//! the API's `create_time`), monotonic time (waits, timeouts, the limiter) and sleeping until an
//! instant. Every read of time in the runner goes through a [`Clock`], so its unit tests run under
//! `tokio::time::pause()` with wall time that moves with tokio's virtual time.
//!
//! It owns no decisions and must not be read around: a direct `Utc::now()` or
//! `Instant::now()` in the runner would make the two clocks of a test disagree.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A sleep a [`Clock`] hands out.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wall and monotonic time, and sleeping.
pub trait Clock: Send + Sync {
    /// Wall time.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time (tokio's, so that tests can pause it).
    fn instant(&self) -> Instant;
    /// Resolves at `at`.
    fn sleep_until(&self, at: Instant) -> Sleep;
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, at: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(at))
    }
}

/// A clock for tests under `tokio::time::pause()`: wall time is a fixed origin plus the virtual
/// time elapsed since the clock was made, so advancing tokio's time advances both.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock {
    wall: DateTime<Utc>,
    mono: Instant,
}

#[cfg(test)]
impl VirtualClock {
    /// Wall time starts at `wall` now.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self { wall, mono: Instant::now() }
    }
}

#[cfg(test)]
impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.mono);
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, at: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn virtual_wall_time_moves_with_tokio_time() {
        let origin = Utc.with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap();
        let clock = VirtualClock::starting_at(origin);
        let t0 = clock.instant();
        clock.sleep_until(t0 + Duration::from_secs(90)).await;
        assert_eq!(clock.instant() - t0, Duration::from_secs(90));
        assert_eq!(clock.now(), origin + chrono::Duration::seconds(90));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), origin + chrono::Duration::milliseconds(91_500));
    }
}
