//! Why a run stops early, and where a stop request comes from: SIGINT, SIGTERM and SIGHUP in
//! the product, a channel in the runner's unit tests (installing process-wide signal handlers
//! there would outlive the test). The engine treats both the same.
//!
//! What a stop *does* (the stop switch, the intents withdrawn, the jobs followed for a while) is
//! the engine's; this module only names and delivers it.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// How long requests already under way may take to finish after a stop that follows no jobs.
pub const GRACE: Duration = Duration::from_secs(10);

/// How long jobs already accepted are followed after SIGINT, SIGTERM or SIGHUP (a second signal
/// leaves at once). Short enough for a service manager's stop timeout.
pub const FOLLOW_AFTER_SIGNAL: Duration = Duration::from_secs(30);

/// Why a run stopped before every task was final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Signal,
    Deadline,
    MaxFail,
    AuthFailed(String),
    /// A 1400 refusing the action or the key itself (not one cluster or account).
    ActionRefused(String),
    /// The endpoint answers, but not as the QingCloud API (an HTML page, a captive proxy).
    NotApi(String),
    Unreachable(String),
}

impl StopReason {
    /// The API cannot be used (credentials, the action or the key refused, not the API,
    /// unreachable): nothing more is sent, not even a poll, and the run exits 69.
    pub fn is_hard(&self) -> bool {
        matches!(
            self,
            StopReason::AuthFailed(_)
                | StopReason::ActionRefused(_)
                | StopReason::NotApi(_)
                | StopReason::Unreachable(_)
        )
    }

    pub fn describe(&self) -> String {
        match self {
            StopReason::Signal => "stopped by a signal".to_owned(),
            StopReason::Deadline => "stopped at --deadline".to_owned(),
            StopReason::MaxFail => "stopped by --max-fail".to_owned(),
            StopReason::AuthFailed(m) => format!("the API refused the credentials (1200): {m}"),
            StopReason::ActionRefused(m) => format!("the API refused the action or the key (1400): {m}"),
            StopReason::NotApi(m) => {
                format!("this is not the QingCloud API (check the endpoint URL and any proxy in between): {m}")
            }
            StopReason::Unreachable(m) => format!("the API could not be reached: {m}"),
        }
    }

    /// How long jobs already accepted are followed after this stop.
    pub fn follow_for(&self, job_timeout: Duration) -> Duration {
        match self {
            StopReason::Deadline | StopReason::MaxFail => job_timeout,
            StopReason::Signal => FOLLOW_AFTER_SIGNAL,
            _ => GRACE,
        }
    }
}

/// Where a run's stop requests come from.
#[derive(Debug)]
pub enum StopRequests {
    /// SIGINT, SIGTERM and SIGHUP (a dropped SSH session stops like Ctrl-C, with a summary,
    /// instead of killing the process).
    Signals,
    /// Each message is one request, as a signal would be.
    Channel(mpsc::UnboundedReceiver<()>),
}

impl StopRequests {
    /// A channel: send `()` to request a stop (twice to leave at once).
    pub fn channel() -> (mpsc::UnboundedSender<()>, StopRequests) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, StopRequests::Channel(rx))
    }

    /// Start listening (for signals: install the handlers).
    pub fn listen(self) -> std::io::Result<Listener> {
        Ok(match self {
            StopRequests::Signals => Listener::Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            },
            StopRequests::Channel(rx) => Listener::Channel(rx),
        })
    }
}

/// Stop requests being listened for.
#[derive(Debug)]
pub enum Listener {
    Signals { int: Signal, term: Signal, hup: Signal },
    Channel(mpsc::UnboundedReceiver<()>),
}

impl Listener {
    /// The next stop request. Never resolves once no more can come.
    pub async fn next(&mut self) {
        match self {
            Listener::Signals { int, term, hup } => {
                tokio::select! {
                    Some(()) = int.recv() => {}
                    Some(()) = term.recv() => {}
                    Some(()) = hup.recv() => {}
                    else => std::future::pending().await,
                }
            }
            Listener::Channel(rx) => {
                if rx.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}
