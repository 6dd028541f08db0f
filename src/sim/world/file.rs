//! The world file as written (SPEC §6): who may call, which clusters and accounts exist, how
//! long jobs take, the request quota, the faults to inject and the `api:` choices, with the
//! defaults of every key. Unknown keys are refused by serde here; every other check is
//! `load`'s.
//!
//! These are plain serde shapes: nothing here reads a file, checks a value or runs anything.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::qingcloud::types::MYSQL_PLUS_APP_ID;

/// The credential pair every default world accepts (the reference's example keys).
pub const DEFAULT_ACCESS_KEY_ID: &str = "QYACCESSKEYIDEXAMPLE";
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "SECRETACCESSKEY";

/// A world file as written. See the README section "Rehearsing against the simulator".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Access keys the simulator accepts [default: the reference's example pair].
    #[serde(default = "default_credentials")]
    pub credentials: Vec<Credential>,
    /// Clusters and their accounts. Absent: the auto world, where every `cl-*` cluster exists
    /// (in the zone it is first addressed in) and every non-protected account exists until
    /// deleted.
    #[serde(default)]
    pub clusters: Option<Vec<ClusterSpec>>,
    #[serde(default)]
    pub jobs: JobTimings,
    /// Request quota per access key. Absent: unlimited.
    #[serde(default)]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub faults: Faults,
    /// Refuse (1400) a custom-service job on a cluster whose previous job is still running.
    #[serde(default)]
    pub one_job_per_cluster: bool,
    /// Seed of the fault and job random generators. Absent: a fresh seed per start (reported
    /// in `/sim/stats`).
    #[serde(default)]
    pub seed: Option<u64>,
    /// How the API answers where its documentation is silent or says something other than
    /// what suits a client (reference §10).
    #[serde(default)]
    pub api: ApiBehaviour,
    /// The simulator's clock is this many seconds ahead of the host's (negative: behind). Job
    /// times, the `Date` header and the `time_stamp` check all use the shifted clock.
    #[serde(default)]
    pub clock_offset_s: i64,
}

/// The `api:` block: one choice per behaviour the public documentation leaves open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiBehaviour {
    /// What DescribeJobs does when `jobs.N` names a job it does not know.
    pub describe_jobs_unknown_id: UnknownJobId,
    /// The order of `job_set` in every DescribeJobs answer.
    pub describe_jobs_order: ListOrder,
    /// Does DescribeJobs honour `job_action`? When not, pages hold every kind of job.
    pub job_action_filter: bool,
    /// A new job appears in listings (not in answers by id) only this long after it is
    /// created.
    pub list_lag_ms: u64,
    /// What `del_user` does for an account that does not exist.
    pub missing_account: MissingAccount,
    /// Every API request gets HTTP 200 with an HTML page (a captive proxy, a wrong URL behind
    /// a load balancer); nothing reaches the API.
    pub html_everywhere: bool,
    /// Finished jobs of other kinds (StartClusters, …) each owner finds in each zone it uses,
    /// older than anything it creates. Absent: 0 when `job_action_filter` is true, 5 when it
    /// is false (so ignoring the filter shows).
    pub unrelated_jobs_per_zone: Option<u32>,
    /// Leave every Nth job created out of every answer by id (0: never) — a by-id lookup that
    /// loses entries; listings still show it. An omission is not an answer that the job does
    /// not exist.
    pub describe_jobs_omit_every: u32,
    /// `RunClusterCustomService` is refused for the key itself (1400 "can't handle this
    /// request", naming no cluster or user), as for a key without the right to the action.
    pub refuse_custom_service: bool,
}

impl Default for ApiBehaviour {
    /// As documented where the documentation speaks; otherwise what suits a client.
    fn default() -> Self {
        Self {
            describe_jobs_unknown_id: UnknownJobId::Error,
            describe_jobs_order: ListOrder::NewestFirst,
            job_action_filter: true,
            list_lag_ms: 0,
            missing_account: MissingAccount::FailJob,
            html_everywhere: false,
            describe_jobs_omit_every: 0,
            refuse_custom_service: false,
            unrelated_jobs_per_zone: None,
        }
    }
}

/// `api.describe_jobs_unknown_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownJobId {
    /// The whole call answers 2100 naming the first unknown id (as the documentation says).
    Error,
    /// The unknown ids are left out of `job_set`.
    Drop,
}

/// `api.describe_jobs_order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    NewestFirst,
    OldestFirst,
    /// A seeded random order, the same for every call (so pages by `offset` stay coherent).
    Random,
}

/// `api.missing_account`: what `del_user` does for an account that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingAccount {
    /// A job is created and fails with `error_codes` 2100.
    FailJob,
    /// A job is created and succeeds without doing anything.
    Succeed,
    /// The request is refused at once with ret_code 2100; no job.
    Reject,
}

/// `quota.scope`: who shares one count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// All access keys of one account (the documented "per user").
    #[default]
    Account,
    AccessKey,
}

/// One accepted access key. `Debug` never shows the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The account (user) the key belongs to. Keys of one account see each other's jobs and,
    /// with `quota.scope: account`, share one quota. Absent: the key is an account of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field("account", &self.account)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub id: String,
    pub zone: String,
    /// Accounts as `user@host`, e.g. `bob@%` or `app@10.0.0.%`.
    #[serde(default)]
    pub users: Vec<String>,
    /// `status` in DescribeClusters: `active`, `stopped`, `suspended`, `ceased`, … [default:
    /// active]. RunClusterCustomService on a cluster that is not `active` is refused (1400,
    /// naming the status).
    #[serde(default = "default_cluster_status")]
    pub status: String,
    /// `transition_status` in DescribeClusters (`starting`, `stopping`, …) [default: empty]. A
    /// cluster in transition refuses custom services like a cluster that is not active.
    #[serde(default)]
    pub transition_status: String,
    /// The cluster's application [default: MySQL Plus, `app-00r26u27`].
    #[serde(default = "default_app_id")]
    pub app_id: String,
    /// The cluster's name [default: empty].
    #[serde(default)]
    pub name: String,
    /// Tag names the cluster carries.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_cluster_status() -> String {
    "active".to_owned()
}

fn default_app_id() -> String {
    MYSQL_PLUS_APP_ID.to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobTimings {
    /// Time a job stays `pending`.
    pub pending_ms: u64,
    /// Time a job then stays `working` before it ends.
    pub working_ms: u64,
    /// When given, each job stays `working` for a time drawn uniformly (seeded) from
    /// `working_ms..=working_ms_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_ms_max: Option<u64>,
    /// Share of jobs that end `failed` regardless of the account (0.0–1.0).
    pub fail_rate: f64,
}

impl Default for JobTimings {
    /// About what the reference observed for a MySQL account service (≈ 6 s).
    fn default() -> Self {
        Self { pending_ms: 1000, working_ms: 5000, working_ms_max: None, fail_rate: 0.0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests allowed per account (or access key, see `scope`) in one window.
    pub requests: u64,
    /// Window length in seconds (fractions allowed).
    pub window_s: f64,
    /// Who shares one count [default: account].
    #[serde(default)]
    pub scope: QuotaScope,
    /// When above 0: a request over the quota starts a penalty block of this many seconds
    /// (fractions allowed) in which every request is refused with 2500, whatever the window.
    #[serde(default)]
    pub penalty_s: f64,
}

/// Fault rates (each 0.0–1.0, drawn per API request) and added latency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// ret_code 5100 instead of an answer.
    pub busy_rate: f64,
    /// ret_code 5000 instead of an answer.
    pub internal_rate: f64,
    /// HTTP 502 from the "gateway", no JSON.
    pub http_502_rate: f64,
    /// The TCP connection is reset with no response.
    pub reset_rate: f64,
    /// The request takes effect, then the connection is dropped before the answer.
    pub lost_response_rate: f64,
    /// Latency added to every API request.
    pub delay_ms: u64,
}

fn default_credentials() -> Vec<Credential> {
    vec![Credential {
        access_key_id: DEFAULT_ACCESS_KEY_ID.to_owned(),
        secret_access_key: DEFAULT_SECRET_ACCESS_KEY.to_owned(),
        account: None,
    }]
}

impl Default for World {
    /// The auto world with realistic job timings, no quota and no faults.
    fn default() -> Self {
        Self {
            credentials: default_credentials(),
            clusters: None,
            jobs: JobTimings::default(),
            quota: None,
            faults: Faults::default(),
            one_job_per_cluster: false,
            seed: None,
            api: ApiBehaviour::default(),
            clock_offset_s: 0,
        }
    }
}

impl World {
    /// The world of `run --simulate`: auto clusters and accounts, jobs of tens of milliseconds,
    /// no faults, no quota, the default credentials.
    pub fn auto_fast() -> World {
        World {
            jobs: JobTimings { pending_ms: 20, working_ms: 30, working_ms_max: None, fail_rate: 0.0 },
            ..World::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let w = World::default();
        let shown = format!("{w:?}");
        assert!(shown.contains(DEFAULT_ACCESS_KEY_ID));
        assert!(!shown.contains(DEFAULT_SECRET_ACCESS_KEY), "{shown}");
    }
}
