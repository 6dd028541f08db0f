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
//! Errors are `{"message": "<Word>, <text>", "ret_code": N}` without `action`, as the real
//! service answers them (reference §10).
//!
//! All mutable state (counters, generators, quota windows, the [`Book`]) sits behind one mutex
//! held for a few microseconds per request; the signature is checked outside it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::Digest;

use crate::qingcloud::signer::{self, Method, SignatureMethod};
use crate::qingcloud::types::{
    ret, ClusterInfo, DelUserParams, DescribeClustersResponse, DescribeJobsResponse, DescribeTagsResponse, JobStatus,
    RunClusterCustomServiceResponse, TagInfo, DEL_USER, DESCRIBE_CLUSTERS, DESCRIBE_JOBS, DESCRIBE_TAGS,
    MYSQL_PLUS_APP_ID, ROLE_MAININSTANCE, RUN_CLUSTER_CUSTOM_SERVICE,
};

use super::faults::{self, Fault};
use super::jobs::{Book, FindError, JobQuery, NewJob, Now};
use super::stats::{Counters, RequestRecord, Stats};
use super::world::{check_zone, Account, ListOrder, MissingAccount, Model, QuotaScope};

/// Accounts the API refuses to delete (reference §3.2). Matched exactly, as MySQL does.
pub const PROTECTED_USERS: [&str; 4] = ["root", "qc_admin", "qc_repl", "qc_check"];

/// How far `time_stamp` may be from the simulator's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// `limit` of DescribeJobs: default and ceiling (larger values are clamped, as list APIs do).
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// One API request as received.
pub struct ApiRequest {
    pub method: Method,
    /// The path exactly as received (`/iaas/` or `/iaas`): it is part of the signature.
    pub path: String,
    /// Decoded parameters in the order received, `signature` included.
    pub params: Vec<(String, String)>,
}

/// The answer to one request.
pub struct Reply {
    pub ret_code: i64,
    pub body: Vec<u8>,
    /// The job an accepted RunClusterCustomService created.
    pub job_id: Option<String>,
}

/// The text of every 2500, in a window or a penalty block alike (reference §10).
pub const QUOTA_MESSAGE: &str =
    "QuotasExceeded, access too frequently, your requests will be rejected for a period of time";

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

/// A refusal: ret_code and message.
#[derive(Debug)]
struct Refusal {
    code: i64,
    message: String,
}

fn refuse(code: i64, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

fn missing(name: &str) -> Refusal {
    refuse(ret::MALFORMED, format!("ParameterError, missing parameter [{name}]"))
}

struct State {
    faults_rng: StdRng,
    jobs_rng: StdRng,
    /// Draws of job durations and listing positions: a stream of its own, so that worlds
    /// without a duration range or a random order keep the job ids of earlier versions.
    extra_rng: StdRng,
    book: Book,
    counters: Counters,
    /// account (or access key, by the quota's scope) → its count.
    quota: HashMap<String, QuotaCount>,
}

/// One quota count.
struct QuotaCount {
    window_start: Instant,
    requests: u64,
    /// A penalty block: every request is refused until then.
    blocked_until: Option<Instant>,
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
            // A separate stream, so job ids and fail draws do not shift the fault sequence.
            jobs_rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            extra_rng: StdRng::seed_from_u64(seed ^ 0x6a09_e667_f3bc_c908),
            book: Book::new(&model),
            counters: Counters::default(),
            quota: HashMap::new(),
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

    /// Count an arriving API request and decide what answers it. A 5100/5000 fault's ret_code
    /// is counted here too, since it is the answer. Under `html_everywhere` no fault is drawn:
    /// the page is all there is.
    pub fn admit(&self, action: &str) -> Admission {
        let mut st = self.lock();
        st.counters.request(action);
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
        st.book.settle(now);
        let mut stats = Stats {
            seed: self.seed,
            jobs: st.book.job_count(),
            jobs_by_status: st.book.jobs_by_status(now),
            accounts: st.book.accounts(),
            ..Stats::default()
        };
        st.counters.fill(&mut stats);
        stats
    }

    fn process(&self, req: &ApiRequest, action: &str, now: Now) -> Result<(Vec<u8>, Option<String>), Refusal> {
        let params = unique_params(&req.params)?;
        let access_key = self.authenticate(req, &params, now)?;
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
        self.charge_quota(&mut st, quota_key, now)?;
        match action {
            RUN_CLUSTER_CUSTOM_SERVICE => {
                let (body, job_id) = self.run_custom_service(&mut st, &params, owner, now)?;
                Ok((body, Some(job_id)))
            }
            DESCRIBE_JOBS => Ok((describe_jobs(&mut st, &params, owner, now)?, None)),
            DESCRIBE_CLUSTERS => Ok((self.describe_clusters(&mut st, &params)?, None)),
            DESCRIBE_TAGS => Ok((self.describe_tags(&params)?, None)),
            _ => Err(refuse(ret::ACCESS_DENIED, "PermissionDenied, can't handle this request")),
        }
    }

    /// Check the signature and the time; return the access key id.
    fn authenticate<'p>(&self, req: &ApiRequest, params: &Params<'p>, now: Now) -> Result<&'p str, Refusal> {
        for name in ["action", "access_key_id", "signature_method", "time_stamp", "signature"] {
            params.require(name)?;
        }
        let alg = SignatureMethod::from_param(params.require("signature_method")?)
            .ok_or_else(|| refuse(ret::MALFORMED, "ParameterError, signature_method must be HmacSHA256 or HmacSHA1"))?;
        if params.get("signature_version").is_some_and(|v| v != "1") {
            return Err(refuse(ret::MALFORMED, "ParameterError, signature_version must be 1"));
        }
        let access_key = params.require("access_key_id")?;
        let secret =
            self.model.credentials.get(access_key).ok_or_else(|| {
                refuse(ret::AUTH_FAILED, format!("AuthFailure, unknown access_key_id [{access_key}]"))
            })?;
        let given = params.require("signature")?;
        if !signer::verify(req.method, &req.path, &req.params, secret.as_bytes(), alg, given) {
            return Err(refuse(ret::AUTH_FAILED, "AuthFailure, signature not matched"));
        }
        let time_stamp = params.require("time_stamp")?;
        let sent = signer::parse_time_stamp(time_stamp).ok_or_else(|| {
            refuse(ret::MALFORMED, format!("ParameterError, time_stamp [{time_stamp}] is not YYYY-MM-DDThh:mm:ssZ"))
        })?;
        let skew = (now.wall - sent).abs().to_std().unwrap_or(Duration::MAX);
        if skew > MAX_SKEW {
            return Err(refuse(
                ret::EXPIRED,
                format!("MessageExpired, time_stamp [{time_stamp}] is {}s away from the server time", skew.as_secs()),
            ));
        }
        if let Some(expires) = params.get("expires") {
            let at = signer::parse_time_stamp(expires).ok_or_else(|| {
                refuse(ret::MALFORMED, format!("ParameterError, expires [{expires}] is not YYYY-MM-DDThh:mm:ssZ"))
            })?;
            if now.wall > at {
                return Err(refuse(ret::EXPIRED, format!("MessageExpired, the request expired at [{expires}]")));
            }
        }
        Ok(access_key)
    }

    /// Fixed windows per account (or access key): a window opens with the first request after
    /// the previous one closed, and admits `requests` requests. Refused requests do not count.
    /// With a penalty, the first request over the quota starts a block of `penalty` in which
    /// every request is refused; the next request after it opens a fresh window.
    fn charge_quota(&self, st: &mut State, key: &str, now: Now) -> Result<(), Refusal> {
        let Some(q) = &self.model.quota else { return Ok(()) };
        let entry = st.quota.entry(key.to_owned()).or_insert(QuotaCount {
            window_start: now.mono,
            requests: 0,
            blocked_until: None,
        });
        if let Some(until) = entry.blocked_until {
            if now.mono < until {
                return Err(refuse(ret::QUOTA_EXCEEDED, QUOTA_MESSAGE));
            }
            *entry = QuotaCount { window_start: now.mono, requests: 0, blocked_until: None };
        }
        if now.mono.saturating_duration_since(entry.window_start) >= q.window {
            *entry = QuotaCount { window_start: now.mono, requests: 0, blocked_until: None };
        }
        if entry.requests >= q.requests {
            if !q.penalty.is_zero() {
                entry.blocked_until = Some(now.mono + q.penalty);
            }
            return Err(refuse(ret::QUOTA_EXCEEDED, QUOTA_MESSAGE));
        }
        entry.requests += 1;
        Ok(())
    }

    fn run_custom_service(
        &self,
        st: &mut State,
        params: &Params<'_>,
        owner: &str,
        now: Now,
    ) -> Result<(Vec<u8>, String), Refusal> {
        if self.model.api.refuse_custom_service {
            // A key without the right to the action: the answer names no cluster and no user.
            return Err(refuse(ret::ACCESS_DENIED, "PermissionDenied, can't handle this request"));
        }
        let zone = params.zone()?;
        let cluster = params.require("cluster")?;
        let service = params.require("service")?;
        if service != DEL_USER {
            return Err(refuse(ret::MALFORMED, format!("ParameterError, service [{service}] is not supported")));
        }
        let role = params.require("role")?;
        if role != ROLE_MAININSTANCE {
            return Err(refuse(
                ret::MALFORMED,
                format!("ParameterError, service [{DEL_USER}] runs on role [{ROLE_MAININSTANCE}], not [{role}]"),
            ));
        }
        let raw = params.require("service_params")?;
        let target = serde_json::from_str::<DelUserParams>(raw)
            .ok()
            .filter(|p| !p.user.is_empty() && !p.host.is_empty())
            .ok_or_else(|| {
                refuse(
                    ret::MALFORMED,
                    "ParameterError, service_params must be a JSON object with exactly the non-empty strings host and user",
                )
            })?;

        st.book.settle(now);
        seed_zone(st, zone, owner, now);
        if !st.book.cluster_in_zone(cluster, zone) {
            return Err(refuse(
                ret::NOT_FOUND,
                format!("ResourceNotFound, cluster [{cluster}] not found in zone [{zone}]"),
            ));
        }
        if let Some(c) = self.model.clusters.as_ref().and_then(|m| m.get(cluster)) {
            // A cluster that is not active (or is in transition) runs no custom service; the
            // answer names the cluster and its status, so it fails the task, not the run.
            if c.status != "active" || !c.transition_status.is_empty() {
                let status = if c.transition_status.is_empty() { &c.status } else { &c.transition_status };
                return Err(refuse(
                    ret::ACCESS_DENIED,
                    format!("PermissionDenied, cluster [{cluster}] is [{status}]; custom services run only on an active cluster"),
                ));
            }
        }
        if PROTECTED_USERS.contains(&target.user.as_str()) {
            return Err(refuse(
                ret::ACCESS_DENIED,
                format!("PermissionDenied, user [{}] is protected and cannot be deleted", target.user),
            ));
        }
        if self.model.one_job_per_cluster {
            if let Some(running) = st.book.running_job(cluster) {
                return Err(refuse(
                    ret::ACCESS_DENIED,
                    format!("PermissionDenied, cluster [{cluster}] is running job [{running}]; try again when it ends"),
                ));
            }
        }

        if self.model.api.missing_account == MissingAccount::Reject
            && !st.book.account_exists(cluster, &target.user, &target.host)
        {
            st.book.note_account(cluster, zone, &target.user, &target.host);
            return Err(refuse(
                ret::NOT_FOUND,
                format!(
                    "ResourceNotFound, user [{}] with host [{}] does not exist in cluster [{cluster}]",
                    target.user, target.host
                ),
            ));
        }

        let doomed = st.jobs_rng.random::<f64>() < self.model.fail_rate;
        let job_id = loop {
            let id = new_job_id(&mut st.jobs_rng);
            if !st.book.has_job(&id) {
                break id;
            }
        };
        let directive = directive(params);
        let working = if self.model.working_max > self.model.working {
            st.extra_rng.random_range(self.model.working..=self.model.working_max)
        } else {
            self.model.working
        };
        let shuffle = if self.model.api.describe_jobs_order == ListOrder::Random { st.extra_rng.random() } else { 0 };
        st.book.create(
            NewJob {
                id: job_id.clone(),
                action: RUN_CLUSTER_CUSTOM_SERVICE,
                zone,
                owner,
                cluster,
                user: &target.user,
                host: &target.host,
                doomed,
                directive,
                working,
                shuffle,
            },
            now,
        );
        let body = to_json(&RunClusterCustomServiceResponse {
            action: response_action(RUN_CLUSTER_CUSTOM_SERVICE),
            ret_code: ret::OK,
            message: String::new(),
            job_id: job_id.clone(),
            service: service.to_owned(),
            role: role.to_owned(),
            cluster_id: cluster.to_owned(),
        })?;
        Ok((body, job_id))
    }
}

impl Engine {
    /// DescribeClusters in one zone: filters `clusters.N`, `apps.N`, `status.N`, `tags.N` (tag
    /// ids, as DescribeTags gives them: a cluster carrying any of them), `cluster_name` (a substring), paged by `offset`/`limit` (default 20, at most
    /// 100), sorted by cluster id. The auto world knows every well-formed `clusters.N` id as an
    /// active MySQL Plus cluster (in the zone it is first addressed in), and lists the
    /// clusters addressed so far.
    fn describe_clusters(&self, st: &mut State, params: &Params<'_>) -> Result<Vec<u8>, Refusal> {
        let zone = params.zone()?;
        let ids = params.indexed("clusters")?;
        let apps = params.indexed("apps")?;
        let statuses = params.indexed("status")?;
        let tags = params.indexed("tags")?;
        let name = params.get("cluster_name").unwrap_or("");
        let offset = params.number("offset")?.unwrap_or(0);
        let limit = params.number("limit")?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let mut found: Vec<(ClusterInfo, Vec<String>)> = Vec::new();
        match &self.model.clusters {
            Some(map) => {
                for (id, c) in map.iter().filter(|(_, c)| c.zone == zone) {
                    let tags: Vec<TagInfo> =
                        c.tags.iter().map(|n| TagInfo { tag_id: tag_id(n), tag_name: n.clone() }).collect();
                    let info = ClusterInfo {
                        cluster_id: id.clone(),
                        name: c.name.clone(),
                        app_id: c.app_id.clone(),
                        app_version: String::new(),
                        status: c.status.clone(),
                        transition_status: c.transition_status.clone(),
                        tags: tags.clone(),
                    };
                    found.push((info, tags.into_iter().map(|t| t.tag_id).collect()));
                }
            }
            None => {
                for id in &ids {
                    st.book.cluster_in_zone(id, zone);
                }
                for id in st.book.clusters_in_zone(zone) {
                    let info = ClusterInfo {
                        cluster_id: id,
                        app_id: MYSQL_PLUS_APP_ID.to_owned(),
                        status: "active".to_owned(),
                        ..ClusterInfo::default()
                    };
                    found.push((info, Vec::new()));
                }
            }
        }
        found.retain(|(c, t)| {
            (ids.is_empty() || ids.contains(&c.cluster_id))
                && (apps.is_empty() || apps.contains(&c.app_id))
                && (statuses.is_empty() || statuses.contains(&c.status))
                && (tags.is_empty() || tags.iter().any(|tag| t.contains(tag)))
                && c.name.contains(name)
        });
        to_json(&DescribeClustersResponse {
            action: response_action(DESCRIBE_CLUSTERS),
            ret_code: ret::OK,
            message: String::new(),
            total_count: found.len() as u64,
            cluster_set: found.into_iter().skip(offset).take(limit).map(|(c, _)| c).collect(),
        })
    }

    /// DescribeTags: the tags the world's clusters carry (one id per name, [`tag_id`]), filtered
    /// by `tags.N` (ids) and `search_word` (a substring of the name), sorted by name and paged
    /// like DescribeClusters. Tags are the account's, not a zone's: every zone lists them all.
    fn describe_tags(&self, params: &Params<'_>) -> Result<Vec<u8>, Refusal> {
        params.zone()?;
        let ids = params.indexed("tags")?;
        let word = params.get("search_word").unwrap_or("");
        let offset = params.number("offset")?.unwrap_or(0);
        let limit = params.number("limit")?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let names: BTreeSet<&str> = self
            .model
            .clusters
            .iter()
            .flat_map(|m| m.values())
            .flat_map(|c| c.tags.iter().map(String::as_str))
            .collect();
        let found: Vec<TagInfo> = names
            .into_iter()
            .map(|n| TagInfo { tag_id: tag_id(n), tag_name: n.to_owned() })
            .filter(|t| (ids.is_empty() || ids.contains(&t.tag_id)) && t.tag_name.contains(word))
            .collect();
        to_json(&DescribeTagsResponse {
            action: response_action(DESCRIBE_TAGS),
            ret_code: ret::OK,
            message: String::new(),
            total_count: found.len() as u64,
            tag_set: found.into_iter().skip(offset).take(limit).collect(),
        })
    }
}

/// The id the simulator gives the tag named `name`: `tag-` and eight hex digits of its SHA-256,
/// the same in every zone and every run.
pub fn tag_id(name: &str) -> String {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("tag-{hex}")
}

/// Give the owner its unrelated jobs in the zone, if the world asks for them.
fn seed_zone(st: &mut State, zone: &str, owner: &str, now: Now) {
    let State { book, extra_rng, .. } = st;
    book.seed_zone(zone, owner, now, |b| loop {
        let id = new_job_id(extra_rng);
        if !b.has_job(&id) {
            break id;
        }
    });
}

fn describe_jobs(st: &mut State, params: &Params<'_>, owner: &str, now: Now) -> Result<Vec<u8>, Refusal> {
    let zone = params.zone()?;
    let ids = params.indexed("jobs")?;
    let mut statuses = Vec::new();
    for s in params.indexed("status")? {
        match JobStatus::parse(&s) {
            JobStatus::Unknown(_) | JobStatus::DoneWithFailure => {
                return Err(refuse(ret::MALFORMED, format!("ParameterError, status [{s}] is not a job status")));
            }
            known => statuses.push(known),
        }
    }
    let offset = params.number("offset")?.unwrap_or(0);
    let limit = params.number("limit")?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    if params.number("verbose")?.is_some_and(|v| v > 1) {
        return Err(refuse(ret::MALFORMED, "ParameterError, verbose must be 0 or 1"));
    }
    st.book.settle(now);
    seed_zone(st, zone, owner, now);
    let query = JobQuery {
        owner,
        zone,
        ids: (!ids.is_empty()).then_some(ids.as_slice()),
        statuses: &statuses,
        job_action: params.get("job_action"),
    };
    let found = st.book.find(&query, now).map_err(|e| match e {
        FindError::UnknownJob(id) => refuse(ret::NOT_FOUND, format!("ResourceNotFound, job [{id}] not found")),
    })?;
    to_json(&DescribeJobsResponse {
        action: response_action(DESCRIBE_JOBS),
        ret_code: ret::OK,
        message: String::new(),
        total_count: found.len() as u64,
        job_set: found.into_iter().skip(offset).take(limit).collect(),
    })
}

/// Parameters by name, each given once.
struct Params<'a>(BTreeMap<&'a str, &'a str>);

fn unique_params(list: &[(String, String)]) -> Result<Params<'_>, Refusal> {
    let mut map = BTreeMap::new();
    for (k, v) in list {
        if map.insert(k.as_str(), v.as_str()).is_some() {
            return Err(refuse(ret::MALFORMED, format!("ParameterError, parameter [{k}] is given more than once")));
        }
    }
    Ok(Params(map))
}

impl<'a> Params<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).copied()
    }

    fn require(&self, name: &str) -> Result<&'a str, Refusal> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| missing(name))
    }

    fn zone(&self) -> Result<&'a str, Refusal> {
        let zone = self.require("zone")?;
        check_zone(zone).map_err(|m| refuse(ret::MALFORMED, format!("ParameterError, {m}")))?;
        Ok(zone)
    }

    fn number(&self, name: &str) -> Result<Option<usize>, Refusal> {
        self.get(name)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    refuse(ret::MALFORMED, format!("ParameterError, {name} [{v}] is not a non-negative integer"))
                })
            })
            .transpose()
    }

    /// The values of `name.1`, `name.2`, … in index order.
    fn indexed(&self, name: &str) -> Result<Vec<String>, Refusal> {
        let prefix = format!("{name}.");
        let mut out = Vec::new();
        for (k, v) in self.0.range(prefix.as_str()..) {
            let Some(index) = k.strip_prefix(&prefix) else { break };
            let n: u32 = index.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                refuse(ret::MALFORMED, format!("ParameterError, [{k}]: array parameters are {name}.1, {name}.2, …"))
            })?;
            out.push((n, (*v).to_owned()));
        }
        out.sort_unstable_by_key(|(n, _)| *n);
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }
}

/// `j-` and 11 lower-case letters or digits, like `j-fcz8mvls4pr`.
fn new_job_id(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..11).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("j-{tail}")
}

/// The original request as JSON, without the signature and the credentials it was made with.
fn directive(params: &Params<'_>) -> String {
    let kept: BTreeMap<&str, &str> = params
        .0
        .iter()
        .filter(|(k, _)| !matches!(**k, "signature" | "signature_method" | "signature_version" | "access_key_id"))
        .map(|(k, v)| (*k, *v))
        .collect();
    serde_json::to_string(&kept).unwrap_or_default()
}

fn response_action(action: &str) -> String {
    format!("{action}Response")
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, Refusal> {
    serde_json::to_vec(value).map_err(|e| refuse(ret::INTERNAL, format!("InternalError, {e}")))
}

/// An error answer: `message` and `ret_code`, no `action`.
fn error_reply(refusal: Refusal) -> Reply {
    let body = serde_json::json!({ "message": refusal.message, "ret_code": refusal.code });
    Reply { ret_code: refusal.code, body: body.to_string().into_bytes(), job_id: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::{World, DEFAULT_ACCESS_KEY_ID as AK, DEFAULT_SECRET_ACCESS_KEY as SK};

    fn engine(yaml: &str) -> Engine {
        let world = World::parse(yaml, std::path::Path::new("w.yaml")).unwrap();
        Engine::new(world.check().unwrap(), 1)
    }

    fn signed(action: &str, extra: &[(&str, &str)], now: Now) -> ApiRequest {
        signed_in("sh1a", action, extra, now)
    }

    fn signed_in(zone: &str, action: &str, extra: &[(&str, &str)], now: Now) -> ApiRequest {
        let mut params = signer::common_params(action, zone, AK, now.wall, SignatureMethod::HmacSha256);
        params.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let sig = signer::signature(Method::Get, "/iaas/", &params, SK.as_bytes(), SignatureMethod::HmacSha256);
        params.push(("signature".to_owned(), sig));
        ApiRequest { method: Method::Get, path: "/iaas/".to_owned(), params }
    }

    fn body(reply: &Reply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).unwrap()
    }

    const DEL_BOB: [(&str, &str); 4] = [
        ("cluster", "cl-a"),
        ("role", "maininstance"),
        ("service", "del_user"),
        ("service_params", r#"{"host":"%","user":"bob"}"#),
    ];

    #[test]
    fn the_path_and_method_are_signed() {
        let e = engine("{}");
        let now = Now::current();
        let mut req = signed(RUN_CLUSTER_CUSTOM_SERVICE, &DEL_BOB, now);
        assert_eq!(e.call(&req, now).ret_code, ret::OK);
        req.path = "/iaas".to_owned();
        assert_eq!(e.call(&req, now).ret_code, ret::AUTH_FAILED);
        req.path = "/iaas/".to_owned();
        req.method = Method::Post;
        assert_eq!(e.call(&req, now).ret_code, ret::AUTH_FAILED);
    }

    #[test]
    fn refusals_carry_the_right_codes() {
        let e = engine("{}");
        let now = Now::current();
        let with = |k: &str, v: &str| {
            let extra: Vec<(&str, &str)> = DEL_BOB.iter().map(|&(a, b)| if a == k { (a, v) } else { (a, b) }).collect();
            e.call(&signed(RUN_CLUSTER_CUSTOM_SERVICE, &extra, now), now).ret_code
        };
        assert_eq!(with("service_params", r#"{"host":"%","user":"root"}"#), ret::ACCESS_DENIED);
        assert_eq!(with("service_params", r#"{"host":"%","user":"bob","x":1}"#), ret::MALFORMED);
        assert_eq!(with("service_params", r#"{"host":"%","user":7}"#), ret::MALFORMED);
        assert_eq!(with("service_params", r#"["bob"]"#), ret::MALFORMED);
        assert_eq!(with("role", "analysis"), ret::MALFORMED);
        assert_eq!(with("service", "add_user"), ret::MALFORMED);
        assert_eq!(with("cluster", "i-abc"), ret::NOT_FOUND);
        let unknown = e.call(&signed("RunInstances", &[], now), now);
        assert_eq!(unknown.ret_code, ret::ACCESS_DENIED);
        assert_eq!(
            body(&unknown),
            serde_json::json!({"message": "PermissionDenied, can't handle this request", "ret_code": 1400})
        );
        let stale = signed(DESCRIBE_JOBS, &[], now);
        assert_eq!(e.call(&stale, now.after(Duration::from_secs(61))).ret_code, ret::EXPIRED);
        assert_eq!(e.call(&stale, now.after(Duration::from_secs(59))).ret_code, ret::OK);
        let mut dup = signed(DESCRIBE_JOBS, &[("zone", "pek3a")], now);
        assert_eq!(e.call(&dup, now).ret_code, ret::MALFORMED);
        dup.params.retain(|(k, _)| k != "time_stamp");
        assert_eq!(body(&e.call(&dup, now))["message"], "ParameterError, parameter [zone] is given more than once");
        let stats = e.stats(now);
        assert_eq!(stats.ret_code(ret::MALFORMED), 7);
    }

    #[test]
    fn quota_windows_refuse_then_recover_and_refusals_do_not_count() {
        let e = engine("quota: {requests: 2, window_s: 10}");
        let t0 = Now::current();
        let code = |t: Now| e.call(&signed(DESCRIBE_JOBS, &[], t), t).ret_code;
        assert_eq!(code(t0), ret::OK);
        assert_eq!(code(t0.after(Duration::from_secs(1))), ret::OK);
        assert_eq!(code(t0.after(Duration::from_secs(2))), ret::QUOTA_EXCEEDED);
        assert_eq!(code(t0.after(Duration::from_secs(9))), ret::QUOTA_EXCEEDED);
        assert_eq!(code(t0.after(Duration::from_secs(10))), ret::OK);
        assert_eq!(code(t0.after(Duration::from_secs(11))), ret::OK);
        assert_eq!(code(t0.after(Duration::from_secs(12))), ret::QUOTA_EXCEEDED);
    }

    fn signed_as(ak: &str, sk: &str, action: &str, now: Now) -> ApiRequest {
        let mut params = signer::common_params(action, "sh1a", ak, now.wall, SignatureMethod::HmacSha256);
        let sig = signer::signature(Method::Get, "/iaas/", &params, sk.as_bytes(), SignatureMethod::HmacSha256);
        params.push(("signature".to_owned(), sig));
        ApiRequest { method: Method::Get, path: "/iaas/".to_owned(), params }
    }

    #[test]
    fn a_penalty_block_refuses_everything_for_its_length_whatever_the_window() {
        let e = engine("quota: {requests: 2, window_s: 1, penalty_s: 30}");
        let t0 = Now::current();
        let code = |t: Now| e.call(&signed(DESCRIBE_JOBS, &[], t), t).ret_code;
        assert_eq!((code(t0), code(t0)), (ret::OK, ret::OK));
        let refused = e.call(&signed(DESCRIBE_JOBS, &[], t0), t0);
        assert_eq!(body(&refused), serde_json::json!({"message": QUOTA_MESSAGE, "ret_code": 2500}));
        // The window would have reopened after 1 s; the block lasts 30 s.
        assert_eq!(code(t0.after(Duration::from_secs(5))), ret::QUOTA_EXCEEDED);
        assert_eq!(code(t0.after(Duration::from_millis(29_900))), ret::QUOTA_EXCEEDED);
        assert_eq!(code(t0.after(Duration::from_secs(30))), ret::OK);
        assert_eq!(code(t0.after(Duration::from_secs(30))), ret::OK);
        assert_eq!(code(t0.after(Duration::from_secs(30))), ret::QUOTA_EXCEEDED);
    }

    #[test]
    fn the_quota_is_shared_by_the_keys_of_one_account_unless_scoped_to_the_key() {
        let keys = "credentials: [{access_key_id: A, secret_access_key: a, account: acme}, \
                    {access_key_id: B, secret_access_key: b, account: acme}, {access_key_id: C, secret_access_key: c}]";
        for (scope, b_after_a) in [("account", ret::QUOTA_EXCEEDED), ("access_key", ret::OK)] {
            let e = engine(&format!("{keys}\nquota: {{requests: 2, window_s: 60, scope: {scope}}}"));
            let now = Now::current();
            let code = |ak: &str, sk: &str| e.call(&signed_as(ak, sk, DESCRIBE_JOBS, now), now).ret_code;
            assert_eq!((code("A", "a"), code("A", "a")), (ret::OK, ret::OK));
            assert_eq!(code("A", "a"), ret::QUOTA_EXCEEDED);
            assert_eq!(code("B", "b"), b_after_a, "{scope}");
            assert_eq!(code("C", "c"), ret::OK, "{scope}: another account");
        }
    }

    #[test]
    fn durations_are_drawn_from_the_range_and_jobs_end_in_the_order_of_their_ends() {
        let e = engine("jobs: {pending_ms: 0, working_ms: 100, working_ms_max: 10000}\nseed: 3");
        let t0 = Now::current();
        let mut ids = Vec::new();
        for i in 0..20 {
            let params = format!(r#"{{"host":"%","user":"u{i}"}}"#);
            let extra =
                [("cluster", "cl-a"), ("role", "maininstance"), ("service", "del_user"), ("service_params", &params)];
            let r = body(&e.call(&signed(RUN_CLUSTER_CUSTOM_SERVICE, &extra, t0), t0));
            ids.push(r["job_id"].as_str().unwrap().to_owned());
        }
        let mut ends = Vec::new();
        for id in &ids {
            let t = t0.after(Duration::from_secs(11));
            let d = body(&e.call(&signed(DESCRIBE_JOBS, &[("jobs.1", id)], t), t));
            let job: crate::qingcloud::types::Job = serde_json::from_value(d["job_set"][0].clone()).unwrap();
            assert_eq!(job.status, JobStatus::Successful);
            let status_time = signer::parse_time_stamp(&job.status_time).unwrap();
            ends.push((status_time - job.create_time().unwrap()).num_seconds());
        }
        assert!(ends.iter().all(|s| (0..=10).contains(s)), "{ends:?}");
        let distinct: std::collections::BTreeSet<_> = ends.iter().collect();
        assert!(distinct.len() >= 4, "20 draws from 0.1–10 s give several whole seconds: {ends:?}");
        // Each account was deleted by its own job, whatever order they ended in.
        assert_eq!(e.stats(t0.after(Duration::from_secs(11))).jobs_by_status.get("successful"), Some(&20));
    }

    fn call_tags(e: &Engine, extra: &[(&str, &str)], now: Now) -> serde_json::Value {
        body(&e.call(&signed(DESCRIBE_TAGS, extra, now), now))
    }

    #[test]
    fn describe_clusters_filters_and_pages_past_a_hundred() {
        let mut yaml = String::from("clusters:\n");
        for i in 0..130 {
            let (zone, tags) = if i % 2 == 0 { ("sh1a", "[prod]") } else { ("sh1a", "[]") };
            yaml.push_str(&format!("  - {{id: cl-c{i:03}, zone: {zone}, name: orders-{i}, tags: {tags}}}\n"));
        }
        yaml.push_str("  - {id: cl-p1, zone: pek3, status: stopped, app_id: app-other}\n");
        let e = engine(&yaml);
        let now = Now::current();
        let call = |extra: &[(&str, &str)]| body(&e.call(&signed(DESCRIBE_CLUSTERS, extra, now), now));
        let first = call(&[("limit", "500")]);
        assert_eq!(first["total_count"], 130);
        assert_eq!(first["cluster_set"].as_array().unwrap().len(), 100, "limit is clamped to 100");
        let second = call(&[("limit", "100"), ("offset", "100")]);
        assert_eq!(second["cluster_set"].as_array().unwrap().len(), 30);
        assert_eq!(second["cluster_set"][0]["cluster_id"], "cl-c100");
        assert_eq!(call(&[("tags.1", "prod")])["total_count"], 0, "tags.N are tag ids, not names");
        let tags = call_tags(&e, &[("search_word", "pro")], now);
        assert_eq!(tags["total_count"], 1);
        assert_eq!(tags["tag_set"][0]["tag_name"], "prod");
        let prod = tags["tag_set"][0]["tag_id"].as_str().unwrap().to_owned();
        assert_eq!(prod, tag_id("prod"));
        let tagged = call(&[("tags.1", &prod)]);
        assert_eq!(tagged["total_count"], 65);
        assert_eq!(tagged["cluster_set"][0]["tags"][0]["tag_name"], "prod");
        let by_id = call(&[("clusters.1", "cl-c007"), ("clusters.2", "cl-p1")]);
        assert_eq!(by_id["total_count"], 1, "cl-p1 is in another zone: {by_id}");
        assert_eq!(by_id["cluster_set"][0]["app_id"], MYSQL_PLUS_APP_ID);
        assert_eq!(by_id["cluster_set"][0]["status"], "active");
        let pek3 = |extra: &[(&str, &str)]| body(&e.call(&signed_in("pek3", DESCRIBE_CLUSTERS, extra, now), now));
        assert_eq!(pek3(&[])["cluster_set"][0]["status"], "stopped");
        assert_eq!(pek3(&[("apps.1", MYSQL_PLUS_APP_ID)])["total_count"], 0);
        let refused = e.call(
            &signed_in(
                "pek3",
                RUN_CLUSTER_CUSTOM_SERVICE,
                &[("cluster", "cl-p1"), DEL_BOB[1], DEL_BOB[2], DEL_BOB[3]],
                now,
            ),
            now,
        );
        assert_eq!(refused.ret_code, ret::ACCESS_DENIED);
        assert!(body(&refused)["message"].as_str().unwrap().contains("[cl-p1] is [stopped]"));
    }

    #[test]
    fn directive_and_response_shape() {
        let e = engine("{}");
        let now = Now::current();
        let r = body(&e.call(&signed(RUN_CLUSTER_CUSTOM_SERVICE, &DEL_BOB, now), now));
        assert_eq!(r["action"], "RunClusterCustomServiceResponse");
        assert_eq!(r["cluster_id"], "cl-a");
        let id = r["job_id"].as_str().unwrap();
        assert!(id.len() == 13 && id[2..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
        let d = body(&e.call(&signed(DESCRIBE_JOBS, &[("jobs.1", id)], now), now));
        assert_eq!(d["action"], "DescribeJobsResponse");
        let job: crate::qingcloud::types::Job = serde_json::from_value(d["job_set"][0].clone()).unwrap();
        let target = job.directive_target().unwrap();
        assert_eq!((target.cluster.as_str(), target.service.as_str()), ("cl-a", "del_user"));
        assert_eq!(target.params.unwrap(), DelUserParams::new("bob", "%"));
        assert!(!job.directive.contains("signature") && !job.directive.contains(AK), "{}", job.directive);
        assert_eq!(job.resource_ids, "cl-a");
        assert!(job.owner.starts_with("usr-"));
    }
}
