//! The API behind the HTTP layer: takes the parameters of one request and returns the JSON
//! answer, exactly as QingCloud would (reference §2–§5).
//!
//! Order of checks, for every request that was not faulted: duplicate or missing common
//! parameters (1100) → unknown access key or signature mismatch (1200) → `time_stamp` more than
//! 60 s off, or `expires` passed (1300) → quota of the account or access key (2500) → the
//! action (1400 "can't handle this request" when unknown) and its parameters (1100, 2100,
//! 1400). Every authenticated request that passes the time check counts against the quota,
//! whatever its outcome, except the ones refused with 2500.
//!
//! The engine owns that order and the one lock; the checks themselves live in `auth`, `quota`
//! and `actions`, and the answers' shapes in `answer`. It knows nothing of HTTP: resets, 502s
//! and latency are the server's.
//!
//! All mutable state (counters, generators, quota windows, the book) sits behind one mutex
//! held for a few microseconds per request; the signature is checked outside it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::Digest;

use crate::qingcloud::types::{
    ret, DelUserParams, DESCRIBE_CLUSTERS, DESCRIBE_JOBS, DESCRIBE_TAGS, RUN_CLUSTER_CUSTOM_SERVICE,
};

use super::actions::{custom_service, describe_clusters, describe_jobs, Cloud};
use super::answer::{error_reply, refuse, Refusal, Reply};
use super::auth::authenticate;
use super::clock::Now;
use super::faults::{self, Fault};
use super::quota::Quotas;
use super::request::{unique_params, ApiRequest};
use super::stats::{Counters, RequestRecord, Stats};
use super::world::{Account, Model, QuotaScope};

/// What happens to an arriving API request before the API looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Something that is not the API answers with an HTML page (`api.html_everywhere`).
    Html,
    Fault(Fault),
    /// The API answers (and, for a lost response, the answer is then dropped).
    Api {
        lost: bool,
    },
}

struct State {
    faults_rng: StdRng,
    /// The book and the random streams of jobs.
    cloud: Cloud,
    counters: Counters,
    quota: Quotas,
}

pub struct Engine {
    model: Model,
    seed: u64,
    /// access key → the `owner` user id its jobs carry.
    owners: HashMap<String, String>,
    state: Mutex<State>,
}

impl Engine {
    pub fn new(model: Model, seed: u64) -> Self {
        let owners = model
            .credentials
            .keys()
            .map(|ak| {
                let digest = match model.accounts.get(ak) {
                    Some(Account::Named(name)) => sha2::Sha256::digest(format!("account:{name}").as_bytes()),
                    _ => sha2::Sha256::digest(ak.as_bytes()),
                };
                (ak.clone(), format!("usr-{}", hex::encode_upper(&digest[..4])))
            })
            .collect();
        let state = State {
            faults_rng: StdRng::seed_from_u64(seed),
            cloud: Cloud::new(&model, seed),
            counters: Counters::default(),
            quota: Quotas::default(),
        };
        Self { model, seed, owners, state: Mutex::new(state) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough counters; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Extra latency for every API request.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.model.faults.delay_ms)
    }

    /// Does something that is not the API answer every request (`api.html_everywhere`)?
    pub fn html_everywhere(&self) -> bool {
        self.model.api.html_everywhere
    }

    /// The simulator's clock: the host's, shifted by the world's `clock_offset_s`.
    pub fn now(&self) -> Now {
        Now::shifted(self.model.clock_offset)
    }

    /// Count an arriving API request (`arrived`: the host's clock when it arrived) and decide
    /// what answers it. A 5100/5000 fault's ret_code is counted here too, since it is the
    /// answer. Under `html_everywhere` no fault is drawn: the page is all there is.
    pub fn admit(&self, action: &str, arrived: chrono::DateTime<chrono::Utc>) -> Admission {
        let mut st = self.lock();
        st.counters.request(action);
        st.counters.arrival(arrived.timestamp_millis());
        if self.model.api.html_everywhere {
            return Admission::Html;
        }
        let Some(fault) = faults::draw(&mut st.faults_rng, &self.model.faults) else {
            return Admission::Api { lost: false };
        };
        st.counters.fault(fault);
        match fault {
            Fault::Busy => st.counters.ret_code(ret::BUSY),
            Fault::Internal => st.counters.ret_code(ret::INTERNAL),
            Fault::LostResponse => return Admission::Api { lost: true },
            _ => {}
        }
        Admission::Fault(fault)
    }

    /// Add a RunClusterCustomService request to the request log of `/sim/stats` (other actions
    /// are not logged). `arrived` is the host's clock when the request arrived; `ret_code` is
    /// the API's answer, `None` when none was made (HTML, HTTP 502, reset).
    pub fn log_request(
        &self,
        params: &[(String, String)],
        arrived: chrono::DateTime<chrono::Utc>,
        ret_code: Option<i64>,
        job_id: Option<String>,
    ) {
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let action = get("action").unwrap_or("");
        if action != RUN_CLUSTER_CUSTOM_SERVICE {
            return;
        }
        let target = get("service_params").and_then(|p| serde_json::from_str::<DelUserParams>(p).ok());
        let (user, host) = target.map(|t| (t.user, t.host)).unwrap_or_default();
        let record = RequestRecord {
            at_ms: arrived.timestamp_millis(),
            action: action.to_owned(),
            cluster: get("cluster").unwrap_or("").to_owned(),
            user,
            host,
            ret_code,
            job_id,
            access_key_id: get("access_key_id").unwrap_or("").to_owned(),
        };
        self.lock().counters.log(record);
    }

    /// The JSON answer of a 5100 or 5000 fault.
    pub fn fault_reply(fault: Fault) -> Reply {
        let (code, message) = match fault {
            Fault::Busy => (ret::BUSY, "ServerBusy, the server is busy, please try again later"),
            _ => (ret::INTERNAL, "InternalError, an internal error occurred, please contact support"),
        };
        error_reply(refuse(code, message))
    }

    /// Answer one (unfaulted) request.
    pub fn call(&self, req: &ApiRequest, now: Now) -> Reply {
        let action = req.params.iter().find(|(k, _)| k == "action").map_or("", |(_, v)| v.as_str());
        let reply = match self.process(req, action, now) {
            Ok((body, job_id)) => Reply { ret_code: ret::OK, body, job_id },
            Err(refusal) => error_reply(refusal),
        };
        self.lock().counters.ret_code(reply.ret_code);
        reply
    }

    pub fn stats(&self, now: Now) -> Stats {
        let mut st = self.lock();
        st.cloud.book.settle(now);
        let book = &st.cloud.book;
        let (overlaps, overlaps_not_logged) = book.overlaps();
        let mut stats = Stats {
            seed: self.seed,
            jobs: book.job_count(),
            jobs_by_status: book.jobs_by_status(now),
            accounts: book.accounts(),
            cluster_overlaps: overlaps.to_vec(),
            cluster_overlaps_not_logged: overlaps_not_logged,
            ..Stats::default()
        };
        st.counters.fill(&mut stats);
        stats
    }

    fn process(&self, req: &ApiRequest, action: &str, now: Now) -> Result<(Vec<u8>, Option<String>), Refusal> {
        let params = unique_params(&req.params)?;
        let access_key = authenticate(&self.model.credentials, req, &params, now)?;
        // `owners` has an entry for every credential, and authenticate only returns those.
        let owner = self
            .owners
            .get(access_key)
            .ok_or_else(|| refuse(ret::INTERNAL, "InternalError, the access key has no owner"))?;
        let mut st = self.lock();
        let quota_key = match self.model.quota.as_ref().map(|q| q.scope) {
            Some(QuotaScope::AccessKey) => access_key,
            _ => owner.as_str(),
        };
        st.quota.charge(self.model.quota.as_ref(), quota_key, now)?;
        let cloud = &mut st.cloud;
        match action {
            RUN_CLUSTER_CUSTOM_SERVICE => {
                let (body, job_id) = custom_service::run(&self.model, cloud, &params, owner, now)?;
                Ok((body, Some(job_id)))
            }
            DESCRIBE_JOBS => Ok((describe_jobs::describe_jobs(cloud, &params, owner, now)?, None)),
            DESCRIBE_CLUSTERS => Ok((describe_clusters::describe_clusters(&self.model, cloud, &params)?, None)),
            DESCRIBE_TAGS => Ok((describe_clusters::describe_tags(&self.model, &params)?, None)),
            _ => Err(refuse(ret::ACCESS_DENIED, "PermissionDenied, can't handle this request")),
        }
    }
}

#[cfg(test)]
mod tests;
