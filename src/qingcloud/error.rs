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
///   other non-200 status (including redirects, which are not followed) is `Permanent`.
/// - An HTTP 200 whose complete body is not JSON, has no `ret_code`, does not match the action's
///   response shape, or exceeds the body limit is `Permanent`: something other than the API is
///   answering and repeating the request will not change that. Such a failure still reports
///   `may_have_taken_effect() == true`, because the API may have acted behind it.
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
            | ApiError::Permanent(f) => f,
        }
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
    /// `auth_failed`, `permanent`.
    pub fn class(&self) -> &'static str {
        match self {
            ApiError::Throttled(_) => "throttled",
            ApiError::Transient(_) => "transient",
            ApiError::Expired(_) => "expired",
            ApiError::AuthFailed(_) => "auth_failed",
            ApiError::Permanent(_) => "permanent",
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
}
