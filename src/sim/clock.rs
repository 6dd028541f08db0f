//! The simulator's clock: a monotonic instant for durations and a wall time for what the API
//! shows, read once per request and passed in, so tests can move it.
//!
//! It only tells the time; it never sleeps and holds nothing else.

#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use chrono::{DateTime, Utc};

/// The clock, passed in so tests can move it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    pub fn current() -> Self {
        Self { mono: Instant::now(), wall: Utc::now() }
    }

    /// The host's clock shifted by `offset` (the world's `clock_offset_s`); the monotonic
    /// clock is not shifted.
    pub fn shifted(offset: chrono::TimeDelta) -> Self {
        let now = Self::current();
        Self { wall: now.wall + offset, ..now }
    }

    /// The same clock `d` later.
    #[cfg(test)]
    pub fn after(self, d: Duration) -> Self {
        Self { mono: self.mono + d, wall: self.wall + chrono::Duration::from_std(d).unwrap_or_default() }
    }
}
