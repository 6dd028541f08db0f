//! A scripted QingCloud API for the runner's unit tests: jobs that run for a set virtual time,
//! answers chosen per account (accepted, lost after or before taking effect, refused, a transient
//! error), a quota storm that answers 2500 to every call for a while, and a log of every request
//! that left. It shapes its calls as the HTTP client does and honours the last check the same
//! way (the rate gate raced against the stop switch, then the check), so the runner cannot tell
//! it from the client.
//!
//! Not part of the product: compiled for the unit tests only. [`wire`] shapes the calls the
//! runner sees; this module holds the world and what tests script and inspect.

mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::limiter::Limiter;
use crate::qingcloud::types::ret;
use crate::runner::clock::Clock;

/// How the API answers one `del_user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A job is made and its id comes back.
    Accept,
    /// A job is made, then the connection drops before the answer.
    LostAfterEffect,
    /// The connection drops after the request was written, before the API acted on it.
    LostBeforeEffect,
    /// A synchronous refusal with this ret_code and message; nothing is made.
    Refuse(i64, String),
}

/// One job of the fake world.
#[derive(Debug, Clone)]
pub struct FakeJob {
    pub id: String,
    pub zone: String,
    pub cluster: String,
    pub user: String,
    pub host: String,
    pub created: Instant,
    pub created_wall: DateTime<Utc>,
    /// `None`: it never ends.
    pub runs_for: Option<Duration>,
}

/// A request that reached the fake API (it passed the gate and, for `del_user`, the last check).
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub action: &'static str,
    /// A `DescribeJobs` listing by filter (reconciliation), not by id.
    pub listing: bool,
    /// `cluster/user@host` of a `del_user`.
    pub account: Option<String>,
    /// The job ids a `DescribeJobs` by id asked for.
    pub jobs: Vec<String>,
    pub ret_code: Option<i64>,
}

#[derive(Debug, Default)]
struct World {
    jobs: Vec<FakeJob>,
    scripts: HashMap<String, VecDeque<Answer>>,
    /// How long the jobs of each user run (`None`: for ever); else `job_runs_for`.
    runs_for: HashMap<String, Option<Duration>>,
    job_runs_for: Duration,
    /// Every call before this instant is answered 2500.
    quota_exhausted_until: Option<Instant>,
    log: Vec<Request>,
    /// The next slot of the fake's own rate, in virtual time.
    next_slot: Option<Instant>,
    /// How far the API's clock (its jobs' time stamps) is ahead of the runner's.
    pub(super) clock_ahead: Duration,
}

/// The fake API. Share it as `Arc<FakeApi>`; the runner holds it as `Arc<dyn Api>`.
pub struct FakeApi {
    clock: Arc<dyn Clock>,
    world: Mutex<World>,
    /// Every call waits here first, as the client waits for its gate.
    limiter: Option<Arc<Limiter>>,
    /// At most one call per this much virtual time (a slow rate without governor's real clock).
    spacing: Option<Duration>,
    /// How long an answer takes to come back.
    latency: Duration,
}

pub fn account_key(cluster: &str, user: &str, host: &str) -> String {
    format!("{cluster}/{user}@{host}")
}

impl FakeApi {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let world = World { job_runs_for: Duration::from_secs(4), ..World::default() };
        Self { clock, world: Mutex::new(world), limiter: None, spacing: None, latency: Duration::from_millis(50) }
    }

    /// Every call waits for `limiter` first (its AIMD pauses run on tokio's time).
    pub fn gated_by(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// At most one call per `spacing` of virtual time.
    pub fn spaced(mut self, spacing: Duration) -> Self {
        self.spacing = Some(spacing);
        self
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// The answers to `user`'s next `del_user` requests, in order; then [`Answer::Accept`].
    pub fn script(&self, user: &str, answers: impl IntoIterator<Item = Answer>) {
        self.world().scripts.entry(user.to_owned()).or_default().extend(answers);
    }

    /// How long jobs run unless set per user.
    pub fn jobs_run_for(&self, d: Duration) {
        self.world().job_runs_for = d;
    }

    /// `user`'s jobs run for `d` (`None`: for ever).
    pub fn jobs_of_run_for(&self, user: &str, d: Option<Duration>) {
        self.world().runs_for.insert(user.to_owned(), d);
    }

    /// Every call is answered 2500 for the next `d`.
    /// Stamp jobs with a clock `d` ahead of the runner's.
    pub fn clock_ahead_by(&self, d: Duration) {
        self.world().clock_ahead = d;
    }

    pub fn exhaust_quota_for(&self, d: Duration) {
        self.world().quota_exhausted_until = Some(self.clock.instant() + d);
    }

    /// A job made outside the run (by a request whose answer the run never saw).
    pub fn add_job(&self, zone: &str, cluster: &str, user: &str, host: &str, runs_for: Option<Duration>) -> String {
        let mut w = self.world();
        let (now, wall) = (self.clock.instant(), self.clock.now());
        make_job(&mut w, zone, cluster, user, host, runs_for, now, wall)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.world().log.clone()
    }

    /// The `del_user` requests that reached the API for this account.
    pub fn del_users(&self, cluster: &str, user: &str, host: &str) -> usize {
        let key = account_key(cluster, user, host);
        self.world().log.iter().filter(|r| r.account.as_deref() == Some(key.as_str())).count()
    }

    /// The jobs made for this account.
    pub fn jobs_for(&self, cluster: &str, user: &str, host: &str) -> usize {
        self.world().jobs.iter().filter(|j| j.cluster == cluster && j.user == user && j.host == host).count()
    }

    /// The job ids of each `DescribeJobs` by id, in order.
    pub fn polled(&self) -> Vec<Vec<String>> {
        self.world()
            .log
            .iter()
            .filter(|r| r.action == crate::qingcloud::types::DESCRIBE_JOBS && !r.listing)
            .map(|r| r.jobs.clone())
            .collect()
    }

    /// Reconciliation's listings (`DescribeJobs` by filter).
    pub fn listings(&self) -> Vec<Request> {
        self.world().log.iter().filter(|r| r.listing).cloned().collect()
    }

    /// The most jobs that ran at once, over all clusters and on any one cluster.
    pub fn most_jobs_at_once(&self) -> (usize, usize) {
        let w = self.world();
        let ends = |j: &FakeJob| j.runs_for.map_or(Instant::now() + Duration::from_secs(86_400), |d| j.created + d);
        let mut overall = 0;
        let mut per_cluster = 0;
        for j in &w.jobs {
            let running: Vec<&FakeJob> =
                w.jobs.iter().filter(|o| o.created <= j.created && j.created < ends(o)).collect();
            overall = overall.max(running.len());
            per_cluster = per_cluster.max(running.iter().filter(|o| o.cluster == j.cluster).count());
        }
        (overall, per_cluster)
    }

    pub fn calls_of(&self, action: &str) -> usize {
        self.world().log.iter().filter(|r| r.action == action).count()
    }

    pub fn answered(&self, code: i64) -> usize {
        self.world().log.iter().filter(|r| r.ret_code == Some(code)).count()
    }

    /// The rate gate: the limiter, then the fake's own spacing.
    async fn gate(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.ready().await;
        }
        if let Some(spacing) = self.spacing {
            let at = {
                let mut w = self.world();
                let now = self.clock.instant();
                let at = w.next_slot.map_or(now, |s| s.max(now));
                w.next_slot = Some(at + spacing);
                at
            };
            self.clock.sleep_until(at).await;
        }
    }

    /// Note the job ids the request just logged asked for.
    fn asked_for(&self, ids: &[String]) {
        if let Some(last) = self.world().log.last_mut() {
            last.jobs = ids.to_vec();
        }
    }

    /// Is the quota exhausted now? Logs the request either way.
    fn arrive(&self, action: &'static str, listing: bool, account: Option<String>) -> bool {
        let now = self.clock.instant();
        let mut w = self.world();
        let throttled = w.quota_exhausted_until.is_some_and(|until| now < until);
        let ret_code = throttled.then_some(ret::QUOTA_EXCEEDED);
        w.log.push(Request { at: now, action, listing, account, jobs: Vec::new(), ret_code });
        throttled
    }
}

#[allow(clippy::too_many_arguments)]
fn make_job(
    w: &mut World,
    zone: &str,
    cluster: &str,
    user: &str,
    host: &str,
    runs_for: Option<Duration>,
    now: Instant,
    wall: DateTime<Utc>,
) -> String {
    let id = format!("j-fake{:05}", w.jobs.len() + 1);
    w.jobs.push(FakeJob {
        id: id.clone(),
        zone: zone.to_owned(),
        cluster: cluster.to_owned(),
        user: user.to_owned(),
        host: host.to_owned(),
        created: now,
        created_wall: wall,
        runs_for,
    });
    id
}
