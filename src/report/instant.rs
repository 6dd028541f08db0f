//! The one text form of an instant in every report: RFC 3339, UTC, fractional seconds only when
//! present.
//!
//! It formats; it never reads the clock.

use chrono::{DateTime, SecondsFormat, Utc};

/// An instant as the report writes it (RFC 3339, UTC, fractional seconds only when present).
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn ser_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&time(*t)),
        None => s.serialize_none(),
    }
}
