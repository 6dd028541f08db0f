//! The HTTP client of the QingCloud API: builds, signs and sends one request per call and says
//! exactly what happened ([`Call`]: the record to store and the typed result).
//!
//! It owns one `reqwest::Client` (rustls, timeouts, user agent), the optional rate [`Gate`]
//! every request passes first, a fresh `time_stamp` per request, GET or POST by length, bounded
//! body reading and the classification of failures into [`ApiError`]. It must not retry, sleep
//! for back-off or decide anything about tasks: that is the runner's job.

mod answer;
mod call;
mod transport;

pub use answer::classify_body;
pub use call::{BuildError, Call, CallRecord, ClusterQuery, Gate, JobFilter, SendGuard, Withheld};
pub use transport::parse_http_date;
use transport::{clamp_limit, unsent_call};

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::domain::{ClusterId, Zone};
use crate::qingcloud::config::{Credentials, Settings};
pub use crate::qingcloud::error::{ApiError, Failure};
use crate::qingcloud::signer;
use crate::qingcloud::types::{
    DescribeClustersResponse, DescribeJobsResponse, DescribeTagsResponse, RunClusterCustomServiceResponse,
    DESCRIBE_CLUSTERS, DESCRIBE_JOBS, DESCRIBE_TAGS, RUN_CLUSTER_CUSTOM_SERVICE,
};

/// Most bytes of a response body read into memory; a longer body is an error.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// A request whose GET query string would be longer than this is sent as a POST form instead.
pub const POST_THRESHOLD_BYTES: usize = 2000;
/// `DescribeJobs` returns at most 100 items per call, so ids are sent in batches of this many.
pub const MAX_JOBS_PER_CALL: usize = 100;

/// `clusters.N` per `DescribeClusters` call (its `limit` is at most 100).
pub const MAX_CLUSTERS_PER_CALL: usize = 100;
/// Sent as `User-Agent` on every request.
pub const USER_AGENT: &str = concat!("qc-offboard/", env!("CARGO_PKG_VERSION"));

/// How long an idle connection is kept for reuse.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// The QingCloud API client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    credentials: Credentials,
    gate: Option<Arc<dyn Gate>>,
    /// Added to `Utc::now()` for `time_stamp`, in milliseconds.
    clock_offset_ms: AtomicI64,
    /// Tries of a read-only lookup that got no usable answer (see [`Client::lookup_tries`]).
    lookup_tries: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("credentials", &self.credentials)
            .field("gate", &self.gate.is_some())
            .field("clock_offset_ms", &self.clock_offset_ms.load(Ordering::Relaxed))
            .finish()
    }
}

impl Client {
    /// Build the client once for a run. Redirects are not followed: the signed path would change.
    pub fn new(settings: &Settings) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Drop idle connections before servers typically do (the simulator after 30 s), so
            // a request is never sent on a connection the server is closing: its lost answer
            // would cost a reconciliation.
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .build()
            .map_err(BuildError)?;
        Ok(Self {
            http,
            endpoint: settings.endpoint.clone(),
            credentials: settings.credentials.clone(),
            gate: None,
            clock_offset_ms: AtomicI64::new(0),
            lookup_tries: settings.connection_retries.max(1),
        })
    }

    /// How often a read-only lookup (preflight's `DescribeClusters`, discovery's listings) that
    /// got no usable answer is tried before the caller gives up on it: the config file's
    /// `connection_retries` (the Go SDK's name and default, 3), at least once. A `del_user`
    /// is never retried by count: its retries are the runner's, after reconciliation.
    pub fn lookup_tries(&self) -> u32 {
        self.lookup_tries
    }

    /// Make every HTTP request await `gate` first.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Shift the `time_stamp` sent by `offset` (tests; correcting a known clock skew).
    pub fn with_clock_offset(self, offset: TimeDelta) -> Self {
        self.set_clock_offset(offset);
        self
    }

    pub fn set_clock_offset(&self, offset: TimeDelta) {
        self.clock_offset_ms.store(offset.num_milliseconds(), Ordering::Relaxed);
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn access_key_id(&self) -> &str {
        &self.credentials.access_key_id
    }

    /// `RunClusterCustomService`. Ok only when `ret_code` is 0 and a job id came back.
    pub async fn run_cluster_custom_service(
        &self,
        cluster: &ClusterId,
        zone: &Zone,
        role: &str,
        service: &str,
        params: &impl Serialize,
    ) -> Call<RunClusterCustomServiceResponse> {
        match self.run_cluster_custom_service_guarded(cluster, zone, role, service, params, None).await {
            Ok(call) => call,
            Err(withheld) => unsent_call(RUN_CLUSTER_CUSTOM_SERVICE, withheld.0),
        }
    }

    /// [`Client::run_cluster_custom_service`] under a [`SendGuard`]: `Err` when the guard
    /// withheld the request (nothing was sent).
    pub async fn run_cluster_custom_service_guarded(
        &self,
        cluster: &ClusterId,
        zone: &Zone,
        role: &str,
        service: &str,
        params: &impl Serialize,
        guard: Option<&dyn SendGuard>,
    ) -> Result<Call<RunClusterCustomServiceResponse>, Withheld> {
        let service_params = match serde_json::to_string(params) {
            Ok(json) => json,
            Err(e) => {
                let message = format!("service_params cannot be serialized: {e}");
                return Ok(unsent_call(RUN_CLUSTER_CUSTOM_SERVICE, message));
            }
        };
        let params = vec![
            ("cluster".to_owned(), cluster.as_str().to_owned()),
            ("role".to_owned(), role.to_owned()),
            ("service".to_owned(), service.to_owned()),
            ("service_params".to_owned(), service_params),
        ];
        let mut call: Call<RunClusterCustomServiceResponse> =
            self.call_guarded(RUN_CLUSTER_CUSTOM_SERVICE, zone, params, guard).await?;
        if let Ok(resp) = &call.result {
            if resp.job_id.is_empty() {
                // Accepted, but we cannot follow it: the runner must look for the job.
                call.result = Err(ApiError::Permanent(Failure {
                    ret_code: Some(resp.ret_code),
                    http_status: call.record.http_status,
                    message: "the API accepted the request but returned no job_id".to_owned(),
                    maybe_applied: true,
                }));
            } else {
                call.record.job_id = Some(resp.job_id.clone());
            }
        }
        if let Err(e) = &call.result {
            call.record.message = Some(e.message().to_owned());
        }
        Ok(call)
    }

    /// `DescribeJobs` for these ids: at most 100 `jobs.N` per call, `limit` set to their count,
    /// `verbose=0`; one [`Call`] per batch, each passing the gate. No ids, no calls.
    pub async fn describe_jobs(&self, zone: &Zone, ids: &[String]) -> Vec<Call<DescribeJobsResponse>> {
        self.by_ids(DESCRIBE_JOBS, zone, "jobs", ids, MAX_JOBS_PER_CALL).await
    }

    /// `DescribeClusters` for these ids in `zone`: at most 100 `clusters.N` per call, `limit`
    /// set to their count, `verbose=0`; one [`Call`] per batch, each passing the gate. A
    /// cluster missing from an answer is unknown in that zone (the answer carries no zone).
    pub async fn describe_clusters(&self, zone: &Zone, ids: &[String]) -> Vec<Call<DescribeClustersResponse>> {
        self.by_ids(DESCRIBE_CLUSTERS, zone, "clusters", ids, MAX_CLUSTERS_PER_CALL).await
    }

    /// `action` for `ids` as `name.N`, `per_call` ids a call with `limit` set to their count and
    /// `verbose=0`; one [`Call`] per batch, each passing the gate. No ids, no calls.
    async fn by_ids<T: DeserializeOwned>(
        &self,
        action: &str,
        zone: &Zone,
        name: &str,
        ids: &[String],
        per_call: usize,
    ) -> Vec<Call<T>> {
        let mut calls = Vec::with_capacity(ids.len().div_ceil(per_call));
        for batch in ids.chunks(per_call) {
            let mut params = signer::flatten_array(name, batch.iter().map(String::as_str));
            params.push(("limit".to_owned(), batch.len().to_string()));
            params.push(("verbose".to_owned(), "0".to_owned()));
            calls.push(self.call(action, zone, params).await);
        }
        calls
    }

    /// Every `DescribeClusters` page of `query` in `zone` (`limit` 100, paged by `offset` up to
    /// `total_count`), at most `max_pages` calls. Stops after an error (the failed call is the
    /// last element) or a short or empty page.
    pub async fn describe_clusters_pages(
        &self,
        zone: &Zone,
        query: &ClusterQuery,
        max_pages: usize,
    ) -> Vec<Call<DescribeClustersResponse>> {
        let mut base = signer::flatten_array("apps", query.apps.iter().map(String::as_str));
        base.extend(signer::flatten_array("status", query.status.iter().map(String::as_str)));
        base.extend(signer::flatten_array("tags", query.tags.iter().map(String::as_str)));
        base.push(("verbose".to_owned(), "0".to_owned()));
        self.pages(DESCRIBE_CLUSTERS, zone, base, max_pages, |r: &DescribeClustersResponse| {
            (r.cluster_set.len(), r.total_count)
        })
        .await
    }

    /// Every `DescribeTags` page whose tag names contain `search_word` in `zone`, at most
    /// `max_pages` calls (as [`Client::describe_clusters_pages`]).
    pub async fn describe_tags(
        &self,
        zone: &Zone,
        search_word: &str,
        max_pages: usize,
    ) -> Vec<Call<DescribeTagsResponse>> {
        let base = vec![("search_word".to_owned(), search_word.to_owned()), ("verbose".to_owned(), "0".to_owned())];
        self.pages(DESCRIBE_TAGS, zone, base, max_pages, |r: &DescribeTagsResponse| (r.tag_set.len(), r.total_count))
            .await
    }

    /// Page `action` with `limit` 100 by `offset` until `total_count` items were listed, an
    /// empty page, an error or `max_pages`; `count` gives a page's (items, total_count). The
    /// caller checks that the pages add up to the last `total_count`.
    async fn pages<T: DeserializeOwned>(
        &self,
        action: &str,
        zone: &Zone,
        base: Vec<(String, String)>,
        max_pages: usize,
        count: impl Fn(&T) -> (usize, u64),
    ) -> Vec<Call<T>> {
        let limit = MAX_CLUSTERS_PER_CALL;
        let mut offset = 0usize;
        let mut calls = Vec::new();
        while calls.len() < max_pages {
            let mut params = base.clone();
            params.push(("offset".to_owned(), offset.to_string()));
            params.push(("limit".to_owned(), limit.to_string()));
            let call = self.call(action, zone, params).await;
            let next = match &call.result {
                Ok(resp) => {
                    // A page shorter than asked is not the end while `total_count` says more
                    // remain (an API may cap its pages below 100); an empty page is.
                    let (got, total) = count(resp);
                    let seen = offset + got;
                    (got > 0 && (seen as u64) < total).then_some(seen)
                }
                Err(_) => None,
            };
            calls.push(call);
            match next {
                Some(n) => offset = n,
                None => break,
            }
        }
        calls
    }

    /// One page of `DescribeJobs` selected by `filter`.
    pub async fn describe_jobs_filtered(&self, zone: &Zone, filter: &JobFilter) -> Call<DescribeJobsResponse> {
        let mut params = Vec::new();
        if let Some(action) = &filter.job_action {
            params.push(("job_action".to_owned(), action.clone()));
        }
        params.extend(signer::flatten_array("status", filter.status.iter().map(String::as_str)));
        params.push(("offset".to_owned(), filter.offset.to_string()));
        params.push(("limit".to_owned(), clamp_limit(filter.limit).to_string()));
        params.push(("verbose".to_owned(), "0".to_owned()));
        self.call(DESCRIBE_JOBS, zone, params).await
    }

    /// Page through `filter`'s results from `filter.offset`, at most `max_pages` calls. Stops
    /// after an error (the failed call is the last element), a short or empty page, or once
    /// `total_count` is reached.
    pub async fn describe_jobs_pages(
        &self,
        zone: &Zone,
        filter: &JobFilter,
        max_pages: usize,
    ) -> Vec<Call<DescribeJobsResponse>> {
        let limit = clamp_limit(filter.limit);
        let mut page = JobFilter { limit, ..filter.clone() };
        let mut calls = Vec::new();
        while calls.len() < max_pages {
            let call = self.describe_jobs_filtered(zone, &page).await;
            let next = match &call.result {
                Ok(resp) => {
                    let got = resp.job_set.len() as u64;
                    let seen = u64::from(page.offset) + got;
                    (got == u64::from(limit) && seen < resp.total_count).then_some(seen)
                }
                Err(_) => None,
            };
            calls.push(call);
            match next.and_then(|n| u32::try_from(n).ok()) {
                Some(offset) => page.offset = offset,
                None => break,
            }
        }
        calls
    }
}
