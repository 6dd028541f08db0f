//! One request on the wire: common parameters, signing, the gate and the last check, GET or
//! POST by length, bounded body reading, the server's `Date`, and transport failures turned into
//! [`ApiError`]s. It must not retry or sleep: a call is sent once, and what happened is said.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;

use super::answer::{chain, classify_body, permanent};
use super::call::{Call, CallRecord, SendGuard, Withheld};
use super::{Client, MAX_BODY_BYTES, MAX_JOBS_PER_CALL, POST_THRESHOLD_BYTES};
use crate::domain::Zone;
use crate::qingcloud::config;
use crate::qingcloud::error::{ApiError, Failure};
use crate::qingcloud::signer::{self, Method, SignatureMethod};
use crate::qingcloud::types::ret;

impl Client {
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
    pub(super) async fn call_guarded<T: DeserializeOwned>(
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

pub(super) fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_JOBS_PER_CALL as u32)
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
pub(super) fn unsent_call<T>(action: &str, message: String) -> Call<T> {
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
