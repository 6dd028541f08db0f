//! The one text form of an instant in every report: RFC 3339, UTC, fractional seconds only when
//! present.
//!
//! It formats; it never reads the clock.

use chrono::{DateTime, SecondsFormat, Utc};

/// An instant as the report writes it (RFC 3339, UTC, fractional seconds only when present).
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// [`time`] for an optional instant, `null` when absent (serde's `serialize_with`).
pub(crate) fn ser_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&time(*t)),
        None => s.serialize_none(),
    }
}

/// [`time`] for serde's `serialize_with`.
pub(crate) fn ser_instant<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time(*t))
}

/// An instant the chain recorded as RFC 3339 text; `None` when it is not one.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}
