//! `plan`'s work: the manifests expanded into a plan (with `discover:` selectors looked up
//! now), marked with what earlier runs did, optionally written as a plan file for one account,
//! and the preflight a run would make, made now. Also [`build_plan`], the one way a set of
//! manifests and the standings become a plan, which `run` uses too.
//!
//! Nothing here sends `del_user` or writes the database; what is worth telling the user goes
//! out as [`Note`]s, in the order it happens, for `cli` to print.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};

use super::database::{self, Standings};
use super::discovery::{accounts_of, discover_for};
use super::target::{env_zone_checked, Target};
use crate::discover::Discovery;
use crate::exit::{Coded, Exit};
use crate::limiter::Rate;
use crate::manifest::{self, AccountName, ManifestSet, TaskKey};
use crate::plan::file::{PlanFile, PlanFileError};
use crate::plan::{self, EstimateInputs, Plan};
use crate::qingcloud::config::{self, ConfigInput};
use crate::store::{self, Standing};

/// What `plan` is asked for.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub manifests: Vec<PathBuf>,
    /// The database (`--db`) earlier runs are read from.
    pub db: Option<PathBuf>,
    pub api: ConfigInput,
    pub rate: Option<Rate>,
    /// Write the plan file here (`--out`).
    pub out: Option<PathBuf>,
    /// Preview as of this day instead of today (`--today`).
    pub today: Option<NaiveDate>,
    pub no_preflight: bool,
}

/// What happens while a plan is made, worth telling the user.
pub enum Note<'a> {
    /// A manifest warning.
    Warning(&'a str),
    /// What an account's `discover:` selectors found.
    Discovered(&'a Discovery),
    /// An account's configuration does not resolve: what earlier runs did is not shown.
    NotMarked { account: &'a AccountName, error: String },
    /// An account's preflight could not be made.
    PreflightNotMade { account: &'a AccountName, error: String },
    /// A cluster whose tasks a run would end `failed` without sending anything.
    WouldFail(&'a str),
    /// A cluster whose tasks a run would end `not_ready`.
    NotReady(&'a str),
    /// An account's preflight, counted.
    PreflightDone {
        account: &'a AccountName,
        clusters: usize,
        calls: usize,
        refused: usize,
        not_ready: usize,
        unchecked: usize,
    },
}

/// A plan made.
pub struct Made {
    pub plan: Plan,
    /// The accounts the manifests name, in the order first met.
    pub accounts: Vec<AccountName>,
    /// The plan file written (`--out`).
    pub written: Option<Written>,
}

pub struct Written {
    pub path: PathBuf,
    pub tasks: usize,
    pub endpoint: String,
    pub access_key_id: String,
    pub content_hash: String,
}

/// Sign a plan file with an SSH key (`plan sign`): the signature's path and the key's
/// fingerprint.
pub fn sign(plan: &Path, key: &Path) -> anyhow::Result<(PathBuf, String)> {
    Ok(crate::plan::approval::sign_file(plan, key).map_err(PlanFileError::from)?)
}

/// Make the plan `req` asks for, and write its plan file when asked.
pub async fn make(req: &PlanRequest, note: &mut dyn FnMut(Note<'_>)) -> anyhow::Result<Made> {
    let zone = env_zone_checked()?;
    let mut set = manifest::load_set(&req.manifests, zone.as_ref())?;
    for w in &set.warnings {
        note(Note::Warning(w));
    }
    let inputs = EstimateInputs { rate: req.rate.unwrap_or(Rate::DEFAULT), ..EstimateInputs::default() };
    let accounts = accounts_of(&set);
    // `discover:` selectors are expanded through the API: the plan shows (and a plan file
    // pins) exactly the clusters found now.
    let mut discovered: Option<Discovery> = None;
    if !set.selectors.is_empty() {
        for account in &accounts {
            let target = Target::resolve_account(req.api.clone(), false, account).await?;
            if let Some(d) = discover_for(&mut set, &target, inputs.rate, 1).await? {
                note(Note::Discovered(&d));
                let all = discovered.get_or_insert_with(Default::default);
                all.found.extend(d.found);
                all.passed_over.extend(d.passed_over);
                all.calls.extend(d.calls);
            }
        }
    }
    let Some(out) = &req.out else {
        let mut done = Standings::new();
        for account in &accounts {
            done.extend(done_before(req, account, note).await?);
        }
        let plan = build_plan(&set, req.today.unwrap_or_else(|| Utc::now().date_naive()), &done, &inputs);
        return Ok(Made { plan, accounts, written: None });
    };
    if req.today.is_some() {
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
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let resolved = config::resolve_account(&req.api, &|k| std::env::var(k).ok(), home.as_deref(), account)?;
    // The endpoint as an identity, exactly as `run` records it.
    let endpoint = store::endpoint_identity(resolved.settings.endpoint.as_str());
    let access_key_id = resolved.settings.credentials.access_key_id.clone();
    let done = database::standings_at(req.db.as_deref(), &endpoint, &access_key_id).await?;
    let plan = build_plan(&set, Utc::now().date_naive(), &done, &inputs);
    let file = PlanFile::new(&set, &plan, &endpoint, &access_key_id, Utc::now())
        .with_discovered(discovered.as_ref().map(Discovery::to_json))
        .for_account(account);
    file.write(out)?;
    let written = Written {
        path: out.clone(),
        tasks: file.tasks.len(),
        endpoint,
        access_key_id,
        content_hash: file.content_hash.clone(),
    };
    Ok(Made { plan, accounts, written: Some(written) })
}

/// Accounts deleted by earlier runs against the configured endpoint and access key, read from
/// the database when it exists. Without credentials (or a database) nothing counts as done,
/// and the operator is told so.
async fn done_before(
    req: &PlanRequest,
    account: &AccountName,
    note: &mut dyn FnMut(Note<'_>),
) -> anyhow::Result<Standings> {
    if database::history(req.db.as_deref())?.is_none() {
        return Ok(Standings::new());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let resolved = match config::resolve_account(&req.api, &|k| std::env::var(k).ok(), home.as_deref(), account) {
        Ok(r) => r,
        Err(e) => {
            note(Note::NotMarked { account, error: e.to_string() });
            return Ok(Standings::new());
        }
    };
    let settings = &resolved.settings;
    database::standings_at(req.db.as_deref(), settings.endpoint.as_str(), &settings.credentials.access_key_id).await
}

/// The plan of `set`: tasks `done` in earlier runs are `skipped`, those whose `not_before` is
/// after `today` are `not_due`, pending ones in flight elsewhere say so.
pub fn build_plan(set: &ManifestSet, today: NaiveDate, done: &Standings, inputs: &EstimateInputs) -> Plan {
    let key = |k: &TaskKey| (k.cluster.to_string(), k.user.to_string(), k.host.to_string());
    let is_done = |k: &TaskKey| matches!(done.get(&key(k)), Some(Standing::Done { .. }));
    let mut plan = plan::build(set, today, is_done, inputs);
    plan.mark_in_flight(|k| match done.get(&key(k)) {
        Some(Standing::InFlight { run_id }) => Some(*run_id),
        _ => None,
    });
    plan
}

/// The preflight a run would make, made now: every pending task's cluster is looked up with
/// `DescribeClusters` (100 ids a call per zone), and the tasks a run would end without sending
/// anything are noted. Needs credentials; without them it says so. Never changes the plan: the
/// run checks again.
pub async fn preflight(req: &PlanRequest, made: &Made, note: &mut dyn FnMut(Note<'_>)) {
    use crate::runner::preflight::{judge, lookup, Verdict};
    if req.no_preflight {
        return;
    }
    let plan = &made.plan;
    for account in &made.accounts {
        let pending: Vec<&plan::PlannedTask> = plan
            .tasks
            .iter()
            .filter(|p| p.state == plan::PlanState::Pending && p.task.account_name() == *account)
            .collect();
        if pending.is_empty() {
            continue;
        }
        let target = match Target::resolve_account(req.api.clone(), false, account).await {
            Ok(t) => t,
            Err(e) => {
                note(Note::PreflightNotMade { account, error: format!("{e:#}") });
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
                note(Note::PreflightNotMade { account, error: format!("{e:#}") });
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
                        note(Note::WouldFail(&m));
                    }
                }
                Verdict::NotReady(m) => {
                    not_ready += 1;
                    if judged.insert(key.clone()) {
                        note(Note::NotReady(&m));
                    }
                }
            }
        }
        note(Note::PreflightDone {
            account,
            clusters: by_zone.values().map(BTreeSet::len).sum(),
            calls: looked.calls.len(),
            refused,
            not_ready,
            unchecked: looked.unchecked.iter().map(|(_, b)| b.len()).sum(),
        });
    }
}
