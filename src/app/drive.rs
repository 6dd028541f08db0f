//! Driving prepared runs: for each account's run, record it (or take over a recorded one)
//! under the database's run lock, wire the runner — limiter, client, journal, the clock skew
//! `doctor` measured, the command's signals — preflight, execute, release the lock and tally
//! the end; then one exit code for them all and the final ping.
//!
//! What a run holds is decided before this ([`super::prepare`]); how its end reads is
//! [`super::summary`]. Nothing here prints: the caller is told through [`Event`]s.

use std::sync::Arc;

use serde_json::json;

use super::options::RunOptions;
use super::ping::Pinger;
use super::prepare::{Launch, Start};
use super::signals::Signals;
use super::summary::{self, Ending};
use super::target::Target;
use super::Event;
use crate::exit::{Coded, Exit};
use crate::limiter::Rate;
use crate::runner::{self, Ctx, Progress, StopReason};
use crate::store::{self, LockOutcome, NewRun, NewTask, Store};

/// Drive `launches` in order, one account's run after another, and end the command. A run that
/// stopped (a signal, the deadline, an unavailable API) stops the command: the next accounts are
/// left for the same command to do later.
pub async fn execute(
    opts: &RunOptions,
    store: &Store,
    launches: Vec<Launch>,
    signals: &Signals,
    on: &mut dyn FnMut(Event<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<Exit> {
    let mut endings: Vec<Ending> = Vec::with_capacity(launches.len());
    let mut not_started = Vec::new();
    for (i, launch) in launches.iter().enumerate() {
        if endings.last().is_some_and(|e| !matches!(e.exit, Exit::Ok | Exit::TasksFailed)) {
            not_started.push(launch.target.account.clone());
            continue;
        }
        let run_id = match begin(store, &launch.start).await {
            Ok(id) => id,
            // The first account's refusal is the command's; a later one ends what ran so far.
            Err(e) if endings.is_empty() => return Err(e),
            Err(e) => {
                tracing::error!(account = %launch.target.account, "{e:#}");
                not_started.extend(launches[i..].iter().map(|l| l.target.account.clone()));
                break;
            }
        };
        match &launch.start {
            Start::New { run, tasks, discovery } => {
                if let Some(d) = discovery {
                    let calls: Vec<_> = d.calls.iter().map(|c| (run_id, None, runner::context::call_row(c))).collect();
                    store.record_calls(&calls).await?;
                }
                on(Event::Created { run_id, retry_of: run.retry_of, tasks: tasks.len() })?;
            }
            Start::Existing { .. } => {
                store
                    .audit_event(
                        Some(run_id),
                        None,
                        "run_resumed",
                        json!({ "pid": std::process::id(), "host": store::this_host(), "operator": opts.operator() }),
                    )
                    .await?;
            }
        }
        let rate = opts.rate(launch.target.simulate);
        let ending = drive(opts, store, &launch.target, run_id, rate, i == 0, signals).await?;
        on(Event::RunEnded(&ending))?;
        endings.push(ending);
    }
    let conclusion = summary::conclude(opts.metrics_file.as_deref(), endings, not_started);
    on(Event::Concluded(&conclusion))?;
    if let Some(p) = Pinger::of(opts.ping_url.as_deref()) {
        // Healthchecks.io's convention: `/0` is a success, any other code a failure.
        p.send(&format!("/{}", conclusion.exit.code()), conclusion.summary()).await;
    }
    Ok(conclusion.exit)
}

/// Record the run and take the lock for it, or take the lock of a recorded run.
async fn begin(store: &Store, start: &Start) -> anyhow::Result<i64> {
    match start {
        Start::New { run, tasks, .. } => create_locked(store, run, tasks).await,
        Start::Existing { run_id } => lock(store, *run_id).await,
    }
}

/// Take the database's run lock for `run_id`, or explain who holds it (exit 73).
async fn lock(store: &Store, run_id: i64) -> anyhow::Result<i64> {
    let outcome = store.acquire_lock(run_id, i64::from(std::process::id()), &store::this_host()).await?;
    locked(run_id, outcome)
}

/// Record a new run and take the run lock for it in one transaction. When another run holds
/// the lock, the new run is recorded without tasks and closed with 73 (so the refusal itself is
/// on record, and nothing a later `resume` would pick exists) and nothing is sent.
async fn create_locked(store: &Store, run: &NewRun, tasks: &[NewTask]) -> anyhow::Result<i64> {
    let pid = i64::from(std::process::id());
    let (run_id, outcome) = store.create_run_locked(run, tasks, pid, &store::this_host()).await?;
    locked(run_id, outcome)
}

/// What a lock attempt means for the command: go on with `run_id`, or exit 73 naming the holder.
fn locked(run_id: i64, outcome: LockOutcome) -> anyhow::Result<i64> {
    match outcome {
        LockOutcome::Acquired => Ok(run_id),
        LockOutcome::TakenOver { previous } => {
            tracing::warn!(
                pid = previous.pid,
                host = %previous.host,
                "took over the run lock of a process that is gone"
            );
            Ok(run_id)
        }
        LockOutcome::Held(h) => Err(Coded::new(
            Exit::Locked,
            format!(
                "run {} holds the database's run lock: pid {} on {}, started {}; wait for it to finish",
                h.run_id, h.pid, h.host, h.started_at
            ),
        )
        .into()),
    }
}

/// Execute a run that exists in the database and holds the lock; finish it, release the lock.
/// `first`: the command's first run, which sends the start ping. `signals` are the command's:
/// one received before the run starts stops it before its first request.
async fn drive(
    opts: &RunOptions,
    store: &Store,
    target: &Target,
    run_id: i64,
    rate: Rate,
    first: bool,
    signals: &Signals,
) -> anyhow::Result<Ending> {
    if let (Some(p), true) = (Pinger::of(opts.ping_url.as_deref()), first) {
        p.send("/start", format!("qc-offboard run {run_id} started")).await;
    }
    let outcome = match drive_inner(opts, store, target, run_id, rate, signals).await {
        // A database that lost what this process wrote (its -wal file deleted or replaced) makes
        // later statements fail in ways that say nothing of it: name the cause, not the symptom.
        Err(e) => match store.check_written_to_disk().await {
            Err(lost @ store::StoreError::Lost { .. }) => {
                tracing::error!("the run stopped: {e:#}");
                Err(anyhow::Error::from(lost))
            }
            _ => Err(e),
        },
        ok => ok,
    };
    if let Err(e) = store.release_lock(run_id).await {
        tracing::warn!("could not release the run lock: {e}");
    }
    // An error is reported by the caller, to the ping URL too.
    let ending = outcome?;
    ending.result.log();
    Ok(ending)
}

async fn drive_inner(
    opts: &RunOptions,
    store: &Store,
    target: &Target,
    run_id: i64,
    rate: Rate,
    signals: &Signals,
) -> anyhow::Result<Ending> {
    let limiter = target.limiter(rate, opts.burst);
    let client = target.client(rate, opts.burst)?;
    let run = store.run(run_id).await?.ok_or_else(|| anyhow::anyhow!("run {run_id} is not in the database"))?;
    // A run of an approved plan runs exactly its planned states: a `not_due` task stays so.
    let from_plan = run.options.get("plan").is_some_and(|p| !p.is_null());
    let runner_opts = runner::RunOptions {
        max_in_flight: opts.max_in_flight,
        max_attempts: opts.max_attempts,
        job_timeout: opts.job_timeout,
        poll_interval: opts.poll_interval(target.simulate),
        deadline: opts.deadline,
        max_fail: opts.max_fail,
        absent: opts.absent_rules(&target.settings)?,
        promote_not_due: !from_plan,
        reconcile_settle: opts.reconcile_settle(target.simulate),
        retry_base: opts.retry_base.unwrap_or(crate::runner::policy::BACKOFF_BASE),
    };
    // The account is the unit of safety: what other runs did, or left in flight, comes first.
    let identity_runs = store.identity_runs(&run.endpoint, &run.access_key_id).await?;
    let prepared = store.prepare_run(run_id, &identity_runs).await?;
    if prepared.skipped > 0 {
        tracing::info!(skipped = prepared.skipped, "accounts already done by other runs are skipped");
    }
    for (task, from_run) in &prepared.adopted {
        tracing::warn!(
            task,
            from_run,
            "adopted a live attempt of an earlier run: reconciling it before anything is sent"
        );
    }
    // What `doctor` measured: a clock that differs from the API's by more than the API allows is
    // corrected before the first request, instead of after a refused one.
    let skew = doctor_clock_skew(store, &run.endpoint, &run.access_key_id).await?;
    if let Some(skew) = skew {
        tracing::info!(skew_s = skew.num_seconds(), "signing with the API's clock, as `doctor` measured it");
        client.set_clock_offset(skew);
    }
    let journal = runner::journal::Journal::start(store.clone());
    let ctx = Arc::new(Ctx::new(store.clone(), journal, Arc::new(client), limiter, run_id, runner_opts, identity_runs));
    if let Some(skew) = skew {
        *ctx.clock_skew.lock().unwrap_or_else(|p| p.into_inner()) = Some(skew);
    }
    let progress = if opts.progress { Progress::new(true) } else { Progress::hidden() };
    tracing::info!(run_id, rate = %rate, endpoint = %target.recorded_endpoint, "run starting");
    let started = std::time::Instant::now();
    // The command's signals turn the run's stop switch from here on, before the runner listens
    // for them itself: a signal during preflight (or before it) ends the lookups at once, and
    // no del_user leaves after it.
    let bridge = {
        let (ctx, signals) = (Arc::clone(&ctx), signals.clone());
        tokio::spawn(async move {
            signals.first().await;
            ctx.stop.send_replace(true);
        })
    };
    if opts.no_preflight {
        tracing::info!("preflight skipped (--no-preflight): clusters are not checked before del_user");
    } else if !ctx.stopping() {
        let checked = runner::preflight::run(&ctx).await?;
        tracing::info!(
            calls = checked.calls,
            refused = checked.refused,
            not_ready = checked.not_ready,
            unchecked = checked.unchecked,
            stopped = checked.stopped,
            "preflight done"
        );
    }
    // Stopped before the first del_user: nothing was sent, and the tasks still waiting stay
    // `pending` for `resume`.
    let stop = if ctx.stopping() { Ok(None) } else { runner::execute(Arc::clone(&ctx), &progress).await };
    bridge.abort();
    progress.finish();
    let mut stop = stop?;
    if stop.is_none() && ctx.stopping() {
        // The runner did not hear the signal itself (it came before the runner listened).
        store
            .audit_event(
                Some(run_id),
                None,
                "run_stopping",
                json!({ "reason": StopReason::Signal.describe(), "follow_s": 0 }),
            )
            .await?;
        stop = Some(StopReason::Signal);
    }
    summary::tally(store, run_id, &target.account, stop, started).await
}

/// The clock difference `doctor` found against this endpoint within the last day, when it is
/// large enough to matter (over 30 s; the API refuses time stamps more than 60 s off).
async fn doctor_clock_skew(
    store: &Store,
    endpoint: &str,
    access_key_id: &str,
) -> anyhow::Result<Option<chrono::TimeDelta>> {
    let Some(f) = store.latest_finding(endpoint, access_key_id, store::check::CLOCK_SKEW).await? else {
        return Ok(None);
    };
    let recent = chrono::Utc::now() - f.checked_at < chrono::TimeDelta::days(1);
    let skew = f.value.parse::<i64>().ok().map(chrono::TimeDelta::seconds);
    Ok(skew.filter(|s| recent && s.abs() > chrono::TimeDelta::seconds(30)))
}
