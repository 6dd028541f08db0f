//! What every piece of the runner shares: the database, the API, the limiter, the clock, the
//! randomness of back-off, the run id and the options. Also the glue that records an API call
//! and lets the limiter hear about it.
//!
//! The API ([`Api`]), the clock ([`Clock`]) and the random source are the runner's seams: the
//! product passes the HTTP client, the system clock and an OS-seeded generator; the runner's unit
//! tests pass a scripted fake API, a clock on tokio's paused time and a seeded generator. Nothing
//! in the runner reaches the network, the time or randomness any other way.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::limiter::Limiter;
use crate::qingcloud::api::Api;
use crate::qingcloud::client::CallRecord;
use crate::qingcloud::client::{ApiError, Call, Gate};
use crate::store::{ApiCallRow, Db, TaskChange, TaskRow, TaskState};

use super::clock::{Clock, SystemClock};
use super::policy;
use super::state::{self, Event};

/// Options of one execution (SPEC §1, `run`/`resume`/`retry`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub max_in_flight: u32,
    pub max_attempts: u32,
    pub job_timeout: Duration,
    pub poll_interval: Duration,
    pub deadline: Option<Duration>,
    pub max_fail: Option<super::policy::MaxFail>,
    /// Which refusals and failed jobs mean "the account does not exist".
    pub absent: super::verdict::AbsentRules,
    /// Move `not_due` tasks whose date has come to `pending` (not for runs of an approved plan,
    /// which run exactly their planned states).
    pub promote_not_due: bool,
    /// How long after an intent a listing must be made before it can prove absence.
    pub reconcile_settle: Duration,
    /// The base of the back-off between attempts (`--retry-base`, [`policy::BACKOFF_BASE`] by
    /// default).
    pub retry_base: Duration,
}

/// The limiter seen by the client: every HTTP request waits here first.
pub struct LimiterGate(pub Arc<Limiter>);

impl Gate for LimiterGate {
    fn ready(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.0.ready())
    }
}

pub struct Ctx {
    pub store: Db,
    /// This process's part in a run shared with other hosts (PostgreSQL), if it is one.
    pub shared: Option<Arc<super::shared::Shared>>,
    pub journal: super::journal::Journal,
    pub api: Arc<dyn Api>,
    pub limiter: Arc<Limiter>,
    pub clock: Arc<dyn Clock>,
    /// The jitter of back-off draws from here.
    rng: Mutex<StdRng>,
    pub run_id: i64,
    pub opts: RunOptions,
    /// The runs of this database with the same endpoint identity and access key (this one
    /// included): the scope of "this account is done, or in flight, elsewhere".
    pub identity_runs: Vec<i64>,
    /// Set once the run stops: no `del_user` request leaves after it that had not passed its
    /// last check before.
    pub stop: watch::Sender<bool>,
    /// Tasks whose current request passed its last check (it may be on the wire).
    pub sent: Mutex<HashSet<i64>>,
    /// Answers in a row that were not the QingCloud API (HTML, JSON without `ret_code`).
    pub not_api_in_a_row: AtomicU32,
    /// The server's clock minus ours, from the newest answer's `Date` header.
    pub clock_skew: Mutex<Option<chrono::TimeDelta>>,
    /// Tasks whose adoption of another run's attempt waits for their cluster
    /// (`Prepared::deferred`): adopted, not sent, when their turn comes.
    pub deferred: HashSet<i64>,
}

/// How an answered call affects the run as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallVerdict {
    /// An answer came back (any ret_code other than the two below).
    Answered,
    /// 2500: the rate was (or was already) lowered.
    Throttled,
    /// 1200: the credentials were refused; the run must stop.
    AuthFailed(String),
    /// No HTTP answer at all: the endpoint could not be reached.
    NoAnswer,
}

impl Ctx {
    /// A context on the system clock with an OS-seeded random source.
    pub fn new(
        store: impl Into<Db>,
        journal: super::journal::Journal,
        api: Arc<dyn Api>,
        limiter: Arc<Limiter>,
        run_id: i64,
        opts: RunOptions,
        identity_runs: Vec<i64>,
    ) -> Ctx {
        let (stop, _) = watch::channel(false);
        Ctx {
            store: store.into(),
            shared: None,
            deferred: HashSet::new(),
            journal,
            api,
            limiter,
            clock: Arc::new(SystemClock),
            rng: Mutex::new(StdRng::from_os_rng()),
            run_id,
            opts,
            identity_runs,
            stop,
            sent: Mutex::new(HashSet::new()),
            not_api_in_a_row: AtomicU32::new(0),
            clock_skew: Mutex::new(None),
        }
    }

    /// Share the run with other hosts through `shared` (its journal must write through it too).
    pub fn with_shared(mut self, shared: Arc<super::shared::Shared>) -> Ctx {
        self.shared = Some(shared);
        self
    }

    /// Adopt `deferred` tasks' other attempts when their turn comes, instead of sending.
    pub fn with_deferred(mut self, deferred: impl IntoIterator<Item = i64>) -> Ctx {
        self.deferred = deferred.into_iter().collect();
        self
    }

    /// Read time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Ctx {
        self.clock = clock;
        self
    }

    /// Draw the back-off jitter from `rng`.
    pub fn with_rng(mut self, rng: StdRng) -> Ctx {
        self.rng = Mutex::new(rng);
        self
    }

    /// Wall time, from the run's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Monotonic time, from the run's clock.
    pub fn instant(&self) -> Instant {
        self.clock.instant()
    }

    /// A back-off after `failures` failures ([`policy::backoff`]), jittered by the run's random
    /// source.
    pub fn backoff(&self, failures: u32) -> Duration {
        policy::backoff(self.opts.retry_base, failures, &mut *self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The server's clock minus ours, as last measured.
    pub fn clock_skew(&self) -> Option<chrono::TimeDelta> {
        *self.clock_skew.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many answers in a row were not the QingCloud API.
    pub fn not_api_answers(&self) -> u32 {
        self.not_api_in_a_row.load(Ordering::Relaxed)
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Did the current request of `task_id` pass its last check?
    pub fn was_sent(&self, task_id: i64) -> bool {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).contains(&task_id)
    }

    pub fn mark_sent(&self, task_id: i64, sent: bool) {
        let mut set = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent {
            set.insert(task_id);
        } else {
            set.remove(&task_id);
        }
    }

    /// A guarded state change through the journal (committed before this returns): `event` for a
    /// task expected in one of `from` ([`state::transition`]). `None` when the task was in
    /// another state (a lost guard: nothing written).
    pub async fn step(
        &self,
        task_id: i64,
        from: &[TaskState],
        event: Event,
        change: TaskChange,
        detail: serde_json::Value,
    ) -> super::error::Result<Option<TaskRow>> {
        let t = state::transition(task_id, from, event, change, detail)?;
        Ok(self.journal.transition(t).await?)
    }

    /// Store the call's record and tell the limiter what the answer means for the rate.
    pub async fn note_call<T>(
        &self,
        task_id: Option<i64>,
        call: &Call<T>,
        sent_at: Instant,
    ) -> super::error::Result<CallVerdict> {
        let answered = self.instant();
        self.journal.record_call(self.run_id, task_id, call_row(&call.record)).await?;
        if let Some(skew) = call.record.clock_skew() {
            *self.clock_skew.lock().unwrap_or_else(|p| p.into_inner()) = Some(skew);
            // Sign with the API's clock once it refused a time stamp (1300), or before it would:
            // it refuses time stamps more than 60 s off.
            if matches!(call.result, Err(ApiError::Expired(_))) || skew.abs() > chrono::TimeDelta::seconds(30) {
                self.api.set_clock_offset(skew);
            }
        }
        match &call.result {
            Err(ApiError::NotApi(_)) => {
                self.not_api_in_a_row.fetch_add(1, Ordering::Relaxed);
            }
            _ if call.record.ret_code.is_some() => self.not_api_in_a_row.store(0, Ordering::Relaxed),
            _ => {}
        }
        let verdict = match &call.result {
            Err(ApiError::Throttled(_)) => {
                // `sent_at` is taken before the call waits at the limiter; it left when the
                // limiter let it go, its latency before the answer. A call that waited out a
                // pause was sent after that decrease, and its 2500 says the quota is still out.
                let left = answered.checked_sub(call.record.latency).unwrap_or(sent_at);
                if let Some(rate) = self.limiter.on_throttle(sent_at.max(left)) {
                    let limit = self.limiter.limit();
                    tracing::warn!(rate_per_s = rate, limit_per_s = limit, "quota exceeded (2500): rate lowered");
                    self.store
                        .audit_event(
                            Some(self.run_id),
                            None,
                            "rate_lowered",
                            serde_json::json!({ "ret_code": 2500, "rate_per_s": rate, "limit_per_s": limit }),
                        )
                        .await?;
                }
                CallVerdict::Throttled
            }
            Err(ApiError::AuthFailed(f)) => CallVerdict::AuthFailed(f.message.clone()),
            Err(_) if call.record.http_status.is_none() => CallVerdict::NoAnswer,
            _ => {
                if let Some(rate) = self.limiter.on_success() {
                    tracing::debug!(rate_per_s = rate, "rate raised");
                }
                CallVerdict::Answered
            }
        };
        Ok(verdict)
    }
}

/// The database row of an API call. The client's record never holds the signature.
pub fn call_row(r: &CallRecord) -> ApiCallRow {
    let params: serde_json::Map<String, serde_json::Value> = r
        .params
        .iter()
        .filter(|(k, _)| k != "signature")
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    ApiCallRow {
        action: r.action.clone(),
        params_json: serde_json::Value::Object(params).to_string(),
        http_status: r.http_status.map(i64::from),
        ret_code: r.ret_code,
        message: r.message.clone(),
        job_id: r.job_id.clone(),
        started_at: r.started_at,
        latency_ms: i64::try_from(r.latency.as_millis()).unwrap_or(i64::MAX),
    }
}
