//! `plan MANIFEST... [--output human|json] [--out PLAN_FILE]`: expand the manifests into
//! tasks, mark those not yet due and those already done (read from the database), and estimate
//! API calls and duration under the configured rate. Nothing is sent; nothing is written but
//! the plan file of `--out` (see `plan::file`), which names the endpoint and access key id it is
//! for and so needs credentials.

use chrono::{NaiveDate, Utc};

use std::collections::HashMap;

use crate::cli::{ApiOpts, GlobalOpts, OutputFormat, PlanArgs, PlanCommand};
use crate::exit::{Coded, Exit};
use crate::limiter::Rate;
use crate::manifest::{self, AccountName, TaskKey, Zone};
use crate::plan::file::{PlanFile, PlanFileError};
use crate::plan::{self, EstimateInputs};
use crate::qingcloud::config::{self, ConfigInput};
use crate::store::{self, AccountKey, Standing, Store};

/// What earlier runs did with each account: done, or in flight in a run.
pub(crate) type Standings = HashMap<AccountKey, Standing>;

pub async fn run(global: &GlobalOpts, args: PlanArgs) -> anyhow::Result<Exit> {
    if let Some(PlanCommand::Sign { plan, key }) = &args.command {
        let (sig, fingerprint) = crate::plan::approval::sign_file(plan, key).map_err(PlanFileError::from)?;
        println!("signed {} with key {fingerprint}: {}", plan.display(), sig.display());
        return Ok(Exit::Ok);
    }
    let zone = env_zone()?;
    let mut set = manifest::load_set(&args.manifests, zone.as_ref())?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let inputs = EstimateInputs { rate: args.rate.rate.unwrap_or(Rate::DEFAULT), ..EstimateInputs::default() };
    let accounts = crate::cli::run::accounts_of(&set);
    // `discover:` selectors are expanded through the API: the plan shows (and a plan file
    // pins) exactly the clusters found now.
    let mut discovered: Option<crate::discover::Discovery> = None;
    if !set.selectors.is_empty() {
        for account in &accounts {
            let target = crate::cli::run::Target::resolve_account(&args.api, false, account).await?;
            if let Some(d) = crate::cli::run::discover_for(&mut set, &target, inputs.rate, 1).await? {
                eprint!("{}", d.to_human());
                let all = discovered.get_or_insert_with(Default::default);
                all.found.extend(d.found);
                all.passed_over.extend(d.passed_over);
                all.calls.extend(d.calls);
            }
        }
    }
    let Some(out) = &args.out else {
        let mut done = Standings::new();
        for account in &accounts {
            done.extend(done_before(global, &args.api, account).await?);
        }
        let plan = build_plan(&set, args.today.unwrap_or_else(today), &done, &inputs);
        print_built(&plan, args.output);
        preflight(&args, &accounts, &plan).await;
        return Ok(Exit::Ok);
    };
    if args.today.is_some() {
        return Err(Coded::new(
            Exit::Usage,
            "--today previews a plan; a plan file (--out) is always made for today (unset QC_OFFBOARD_TODAY)",
        )
        .into());
    }
    // A plan file is for one endpoint and access key: one QingCloud account.
    let [account] = accounts.as_slice() else {
        let names: Vec<&str> = accounts.iter().map(AccountName::as_str).collect();
        return Err(Coded::new(
            Exit::Usage,
            format!(
                "a plan file is made for one QingCloud account; these manifests name {}: make one plan per \
                 account (one manifest per account)",
                names.join(", ")
            ),
        )
        .into());
    };
    // A plan file names its endpoint and access key: without credentials it cannot be made.
    let input = ConfigInput { endpoint: args.api.endpoint.clone(), config: args.api.config.clone() };
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let resolved = config::resolve_account(&input, &|k| std::env::var(k).ok(), home.as_deref(), account)?;
    // The endpoint as an identity, exactly as `run` records it.
    let endpoint_id = store::endpoint_identity(resolved.settings.endpoint.as_str());
    let endpoint = endpoint_id.as_str();
    let access_key_id = &resolved.settings.credentials.access_key_id;
    let done = done_at(global, endpoint, access_key_id).await?;
    let plan = build_plan(&set, today(), &done, &inputs);
    let file = PlanFile::new(&set, &plan, endpoint, access_key_id, Utc::now())
        .with_discovered(discovered.as_ref().map(crate::discover::Discovery::to_json))
        .for_account(account);
    file.write(out)?;
    print_built(&plan, args.output);
    preflight(&args, &accounts, &plan).await;
    eprintln!(
        "plan written to {}: {} tasks for {endpoint} (access key {access_key_id}), content hash {}",
        out.display(),
        file.tasks.len(),
        file.content_hash
    );
    Ok(Exit::Ok)
}

fn print_built(plan: &plan::Plan, output: OutputFormat) {
    match output {
        OutputFormat::Human => print!("{}", plan.to_human()),
        OutputFormat::Json => println!("{}", plan.to_json()),
    }
}

/// The preflight a run would make, made now: every pending task's cluster is looked up with
/// `DescribeClusters` (100 ids a call per zone), and the tasks a run would end without sending
/// anything are named on stderr. Needs credentials; without them, or with `--no-preflight`,
/// it says so. Never changes the plan or its exit code: the run checks again.
async fn preflight(args: &PlanArgs, accounts: &[AccountName], plan: &plan::Plan) {
    use crate::runner::preflight::{judge, lookup, Verdict};
    use std::collections::{BTreeMap, BTreeSet};
    if args.no_preflight {
        return;
    }
    for account in accounts {
        let pending: Vec<&plan::PlannedTask> = plan
            .tasks
            .iter()
            .filter(|p| p.state == plan::PlanState::Pending && p.task.account_name() == *account)
            .collect();
        if pending.is_empty() {
            continue;
        }
        let target = match crate::cli::run::Target::resolve_account(&args.api, false, account).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("note: preflight not made for account {account}: {e:#}");
                continue;
            }
        };
        let Ok(client) = target.client(plan.inputs.rate, 1) else { continue };
        let mut by_zone: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for p in &pending {
            by_zone.entry(p.task.zone.as_str()).or_default().insert(p.task.cluster.as_str());
        }
        let looked = match lookup(&client, &crate::runner::clock::SystemClock, &by_zone).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("note: preflight not made for account {account}: {e:#}");
                continue;
            }
        };
        let (mut refused, mut not_ready, mut judged) = (0usize, 0usize, BTreeSet::new());
        for p in &pending {
            let key = (p.task.zone.to_string(), p.task.cluster.to_string());
            let Some(info) = looked.seen.get(&key) else { continue };
            match judge(&key.1, &key.0, info.as_ref()) {
                Verdict::Ready => {}
                Verdict::Refused(m) => {
                    refused += 1;
                    if judged.insert(key.clone()) {
                        eprintln!("preflight: would fail: {m}");
                    }
                }
                Verdict::NotReady(m) => {
                    not_ready += 1;
                    if judged.insert(key.clone()) {
                        eprintln!("preflight: not ready: {m}");
                    }
                }
            }
        }
        let unchecked: usize = looked.unchecked.iter().map(|(_, b)| b.len()).sum();
        let clusters: usize = by_zone.values().map(BTreeSet::len).sum();
        eprintln!(
            "preflight{}: {clusters} clusters checked in {} DescribeClusters calls: {refused} tasks would fail, {not_ready} not ready{}",
            if account.is_default() { String::new() } else { format!(" (account {account})") },
            looked.calls.len(),
            if unchecked > 0 { format!(", {unchecked} clusters unchecked (no usable answer)") } else { String::new() },
        );
    }
}

/// What earlier runs against `endpoint` with `access_key_id` did with each account, from the
/// database when it exists.
async fn done_at(global: &GlobalOpts, endpoint: &str, access_key_id: &str) -> anyhow::Result<Standings> {
    let path = match &global.db {
        Some(p) => p.clone(),
        None => store::default_path(false)?,
    };
    if !path.exists() {
        return Ok(Standings::new());
    }
    let store = Store::open_existing(&path).await?;
    let done = store.standings(endpoint, access_key_id).await?;
    store.close().await;
    Ok(done)
}

/// Accounts deleted by earlier runs against the configured endpoint and access key, read from
/// the database when it exists. Without credentials (or a database) nothing counts as done,
/// and the operator is told so.
async fn done_before(global: &GlobalOpts, api: &ApiOpts, account: &AccountName) -> anyhow::Result<Standings> {
    let path = match &global.db {
        Some(p) => p.clone(),
        None => store::default_path(false)?,
    };
    if !path.exists() {
        return Ok(Standings::new());
    }
    let input = ConfigInput { endpoint: api.endpoint.clone(), config: api.config.clone() };
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let resolved = match config::resolve_account(&input, &|k| std::env::var(k).ok(), home.as_deref(), account) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("note: tasks of account {account} done by earlier runs are not marked ({e})");
            return Ok(Standings::new());
        }
    };
    done_at(global, resolved.settings.endpoint.as_str(), &resolved.settings.credentials.access_key_id).await
}

/// Print the plan of `set`: tasks `done` in earlier runs are `skipped`, those whose
/// `not_before` is after `today` are `not_due`, pending ones in flight elsewhere say so.
pub(crate) fn print_plan(
    set: &manifest::ManifestSet,
    today: NaiveDate,
    done: &Standings,
    inputs: &EstimateInputs,
    output: OutputFormat,
) {
    let plan = build_plan(set, today, done, inputs);
    match output {
        OutputFormat::Human => print!("{}", plan.to_human()),
        OutputFormat::Json => println!("{}", plan.to_json()),
    }
}

fn build_plan(set: &manifest::ManifestSet, today: NaiveDate, done: &Standings, inputs: &EstimateInputs) -> plan::Plan {
    let key = |k: &TaskKey| (k.cluster.to_string(), k.user.to_string(), k.host.to_string());
    let is_done = |k: &TaskKey| matches!(done.get(&key(k)), Some(Standing::Done { .. }));
    let mut plan = plan::build(set, today, is_done, inputs);
    plan.mark_in_flight(|k| match done.get(&key(k)) {
        Some(Standing::InFlight { run_id }) => Some(*run_id),
        _ => None,
    });
    plan
}

/// `QINGCLOUD_ZONE`, the zone of clusters whose manifest gives none (exit 78 when it is not one).
pub(crate) fn env_zone() -> anyhow::Result<Option<Zone>> {
    Ok(crate::qingcloud::config::env_zone()?)
}

/// Today in UTC, from the clock: what `run` uses, with no override.
pub(crate) fn today() -> NaiveDate {
    Utc::now().date_naive()
}
