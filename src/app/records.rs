//! What the read-only commands read: `status`'s runs with their counts, deadlines and proof,
//! `report`'s evidence, and `audit`'s chain verification and checkpoint (with its key file).
//!
//! Each function opens the database that must exist (an SQLite file or a PostgreSQL database,
//! through `store::Db`), reads, and closes it. Nothing here writes
//! the database (except `audit checkpoint --create-key`, which writes only its key file) or
//! decides how anything looks: that is `cli`'s, and `report`'s writers'.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::Utc;

use super::database;
use crate::audit::key::{AuditKey, KeyError};
use crate::exit::{Coded, Exit};
use crate::report::{evidence, Filter};
use crate::store::{Checkpoint, Db, DeadlineCounts, Discrepancy, Replay, RunRow, TaskState, Verification};

/// Whether what `status` shows is proven: the chain's verdict and the stored rows that
/// disagree with it (see `store::Replay`).
pub struct Proof {
    pub chain_problem: Option<String>,
    pub differences: Vec<Discrepancy>,
}

impl Proof {
    async fn check(store: &Db) -> anyhow::Result<Proof> {
        let verification = store.verify_audit(None).await?;
        let replay = store.replay().await?;
        Ok(Proof {
            chain_problem: verification.problem.as_ref().map(ToString::to_string),
            differences: replay.discrepancies,
        })
    }
}

/// `status`: every run, newest first.
pub struct Listing {
    /// The database read: its path, or its URL without the password.
    pub location: String,
    pub runs: Vec<RunRow>,
    pub counts: HashMap<i64, BTreeMap<TaskState, i64>>,
    pub deadlines: HashMap<i64, DeadlineCounts>,
    pub proof: Proof,
}

/// `status RUN_ID`: one run.
pub struct Detail {
    pub run: RunRow,
    pub counts: BTreeMap<TaskState, i64>,
    pub deadline: DeadlineCounts,
    pub proof: Proof,
    /// The processes working on it now, as (host, pid).
    pub hosts: Vec<(String, i64)>,
}

/// The runs of the database (`simulate`: the simulator's), with their counts as they stand now.
pub async fn runs(db: Option<&Path>, simulate: bool) -> anyhow::Result<Listing> {
    let store = database::open_existing(db, simulate).await?;
    let proof = Proof::check(&store).await?;
    let runs = store.runs().await?;
    let counts = store.counts_by_run().await?;
    let deadlines = store.deadline_counts(None, Utc::now()).await?;
    let location = store.location();
    store.close().await;
    Ok(Listing { location, runs, counts, deadlines, proof })
}

/// One run, with its counts as they stand now; no such run is a usage error (64).
pub async fn run(db: Option<&Path>, simulate: bool, id: i64) -> anyhow::Result<Detail> {
    let store = database::open_existing(db, simulate).await?;
    let proof = Proof::check(&store).await?;
    let Some(run) = store.run(id).await? else {
        return Err(Coded::new(Exit::Usage, format!("no run {id} in {}", store.location())).into());
    };
    let counts = store.counts(id).await?;
    let deadline = store.deadline_counts(Some(id), Utc::now()).await?.remove(&id).unwrap_or_default();
    let hosts = store.live_hosts(id).await?;
    store.close().await;
    Ok(Detail { run, counts, deadline, proof, hosts })
}

/// `report`'s rows with their evidence: the chain replayed and checked against the tables.
pub async fn evidence(db: Option<&Path>, simulate: bool, filter: &Filter) -> anyhow::Result<evidence::Evidence> {
    let store = database::open_existing(db, simulate).await?;
    let evidence = evidence::gather_where(&store, filter, Utc::now()).await?;
    store.close().await;
    Ok(evidence)
}

/// The newest record of the audit chain, as `SEQ:HASH`.
pub async fn checkpoint(db: Option<&Path>) -> anyhow::Result<Checkpoint> {
    let store = database::open_existing(db, false).await?;
    let cp = store.audit_checkpoint().await?;
    store.close().await;
    Ok(cp)
}

/// The chain walked (up to `checkpoint`, which must be present) and the tables replayed
/// against it.
pub async fn verify(db: Option<&Path>, checkpoint: Option<&Checkpoint>) -> anyhow::Result<(Verification, Replay)> {
    let store = database::open_existing(db, false).await?;
    let v = store.verify_audit(checkpoint).await?;
    let replay = store.replay().await?;
    store.close().await;
    Ok((v, replay))
}

/// Load (or, with `create`, make) the audit key; a missing or bad key file is a configuration
/// error (78).
pub fn audit_key(path: &Path, create: bool) -> anyhow::Result<AuditKey> {
    let key = if create { AuditKey::create(path) } else { AuditKey::load(path) };
    key.map_err(|e: KeyError| Coded::new(Exit::Config, e.to_string()).into())
}
