//! The HTTP client of the QingCloud API: builds, signs and sends one request per call and says
//! exactly what happened ([`Call`]: the record to store and the typed result).
//!
//! It owns one `reqwest::Client` (rustls, timeouts, user agent), the optional rate [`Gate`]
//! every request passes first, a fresh `time_stamp` per request, GET or POST by length, bounded
//! body reading and the classification of failures into [`ApiError`]. It must not retry, sleep
//! for back-off or decide anything about tasks: that is the runner's job.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::domain::{ClusterId, Zone};
use crate::qingcloud::config::{self, Credentials, Settings};
pub use crate::qingcloud::error::{ApiError, Failure};
use crate::qingcloud::signer::{self, Method, SignatureMethod};
use crate::qingcloud::types::{
    ret, DescribeClustersResponse, DescribeJobsResponse, DescribeTagsResponse, Envelope,
    RunClusterCustomServiceResponse, DESCRIBE_CLUSTERS, DESCRIBE_JOBS, DESCRIBE_TAGS, RUN_CLUSTER_CUSTOM_SERVICE,
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

/// A rate gate every HTTP request awaits before it is sent (the runner's limiter implements it).
pub trait Gate: Send + Sync {
    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The last word on a request before it is signed: the runner's check that the request may
/// still leave (SPEC §8, "the last check is at the socket"). The client races the rate gate
/// against [`SendGuard::cancelled`] and calls [`SendGuard::check`] once the gate let the request
/// through; either refusal means nothing is signed or sent.
pub trait SendGuard: Send + Sync {
    /// Resolves when the request must no longer be sent (the run is stopping).
    fn cancelled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Right before signing: `Err(why)` withholds the request.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// A request a [`SendGuard`] withheld: nothing was signed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request withheld before it was sent: {0}")]
pub struct Withheld(pub String);

/// One API call: what was sent and what came back, and the typed result.
#[derive(Debug, Clone)]
pub struct Call<T> {
    pub record: CallRecord,
    pub result: Result<T, ApiError>,
}

/// What the runner stores about every call (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub action: String,
    /// Every parameter sent except `signature`, in canonical (sorted) order.
    pub params: Vec<(String, String)>,
    pub http_status: Option<u16>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
    pub job_id: Option<String>,
    /// When the request was started, after the gate let it through.
    pub started_at: DateTime<Utc>,
    pub latency: Duration,
    /// The server's clock from the answer's HTTP `Date` header (one-second resolution), when
    /// a head with a readable one came back.
    pub server_date: Option<DateTime<Utc>>,
}

impl CallRecord {
    /// How far the server's clock is ahead of ours (negative: behind), from its `Date` header
    /// against the middle of the exchange. The header has whole seconds, so this is within
    /// about one second plus half the latency of the truth. `None` without a `Date` header.
    pub fn clock_skew(&self) -> Option<TimeDelta> {
        let date = self.server_date?;
        let half = TimeDelta::from_std(self.latency / 2).unwrap_or_default();
        // The header truncates to the second: its true instant is on average half a second later.
        Some(date + TimeDelta::milliseconds(500) - (self.started_at + half))
    }
}

/// One page of `DescribeJobs` by filter rather than by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub job_action: Option<String>,
    /// `status.N` values, e.g. `pending`, `working`.
    pub status: Vec<String>,
    pub offset: u32,
    /// Page size, clamped to 1..=100.
    pub limit: u32,
}

/// What a `DescribeClusters` listing selects: `apps.N`, `status.N` and `tags.N` (tag ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterQuery {
    pub apps: Vec<String>,
    pub status: Vec<String>,
    pub tags: Vec<String>,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self { job_action: None, status: Vec::new(), offset: 0, limit: MAX_JOBS_PER_CALL as u32 }
    }
}

/// The HTTP client could not be built (TLS initialisation).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[source] reqwest::Error);

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
        let mut calls = Vec::with_capacity(ids.len().div_ceil(MAX_JOBS_PER_CALL));
        for batch in ids.chunks(MAX_JOBS_PER_CALL) {
            let mut params = signer::flatten_array("jobs", batch.iter().map(String::as_str));
            params.push(("limit".to_owned(), batch.len().to_string()));
            params.push(("verbose".to_owned(), "0".to_owned()));
            calls.push(self.call(DESCRIBE_JOBS, zone, params).await);
        }
        calls
    }

    /// `DescribeClusters` for these ids in `zone`: at most 100 `clusters.N` per call, `limit`
    /// set to their count, `verbose=0`; one [`Call`] per batch, each passing the gate. A
    /// cluster missing from an answer is unknown in that zone (the answer carries no zone).
    pub async fn describe_clusters(&self, zone: &Zone, ids: &[String]) -> Vec<Call<DescribeClustersResponse>> {
        let mut calls = Vec::with_capacity(ids.len().div_ceil(MAX_CLUSTERS_PER_CALL));
        for batch in ids.chunks(MAX_CLUSTERS_PER_CALL) {
            let mut params = signer::flatten_array("clusters", batch.iter().map(String::as_str));
            params.push(("limit".to_owned(), batch.len().to_string()));
            params.push(("verbose".to_owned(), "0".to_owned()));
            calls.push(self.call(DESCRIBE_CLUSTERS, zone, params).await);
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

    /// Send any action: common parameters added, signed, gated, classified. `T` is the
    /// response shape of a `ret_code` 0 answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        action: &str,
        zone: &Zone,
        action_params: Vec<(String, String)>,
    ) -> Call<T> {
        match self.call_guarded(action, zone, action_params, None).await {
            Ok(call) => call,
            Err(withheld) => unsent_call(action, withheld.0),
        }
    }

    /// [`Client::call`] under an optional [`SendGuard`].
    async fn call_guarded<T: DeserializeOwned>(
        &self,
        action: &str,
        zone: &Zone,
        action_params: Vec<(String, String)>,
        guard: Option<&dyn SendGuard>,
    ) -> Result<Call<T>, Withheld> {
        match (&self.gate, guard) {
            (Some(gate), Some(guard)) => {
                tokio::select! {
                    biased;
                    () = guard.cancelled() => return Err(Withheld("the run is stopping".to_owned())),
                    () = gate.ready() => {}
                }
            }
            (Some(gate), None) => gate.ready().await,
            (None, Some(guard)) => {
                if let Some(()) = futures_now(guard.cancelled()) {
                    return Err(Withheld("the run is stopping".to_owned()));
                }
            }
            (None, None) => {}
        }
        if let Some(guard) = guard {
            guard.check().await.map_err(Withheld)?;
        }
        let started_at = Utc::now();
        let started = Instant::now();
        let time_stamp = started_at + TimeDelta::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed));

        let mut params = signer::common_params(
            action,
            zone.as_str(),
            &self.credentials.access_key_id,
            time_stamp,
            SignatureMethod::HmacSha256,
        );
        params.extend(action_params);
        params.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        let path = self.endpoint.path();
        let secret = config::secret_bytes(&self.credentials);
        let mut method = Method::Get;
        let mut signed = signer::sign(method, path, &params, secret, SignatureMethod::HmacSha256);
        if signed.query_string().len() > POST_THRESHOLD_BYTES {
            method = Method::Post;
            signed = signer::sign(method, path, &params, secret, SignatureMethod::HmacSha256);
        }
        tracing::trace!(action, method = method.as_str(), path, query = %signed.canonical_query, "sending");

        let exchange = self.exchange(method, signed.query_string()).await;
        let latency = started.elapsed();
        let server_date = exchange.date;
        let (http_status, result) = match exchange.outcome {
            Ok((status, body)) => (Some(status), classify_body::<T>(status, &body)),
            Err((status, e)) => (status, Err(e)),
        };
        // A read cannot have changed anything, whatever answered it.
        let result = match result {
            Err(e @ ApiError::NotApi(_)) if is_read_only(action) => Err(e.with_maybe_applied(false)),
            other => other,
        };
        let (ret_code, message) = match &result {
            Ok(_) => (Some(ret::OK), None),
            Err(e) => (e.ret_code(), Some(e.message().to_owned())),
        };
        match &result {
            Ok(_) => tracing::debug!(
                action,
                method = method.as_str(),
                ?http_status,
                latency_ms = latency.as_millis() as u64,
                "ok"
            ),
            Err(e) => tracing::debug!(
                action,
                method = method.as_str(),
                ?http_status,
                ?ret_code,
                class = e.class(),
                maybe_applied = e.may_have_taken_effect(),
                latency_ms = latency.as_millis() as u64,
                error = %e,
                "failed"
            ),
        }
        let record = CallRecord {
            action: action.to_owned(),
            params,
            http_status,
            ret_code,
            message,
            job_id: None,
            started_at,
            latency,
            server_date,
        };
        Ok(Call { record, result })
    }

    /// Send the request and read the body (bounded), keeping the server's `Date` header.
    async fn exchange(&self, method: Method, query: String) -> Exchange {
        let mut date = None;
        let outcome = self.exchange_inner(method, query, &mut date).await;
        Exchange { date, outcome }
    }

    /// Returns the status and the body, or the status (if a head came back) and the failure.
    async fn exchange_inner(
        &self,
        method: Method,
        query: String,
        date: &mut Option<DateTime<Utc>>,
    ) -> Result<(u16, Vec<u8>), (Option<u16>, ApiError)> {
        let request = match method {
            Method::Get => {
                let mut url = self.endpoint.clone();
                url.set_query(Some(&query));
                self.http.get(url)
            }
            Method::Post => self
                .http
                .post(self.endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(query),
        };
        let mut response = request.send().await.map_err(|e| (None, transport_error(e)))?;
        let status = response.status().as_u16();
        *date = response.headers().get(reqwest::header::DATE).and_then(|v| parse_http_date(v.to_str().ok()?));

        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(no Location)")
                .to_owned();
            let message = format!("the endpoint redirects to {location}; set the endpoint to the final URL");
            return Err((Some(status), permanent(Some(status), message, false)));
        }

        if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err((Some(status), too_long(status)));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err((Some(status), too_long(status)));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    let e = e.without_url();
                    let what =
                        if e.is_timeout() { "timed out reading the response" } else { "response body cut short" };
                    let failure = Failure {
                        ret_code: None,
                        http_status: Some(status),
                        message: format!("{what}: {}", chain(&e)),
                        maybe_applied: true,
                    };
                    return Err((Some(status), ApiError::Transient(failure)));
                }
            }
        }
        Ok((status, body))
    }
}

/// What [`Client::exchange`] saw.
struct Exchange {
    date: Option<DateTime<Utc>>,
    outcome: Result<(u16, Vec<u8>), (Option<u16>, ApiError)>,
}

/// Actions that only read; their answers cannot mean something was changed.
fn is_read_only(action: &str) -> bool {
    action.starts_with("Describe")
}

/// An HTTP date (`Tue, 01 Dec 2026 20:52:56 GMT`, RFC 9110 IMF-fixdate, which RFC 2822 parsing
/// accepts).
pub fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(value.trim()).ok().map(|d| d.with_timezone(&Utc))
}

fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_JOBS_PER_CALL as u32)
}

fn permanent(http_status: Option<u16>, message: String, maybe_applied: bool) -> ApiError {
    ApiError::Permanent(Failure { ret_code: None, http_status, message, maybe_applied })
}

fn too_long(status: u16) -> ApiError {
    permanent(Some(status), format!("response body longer than {MAX_BODY_BYTES} bytes; not read"), true)
}

/// Classify a failure before any response head came back.
fn transport_error(e: reqwest::Error) -> ApiError {
    let e = e.without_url();
    let detail = chain(&e);
    let failure =
        |message: String, maybe_applied| Failure { ret_code: None, http_status: None, message, maybe_applied };
    if e.is_connect() {
        // Nothing was sent.
        ApiError::Transient(failure(format!("cannot connect: {detail}"), false))
    } else if e.is_builder() {
        ApiError::Permanent(failure(format!("cannot build the request: {detail}"), false))
    } else if e.is_timeout() {
        ApiError::Transient(failure(format!("timed out waiting for the answer: {detail}"), true))
    } else {
        // Reset, closed or broken after the request was (at least partly) written.
        ApiError::Transient(failure(format!("connection lost before the answer: {detail}"), true))
    }
}

/// The call of a request that was never sent: its parameters could not be serialized, or a
/// guard withheld it where no guard can be.
fn unsent_call<T>(action: &str, message: String) -> Call<T> {
    let error = ApiError::Permanent(Failure { ret_code: None, http_status: None, message, maybe_applied: false });
    let record = CallRecord {
        action: action.to_owned(),
        params: Vec::new(),
        http_status: None,
        ret_code: None,
        message: Some(error.message().to_owned()),
        job_id: None,
        started_at: Utc::now(),
        latency: Duration::ZERO,
        server_date: None,
    };
    Call { record, result: Err(error) }
}

/// Poll a future once: its output if it is ready now.
fn futures_now<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Turn a complete response (HTTP status and the whole body, already cut at
/// [`MAX_BODY_BYTES`]) into the typed result. Pure and total: any status and any bytes give
/// either a `T` (HTTP 200, `ret_code` 0, the shape of `T`) or a classified [`ApiError`] that
/// carries `status`. The client calls it for every answer that came back whole.
pub fn classify_body<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ApiError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let envelope = json.as_ref().and_then(envelope);

    if status != 200 {
        if let Some(env) = envelope.filter(|e| e.ret_code != ret::OK) {
            return Err(ApiError::from_ret_code(env.ret_code, env.message, Some(status)));
        }
        let message = snippet(body).unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("").to_owned()
        });
        let failure = |maybe_applied| Failure { ret_code: None, http_status: Some(status), message, maybe_applied };
        // The API answers its errors as JSON with a ret_code; any other status without one
        // (a redirect, 404 for a wrong path, 403 from a proxy) is something else answering,
        // and nothing reached the API.
        return Err(match status {
            429 => ApiError::Throttled(failure(false)),
            408 | 500..=599 => ApiError::Transient(failure(true)),
            _ => ApiError::NotApi(failure(false)),
        });
    }

    let not_api =
        |message| ApiError::NotApi(Failure { ret_code: None, http_status: Some(status), message, maybe_applied: true });
    let Some(json) = json else {
        let shown = snippet(body).map(|s| format!(": {s}")).unwrap_or_default();
        return Err(not_api(format!("the body is not JSON{shown}")));
    };
    let Some(env) = envelope else {
        return Err(not_api("the JSON body has no ret_code".to_owned()));
    };
    if env.ret_code != ret::OK {
        return Err(ApiError::from_ret_code(env.ret_code, env.message, Some(status)));
    }
    serde_json::from_value::<T>(json).map_err(|e| {
        let mut err = permanent(Some(status), format!("unexpected response shape: {e}"), true);
        if let ApiError::Permanent(f) = &mut err {
            f.ret_code = Some(ret::OK);
        }
        err
    })
}

/// The `ret_code`/`message` part of any JSON object with an integer `ret_code`. Read field by
/// field rather than as a whole, so that an odd `message` (null, a number) or `action` cannot
/// hide the `ret_code` that decides the class.
fn envelope(v: &serde_json::Value) -> Option<Envelope> {
    use serde_json::Value;
    let obj = v.as_object()?;
    let ret_code = obj.get("ret_code")?.as_i64()?;
    let text = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Some(Envelope { action: text("action"), ret_code, message: text("message") })
}

/// The start of a body as printable text, for an error message.
fn snippet(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// An error and its sources on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
