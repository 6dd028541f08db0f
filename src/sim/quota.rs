//! The request quota: fixed windows per account (or per access key, as the world's
//! `quota.scope` says), and the penalty block that may follow a refusal (2500).
//!
//! It counts only what it is asked to charge: the engine charges every authenticated request
//! that passed the time check, before its action. It knows nothing of signatures or actions.

use std::collections::HashMap;
use std::time::Instant;

use crate::qingcloud::types::ret;

use super::answer::{refuse, Refusal};
use super::clock::Now;
use super::world::QuotaModel;

/// The text of every 2500, in a window or a penalty block alike (reference §10).
pub const QUOTA_MESSAGE: &str =
    "QuotasExceeded, access too frequently, your requests will be rejected for a period of time";

/// Every count: account (or access key, by the quota's scope) → its count.
#[derive(Default)]
pub struct Quotas(HashMap<String, QuotaCount>);

/// One quota count.
struct QuotaCount {
    window_start: Instant,
    requests: u64,
    /// A penalty block: every request is refused until then.
    blocked_until: Option<Instant>,
}

impl Quotas {
    /// Fixed windows per account (or access key): a window opens with the first request after
    /// the previous one closed, and admits `requests` requests. Refused requests do not count.
    /// With a penalty, the first request over the quota starts a block of `penalty` in which
    /// every request is refused; the next request after it opens a fresh window. Without a
    /// quota every request passes.
    pub fn charge(&mut self, quota: Option<&QuotaModel>, key: &str, now: Now) -> Result<(), Refusal> {
        let Some(q) = quota else { return Ok(()) };
        let entry = self.0.entry(key.to_owned()).or_insert(QuotaCount {
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
}
