//! Preparing runs: whatever a command starts from — manifests, a reviewed plan file, the failed
//! tasks of an earlier run, or a recorded run to resume — ends here as one shape, a [`Launch`]
//! per account: its target and either the run record with its tasks, or the recorded run to
//! take over. Driving them is [`super::drive`]'s.
//!
//! Which task is `pending`, `not_due` or `skipped` is decided by `plan` (for manifests) or was
//! decided by the plan file; this module only carries the states over. Nothing is sent here but
//! the lookups of `discover:` selectors.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::database::{self, Standings};
use super::discovery::{accounts_of, discover_for};
use super::options::{run_account, RunOptions};
use super::preview::build_plan;
use super::signals::Signals;
use super::target::{account_zones, env_zone, Target};
use crate::discover::Discovery;
use crate::exit::{Coded, Exit};
use crate::manifest::AccountName;
use crate::plan::file::{ApprovalArgs, PlanFile};
use crate::plan::{EstimateInputs, Plan, PlanState};
use crate::store::{self, Db, NewRun, NewTask, TaskState};

/// What a command starts from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `run MANIFEST...` (with `--dry-run`: show the plan, send nothing).
    Manifests { paths: Vec<PathBuf>, dry_run: bool },
    /// `run --plan PLAN_FILE`, with its approval (with `--dry-run`: check it, send nothing).
    PlanFile {
        path: PathBuf,
        approved_by: Option<String>,
        allowed_signers: Option<PathBuf>,
        require_approval: bool,
        dry_run: bool,
    },
    /// `resume [RUN_ID]`: the given run, else the newest unfinished one.
    Resume(Option<i64>),
    /// `retry RUN_ID`: a new run over that run's failed tasks.
    Retry(i64),
}

/// One account's run, ready to drive.
pub struct Launch {
    pub target: Target,
    pub start: Start,
}

/// How a launch's run comes to hold the lock.
pub enum Start {
    /// Recorded now with these tasks; `discovery` holds the API calls that found some of them.
    New { run: Box<NewRun>, tasks: Vec<NewTask>, discovery: Option<Discovery> },
    /// Recorded earlier, continued.
    Existing { run_id: i64 },
}

/// What a command comes to before anything is driven.
pub enum Prepared {
    /// Runs to drive, in order, recorded in `store`.
    Runs { store: Db, launches: Vec<Launch> },
    /// Nothing to drive.
    Idle(Idle),
}

/// A command that ends before any run is driven, and what to tell its user.
pub enum Idle {
    /// `run --dry-run` over manifests: the plan a run would make.
    Preview(Plan),
    /// `run --plan --dry-run`: the plan file can be run; nothing was sent.
    PlanValid { path: PathBuf, content_hash: String, tasks: usize },
    /// `resume` without a run id, and no run is unfinished.
    NothingToResume,
    /// `resume RUN_ID` of a finished run with nothing left.
    Finished { run_id: i64, finished_at: DateTime<Utc>, exit_code: Option<i64> },
    /// `retry RUN_ID` of a run without failed tasks.
    NoFailedTasks { run_id: i64 },
}

/// Prepare the runs `source` asks for (`simulate`: against an in-process simulator and its
/// database). A signal during discovery ends the command (75) before any run exists.
pub async fn prepare(
    opts: &RunOptions,
    source: &Source,
    simulate: bool,
    signals: &Signals,
) -> anyhow::Result<Prepared> {
    match source {
        Source::Manifests { paths, dry_run } => from_manifests(opts, paths, simulate, *dry_run, signals).await,
        Source::PlanFile { path, approved_by, allowed_signers, require_approval, dry_run } => {
            let asked = ApprovalArgs::new(approved_by.as_deref(), allowed_signers.as_deref(), *require_approval);
            from_plan_file(opts, path, &asked, simulate, *dry_run).await
        }
        Source::Resume(run_id) => resume(opts, *run_id, simulate).await,
        Source::Retry(run_id) => retry(opts, *run_id, simulate).await,
    }
}

async fn from_manifests(
    opts: &RunOptions,
    paths: &[PathBuf],
    simulate: bool,
    dry_run: bool,
    signals: &Signals,
) -> anyhow::Result<Prepared> {
    let target = Target::resolve(opts.api.clone(), simulate).await;
    let default_zone = match &target {
        Ok(t) => t.default_zone().or_else(env_zone),
        Err(_) => env_zone(),
    };
    // Manifest errors first (exit 65): the operator learns about them even without credentials.
    let zones = account_zones(opts.api.config.clone(), simulate);
    let mut set = crate::manifest::load_set_zoned(paths, default_zone.as_ref(), &zones)?;
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    let accounts = accounts_of(&set);
    // Every account's configuration is checked before anything is sent for any of them.
    let mut targets = Vec::with_capacity(accounts.len());
    let mut default_target = Some(target);
    for account in &accounts {
        let t = match (account.is_default(), default_target.take()) {
            (true, Some(t)) => t?,
            (_, kept) => {
                default_target = kept;
                Target::resolve_account(opts.api.clone(), simulate, account).await?
            }
        };
        targets.push(t);
    }
    let simulate = targets.first().is_some_and(|t| t.simulate) || simulate;
    let rate = opts.rate(simulate);
    let store = database::open_for_run(opts.db.as_deref(), simulate).await?;
    // `discover:` selectors become tasks before anything else is decided about them.
    let mut discoveries = Vec::with_capacity(targets.len());
    for t in &targets {
        let found = tokio::select! {
            found = discover_for(&mut set, t, rate, opts.burst) => found?,
            () = signals.first() => {
                return Err(Coded::new(
                    Exit::TempFail,
                    "stopped by a signal while discovering clusters: nothing was sent and no run was recorded",
                )
                .into());
            }
        };
        discoveries.push(found);
    }
    let mut standings = Standings::new();
    for t in &targets {
        standings.extend(store.standings(&t.recorded_endpoint, &t.settings.credentials.access_key_id).await?);
    }
    let inputs = EstimateInputs {
        rate,
        max_in_flight: opts.max_in_flight,
        poll_interval: opts.poll_interval(simulate),
        ..Default::default()
    };
    let plan = build_plan(&set, Utc::now().date_naive(), &standings, &inputs);
    if dry_run {
        return Ok(Prepared::Idle(Idle::Preview(plan)));
    }
    let first = set.files.first();
    let mut launches = Vec::with_capacity(targets.len());
    for (target, discovery) in targets.into_iter().zip(discoveries) {
        let tasks: Vec<NewTask> = plan
            .tasks
            .iter()
            .filter(|p| p.task.account_name() == target.account)
            .map(|p| {
                let t = &p.task;
                NewTask {
                    cluster: t.cluster.to_string(),
                    zone: t.zone.to_string(),
                    user: t.user.to_string(),
                    host: t.host.to_string(),
                    state: task_state(p.state),
                    not_before: t.not_before,
                    due_by: t.due_by,
                }
            })
            .collect();
        let origin = Origin {
            manifests: set.files.iter().map(|f| (f.path.display().to_string(), f.sha256.clone())).collect(),
            ticket: first.and_then(|f| f.ticket.clone()),
            requested_by: first.and_then(|f| f.requested_by.clone()),
            reason: first.and_then(|f| f.reason.clone()),
            due_by: set.files.iter().filter_map(|f| f.due_by).min(),
            retry_of: None,
            discovered: discovery.as_ref().map(Discovery::to_json),
        };
        let run = Box::new(origin.new_run(&target, opts, opts.to_json(rate, &target.account)));
        launches.push(Launch { target, start: Start::New { run, tasks, discovery } });
    }
    Ok(Prepared::Runs { store, launches })
}

/// The state a task is recorded with: the plan's.
fn task_state(state: PlanState) -> TaskState {
    match state {
        PlanState::Pending => TaskState::Pending,
        PlanState::NotDue => TaskState::NotDue,
        PlanState::Skipped => TaskState::Skipped,
    }
}

/// `run --plan PLAN_FILE`: exactly the tasks of a reviewed plan, refused (exit 65, nothing
/// sent, nothing written) when the file was edited, was made for another endpoint or key, or
/// fails the two-person rule.
async fn from_plan_file(
    opts: &RunOptions,
    plan_path: &std::path::Path,
    asked: &ApprovalArgs<'_>,
    simulate: bool,
    dry_run: bool,
) -> anyhow::Result<Prepared> {
    // The plan names its account; the approved load below checks the same bytes' hash again.
    let account = match PlanFile::load(plan_path)?.account {
        Some(a) => AccountName::parse(&a).map_err(|e| anyhow::anyhow!("{}: account: {e}", plan_path.display()))?,
        None => AccountName::default_account(),
    };
    let target = Target::resolve_account(opts.api.clone(), simulate, &account).await?;
    let access_key_id = target.settings.credentials.access_key_id.clone();
    let (plan, approval) = PlanFile::load_approved(plan_path, &target.recorded_endpoint, &access_key_id, asked)?;
    if plan.account.as_deref().unwrap_or(AccountName::DEFAULT) != account.as_str() {
        return Err(
            Coded::new(Exit::DataErr, format!("{}: the plan changed while it was read", plan_path.display())).into()
        );
    }
    let rate = opts.rate(target.simulate);
    let store = database::open_for_run(opts.db.as_deref(), target.simulate).await?;
    let done = store.done_keys(&target.recorded_endpoint, &access_key_id).await?;
    let tasks = plan.new_tasks(|c, u, h| done.contains(&(c.to_owned(), u.to_owned(), h.to_owned())));
    let mut options = opts.to_json(rate, &account);
    let extra = plan.run_options(plan_path, &approval);
    if let (Some(o), serde_json::Value::Object(extra)) = (options.as_object_mut(), extra) {
        o.extend(extra);
    }
    if dry_run {
        return Ok(Prepared::Idle(Idle::PlanValid {
            path: plan_path.to_path_buf(),
            content_hash: plan.content_hash.clone(),
            tasks: tasks.len(),
        }));
    }
    let origin = Origin {
        manifests: plan.manifests.clone(),
        ticket: plan.ticket.clone(),
        requested_by: plan.requested_by.clone(),
        reason: plan.reason.clone(),
        due_by: plan.due_by,
        retry_of: None,
        discovered: plan.discovered.clone(),
    };
    let run = Box::new(origin.new_run(&target, opts, options));
    Ok(Prepared::Runs { store, launches: vec![Launch { target, start: Start::New { run, tasks, discovery: None } }] })
}

/// `resume [RUN_ID]`: the run, against the endpoint and key it was made with.
async fn resume(opts: &RunOptions, run_id: Option<i64>, simulate: bool) -> anyhow::Result<Prepared> {
    let store = database::open_recorded(opts.db.as_deref(), simulate).await?;
    let run = match run_id {
        Some(id) => {
            store.run(id).await?.ok_or_else(|| Coded::new(Exit::Usage, format!("no run {id} in this database")))?
        }
        None => match store.newest_unfinished_run().await? {
            Some(r) => r,
            None => return Ok(Prepared::Idle(Idle::NothingToResume)),
        },
    };
    let account = run_account(&run.options)?;
    let target = Target::resolve_account(opts.api.clone(), simulate || run.simulated, &account).await?;
    if run.endpoint != target.recorded_endpoint || run.access_key_id != target.settings.credentials.access_key_id {
        return Err(Coded::new(
            Exit::Config,
            format!(
                "run {} was made against {} with access key {}; the configuration now points at {} with access key {}",
                run.id,
                run.endpoint,
                run.access_key_id,
                target.recorded_endpoint,
                target.settings.credentials.access_key_id
            ),
        )
        .into());
    }
    let counts = store.counts(run.id).await?;
    let open: i64 = counts.iter().filter(|(s, _)| s.is_open()).map(|(_, n)| *n).sum();
    if let (Some(finished_at), 0) = (run.finished_at, open) {
        // History: a finished run with nothing left is not touched.
        return Ok(Prepared::Idle(Idle::Finished { run_id: run.id, finished_at, exit_code: run.exit_code }));
    }
    Ok(Prepared::Runs { store, launches: vec![Launch { target, start: Start::Existing { run_id: run.id } }] })
}

/// `retry RUN_ID`: a new run, linked to the old one, over its failed tasks.
async fn retry(opts: &RunOptions, run_id: i64, simulate: bool) -> anyhow::Result<Prepared> {
    let store = database::open_recorded(opts.db.as_deref(), simulate).await?;
    let old =
        store.run(run_id).await?.ok_or_else(|| Coded::new(Exit::Usage, format!("no run {run_id} in this database")))?;
    let failed = store.failed_tasks(old.id).await?;
    if failed.is_empty() {
        return Ok(Prepared::Idle(Idle::NoFailedTasks { run_id: old.id }));
    }
    let account = run_account(&old.options)?;
    let target = Target::resolve_account(opts.api.clone(), simulate || old.simulated, &account).await?;
    let rate = opts.rate(target.simulate);
    let tasks: Vec<NewTask> = failed
        .iter()
        .map(|t| NewTask {
            cluster: t.cluster.clone(),
            zone: t.zone.clone(),
            user: t.user.clone(),
            host: t.host.clone(),
            state: TaskState::Pending,
            not_before: t.not_before,
            due_by: t.due_by,
        })
        .collect();
    let origin = Origin {
        manifests: old.manifests.clone(),
        ticket: old.ticket.clone(),
        requested_by: old.requested_by.clone(),
        reason: old.reason.clone(),
        due_by: old.due_by,
        retry_of: Some(old.id),
        discovered: None,
    };
    let run = Box::new(origin.new_run(&target, opts, opts.to_json(rate, &account)));
    Ok(Prepared::Runs { store, launches: vec![Launch { target, start: Start::New { run, tasks, discovery: None } }] })
}

/// Where a run's work comes from: manifests and their ticket metadata, copied from a plan file
/// or from the run being retried.
struct Origin {
    manifests: Vec<(String, String)>,
    ticket: Option<String>,
    requested_by: Option<String>,
    reason: Option<String>,
    due_by: Option<DateTime<Utc>>,
    retry_of: Option<i64>,
    /// What `discover:` selectors found for the run, as recorded in `run_started`.
    discovered: Option<serde_json::Value>,
}

impl Origin {
    /// The run record: this origin, run by this operator on this host against `target`.
    fn new_run(self, target: &Target, opts: &RunOptions, options: serde_json::Value) -> NewRun {
        NewRun {
            manifests: self.manifests,
            ticket: self.ticket,
            requested_by: self.requested_by,
            reason: self.reason,
            due_by: self.due_by,
            operator: opts.operator(),
            host: store::this_host(),
            endpoint: target.recorded_endpoint.clone(),
            access_key_id: target.settings.credentials.access_key_id.clone(),
            options,
            retry_of: self.retry_of,
            simulated: target.simulate,
            discovered: self.discovered,
        }
    }
}
