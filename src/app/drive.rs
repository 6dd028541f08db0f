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
use crate::runner::shared::Shared;
use crate::runner::{self, Ctx, Progress, StopReason};
use crate::store::postgres::{HostLease, PgQuota, PgStore};
use crate::store::{self, Db, LockOutcome, NewRun, NewTask, Store};

/// Drive `launches` in order, one account's run after another, and end the command. A run that
/// stopped (a signal, the deadline, an unavailable API) stops the command: the next accounts are
/// left for the same command to do later.
pub async fn execute(
    opts: &RunOptions,
    store: &Db,
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
        let begun = match begin(store, &launch.start, opts).await {
            Ok(b) => b,
            // The first account's refusal is the command's; a later one ends what ran so far.
            Err(e) if endings.is_empty() => return Err(e),
            Err(e) => {
                tracing::error!(account = %launch.target.account, "{e:#}");
                not_started.extend(launches[i..].iter().map(|l| l.target.account.clone()));
                break;
            }
        };
        let run_id = begun.run_id;
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
                        json!({
                            "pid": std::process::id(), "host": store::this_host(), "operator": opts.operator(),
                            "joined_live_hosts": begun.host.as_ref().map(|(_, peers)| *peers),
                        }),
                    )
                    .await?;
            }
        }
        let rate = opts.rate(launch.target.simulate);
        let ending = drive(opts, store, &launch.target, &begun, rate, i == 0, signals).await?;
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

/// A run this process may work on: its id, and on PostgreSQL this host's lease on it with the
/// number of other hosts live on it when it joined.
pub struct Begun {
    pub run_id: i64,
    pub host: Option<(HostLease, usize)>,
}

/// Record the run and take the lock for it, or take the lock of a recorded run (SQLite); on
/// PostgreSQL, join it with a host lease instead (a live run is shared, not refused).
async fn begin(store: &Db, start: &Start, opts: &RunOptions) -> anyhow::Result<Begun> {
    let pg = match store {
        Db::Sqlite(s) => {
            let run_id = match start {
                Start::New { run, tasks, .. } => create_locked(s, run, tasks).await?,
                Start::Existing { run_id } => lock(s, *run_id).await?,
            };
            return Ok(Begun { run_id, host: None });
        }
        Db::Postgres(pg) => pg,
    };
    let host =
        HostLease { run_id: 0, owner: host_owner(), host: store::this_host(), pid: i64::from(std::process::id()) };
    let (run_id, outcome, peers) = match start {
        Start::New { run, tasks, .. } => {
            let (run_id, outcome) = pg.create_run_joined(run, tasks, &host, opts.lease).await?;
            (run_id, outcome, 0)
        }
        Start::Existing { run_id } => {
            let joined = pg.join_run(&HostLease { run_id: *run_id, ..host.clone() }, opts.lease).await?;
            (*run_id, joined.outcome, joined.peers)
        }
    };
    if let LockOutcome::Held(h) = &outcome {
        return Err(Coded::new(
            Exit::Locked,
            format!(
                "run {} is live on this database: pid {} on {} joined it at {}; `qc-offboard resume {}` joins it, \
                 and a new run waits for it to end",
                h.run_id, h.pid, h.host, h.started_at, h.run_id
            ),
        )
        .into());
    }
    if peers > 0 {
        tracing::info!(run_id, hosts = peers, "joined a live run: sharing its tasks with the hosts working on it");
    }
    Ok(Begun { run_id, host: Some((HostLease { run_id, ..host }, peers)) })
}

/// This process's name among the hosts of a shared run: the host, the pid and a random part
/// (a pid is reused, and two containers may share a host name).
fn host_owner() -> String {
    format!("{}:{}:{:08x}", store::this_host(), std::process::id(), rand::random::<u32>())
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
    store: &Db,
    target: &Target,
    begun: &Begun,
    rate: Rate,
    first: bool,
    signals: &Signals,
) -> anyhow::Result<Ending> {
    if let (Some(p), true) = (Pinger::of(opts.ping_url.as_deref()), first) {
        p.send("/start", format!("qc-offboard run {} started", begun.run_id)).await;
    }
    let run_id = begun.run_id;
    let outcome = match drive_inner(opts, store, target, begun, rate, signals).await {
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
    let released = match (store, &begun.host) {
        (Db::Sqlite(s), _) => s.release_lock(run_id).await.map(|_| ()),
        (Db::Postgres(pg), Some((host, _))) => pg.leave_run(host).await,
        (Db::Postgres(_), None) => Ok(()),
    };
    if let Err(e) = released {
        tracing::warn!("could not release the run lock: {e}");
    }
    // An error is reported by the caller, to the ping URL too.
    let ending = outcome?;
    ending.result.log();
    Ok(ending)
}

async fn drive_inner(
    opts: &RunOptions,
    store: &Db,
    target: &Target,
    begun: &Begun,
    rate: Rate,
    signals: &Signals,
) -> anyhow::Result<Ending> {
    let run_id = begun.run_id;
    if let Some(pg) = store.postgres() {
        // One quota for every host of the account: the limiter's turns come from the database.
        let scope = format!("{}|{}", target.recorded_endpoint, target.settings.credentials.access_key_id);
        target.share_quota(rate, opts.burst, Arc::new(PgQuota::new(pg.clone(), scope)));
    }
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
    // Every host of a shared run prepares it and checks its clusters before it claims anything,
    // joiners too: the host that started it may still be checking, or may have died doing so.
    // What another host holds is left to it (a write without a lease never touches it).
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
    if !prepared.deferred.is_empty() {
        tracing::info!(
            tasks = prepared.deferred.len(),
            "live attempts of an earlier run wait for their cluster's job to end: each is adopted, not sent, in its turn"
        );
    }
    // What `doctor` measured: a clock that differs from the API's by more than the API allows is
    // corrected before the first request, instead of after a refused one.
    let skew = doctor_clock_skew(store, &run.endpoint, &run.access_key_id).await?;
    if let Some(skew) = skew {
        tracing::info!(skew_s = skew.num_seconds(), "signing with the API's clock, as `doctor` measured it");
        client.set_clock_offset(skew);
    }
    let shared = match (store.postgres(), &begun.host) {
        (Some(pg), Some((host, _))) => Some(shared_run(pg, host, opts, target, runner_opts.promote_not_due)),
        _ => None,
    };
    let journal = match &shared {
        Some(s) => runner::journal::Journal::start_shared(store.clone(), Arc::clone(s)),
        None => runner::journal::Journal::start(store.clone()),
    };
    let mut ctx = Ctx::new(store.clone(), journal, Arc::new(client), limiter, run_id, runner_opts, identity_runs)
        .with_deferred(prepared.deferred);
    if let Some(s) = &shared {
        ctx = ctx.with_shared(Arc::clone(s));
    }
    let ctx = Arc::new(ctx);
    // The leases are renewed every third of their length while this process works.
    let keeper = shared.as_ref().map(|s| {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(s.lease() / 3).await;
                if let Err(e) = s.extend().await {
                    tracing::warn!("could not renew this host's leases: {e}");
                }
            }
        })
    });
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
    if let Some(k) = keeper {
        k.abort();
    }
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
    // A host leaving a shared run that other live hosts still work on leaves its end to them.
    let others_work_on_it = match (&shared, store.postgres()) {
        (Some(s), Some(pg)) => {
            let others = pg.live_hosts(run_id).await?.iter().any(|h| h.owner != s.host().owner);
            others && s.unfinished().await? > 0
        }
        _ => false,
    };
    summary::tally(store, run_id, others_work_on_it, &target.account, stop, started).await
}

/// The clock difference `doctor` found against this endpoint within the last day, when it is
/// large enough to matter (over 30 s; the API refuses time stamps more than 60 s off).
/// This host's part in a run shared through PostgreSQL. A request's last check renews the
/// task's lease for at least as long as the request may take.
fn shared_run(
    pg: &PgStore,
    host: &HostLease,
    opts: &RunOptions,
    target: &Target,
    promote_not_due: bool,
) -> Arc<Shared> {
    // The client's timeout bounds the whole request, connecting included.
    let request = target.settings.request_timeout;
    Arc::new(Shared::new(pg.clone(), host.clone(), opts.lease, request, promote_not_due))
}

async fn doctor_clock_skew(
    store: &Db,
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
