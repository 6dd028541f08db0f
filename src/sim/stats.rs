//! What the simulator saw and did, as served by `GET /sim/stats` and [`super::SimHandle::stats`].
//!
//! The counters live inside the engine's single lock, so a snapshot is exact: every request
//! answered before the snapshot was taken is in it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::faults::Fault;

/// A snapshot of the simulator's counters and accounts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The seed of the fault and job generators (given in the world or drawn at start).
    pub seed: u64,
    /// Every API request received, including faulted and refused ones.
    pub requests_total: u64,
    /// API requests by their `action` parameter (`""` when absent).
    pub requests_by_action: BTreeMap<String, u64>,
    /// ret_code → how many responses carried it (as strings: `"0"`, `"1200"`, …). Includes
    /// the ret_codes of responses that were then lost, and 5100/5000 faults.
    pub ret_codes: BTreeMap<String, u64>,
    /// Fault kind (`reset`, `http_502`, `busy`, `internal`, `lost_response`) → count.
    pub faults_injected: BTreeMap<String, u64>,
    /// Jobs created.
    pub jobs: u64,
    /// Jobs by their status at the time of the snapshot.
    pub jobs_by_status: BTreeMap<String, u64>,
    /// Every account the world listed or a request named, sorted by cluster, user, host.
    pub accounts: Vec<AccountStats>,
    /// Every RunClusterCustomService request received, in order of arrival (the first
    /// [`MAX_REQUEST_LOG`]), including faulted, refused and HTML-answered ones.
    #[serde(default)]
    pub requests: Vec<RequestRecord>,
    /// RunClusterCustomService requests received after the log was full.
    #[serde(default)]
    pub requests_not_logged: u64,
    /// When each API request arrived, of every action (the first [`MAX_REQUEST_LOG`]),
    /// including faulted, refused (2500 too) and HTML-answered ones: milliseconds since the
    /// Unix epoch on the host's clock, as [`RequestRecord::at_ms`]. A client's rate limit governs
    /// every request it sends, so this is what to hold it to. In the order the simulator took
    /// the requests in, which requests arriving within a millisecond or two of each other may
    /// swap: sort before comparing windows.
    #[serde(default)]
    pub arrivals_ms: Vec<i64>,
    /// API requests that arrived after [`Stats::arrivals_ms`] was full.
    #[serde(default)]
    pub arrivals_not_logged: u64,
    /// Every job created on a cluster while an earlier job of that cluster (same id and zone)
    /// had not ended yet, in order of creation (the first [`MAX_OVERLAP_LOG`]). Empty when no
    /// cluster ever ran two jobs at once. Jobs refused with 1400 (`one_job_per_cluster`) were
    /// never created, so they are not here; the unrelated jobs a zone starts with are long
    /// finished and never are.
    #[serde(default)]
    pub cluster_overlaps: Vec<Overlap>,
    /// Overlaps seen after [`Stats::cluster_overlaps`] was full.
    #[serde(default)]
    pub cluster_overlaps_not_logged: u64,
}

/// Most entries of [`Stats::requests`], and of [`Stats::arrivals_ms`].
pub const MAX_REQUEST_LOG: usize = 200_000;

/// Most entries of [`Stats::cluster_overlaps`].
pub const MAX_OVERLAP_LOG: usize = 1_000;

/// A job created on a cluster while an earlier job of that cluster was still running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    pub cluster: String,
    pub zone: String,
    /// The job created while the other ran, and the account it was for.
    pub job_id: String,
    pub user: String,
    pub host: String,
    /// The earlier job that had not ended (of those, the one ending last), and its account.
    pub running_job_id: String,
    pub running_user: String,
    pub running_host: String,
    /// How long the running job still had to go when the new one was created, in milliseconds.
    pub running_left_ms: u64,
}

/// One RunClusterCustomService request as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When it arrived: milliseconds since the Unix epoch on the host's clock (not shifted by
    /// `clock_offset_s`), so a test can compare it with its own clock.
    pub at_ms: i64,
    pub action: String,
    /// The `cluster` parameter (`""` when absent).
    pub cluster: String,
    /// From `service_params` (`""` when it is not del_user's shape).
    pub user: String,
    pub host: String,
    /// The API's answer; `null` when the API made none (HTML page, HTTP 502, reset). A lost
    /// response has the ret_code of the answer that was lost.
    pub ret_code: Option<i64>,
    /// The job an accepted request created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The access key that signed the request.
    #[serde(default)]
    pub access_key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStats {
    pub cluster: String,
    pub zone: String,
    pub user: String,
    pub host: String,
    /// Does the account exist now (at the snapshot)?
    pub exists: bool,
    /// Accepted `del_user` requests (ret_code 0) for this account, including those whose
    /// response was lost.
    pub del_user_accepted: u64,
    /// The job that deleted it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
}

impl Stats {
    /// The account `user@host` on `cluster`, if the simulator knows it.
    pub fn account(&self, cluster: &str, user: &str, host: &str) -> Option<&AccountStats> {
        self.accounts.iter().find(|a| a.cluster == cluster && a.user == user && a.host == host)
    }

    /// How many responses carried `ret_code`.
    pub fn ret_code(&self, ret_code: i64) -> u64 {
        self.ret_codes.get(&ret_code.to_string()).copied().unwrap_or(0)
    }

    /// How many faults of this kind were injected.
    pub fn faults(&self, fault: Fault) -> u64 {
        self.faults_injected.get(fault.name()).copied().unwrap_or(0)
    }

    /// How many requests carried this `action`.
    pub fn requests_of(&self, action: &str) -> u64 {
        self.requests_by_action.get(action).copied().unwrap_or(0)
    }
}

/// The running counters (the engine owns one, under its lock).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests_total: u64,
    pub requests_by_action: BTreeMap<String, u64>,
    pub ret_codes: BTreeMap<i64, u64>,
    pub faults_injected: BTreeMap<&'static str, u64>,
    pub log: Vec<RequestRecord>,
    pub not_logged: u64,
    pub arrivals: Vec<i64>,
    pub arrivals_not_logged: u64,
}

impl Counters {
    pub fn request(&mut self, action: &str) {
        self.requests_total += 1;
        // Clients that loop on a typo would otherwise grow this map without bound.
        let key = if self.requests_by_action.len() < 64 || self.requests_by_action.contains_key(action) {
            action.to_owned()
        } else {
            "(other)".to_owned()
        };
        *self.requests_by_action.entry(key).or_default() += 1;
    }

    pub fn ret_code(&mut self, code: i64) {
        *self.ret_codes.entry(code).or_default() += 1;
    }

    /// An API request of any action arrived at `at_ms`.
    pub fn arrival(&mut self, at_ms: i64) {
        if self.arrivals.len() < MAX_REQUEST_LOG {
            self.arrivals.push(at_ms);
        } else {
            self.arrivals_not_logged += 1;
        }
    }

    pub fn log(&mut self, record: RequestRecord) {
        if self.log.len() < MAX_REQUEST_LOG {
            self.log.push(record);
        } else {
            self.not_logged += 1;
        }
    }

    pub fn fault(&mut self, fault: Fault) {
        *self.faults_injected.entry(fault.name()).or_default() += 1;
    }

    /// The counter part of a snapshot; every fault kind is present, zero or not.
    pub fn fill(&self, stats: &mut Stats) {
        stats.requests_total = self.requests_total;
        stats.requests_by_action = self.requests_by_action.clone();
        stats.ret_codes = self.ret_codes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        stats.faults_injected = Fault::ALL
            .iter()
            .map(|f| (f.name().to_owned(), self.faults_injected.get(f.name()).copied().unwrap_or(0)))
            .collect();
        stats.requests = self.log.clone();
        stats.requests_not_logged = self.not_logged;
        stats.arrivals_ms = self.arrivals.clone();
        stats.arrivals_not_logged = self.arrivals_not_logged;
    }
}
