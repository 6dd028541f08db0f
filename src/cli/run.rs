//! `run`, `resume` and `retry`: everything around the runner — manifests, configuration, the
//! simulator for `--simulate`, the database and its run lock, pings, the progress bar and the
//! final summary with its exit code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::cli::{ExecOpts, GlobalOpts, LogFormat, OutputFormat, ResumeArgs, RetryArgs, RunArgs};
use crate::exit::{Coded, Exit};
use crate::limiter::{Limiter, Rate};
use crate::manifest::{AccountName, Zone};
use crate::plan::file::{self, PlanFile};
use crate::qingcloud::client::Client;
use crate::qingcloud::config::{self, ConfigInput, Credentials, Settings};
use crate::runner::verdict::AbsentRules;
use crate::runner::{self, Ctx, LimiterGate, Progress, RunOptions, StopReason};
use crate::store::{self, LockOutcome, NewRun, NewTask, Store, TaskState};

/// The endpoint recorded for runs against the in-process simulator. Its port changes every
/// time, so a fixed name keeps "already deleted" lookups working between simulated runs.
pub const SIMULATED_ENDPOINT: &str = "simulator";

/// Where the API is, with what key, and (for `--simulate`) the simulator keeping it alive.
pub struct Target {
    pub settings: Settings,
    pub recorded_endpoint: String,
    pub simulate: bool,
    /// The QingCloud account (config profile) the settings are of.
    pub account: AccountName,
    /// The account's rate limiter, made on first use: discovery and the run share it.
    limiter: std::sync::OnceLock<Arc<Limiter>>,
    _sim: Option<crate::sim::SimHandle>,
}

impl Target {
    /// The default account's target.
    pub async fn resolve(api: &crate::cli::ApiOpts, simulate: bool) -> anyhow::Result<Target> {
        Self::resolve_account(api, simulate, &AccountName::default_account()).await
    }

    /// The target of one account: its key pair, endpoint and zone from the config file's
    /// `accounts.<name>` (or the top level for the default account) and the environment. Under
    /// `--simulate` every account is the in-process simulator's.
    pub async fn resolve_account(
        api: &crate::cli::ApiOpts,
        simulate: bool,
        account: &AccountName,
    ) -> anyhow::Result<Target> {
        if simulate {
            let sim = crate::sim::start(crate::sim::World::auto_fast(), "127.0.0.1:0".parse()?)
                .await
                .context("cannot start the in-process simulator")?;
            let endpoint = url::Url::parse(&sim.endpoint())?;
            tracing::info!(endpoint = %endpoint, "running against the in-process simulator");
            let credentials =
                Credentials::new(crate::sim::DEFAULT_ACCESS_KEY_ID, crate::sim::DEFAULT_SECRET_ACCESS_KEY);
            let settings = Settings::new(endpoint, credentials);
            return Ok(Target {
                settings,
                recorded_endpoint: SIMULATED_ENDPOINT.to_owned(),
                simulate,
                account: account.clone(),
                limiter: std::sync::OnceLock::new(),
                _sim: Some(sim),
            });
        }
        let input = ConfigInput { endpoint: api.endpoint.clone(), config: api.config.clone() };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let resolved = config::resolve_account(&input, &|k| std::env::var(k).ok(), home.as_deref(), account)?;
        // Recorded as an identity: `/iaas` and `/iaas/` (or a default port) are one endpoint.
        let recorded_endpoint = store::endpoint_identity(resolved.settings.endpoint.as_str());
        Ok(Target {
            settings: resolved.settings,
            recorded_endpoint,
            simulate,
            account: account.clone(),
            limiter: std::sync::OnceLock::new(),
            _sim: None,
        })
    }

    /// The account's limiter: every call of the command for this account waits on it.
    pub fn limiter(&self, rate: Rate, burst: u32) -> Arc<Limiter> {
        Arc::clone(self.limiter.get_or_init(|| Arc::new(Limiter::new(rate, burst))))
    }

    /// A client for this account, gated by its limiter.
    pub fn client(&self, rate: Rate, burst: u32) -> anyhow::Result<Client> {
        Ok(Client::new(&self.settings)?.with_gate(Arc::new(LimiterGate(self.limiter(rate, burst)))))
    }

    pub fn default_zone(&self) -> Option<Zone> {
        self.settings.zone.clone()
    }
}

/// The default zone when neither config nor flags give one: `QINGCLOUD_ZONE`. A value that is
/// not a zone gives none here; resolving the configuration reports it (exit 78).
pub fn env_zone() -> Option<Zone> {
    crate::qingcloud::config::env_zone().ok().flatten()
}

fn db_path(global: &GlobalOpts, simulate: bool) -> anyhow::Result<PathBuf> {
    Ok(store::resolve_path(global.db.as_deref(), simulate)?)
}

fn rate_of(exec: &ExecOpts, simulate: bool) -> Rate {
    exec.rate.rate.unwrap_or(if simulate { Rate::SIMULATE } else { Rate::DEFAULT })
}

/// The simulator's jobs take tens of milliseconds; real ones take seconds.
fn poll_interval_of(exec: &ExecOpts, simulate: bool) -> Duration {
    exec.poll_interval.unwrap_or(if simulate { Duration::from_millis(200) } else { Duration::from_secs(3) })
}

/// Who runs the command, as recorded with the run: `--operator` (or `QC_OFFBOARD_OPERATOR`),
/// else the login name the system user database gives this process's user id (what `id -un`
/// prints; cron and systemd set no `$USER`), else `$USER`/`$LOGNAME`, else the numeric uid.
fn operator(exec: &ExecOpts) -> String {
    if let Some(name) = exec.operator.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    let uid = uzers::get_current_uid();
    if let Some(name) = uzers::get_user_by_uid(uid).and_then(|u| u.name().to_str().map(str::to_owned)) {
        return name;
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn options_json(exec: &ExecOpts, rate: Rate, account: &AccountName) -> serde_json::Value {
    let absent: Vec<String> = exec.absent_on.iter().map(ToString::to_string).collect();
    let mut options = json!({
        "absent_on": if absent.is_empty() { serde_json::Value::Null } else { json!(absent) },
        "reconcile_settle_ms": exec.reconcile_settle.map(|d| d.as_millis() as u64),
        "rate": rate.to_string(),
        "burst": exec.rate.burst,
        "max_in_flight": exec.max_in_flight,
        "max_attempts": exec.max_attempts,
        "job_timeout_s": exec.job_timeout.as_secs(),
        "poll_interval_ms": exec.poll_interval.map(|d| d.as_millis() as u64),
        "deadline_s": exec.deadline.map(|d| d.as_secs()),
        "max_fail": exec.max_fail.map(|m| format!("{m:?}")),
    });
    // The default account's runs look as they always did; a named account is on record, for
    // `resume` and `retry` to pick its key pair again.
    if let (false, Some(o)) = (account.is_default(), options.as_object_mut()) {
        o.insert("account".to_owned(), json!(account.as_str()));
    }
    options
}

/// The account a run was made for (its `options.account`; absent: the default account).
fn run_account(options: &serde_json::Value) -> anyhow::Result<AccountName> {
    match options.get("account").and_then(serde_json::Value::as_str) {
        None => Ok(AccountName::default_account()),
        Some(a) => AccountName::parse(a).map_err(|e| anyhow::anyhow!("the run's recorded account: {e}")),
    }
}

/// Take the database's run lock for `run_id`, or explain who holds it (exit 73).
async fn lock(store: &Store, run_id: i64) -> anyhow::Result<()> {
    let outcome = store.acquire_lock(run_id, i64::from(std::process::id()), &store::this_host()).await?;
    locked(run_id, outcome).map(|_| ())
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

pub async fn run(global: &GlobalOpts, args: RunArgs) -> anyhow::Result<Exit> {
    let exec = args.exec.clone();
    ended_with_error(&exec, run_command(global, args).await).await
}

async fn run_command(global: &GlobalOpts, args: RunArgs) -> anyhow::Result<Exit> {
    if let Some(plan_path) = &args.plan {
        return run_plan(global, &args, plan_path).await;
    }
    let target = Target::resolve(&args.exec.api, args.simulate).await;
    let default_zone = match &target {
        Ok(t) => t.default_zone().or_else(env_zone),
        Err(_) => env_zone(),
    };
    // Manifest errors first (exit 65): the operator learns about them even without credentials.
    let input = ConfigInput { endpoint: None, config: args.exec.api.config.clone() };
    let zones = if args.simulate {
        Default::default()
    } else {
        config::account_zones(&input, std::env::var_os("HOME").map(PathBuf::from).as_deref())
    };
    let mut set = crate::manifest::load_set_zoned(&args.manifests, default_zone.as_ref(), &zones)?;
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
                Target::resolve_account(&args.exec.api, args.simulate, account).await?
            }
        };
        targets.push(t);
    }
    let simulate = targets.first().is_some_and(|t| t.simulate) || args.simulate;
    let rate = rate_of(&args.exec, simulate);
    let store = Store::open(&db_path(global, simulate)?).await?;
    // `discover:` selectors become tasks before anything else is decided about them.
    let mut discoveries = Vec::with_capacity(targets.len());
    for t in &targets {
        discoveries.push(discover_for(&mut set, t, rate, args.exec.rate.burst).await?);
    }
    let mut standings = crate::cli::plan::Standings::new();
    for t in &targets {
        standings.extend(store.standings(&t.recorded_endpoint, &t.settings.credentials.access_key_id).await?);
    }
    let today = crate::cli::plan::today();

    if args.dry_run {
        let inputs = crate::plan::EstimateInputs {
            rate,
            max_in_flight: args.exec.max_in_flight,
            poll_interval: poll_interval_of(&args.exec, simulate),
            ..Default::default()
        };
        crate::cli::plan::print_plan(&set, today, &standings, &inputs, crate::cli::OutputFormat::Human);
        return Ok(Exit::Ok);
    }
    let done: std::collections::HashSet<_> =
        standings.into_iter().filter(|(_, s)| matches!(s, store::Standing::Done { .. })).map(|(k, _)| k).collect();

    let first = set.files.first();
    let mut endings = Vec::with_capacity(targets.len());
    let mut not_started = Vec::new();
    for (i, (target, discovery)) in targets.iter().zip(discoveries).enumerate() {
        // A run that stopped (a signal, the deadline, an unavailable API) stops the command:
        // the next accounts are left for the same command to do later.
        if endings.last().is_some_and(|e: &Ending| !matches!(e.exit, Exit::Ok | Exit::TasksFailed)) {
            not_started.push(target.account.clone());
            continue;
        }
        let tasks: Vec<NewTask> = set
            .tasks
            .iter()
            .filter(|t| t.account_name() == target.account)
            .map(|t| {
                let key = (t.cluster.to_string(), t.user.to_string(), t.host.to_string());
                let state = if done.contains(&key) {
                    TaskState::Skipped
                } else if t.is_not_due(today) {
                    TaskState::NotDue
                } else {
                    TaskState::Pending
                };
                NewTask {
                    cluster: key.0,
                    zone: t.zone.to_string(),
                    user: key.1,
                    host: key.2,
                    state,
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
            discovered: discovery.as_ref().map(crate::discover::Discovery::to_json),
        };
        let options = options_json(&args.exec, rate, &target.account);
        let run_id = match create_locked(&store, &origin.new_run(target, &args.exec, options), &tasks).await {
            Ok(id) => id,
            // The first account's refusal is the command's; a later one ends what ran so far.
            Err(e) if endings.is_empty() => return Err(e),
            Err(e) => {
                tracing::error!(account = %target.account, "{e:#}");
                not_started.extend(targets[i..].iter().map(|t| t.account.clone()));
                break;
            }
        };
        if let Some(d) = &discovery {
            let calls: Vec<_> = d.calls.iter().map(|c| (run_id, None, crate::runner::context::call_row(c))).collect();
            store.record_calls(&calls).await?;
        }
        endings.push(drive(global, &store, target, run_id, &args.exec, rate, i == 0).await?);
    }
    conclude(&args.exec, endings, not_started).await
}

/// Expand the `discover:` selectors of `target`'s account into tasks of `set`, with the
/// account's client and limiter; `None` when the account has none.
pub(crate) async fn discover_for(
    set: &mut crate::manifest::ManifestSet,
    target: &Target,
    rate: Rate,
    burst: u32,
) -> anyhow::Result<Option<crate::discover::Discovery>> {
    let selectors: Vec<&crate::manifest::Selector> =
        set.selectors.iter().filter(|s| s.account_name() == target.account).collect();
    if selectors.is_empty() {
        return Ok(None);
    }
    let client = target.client(rate, burst)?;
    let found =
        crate::discover::expand(&client, &selectors).await.map_err(crate::discover::DiscoverError::into_coded)?;
    let added = crate::discover::merge_into(set, &found);
    tracing::info!(
        account = %target.account,
        clusters = found.found.len(),
        tasks = added,
        calls = found.calls.len(),
        "discover: clusters found"
    );
    for f in &found.passed_over {
        tracing::warn!(
            cluster = %f.cluster,
            zone = %f.zone,
            status = %f.status,
            "discover: a matching MySQL Plus cluster is not active and was not selected; its accounts stay"
        );
    }
    Ok(Some(found))
}

/// The accounts the tasks and selectors of `set` belong to, in the order first met.
pub(crate) fn accounts_of(set: &crate::manifest::ManifestSet) -> Vec<AccountName> {
    let mut out: Vec<AccountName> = Vec::new();
    for a in set.tasks.iter().map(|t| t.account_name()).chain(set.selectors.iter().map(|s| s.account_name())) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        out.push(AccountName::default_account());
    }
    out
}

/// Where a run's work comes from: manifests and their ticket metadata, copied from a plan file
/// or from the run being retried.
struct Origin {
    manifests: Vec<(String, String)>,
    ticket: Option<String>,
    requested_by: Option<String>,
    reason: Option<String>,
    due_by: Option<chrono::DateTime<chrono::Utc>>,
    retry_of: Option<i64>,
    /// What `discover:` selectors found for the run, as recorded in `run_started`.
    discovered: Option<serde_json::Value>,
}

impl Origin {
    /// The run record: this origin, run by this operator on this host against `target`.
    fn new_run(self, target: &Target, exec: &ExecOpts, options: serde_json::Value) -> NewRun {
        NewRun {
            manifests: self.manifests,
            ticket: self.ticket,
            requested_by: self.requested_by,
            reason: self.reason,
            due_by: self.due_by,
            operator: operator(exec),
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

/// `run --plan PLAN_FILE`: exactly the tasks of a reviewed plan, refused (exit 65, nothing
/// sent, nothing written) when the file was edited, was made for another endpoint or key, or
/// fails the two-person rule.
async fn run_plan(global: &GlobalOpts, args: &RunArgs, plan_path: &std::path::Path) -> anyhow::Result<Exit> {
    // The plan names its account; the approved load below checks the same bytes' hash again.
    let account = match PlanFile::load(plan_path)?.account {
        Some(a) => AccountName::parse(&a).map_err(|e| anyhow::anyhow!("{}: account: {e}", plan_path.display()))?,
        None => AccountName::default_account(),
    };
    let target = Target::resolve_account(&args.exec.api, args.simulate, &account).await?;
    let access_key_id = target.settings.credentials.access_key_id.clone();
    let asked =
        file::ApprovalArgs::new(args.approved_by.as_deref(), args.allowed_signers.as_deref(), args.require_approval);
    let (plan, approval) = PlanFile::load_approved(plan_path, &target.recorded_endpoint, &access_key_id, &asked)?;
    if plan.account.as_deref().unwrap_or(AccountName::DEFAULT) != account.as_str() {
        return Err(
            Coded::new(Exit::DataErr, format!("{}: the plan changed while it was read", plan_path.display())).into()
        );
    }
    let rate = rate_of(&args.exec, target.simulate);
    let store = Store::open(&db_path(global, target.simulate)?).await?;
    let done = store.done_keys(&target.recorded_endpoint, &access_key_id).await?;
    let tasks = plan.new_tasks(|c, u, h| done.contains(&(c.to_owned(), u.to_owned(), h.to_owned())));
    let mut options = options_json(&args.exec, rate, &account);
    let extra = plan.run_options(plan_path, &approval);
    if let (Some(o), serde_json::Value::Object(extra)) = (options.as_object_mut(), extra) {
        o.extend(extra);
    }
    if args.dry_run {
        println!(
            "plan {} ({}) is valid: {} tasks; nothing was sent",
            plan_path.display(),
            plan.content_hash,
            tasks.len()
        );
        return Ok(Exit::Ok);
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
    let run_id = create_locked(&store, &origin.new_run(&target, &args.exec, options), &tasks).await?;
    let ending = drive(global, &store, &target, run_id, &args.exec, rate, true).await?;
    conclude(&args.exec, vec![ending], Vec::new()).await
}

/// Record a new run and take the run lock for it in one transaction. When another run holds
/// the lock, the new run is recorded without tasks and closed with 73 (so the refusal itself is
/// on record, and nothing a later `resume` would pick exists) and nothing is sent.
async fn create_locked(store: &Store, run: &NewRun, tasks: &[NewTask]) -> anyhow::Result<i64> {
    let pid = i64::from(std::process::id());
    let (run_id, outcome) = store.create_run_locked(run, tasks, pid, &store::this_host()).await?;
    locked(run_id, outcome)
}

/// Open a database that must exist (`resume`, `retry`): a mistyped `--db` is a configuration
/// error (78), never a new empty database.
async fn open_existing(global: &GlobalOpts, simulate: bool) -> anyhow::Result<Store> {
    let path = db_path(global, simulate)?;
    if !path.is_file() {
        return Err(Coded::new(
            Exit::Config,
            format!("no database at {}: check --db / QC_OFFBOARD_DB (nothing was created)", path.display()),
        )
        .into());
    }
    Ok(Store::open(&path).await?)
}

pub async fn resume(global: &GlobalOpts, args: ResumeArgs) -> anyhow::Result<Exit> {
    let exec = args.exec.clone();
    ended_with_error(&exec, resume_command(global, args).await).await
}

async fn resume_command(global: &GlobalOpts, args: ResumeArgs) -> anyhow::Result<Exit> {
    let store = open_existing(global, args.simulate).await?;
    let run = match args.run_id {
        Some(id) => {
            store.run(id).await?.ok_or_else(|| Coded::new(Exit::Usage, format!("no run {id} in this database")))?
        }
        None => match store.newest_unfinished_run().await? {
            Some(r) => r,
            None => {
                say(&args.exec, "no unfinished run to resume");
                return Ok(Exit::Ok);
            }
        },
    };
    let account = run_account(&run.options)?;
    let target = Target::resolve_account(&args.exec.api, args.simulate || run.simulated, &account).await?;
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
    let rate = rate_of(&args.exec, target.simulate);
    let counts = store.counts(run.id).await?;
    let open: i64 = counts.iter().filter(|(s, _)| s.is_open()).map(|(_, n)| *n).sum();
    if let (Some(finished_at), 0) = (run.finished_at, open) {
        // History: a finished run with nothing left is not touched.
        say(
            &args.exec,
            &format!(
                "run {} finished at {} (exit {}); nothing to resume",
                run.id,
                finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                run.exit_code.map_or_else(|| "?".to_owned(), |c| c.to_string())
            ),
        );
        return Ok(Exit::Ok);
    }
    lock(&store, run.id).await?;
    store
        .audit_event(
            Some(run.id),
            None,
            "run_resumed",
            json!({ "pid": std::process::id(), "host": store::this_host(), "operator": operator(&args.exec) }),
        )
        .await?;
    let ending = drive(global, &store, &target, run.id, &args.exec, rate, true).await?;
    conclude(&args.exec, vec![ending], Vec::new()).await
}

pub async fn retry(global: &GlobalOpts, args: RetryArgs) -> anyhow::Result<Exit> {
    let exec = args.exec.clone();
    ended_with_error(&exec, retry_command(global, args).await).await
}

async fn retry_command(global: &GlobalOpts, args: RetryArgs) -> anyhow::Result<Exit> {
    let store = open_existing(global, args.simulate).await?;
    let old = store
        .run(args.run_id)
        .await?
        .ok_or_else(|| Coded::new(Exit::Usage, format!("no run {} in this database", args.run_id)))?;
    let failed = store.failed_tasks(old.id).await?;
    if failed.is_empty() {
        say(&args.exec, &format!("run {} has no failed tasks; nothing to retry", old.id));
        return Ok(Exit::Ok);
    }
    let account = run_account(&old.options)?;
    let target = Target::resolve_account(&args.exec.api, args.simulate || old.simulated, &account).await?;
    let rate = rate_of(&args.exec, target.simulate);
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
    let options = options_json(&args.exec, rate, &account);
    let run_id = create_locked(&store, &origin.new_run(&target, &args.exec, options), &tasks).await?;
    say(&args.exec, &format!("run {run_id} retries the {} failed task(s) of run {}", tasks.len(), old.id));
    let ending = drive(global, &store, &target, run_id, &args.exec, rate, true).await?;
    conclude(&args.exec, vec![ending], Vec::new()).await
}

/// A run that ended with an error (before its summary, or one that could not start: 65, 73,
/// 78) still reports it: the metrics file gets its exit code and the ping URL gets
/// `URL/<exit code>`, so a broken configuration shows where a failed run would.
async fn ended_with_error(exec: &ExecOpts, outcome: anyhow::Result<Exit>) -> anyhow::Result<Exit> {
    if let Err(e) = &outcome {
        let code = crate::exit::code_for(e).code();
        write_metrics(exec, code, &[]);
        if let Some(p) = exec.ping_url.as_deref().map(Pinger::new) {
            p.send(&format!("/{code}"), format!("qc-offboard ended with exit {code}: {e:#}")).await;
        }
    }
    outcome
}

/// `--metrics-file`: best effort, like the pings; a failure is a warning, never the run's exit.
fn write_metrics(exec: &ExecOpts, exit_code: u8, results: &[&RunResult]) {
    let Some(path) = &exec.metrics_file else { return };
    let text = crate::cli::metrics::render(exit_code, chrono::Utc::now(), results);
    if let Err(e) = crate::cli::metrics::write_atomically(path, &text) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the metrics file");
    }
}

/// A line for people: on stdout, or on stderr when stdout carries the one JSON object.
fn say(exec: &ExecOpts, line: &str) {
    match exec.output {
        OutputFormat::Human => println!("{line}"),
        OutputFormat::Json => eprintln!("{line}"),
    }
}

/// How one account's run ended.
struct Ending {
    exit: Exit,
    summary: String,
    result: RunResult,
}

/// Execute a run that exists in the database and holds the lock; finish it, release the lock,
/// print its summary (`--output human`). `first`: the command's first run, which sends the
/// start ping.
async fn drive(
    global: &GlobalOpts,
    store: &Store,
    target: &Target,
    run_id: i64,
    exec: &ExecOpts,
    rate: Rate,
    first: bool,
) -> anyhow::Result<Ending> {
    if let (Some(p), true) = (exec.ping_url.as_deref().map(Pinger::new), first) {
        p.send("/start", format!("qc-offboard run {run_id} started")).await;
    }
    let outcome = match drive_inner(global, store, target, run_id, exec, rate).await {
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
    let (exit, summary, result) = outcome?;
    result.log();
    if exec.output == OutputFormat::Human {
        println!("{summary}");
    }
    Ok(Ending { exit, summary, result })
}

/// The end of a command's runs: one exit code for all of them, the metrics file, the JSON
/// result and the final ping. Several accounts' runs end with the worst of their codes, at
/// least 75 when an account was not started.
async fn conclude(exec: &ExecOpts, endings: Vec<Ending>, not_started: Vec<AccountName>) -> anyhow::Result<Exit> {
    let rank = |e: Exit| match e {
        Exit::Ok => 0,
        Exit::TasksFailed => 1,
        Exit::TempFail => 2,
        _ => 3,
    };
    let mut exit = endings.iter().map(|e| e.exit).max_by_key(|e| rank(*e)).unwrap_or(Exit::Ok);
    if !not_started.is_empty() && rank(exit) < rank(Exit::TempFail) {
        exit = Exit::TempFail;
    }
    let results: Vec<&RunResult> = endings.iter().map(|e| &e.result).collect();
    write_metrics(exec, exit.code(), &results);
    let several = endings.len() > 1 || !not_started.is_empty();
    let mut summary = endings.iter().map(|e| e.summary.as_str()).collect::<Vec<_>>().join("\n");
    if several {
        let mut line = format!(
            "accounts: {}",
            endings
                .iter()
                .map(|e| format!("{} run {} exit {}", e.result.account, e.result.run_id, e.exit.code()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !not_started.is_empty() {
            line.push_str(&format!(
                "; not started: {} (the same command does them later)",
                not_started.iter().map(AccountName::as_str).collect::<Vec<_>>().join(", ")
            ));
        }
        line.push_str(&format!(" — exit {}", exit.code()));
        summary.push_str(&format!("\n{line}"));
        if exec.output == OutputFormat::Human {
            println!("{line}");
        }
    }
    if exec.output == OutputFormat::Json {
        if several {
            let not_started: Vec<&str> = not_started.iter().map(AccountName::as_str).collect();
            let all = json!({ "exit_code": exit.code(), "runs": results, "not_started": not_started });
            println!("{}", serde_json::to_string(&all)?);
        } else if let Some(r) = results.first() {
            println!("{}", serde_json::to_string(r)?);
        }
    }
    if let Some(p) = exec.ping_url.as_deref().map(Pinger::new) {
        // Healthchecks.io's convention: `/0` is a success, any other code a failure.
        p.send(&format!("/{}", exit.code()), summary).await;
    }
    Ok(exit)
}

async fn drive_inner(
    global: &GlobalOpts,
    store: &Store,
    target: &Target,
    run_id: i64,
    exec: &ExecOpts,
    rate: Rate,
) -> anyhow::Result<(Exit, String, RunResult)> {
    let limiter = target.limiter(rate, exec.rate.burst);
    let client = target.client(rate, exec.rate.burst)?;
    let run = store.run(run_id).await?.ok_or_else(|| anyhow::anyhow!("run {run_id} is not in the database"))?;
    // A run of an approved plan runs exactly its planned states: a `not_due` task stays so.
    let from_plan = run.options.get("plan").is_some_and(|p| !p.is_null());
    let opts = RunOptions {
        max_in_flight: exec.max_in_flight,
        max_attempts: exec.max_attempts,
        job_timeout: exec.job_timeout,
        poll_interval: poll_interval_of(exec, target.simulate),
        deadline: exec.deadline,
        max_fail: exec.max_fail,
        absent: absent_rules(exec, &target.settings)?,
        promote_not_due: !from_plan,
        reconcile_settle: exec.reconcile_settle.unwrap_or(if target.simulate {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        }),
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
    let ctx = Arc::new(Ctx::new(store.clone(), journal, Arc::new(client), limiter, run_id, opts, identity_runs));
    if let Some(skew) = skew {
        *ctx.clock_skew.lock().unwrap_or_else(|p| p.into_inner()) = Some(skew);
    }
    let progress = if global.no_progress || global.log_format == LogFormat::Json {
        Progress::hidden()
    } else {
        Progress::new(true)
    };
    tracing::info!(run_id, rate = %rate, endpoint = %target.recorded_endpoint, "run starting");
    let started = std::time::Instant::now();
    if exec.no_preflight {
        tracing::info!("preflight skipped (--no-preflight): clusters are not checked before del_user");
    } else {
        let checked = runner::preflight::run(&ctx).await?;
        tracing::info!(
            calls = checked.calls,
            refused = checked.refused,
            not_ready = checked.not_ready,
            unchecked = checked.unchecked,
            "preflight done"
        );
    }
    let stop = runner::execute(ctx, &progress).await;
    progress.finish();
    let stop = stop?;

    let rows = store.tasks(run_id).await?;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.state.as_str()).or_default() += 1;
    }
    let count = |s: TaskState| counts.get(s.as_str()).copied().unwrap_or(0);
    let in_flight = count(TaskState::Submitting) + count(TaskState::Submitted);
    let waiting = count(TaskState::Pending) + count(TaskState::RetryWait);
    let unfinished = in_flight + waiting;
    let failed = count(TaskState::Failed);
    let not_ready = count(TaskState::NotReady);
    let exit = match &stop {
        Some(why) if why.is_hard() => Exit::Unavailable,
        _ if unfinished > 0 => Exit::TempFail,
        _ if not_ready > 0 && failed == 0 => Exit::TempFail,
        _ if failed > 0 => Exit::TasksFailed,
        _ => Exit::Ok,
    };
    let mut summary = format!(
        "run {run_id}: {} deleted, {} skipped, {} failed, {} pending, {} not due, {} absent (account not found), \
         {} in flight ({} tasks in {:.1} s) — exit {}",
        count(TaskState::Deleted),
        count(TaskState::Skipped),
        failed,
        waiting,
        count(TaskState::NotDue),
        count(TaskState::Absent),
        in_flight,
        rows.len(),
        started.elapsed().as_secs_f64(),
        exit.code()
    );
    if count(TaskState::HandedOver) > 0 {
        summary.push_str(&format!(
            "\n{} task(s) handed over: a later run adopted their live attempts",
            count(TaskState::HandedOver)
        ));
    }
    if not_ready > 0 {
        summary.push_str(&format!(
            "\n{not_ready} task(s) not ready: their cluster was not active at preflight; nothing was sent, a later \
             run of the manifest tries them again"
        ));
    }
    if let Some(why) = &stop {
        summary.push_str(&format!("\n{}", why.describe()));
    }
    let running = count(TaskState::Submitted);
    if running > 0 {
        summary.push_str(&format!("\n{running} job(s) still running: resume follows them"));
    }
    if count(TaskState::Submitting) > 0 {
        summary.push_str(&format!(
            "\n{} submission(s) in doubt: resume reconciles them before anything is sent again",
            count(TaskState::Submitting)
        ));
    }
    if unfinished > 0 {
        summary.push_str(&format!("\n`qc-offboard resume {run_id}` continues this run"));
    }
    let failed_rows: Vec<_> = rows.iter().filter(|r| r.state == TaskState::Failed).collect();
    if !failed_rows.is_empty() {
        summary.push_str("\nfailed:");
        for r in failed_rows {
            summary.push_str(&format!(
                "\n  {} ({}) {}@{}: {}",
                r.cluster,
                r.zone,
                r.user,
                r.host,
                r.last_message.as_deref().unwrap_or("")
            ));
        }
        summary.push_str(&format!("\n`qc-offboard retry {run_id}` tries the failed tasks again"));
    }
    let duration_s = started.elapsed().as_secs_f64();
    let summary_json = json!({
        "counts": counts,
        "stop": stop.as_ref().map(StopReason::describe),
        "elapsed_s": duration_s,
    });
    let mut api_calls = ApiCalls::default();
    for (_, call) in store.calls(run_id).await? {
        api_calls.add(&call.action, call.ret_code);
    }
    let result = RunResult {
        run_id,
        account: target.account.to_string(),
        exit_code: exit.code(),
        tasks: rows.len() as u64,
        counts: OutcomeCounts {
            deleted: count(TaskState::Deleted),
            absent: count(TaskState::Absent),
            skipped: count(TaskState::Skipped),
            failed,
            pending: waiting,
            in_flight,
            not_due: count(TaskState::NotDue),
            handed_over: count(TaskState::HandedOver),
            not_ready,
        },
        failed: rows
            .iter()
            .filter(|r| r.state == TaskState::Failed)
            .map(|r| FailedAccount {
                cluster: r.cluster.clone(),
                zone: r.zone.clone(),
                user: r.user.clone(),
                host: r.host.clone(),
                reason: r.last_message.clone().unwrap_or_default(),
            })
            .collect(),
        stop: stop.as_ref().map(StopReason::describe),
        duration_s,
        api_calls,
    };
    store.finish_run(run_id, i64::from(exit.code()), summary_json).await?;
    store.check_written_to_disk().await?;
    Ok((exit, summary, result))
}

/// What a run ended with, for machines: `--output json` prints it, `run_finished` logs it and
/// `--metrics-file` exports it. The counts are the human summary's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub run_id: i64,
    /// The QingCloud account (config profile) the run was for.
    pub account: String,
    pub exit_code: u8,
    pub tasks: u64,
    pub counts: OutcomeCounts,
    /// Tasks that ended `failed`, with the last message about each.
    pub failed: Vec<FailedAccount>,
    /// Why the run stopped before its work was done, when it did.
    pub stop: Option<String>,
    pub duration_s: f64,
    pub api_calls: ApiCalls,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct OutcomeCounts {
    pub deleted: u64,
    pub absent: u64,
    pub skipped: u64,
    pub failed: u64,
    /// `pending` and `retry_wait`: not sent (again) yet.
    pub pending: u64,
    /// `submitting` and `submitted`: resume follows or reconciles them.
    pub in_flight: u64,
    pub not_due: u64,
    pub handed_over: u64,
    /// The cluster was not active at preflight; a later run tries again.
    pub not_ready: u64,
}

impl OutcomeCounts {
    /// Each outcome with its name, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("deleted", self.deleted),
            ("absent", self.absent),
            ("skipped", self.skipped),
            ("failed", self.failed),
            ("pending", self.pending),
            ("in_flight", self.in_flight),
            ("not_due", self.not_due),
            ("handed_over", self.handed_over),
            ("not_ready", self.not_ready),
        ]
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedAccount {
    pub cluster: String,
    pub zone: String,
    pub user: String,
    pub host: String,
    pub reason: String,
}

/// The API calls the run recorded (its `api_calls` rows): by action, and by action and the
/// answer's `ret_code` (`none` when no answer was parsed).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApiCalls {
    pub total: u64,
    pub by_action: BTreeMap<String, u64>,
    pub by_action_and_ret_code: BTreeMap<String, BTreeMap<String, u64>>,
    /// Answers with ret_code 2500 (quota exceeded).
    pub quota_exceeded: u64,
}

impl ApiCalls {
    fn add(&mut self, action: &str, ret_code: Option<i64>) {
        self.total += 1;
        *self.by_action.entry(action.to_owned()).or_default() += 1;
        let code = ret_code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        *self.by_action_and_ret_code.entry(action.to_owned()).or_default().entry(code).or_default() += 1;
        if ret_code == Some(2500) {
            self.quota_exceeded += 1;
        }
    }
}

impl RunResult {
    /// The `run_finished` event: numbers as numbers; the per-action table and the failed
    /// accounts (lists) as JSON text.
    fn log(&self) {
        let c = &self.counts;
        let by_action = serde_json::to_string(&self.api_calls.by_action).unwrap_or_default();
        let failed_accounts = serde_json::to_string(&self.failed).unwrap_or_default();
        tracing::info!(
            run_id = self.run_id,
            account = %self.account,
            exit_code = self.exit_code,
            tasks = self.tasks,
            deleted = c.deleted,
            absent = c.absent,
            skipped = c.skipped,
            failed = c.failed,
            pending = c.pending,
            in_flight = c.in_flight,
            not_due = c.not_due,
            handed_over = c.handed_over,
            not_ready = c.not_ready,
            duration_s = self.duration_s,
            api_calls = self.api_calls.total,
            quota_exceeded = self.api_calls.quota_exceeded,
            api_calls_by_action = %by_action,
            failed_accounts = %failed_accounts,
            stop = self.stop.as_deref().unwrap_or(""),
            "run_finished"
        );
    }
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

/// The "account does not exist" table: `--absent-on` flags, else the config file's
/// `absent_on`, else the defaults. A rule that does not parse is a configuration error (78).
fn absent_rules(exec: &ExecOpts, settings: &Settings) -> anyhow::Result<AbsentRules> {
    if !exec.absent_on.is_empty() {
        return Ok(AbsentRules(exec.absent_on.clone()));
    }
    if settings.absent_on.is_empty() {
        return Ok(AbsentRules::default());
    }
    let rules = settings
        .absent_on
        .iter()
        .map(|r| r.parse().map_err(|e: String| Coded::new(Exit::Config, format!("config file: absent_on: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AbsentRules(rules))
}

/// Healthcheck pings (`--ping-url`): `URL/start` when a run starts, `URL/<exit code>` when any
/// run ends. Best effort, never fail the run. The URL is a bearer secret: logs name only the
/// suffix.
struct Pinger {
    url: String,
    http: reqwest::Client,
}

impl Pinger {
    fn new(url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { url: url.trim_end_matches('/').to_owned(), http }
    }

    async fn send(&self, suffix: &str, body: String) {
        let url = format!("{}{}", self.url, suffix);
        match self.http.post(&url).body(body).send().await {
            Ok(r) if r.status().is_success() => tracing::debug!(ping = suffix, "ping sent"),
            Ok(r) => tracing::warn!(ping = suffix, status = r.status().as_u16(), "healthcheck ping refused"),
            // reqwest's error text names the URL: only its kind is logged.
            Err(e) => tracing::warn!(
                ping = suffix,
                timeout = e.is_timeout(),
                connect = e.is_connect(),
                "healthcheck ping failed"
            ),
        }
    }
}
