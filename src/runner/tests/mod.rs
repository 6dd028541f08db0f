//! The runner's loop, submission, reconciliation, polling and retries, driven against a scripted
//! fake API ([`fake::FakeApi`]) on tokio's paused clock: every crash window, lost answer, quota
//! storm, job timeout and stop is a deterministic test that waits on virtual time only. The
//! database is a real [`Store`] on a temporary file; it is not a seam.
//!
//! SQLite answers on its own thread, and a paused tokio runtime that waits for another thread
//! moves its clock straight to the next timer (the pool's 30 s acquire timeout, say). A
//! [`Rig`] therefore runs a heartbeat that holds the clock still while the database works (a
//! blocking task keeps tokio from advancing it) and otherwise lets it move a millisecond at a
//! time: a write costs at most a millisecond of virtual time, as if the disk were fast.

mod fake;
mod lost;
mod runs;
mod stops;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::clock::{Clock, VirtualClock};
use super::context::{Ctx, RunOptions};
use super::journal::Journal;
use super::progress::Progress;
use super::state::{self, Event};
use super::stop::{StopReason, StopRequests};
use super::verdict::AbsentRules;
use crate::limiter::{Limiter, Rate};
use crate::qingcloud::api::Api;
use crate::store::{NewRun, NewTask, Store, TaskChange, TaskRow, TaskState};
use fake::FakeApi;

const ENDPOINT: &str = "https://api.example.test/iaas/";
const ACCESS_KEY_ID: &str = "QYFAKEKEY";
pub const ZONE: &str = "sh1a";
pub const HOST: &str = "%";

/// A database with one run, a fake API and a clock on paused time.
pub struct Rig {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub api: Arc<FakeApi>,
    pub clock: Arc<VirtualClock>,
    pub limiter: Arc<Limiter>,
    pub run_id: i64,
    pub opts: RunOptions,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Options of a quick run: virtual seconds, generous limits.
fn options() -> RunOptions {
    RunOptions {
        max_in_flight: 20,
        max_attempts: 5,
        job_timeout: Duration::from_secs(15 * 60),
        poll_interval: Duration::from_secs(1),
        deadline: None,
        max_fail: None,
        absent: AbsentRules::default(),
        promote_not_due: true,
        reconcile_settle: Duration::from_secs(2),
        retry_base: crate::runner::policy::BACKOFF_BASE,
    }
}

/// One pending task per `(cluster, user)`, in [`ZONE`] with host [`HOST`].
fn new_tasks(accounts: &[(&str, &str)]) -> Vec<NewTask> {
    accounts
        .iter()
        .map(|(cluster, user)| NewTask {
            cluster: (*cluster).to_owned(),
            zone: ZONE.to_owned(),
            user: (*user).to_owned(),
            host: HOST.to_owned(),
            state: TaskState::Pending,
            not_before: None,
            due_by: None,
        })
        .collect()
}

/// The run the rig makes, as `run` would record it.
fn new_run() -> NewRun {
    NewRun {
        manifests: vec![("m.yaml".to_owned(), "0".repeat(64))],
        ticket: None,
        requested_by: None,
        reason: None,
        due_by: None,
        operator: "tester".to_owned(),
        host: "localhost".to_owned(),
        endpoint: ENDPOINT.to_owned(),
        access_key_id: ACCESS_KEY_ID.to_owned(),
        options: serde_json::json!({}),
        retry_of: None,
        simulated: true,
        discovered: None,
    }
}

impl Rig {
    /// A run of one task per `(cluster, user)`, all in [`ZONE`] with host [`HOST`], against a
    /// fake API whose calls wait for a limiter far above what a test needs.
    pub async fn new(accounts: &[(&str, &str)]) -> Rig {
        Self::with_api(accounts, |api| api).await
    }

    /// [`Rig::new`] with the fake API adjusted by `adjust` (its rate, say).
    pub async fn with_api(accounts: &[(&str, &str)], adjust: impl FnOnce(FakeApi) -> FakeApi) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = with_clock_held(Store::open(dir.path().join("audit.db"))).await.unwrap();
        let heartbeat = tokio::spawn(heartbeat(store.clone()));
        let clock = Arc::new(VirtualClock::starting_at(Utc::now()));
        let limiter = Arc::new(Limiter::new(Rate { count: 100_000, period: Duration::from_secs(1) }, 1000));
        let api = Arc::new(adjust(FakeApi::new(clock.clone()).gated_by(Arc::clone(&limiter))));
        let run_id = store.create_run(&new_run(), &new_tasks(accounts)).await.unwrap();
        Rig { _dir: dir, store, api, clock, limiter, run_id, opts: options(), heartbeat }
    }

    /// The run's context, as `drive` builds it, on the rig's seams (a fixed seed for jitter).
    pub async fn ctx(&self) -> Ctx {
        let identity_runs = self.store.identity_runs(ENDPOINT, ACCESS_KEY_ID).await.unwrap();
        let prepared = self.store.prepare_run(self.run_id, &identity_runs).await.unwrap();
        let journal = Journal::start(self.store.clone());
        let api: Arc<dyn Api> = self.api.clone();
        let clock: Arc<dyn Clock> = self.clock.clone();
        Ctx::new(
            self.store.clone(),
            journal,
            api,
            Arc::clone(&self.limiter),
            self.run_id,
            self.opts.clone(),
            identity_runs,
        )
        .with_clock(clock)
        .with_rng(StdRng::seed_from_u64(2026))
        .with_deferred(prepared.deferred)
    }

    /// Execute the run to its end; no stop is ever requested.
    pub async fn execute(&self) -> Option<StopReason> {
        self.execute_with(StopRequests::channel().1).await
    }

    /// Execute the run with stop requests from `stops`.
    pub async fn execute_with(&self, stops: StopRequests) -> Option<StopReason> {
        let ctx = Arc::new(self.ctx().await);
        super::execute_with(ctx, &Progress::hidden(), stops).await.unwrap()
    }

    /// Make another run of `accounts` on the rig's database (a later `run` or `retry`); the
    /// rig works on it from here on.
    pub async fn another_run(&mut self, accounts: &[(&str, &str)]) {
        self.run_id = self.store.create_run(&new_run(), &new_tasks(accounts)).await.unwrap();
    }

    /// Wall time on the rig's clock.
    pub fn clock_now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }

    pub async fn tasks(&self) -> Vec<TaskRow> {
        self.store.tasks(self.run_id).await.unwrap()
    }

    /// The task of `user`.
    pub async fn task(&self, user: &str) -> TaskRow {
        self.tasks().await.into_iter().find(|t| t.user == user).unwrap()
    }

    /// Leave `user`'s task `submitting` with an intent at `intent_at`, as a process that died
    /// right after committing its intent would have.
    pub async fn crash_after_intent(&self, user: &str, intent_at: chrono::DateTime<Utc>) {
        let task = self.task(user).await;
        let t = state::transition(
            task.id,
            &[TaskState::Pending],
            Event::Intent,
            TaskChange::new().intent_at(intent_at),
            serde_json::json!({ "attempt": 1 }),
        )
        .unwrap();
        assert!(self.store.steps(&[t]).await.unwrap()[0].is_some());
    }

    /// The audit chain is intact.
    pub async fn assert_audit_intact(&self) {
        let v = self.store.verify_audit(None).await.unwrap();
        assert!(v.problem.is_none(), "{v:?}");
    }
}

/// Run `work` with tokio's clock held still: a blocking task runs until it is done, and tokio
/// does not advance a paused clock while one does.
async fn with_clock_held<F: std::future::Future>(work: F) -> F::Output {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let hold = tokio::task::spawn_blocking(move || {
        let _ = wait.recv();
    });
    let out = work.await;
    drop(done);
    hold.await.unwrap();
    out
}

/// Hold the clock while `store` has a connection out; else let it move by a millisecond.
async fn heartbeat(store: Store) {
    loop {
        if store.in_use() {
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                while store.in_use() {
                    std::thread::sleep(Duration::from_micros(20));
                }
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
