//! How one API request failed, in the classes the runner acts on (reference §5, SPEC §4).
//!
//! This module only classifies; it never retries and never decides a task's fate. Messages come
//! from the API, from the HTTP status or from the transport error chain with the URL removed, so
//! they carry no credentials.

use std::fmt;

use crate::qingcloud::types::ret;

/// The facts of one failure, shared by every class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The JSON `ret_code`, when a JSON answer with one came back.
    pub ret_code: Option<i64>,
    /// The HTTP status, when a response head came back.
    pub http_status: Option<u16>,
    pub message: String,
    /// The request may have reached the API and taken effect although we saw no answer to it
    /// (timeouts and resets after sending, 5xx without a `ret_code`, bodies we could not read).
    pub maybe_applied: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ret_code, self.http_status) {
            (Some(code), _) => write!(f, "ret_code {code}: ")?,
            (None, Some(status)) => write!(f, "HTTP {status}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// A failed API request, by what the caller should do about it.
///
/// Decisions beyond the ret_code table:
/// - HTTP 429 is `Throttled`; HTTP 408 and 5xx without a JSON `ret_code` are `Transient`; any
///   other non-200 status without one (a redirect, which is not followed, a 404 for a wrong
///   path, a proxy's 403) is `NotApi` and did not take effect: the API answers its errors as
///   JSON with a `ret_code`.
/// - An HTTP 200 whose complete body is not JSON (an HTML page, anything else), or is JSON
///   without an integer `ret_code`, is `NotApi`: something other than the QingCloud API is
///   answering (a captive proxy, a wrong URL behind a load balancer) and repeating the request
///   will not change that. [`classify_body`](crate::qingcloud::client::classify_body) cannot
///   know the action, so it reports `may_have_taken_effect() == true`; the client lowers that
///   to false for the read-only `Describe*` actions. A `RunClusterCustomService` answered so
///   keeps `true`: the request reached *something*, which may have passed it on to the API.
/// - An HTTP 200 with a `ret_code` 0 that does not match the action's response shape, or a
///   body over the size limit, is `Permanent` and may have taken effect.
/// - A body cut short by the transport is `Transient` (and may have taken effect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// ret_code 2500 (request quota exceeded) or HTTP 429: slow down; costs no attempt.
    #[error("throttled by the API: {0}")]
    Throttled(Failure),
    /// 5000, 5100, 5300, HTTP 5xx, connection errors, timeouts, resets, bodies cut short.
    #[error("transient API failure: {0}")]
    Transient(Failure),
    /// 1300: the `time_stamp` was too old; re-send at once with a fresh one and check the clock.
    #[error("request expired (is the clock right?): {0}")]
    Expired(Failure),
    /// 1200: unknown access key or signature mismatch; stops the run.
    #[error("authentication failed: {0}")]
    AuthFailed(Failure),
    /// 1100, 1101, 1400, 2100, any other non-zero ret_code, unusable responses.
    #[error("API refused the request: {0}")]
    Permanent(Failure),
    /// HTTP 200 with something that is not a QingCloud API answer (HTML, other non-JSON, JSON
    /// without an integer `ret_code`): the endpoint is not the API.
    #[error("this is not the QingCloud API (check the endpoint URL and any proxy in between): {0}")]
    NotApi(Failure),
}

impl ApiError {
    /// Classify a non-zero `ret_code` that came back in a JSON body.
    pub fn from_ret_code(ret_code: i64, message: impl Into<String>, http_status: Option<u16>) -> Self {
        let failure = Failure { ret_code: Some(ret_code), http_status, message: message.into(), maybe_applied: false };
        match ret_code {
            ret::QUOTA_EXCEEDED => ApiError::Throttled(failure),
            ret::INTERNAL | ret::BUSY | ret::UPDATING => ApiError::Transient(failure),
            ret::EXPIRED => ApiError::Expired(failure),
            ret::AUTH_FAILED => ApiError::AuthFailed(failure),
            _ => ApiError::Permanent(failure),
        }
    }

    pub fn failure(&self) -> &Failure {
        match self {
            ApiError::Throttled(f)
            | ApiError::Transient(f)
            | ApiError::Expired(f)
            | ApiError::AuthFailed(f)
            | ApiError::Permanent(f)
            | ApiError::NotApi(f) => f,
        }
    }

    fn failure_mut(&mut self) -> &mut Failure {
        match self {
            ApiError::Throttled(f)
            | ApiError::Transient(f)
            | ApiError::Expired(f)
            | ApiError::AuthFailed(f)
            | ApiError::Permanent(f)
            | ApiError::NotApi(f) => f,
        }
    }

    /// The same error with `may_have_taken_effect()` set to `maybe_applied`.
    pub fn with_maybe_applied(mut self, maybe_applied: bool) -> Self {
        self.failure_mut().maybe_applied = maybe_applied;
        self
    }

    /// Is the endpoint something other than the QingCloud API?
    pub fn is_not_api(&self) -> bool {
        matches!(self, ApiError::NotApi(_))
    }

    /// For a 2100 (resource not found) whose message names a job, like
    /// `ResourceNotFound, job [j-abc123] not found`: that job id. The first bracketed word
    /// starting with `j-` counts, so the wording around it may differ.
    pub fn unknown_job_id(&self) -> Option<&str> {
        if self.ret_code() != Some(ret::NOT_FOUND) {
            return None;
        }
        let message = self.message();
        let mut rest = message;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            let close = after.find(']')?;
            let word = &after[..close];
            if word.len() > 2
                && word.starts_with("j-")
                && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Some(word);
            }
            rest = &after[close + 1..];
        }
        None
    }

    pub fn ret_code(&self) -> Option<i64> {
        self.failure().ret_code
    }

    pub fn http_status(&self) -> Option<u16> {
        self.failure().http_status
    }

    pub fn message(&self) -> &str {
        &self.failure().message
    }

    /// True when the request may have taken effect without us seeing the answer: a timeout or
    /// reset after the request was sent, a 5xx without a `ret_code`, an unreadable answer.
    /// False when connecting failed (nothing was sent) or a JSON `ret_code` came back (the API
    /// said what it did). The runner reconciles before re-sending when this is true.
    pub fn may_have_taken_effect(&self) -> bool {
        self.failure().maybe_applied
    }

    /// Short class name for records and logs: `throttled`, `transient`, `expired`,
    /// `auth_failed`, `permanent`, `not_api`.
    pub fn class(&self) -> &'static str {
        match self {
            ApiError::Throttled(_) => "throttled",
            ApiError::Transient(_) => "transient",
            ApiError::Expired(_) => "expired",
            ApiError::AuthFailed(_) => "auth_failed",
            ApiError::Permanent(_) => "permanent",
            ApiError::NotApi(_) => "not_api",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ret_codes_map_to_classes() {
        let class = |code| ApiError::from_ret_code(code, "m", Some(200)).class();
        assert_eq!(class(2500), "throttled");
        for code in [5000, 5100, 5300] {
            assert_eq!(class(code), "transient", "{code}");
        }
        assert_eq!(class(1300), "expired");
        assert_eq!(class(1200), "auth_failed");
        for code in [1100, 1101, 1400, 2100, 2400, 5200, 9999] {
            assert_eq!(class(code), "permanent", "{code}");
        }
        let e = ApiError::from_ret_code(1400, "PermissionDenied, busy", Some(200));
        assert!(!e.may_have_taken_effect());
        assert_eq!(e.to_string(), "API refused the request: ret_code 1400: PermissionDenied, busy");
    }

    #[test]
    fn the_unknown_job_id_is_read_from_a_2100() {
        let e = ApiError::from_ret_code(2100, "ResourceNotFound, job [j-abc123xyz90] not found", Some(200));
        assert_eq!(e.unknown_job_id(), Some("j-abc123xyz90"));
        let e = ApiError::from_ret_code(2100, "ResourceNotFound, resource [x] [j-k1] does not exist", Some(200));
        assert_eq!(e.unknown_job_id(), Some("j-k1"));
        let cluster = ApiError::from_ret_code(2100, "ResourceNotFound, cluster [cl-a] not found in zone [sh1a]", None);
        assert_eq!(cluster.unknown_job_id(), None);
        let other_code = ApiError::from_ret_code(1100, "ParameterError, job [j-abc] is odd", None);
        assert_eq!(other_code.unknown_job_id(), None);
        let odd = ApiError::from_ret_code(2100, "ResourceNotFound, job [j-a b] not found [", None);
        assert_eq!(odd.unknown_job_id(), None);
    }
}
