//! The seam through which several hosts share one API quota: a GCRA whose state is kept outside
//! this process (one database row per quota scope, `store::postgres`), so that N hosts together
//! never exceed the rate, and a pause after a 2500 that every host sees.
//!
//! It owns the contract only; the limiter ([`super::Limiter`]) still decides the effective rate
//! (its AIMD) and sleeps. It must not know where the state lives.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future of the seam (no `async fn` in a trait object).
pub type QuotaFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A call's turn in the shared scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// How long from now until the call may go.
    pub wait: Duration,
    /// How long the scope stays paused after a 2500, if a pause is in force (set by this host
    /// or another): a pause this host did not set slows it as if it had seen the 2500 itself.
    pub paused_for: Option<Duration>,
}

pub trait SharedQuota: Send + Sync {
    /// Reserve the scope's next call at one per `interval` with up to `burst` at once. The
    /// reservation counts whether or not the caller goes.
    fn take(&self, interval: Duration, burst: u32) -> QuotaFuture<'_, Turn>;

    /// Pause the scope for every host for `pause` from now (a 2500 was answered); a longer
    /// pause in force is kept. The slots after it go one `interval` apart, without the burst.
    fn pause(&self, pause: Duration, interval: Duration, burst: u32) -> QuotaFuture<'_, ()>;

    /// How long the scope stays paused from now, if it is: a slot reserved before another
    /// host's 2500 is not used during the pause that followed.
    fn paused_for(&self) -> QuotaFuture<'_, Option<Duration>>;
}
