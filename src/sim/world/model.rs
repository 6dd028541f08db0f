//! The checked world: what `load` made of a world file, in the types the engine, the book and
//! the quota read. Every value here was checked once; nothing downstream checks it again.
//!
//! It holds data only: no parsing, no checking, no state that changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::file::{ApiBehaviour, Faults, QuotaScope};

/// The checked world.
#[derive(Clone)]
pub struct Model {
    /// access key id → secret.
    pub credentials: HashMap<String, String>,
    /// access key id → the account it belongs to.
    pub accounts: HashMap<String, Account>,
    /// `None` is the auto world.
    pub clusters: Option<BTreeMap<String, ClusterModel>>,
    pub pending: std::time::Duration,
    pub working: std::time::Duration,
    /// Equal to `working` unless jobs draw their duration from a range.
    pub working_max: std::time::Duration,
    pub fail_rate: f64,
    pub quota: Option<QuotaModel>,
    pub faults: Faults,
    pub one_job_per_cluster: bool,
    pub api: ApiBehaviour,
    pub list_lag: std::time::Duration,
    /// `api.unrelated_jobs_per_zone` with its default applied.
    pub unrelated_jobs: u32,
    /// The simulator's clock minus the host's.
    pub clock_offset: chrono::TimeDelta,
}

/// Who an access key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    /// Named in the world file; shared by every key naming it.
    Named(String),
    /// No account given: the key is an account of its own.
    OwnKey(String),
}

/// The checked quota.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaModel {
    pub requests: u64,
    pub window: std::time::Duration,
    pub scope: QuotaScope,
    /// Zero: no penalty block, the window alone decides.
    pub penalty: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct ClusterModel {
    pub zone: String,
    /// (user, host) pairs that exist when the simulator starts.
    pub users: BTreeSet<(String, String)>,
    pub status: String,
    pub transition_status: String,
    pub app_id: String,
    pub name: String,
    pub tags: Vec<String>,
}
