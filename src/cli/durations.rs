//! The duration flags: `500ms`, `3s`, `15m`, `2h` or combinations, each within the range that
//! makes sense for its flag (a poll interval, a job timeout, a deadline, the reconcile settle
//! time).
//!
//! Parsing only; what a duration does is the runner's.

use std::time::Duration;

/// `--reconcile-settle`: 0 s to 1 h.
pub(super) fn parse_settle(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: --reconcile-settle is at most 1h"));
    }
    Ok(d)
}

/// `--retry-base`: from 1 ms to 5 min (the back-off's cap).
pub(super) fn parse_retry_base(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(300) {
        return Err(format!("{s:?}: --retry-base is between 1ms and 5m"));
    }
    Ok(d)
}

/// `--lease`: from 2 s to 1 h.
pub(super) fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < crate::runner::shared::MIN_LEASE || d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: --lease is between 2s and 1h"));
    }
    Ok(d)
}

/// A duration written as `500ms`, `3s`, `15m`, `2h` or a combination such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 3s, 15m, 2h)"))
}

fn parse_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "{s:?} is out of range: between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// `--poll-interval`: from 10 ms (the simulator) to 10 min.
pub fn parse_poll_interval(s: &str) -> Result<Duration, String> {
    parse_within(s, Duration::from_millis(10), Duration::from_secs(600))
}

/// `--job-timeout`: from 1 s to 7 days.
pub fn parse_job_timeout(s: &str) -> Result<Duration, String> {
    parse_within(s, Duration::from_secs(1), Duration::from_secs(7 * 86_400))
}

/// `--deadline`: from 1 s to 366 days, so that adding it to any instant of the run stays
/// representable.
pub fn parse_deadline(s: &str) -> Result<Duration, String> {
    parse_within(s, Duration::from_secs(1), Duration::from_secs(366 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_poll_interval("50ms"), Ok(Duration::from_millis(50)));
        assert!(parse_poll_interval("1ms").unwrap_err().contains("out of range"));
        assert!(parse_job_timeout("30d").is_err());
        assert_eq!(parse_job_timeout("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_deadline("584542046090y").unwrap_err().contains("out of range"));
        assert_eq!(parse_deadline("2h"), Ok(Duration::from_secs(7200)));
    }
}
