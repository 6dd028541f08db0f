//! What a call is made of and what it gives back: the rate [`Gate`] and the last check
//! ([`SendGuard`]) a request passes, the [`Call`] with its [`CallRecord`] (what to store, never
//! the signature), and the queries of the listing actions. Types only: nothing here sends.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{ApiError, MAX_JOBS_PER_CALL};

/// A rate gate every HTTP request awaits before it is sent (the runner's limiter implements it).
pub trait Gate: Send + Sync {
    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The last word on a request before it is signed: the runner's check that the request may
/// still leave (SPEC §8, "the last check is at the socket"). The client races the rate gate
/// against [`SendGuard::cancelled`] and calls [`SendGuard::check`] once the gate let the request
/// through; either refusal means nothing is signed or sent.
pub trait SendGuard: Send + Sync {
    /// Resolves when the request must no longer be sent (the run is stopping).
    fn cancelled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Right before signing: `Err(why)` withholds the request.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// A request a [`SendGuard`] withheld: nothing was signed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request withheld before it was sent: {0}")]
pub struct Withheld(pub String);

/// One API call: what was sent and what came back, and the typed result.
#[derive(Debug, Clone)]
pub struct Call<T> {
    pub record: CallRecord,
    pub result: Result<T, ApiError>,
}

/// What the runner stores about every call (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub action: String,
    /// Every parameter sent except `signature`, in canonical (sorted) order.
    pub params: Vec<(String, String)>,
    pub http_status: Option<u16>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
    pub job_id: Option<String>,
    /// When the request was started, after the gate let it through.
    pub started_at: DateTime<Utc>,
    pub latency: Duration,
    /// The server's clock from the answer's HTTP `Date` header (one-second resolution), when
    /// a head with a readable one came back.
    pub server_date: Option<DateTime<Utc>>,
}

impl CallRecord {
    /// How far the server's clock is ahead of ours (negative: behind), from its `Date` header
    /// against the middle of the exchange. The header has whole seconds, so this is within
    /// about one second plus half the latency of the truth. `None` without a `Date` header.
    pub fn clock_skew(&self) -> Option<TimeDelta> {
        let date = self.server_date?;
        let half = TimeDelta::from_std(self.latency / 2).unwrap_or_default();
        // The header truncates to the second: its true instant is on average half a second later.
        Some(date + TimeDelta::milliseconds(500) - (self.started_at + half))
    }
}

/// One page of `DescribeJobs` by filter rather than by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub job_action: Option<String>,
    /// `status.N` values, e.g. `pending`, `working`.
    pub status: Vec<String>,
    pub offset: u32,
    /// Page size, clamped to 1..=100.
    pub limit: u32,
}

/// What a `DescribeClusters` listing selects: `apps.N`, `status.N` and `tags.N` (tag ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterQuery {
    pub apps: Vec<String>,
    pub status: Vec<String>,
    pub tags: Vec<String>,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self { job_action: None, status: Vec::new(), offset: 0, limit: MAX_JOBS_PER_CALL as u32 }
    }
}

/// The HTTP client could not be built (TLS initialisation).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[source] pub(super) reqwest::Error);
