//! The API quota every host shares: the GCRA state of a quota scope (one endpoint and access
//! key) in one row, updated by ONE statement on the database's clock, so that N hosts together
//! keep one rate, and a pause after a 2500 in the same row, so that a 2500 seen by any host
//! slows all of them.
//!
//! A call takes a *slot*: the instant it may go, reserved by moving the scope's theoretical
//! arrival time (`tat`) one interval on. With interval `T` and burst `b` (tolerance
//! `τ = (b - 1)·T`) a call arriving at `now` gets
//!
//! ```text
//! slot = max(now, tat - τ, paused_until)      tat' = max(tat, now, paused_until) + T
//! ```
//!
//! which the statement computes from the row it has locked, so concurrent takers are served one
//! after another. Any window of length `W` then holds at most `W/T + b` slots, whatever the
//! hosts' clocks say. The row stores `tat'`; `slot` is `max(now, tat' - T - τ, paused_until)`.
//!
//! This module keeps the shared numbers only ([`PgQuota`] hands them to the limiter as its
//! `SharedQuota`); the AIMD arithmetic and the sleeping stay the limiter's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{micros, PgStore};
use crate::limiter::{QuotaFuture, SharedQuota, Turn};
use crate::store::StoreError;

/// A call's turn in its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// When the call may go (the database's clock).
    pub at: DateTime<Utc>,
    /// How long the caller must wait from now for it (zero when it is due).
    pub wait: Duration,
    /// The end of the scope's pause after a 2500, if one is in force.
    pub paused_until: Option<DateTime<Utc>>,
    /// The database's clock when the slot was taken.
    pub now: DateTime<Utc>,
}

impl PgStore {
    /// Take the next slot of `scope` at one call per `interval` with `burst` calls at once.
    /// Every host must pass the same `interval` and `burst` for a scope.
    ///
    /// The statement reads the database's clock with `clock_timestamp()`, i.e. once it holds the
    /// row, not when it started (`now()`): a caller that waited for the row behind others must
    /// not be served from a time before theirs. The slot is read back from the stored `tat'`
    /// (`least(clock, tat' - T)` is the reading the update used when the scope was idle), so one
    /// statement's two clock readings cannot move a slot.
    pub async fn take_slot(&self, scope: &str, interval: Duration, burst: u32) -> Result<Slot, StoreError> {
        let t = micros(interval);
        let t_and_tolerance = t.saturating_mul(i64::from(burst.max(1)));
        let row = sqlx::query(
            "INSERT INTO quota AS q (scope, tat) VALUES ($1, clock_timestamp() + $2 * interval '1 microsecond') \
             ON CONFLICT (scope) DO UPDATE \
                SET tat = greatest(q.tat, clock_timestamp(), q.paused_until) + $2 * interval '1 microsecond' \
             RETURNING greatest(q.tat - $3 * interval '1 microsecond', \
                    least(clock_timestamp(), q.tat - $2 * interval '1 microsecond'), q.paused_until) AS slot, \
                clock_timestamp() AS db_now, q.paused_until",
        )
        .bind(scope)
        .bind(t)
        .bind(t_and_tolerance)
        .fetch_one(&self.pool)
        .await?;
        let at: DateTime<Utc> = row.try_get("slot")?;
        let now: DateTime<Utc> = row.try_get("db_now")?;
        let paused_until: Option<DateTime<Utc>> = row.try_get("paused_until")?;
        Ok(Slot {
            at,
            wait: (at - now).to_std().unwrap_or_default(),
            paused_until: paused_until.filter(|u| *u > now),
            now,
        })
    }

    /// Pause every call of `scope`, on every host, for `pause` from now on the database's clock
    /// (a 2500 was answered). A longer pause already in force is kept. The scope's next slots
    /// then start at the pause's end one `interval` apart: the burst allowance (`burst` calls at
    /// once) is not spent at that instant, into a quota just refused. Returns the end of the
    /// pause in force. The pause's end and the `tat` after it come from one reading of the
    /// clock, so the first slot after the pause is its end exactly.
    pub async fn pause(
        &self,
        scope: &str,
        pause: Duration,
        interval: Duration,
        burst: u32,
    ) -> Result<DateTime<Utc>, StoreError> {
        let tolerance = micros(interval).saturating_mul(i64::from(burst.max(1)) - 1);
        Ok(sqlx::query_scalar(
            "WITH c AS (SELECT clock_timestamp() + $2 * interval '1 microsecond' AS until) \
             INSERT INTO quota AS q (scope, paused_until, tat) \
                SELECT $1, c.until, c.until + $3 * interval '1 microsecond' FROM c \
             ON CONFLICT (scope) DO UPDATE \
                SET paused_until = greatest(q.paused_until, EXCLUDED.paused_until), \
                    tat = greatest(q.tat, greatest(q.paused_until, EXCLUDED.paused_until) + $3 * interval '1 microsecond') \
             RETURNING q.paused_until",
        )
        .bind(scope)
        .bind(micros(pause))
        .bind(tolerance)
        .fetch_one(&self.pool)
        .await?)
    }

    /// How long `scope` stays paused from now (the database's clock), if it is.
    pub async fn paused_for(&self, scope: &str) -> Result<Option<Duration>, StoreError> {
        let row: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT paused_until, clock_timestamp() FROM quota WHERE scope = $1 AND paused_until > clock_timestamp()",
        )
        .bind(scope)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(until, now)| (until - now).to_std().ok()))
    }
}

/// One quota scope of a PostgreSQL database as the limiter's [`SharedQuota`]: the limiter of
/// every host running against the same endpoint and access key takes its slots here.
#[derive(Debug, Clone)]
pub struct PgQuota {
    store: PgStore,
    scope: String,
}

impl PgQuota {
    /// `scope` names the quota: the endpoint's identity and the access key id, as every host
    /// of the account writes them (`store::endpoint_identity`).
    pub fn new(store: PgStore, scope: impl Into<String>) -> Self {
        Self { store, scope: scope.into() }
    }
}

impl SharedQuota for PgQuota {
    fn take(&self, interval: Duration, burst: u32) -> QuotaFuture<'_, Turn> {
        Box::pin(async move {
            let slot = self.store.take_slot(&self.scope, interval, burst).await.map_err(|e| e.to_string())?;
            let paused_for = slot.paused_until.and_then(|until| (until - slot.now).to_std().ok());
            Ok(Turn { wait: slot.wait, paused_for })
        })
    }

    fn pause(&self, pause: Duration, interval: Duration, burst: u32) -> QuotaFuture<'_, ()> {
        Box::pin(async move {
            PgStore::pause(&self.store, &self.scope, pause, interval, burst).await.map_err(|e| e.to_string())?;
            Ok(())
        })
    }

    fn paused_for(&self) -> QuotaFuture<'_, Option<Duration>> {
        Box::pin(async move { self.store.paused_for(&self.scope).await.map_err(|e| e.to_string()) })
    }
}
