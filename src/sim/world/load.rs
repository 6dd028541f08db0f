//! Reading a world file and checking it: every value is checked once (ranges, durations up to
//! [`MAX_WORLD_DURATION`], cluster ids, zones, `user@host` accounts, duplicates) and turned into
//! the [`Model`] the engine runs on, or refused with a message naming the key.
//!
//! It reads and checks; it serves nothing and keeps no state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::file::World;
use super::model::{Account, ClusterModel, Model, QuotaModel};

/// Longest job phase (`pending_ms`, `working_ms`), added latency (`delay_ms`) and quota window
/// (`window_s`) a world may ask for: a day is far beyond any rehearsal, and keeps the clock
/// arithmetic of jobs and windows far from overflowing.
pub const MAX_WORLD_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Most `api.unrelated_jobs_per_zone`.
pub const MAX_UNRELATED_JOBS: u32 = 1000;

/// Why a world file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("{path}: cannot read the world file: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl World {
    /// Read and check a world file.
    pub fn load(path: &Path) -> Result<World, WorldError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| WorldError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, path)
    }

    /// Parse and check world YAML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<World, WorldError> {
        let path = origin.display().to_string();
        let world: World =
            serde_yaml::from_str(text).map_err(|source| WorldError::Parse { path: path.clone(), source })?;
        world.check().map_err(|message| WorldError::Invalid { path, message })?;
        Ok(world)
    }

    /// Check every value once and build the model the engine runs on.
    pub(crate) fn check(&self) -> Result<Model, String> {
        let mut credentials = HashMap::new();
        let mut accounts = HashMap::new();
        if self.credentials.is_empty() {
            return Err("credentials: at least one access key is needed".to_owned());
        }
        for (i, c) in self.credentials.iter().enumerate() {
            if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
                return Err(format!("credentials[{i}]: access_key_id and secret_access_key must not be empty"));
            }
            if credentials.insert(c.access_key_id.clone(), c.secret_access_key.clone()).is_some() {
                return Err(format!("credentials[{i}]: access key {:?} is listed twice", c.access_key_id));
            }
            let account = match &c.account {
                Some(a) if a.is_empty() => return Err(format!("credentials[{i}].account must not be empty")),
                Some(a) => Account::Named(a.clone()),
                None => Account::OwnKey(c.access_key_id.clone()),
            };
            accounts.insert(c.access_key_id.clone(), account);
        }
        let clusters = match &self.clusters {
            None => None,
            Some(list) => {
                let mut map = BTreeMap::new();
                for (i, c) in list.iter().enumerate() {
                    check_cluster_id(&c.id).map_err(|m| format!("clusters[{i}].id: {m}"))?;
                    check_zone(&c.zone).map_err(|m| format!("clusters[{i}].zone: {m}"))?;
                    let mut users = BTreeSet::new();
                    for (j, u) in c.users.iter().enumerate() {
                        let (user, host) = parse_account(u).map_err(|m| format!("clusters[{i}].users[{j}]: {m}"))?;
                        if !users.insert((user.to_owned(), host.to_owned())) {
                            return Err(format!("clusters[{i}].users[{j}]: account {u:?} is listed twice"));
                        }
                    }
                    if c.status.is_empty() || c.app_id.is_empty() {
                        return Err(format!("clusters[{i}]: status and app_id must not be empty"));
                    }
                    let spec = ClusterModel {
                        zone: c.zone.clone(),
                        users,
                        status: c.status.clone(),
                        transition_status: c.transition_status.clone(),
                        app_id: c.app_id.clone(),
                        name: c.name.clone(),
                        tags: c.tags.clone(),
                    };
                    if map.insert(c.id.clone(), spec).is_some() {
                        return Err(format!("clusters[{i}].id: cluster {:?} is listed twice", c.id));
                    }
                }
                Some(map)
            }
        };
        let pending = check_millis("jobs.pending_ms", self.jobs.pending_ms)?;
        let working = check_millis("jobs.working_ms", self.jobs.working_ms)?;
        let working_max = match self.jobs.working_ms_max {
            None => working,
            Some(ms) => {
                let max = check_millis("jobs.working_ms_max", ms)?;
                if max < working {
                    return Err(format!(
                        "jobs.working_ms_max must be at least jobs.working_ms ({}), not {ms}",
                        self.jobs.working_ms
                    ));
                }
                max
            }
        };
        let list_lag = check_millis("api.list_lag_ms", self.api.list_lag_ms)?;
        let unrelated_jobs = self.api.unrelated_jobs_per_zone.unwrap_or(if self.api.job_action_filter { 0 } else { 5 });
        if unrelated_jobs > MAX_UNRELATED_JOBS {
            return Err(format!(
                "api.unrelated_jobs_per_zone must be at most {MAX_UNRELATED_JOBS}, not {unrelated_jobs}"
            ));
        }
        let max_offset = MAX_WORLD_DURATION.as_secs() as i64;
        if !(-max_offset..=max_offset).contains(&self.clock_offset_s) {
            return Err(format!(
                "clock_offset_s must be between -{max_offset} and {max_offset} (a day), not {}",
                self.clock_offset_s
            ));
        }
        check_millis("faults.delay_ms", self.faults.delay_ms)?;
        check_rate("jobs.fail_rate", self.jobs.fail_rate)?;
        let f = &self.faults;
        for (name, rate) in [
            ("faults.busy_rate", f.busy_rate),
            ("faults.internal_rate", f.internal_rate),
            ("faults.http_502_rate", f.http_502_rate),
            ("faults.reset_rate", f.reset_rate),
            ("faults.lost_response_rate", f.lost_response_rate),
        ] {
            check_rate(name, rate)?;
        }
        let quota = match &self.quota {
            None => None,
            Some(q) => {
                if q.requests == 0 {
                    return Err("quota.requests must be at least 1".to_owned());
                }
                let window = Duration::try_from_secs_f64(q.window_s)
                    .ok()
                    .filter(|w| !w.is_zero() && *w <= MAX_WORLD_DURATION)
                    .ok_or_else(|| {
                        format!(
                            "quota.window_s must be a positive number of seconds up to {}, not {}",
                            MAX_WORLD_DURATION.as_secs(),
                            q.window_s
                        )
                    })?;
                let penalty = Duration::try_from_secs_f64(q.penalty_s)
                    .ok()
                    .filter(|p| *p <= MAX_WORLD_DURATION)
                    .ok_or_else(|| {
                        format!(
                            "quota.penalty_s must be 0 or a positive number of seconds up to {}, not {}",
                            MAX_WORLD_DURATION.as_secs(),
                            q.penalty_s
                        )
                    })?;
                Some(QuotaModel { requests: q.requests, window, scope: q.scope, penalty })
            }
        };
        Ok(Model {
            credentials,
            accounts,
            clusters,
            pending,
            working,
            working_max,
            fail_rate: self.jobs.fail_rate,
            quota,
            faults: self.faults.clone(),
            one_job_per_cluster: self.one_job_per_cluster,
            api: self.api.clone(),
            list_lag,
            unrelated_jobs,
            clock_offset: chrono::TimeDelta::seconds(self.clock_offset_s),
        })
    }
}

fn check_millis(name: &str, ms: u64) -> Result<Duration, String> {
    let d = Duration::from_millis(ms);
    if d <= MAX_WORLD_DURATION {
        Ok(d)
    } else {
        Err(format!("{name} must be at most {} (a day), not {ms}", MAX_WORLD_DURATION.as_millis()))
    }
}

fn check_rate(name: &str, rate: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("{name} must be between 0.0 and 1.0, not {rate}"))
    }
}

/// `cl-` followed by lower-case letters or digits, as the API spells cluster ids.
pub fn check_cluster_id(id: &str) -> Result<(), String> {
    let ok = id.strip_prefix("cl-").is_some_and(|r| !r.is_empty() && r.bytes().all(is_lower_alnum));
    if ok {
        Ok(())
    } else {
        Err(format!("cluster id {id:?} does not match cl-[a-z0-9]+"))
    }
}

/// Zones are lower-case letters, digits and hyphens.
pub fn check_zone(zone: &str) -> Result<(), String> {
    if !zone.is_empty() && zone.bytes().all(|b| is_lower_alnum(b) || b == b'-') {
        Ok(())
    } else {
        Err(format!("zone {zone:?} does not match [a-z0-9-]+ (zones are lower-case)"))
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `user@host` → (user, host). The host never contains `@`, so the last `@` separates them.
pub fn parse_account(s: &str) -> Result<(&str, &str), String> {
    match s.rsplit_once('@') {
        Some((user, host)) if !user.is_empty() && !host.is_empty() => Ok((user, host)),
        _ => Err(format!("account {s:?} is not user@host (e.g. bob@% or app@10.0.0.%)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::world::file::{
        ListOrder, MissingAccount, QuotaScope, UnknownJobId, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY,
    };

    fn parse(text: &str) -> Result<World, WorldError> {
        World::parse(text, Path::new("world.yaml"))
    }

    #[test]
    fn empty_file_is_the_default_auto_world() {
        let w = parse("{}").unwrap();
        let m = w.check().unwrap();
        assert!(m.clusters.is_none());
        assert_eq!(m.credentials.get(DEFAULT_ACCESS_KEY_ID).map(String::as_str), Some(DEFAULT_SECRET_ACCESS_KEY));
        assert!(m.quota.is_none());
    }

    #[test]
    fn full_world_parses() {
        let w = parse(
            r#"
credentials:
  - access_key_id: AK1
    secret_access_key: SK1
clusters:
  - id: cl-abc123
    zone: sh1a
    users: ["bob@%", "app@10.0.0.%", "we@ird@%"]
jobs: {pending_ms: 10, working_ms: 20, fail_rate: 0.5}
quota: {requests: 5, window_s: 0.5}
faults: {busy_rate: 0.1, internal_rate: 0.1, http_502_rate: 0.1, reset_rate: 0.1, lost_response_rate: 0.1, delay_ms: 3}
one_job_per_cluster: true
seed: 7
"#,
        )
        .unwrap();
        let m = w.check().unwrap();
        let c = &m.clusters.as_ref().unwrap()["cl-abc123"];
        assert!(c.users.contains(&("we@ird".to_owned(), "%".to_owned())));
        assert!(c.users.contains(&("app".to_owned(), "10.0.0.%".to_owned())));
        let q = m.quota.unwrap();
        assert_eq!((q.requests, q.window, q.scope), (5, std::time::Duration::from_millis(500), QuotaScope::Account));
        assert_eq!(w.seed, Some(7));
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("faults: {busy: 0.1}").unwrap_err().to_string();
        assert!(e.starts_with("world.yaml: faults: unknown field `busy`"), "{e}");
        let e = parse("faults: {busy_rate: 1.5}").unwrap_err().to_string();
        assert_eq!(e, "world.yaml: faults.busy_rate must be between 0.0 and 1.0, not 1.5");
        let e = parse("clusters: [{id: cl-a, zone: sh1a, users: [bob]}]").unwrap_err().to_string();
        assert!(e.contains("clusters[0].users[0]: account \"bob\" is not user@host"), "{e}");
        let e = parse("clusters: [{id: x, zone: sh1a}]").unwrap_err().to_string();
        assert!(e.contains("clusters[0].id: cluster id \"x\""), "{e}");
        let e = parse("quota: {requests: 0, window_s: 1}").unwrap_err().to_string();
        assert!(e.contains("quota.requests must be at least 1"), "{e}");
        let e = parse("credentials: []").unwrap_err().to_string();
        assert!(e.contains("at least one access key"), "{e}");
    }

    #[test]
    fn the_api_block_and_its_mistakes() {
        let w = parse(
            "api: {describe_jobs_unknown_id: drop, describe_jobs_order: oldest_first, job_action_filter: false, \
             list_lag_ms: 3000, missing_account: reject, html_everywhere: true}\nclock_offset_s: -300",
        )
        .unwrap();
        let m = w.check().unwrap();
        assert_eq!(m.api.describe_jobs_unknown_id, UnknownJobId::Drop);
        assert_eq!(m.api.describe_jobs_order, ListOrder::OldestFirst);
        assert_eq!(m.api.missing_account, MissingAccount::Reject);
        assert_eq!((m.list_lag, m.unrelated_jobs), (Duration::from_secs(3), 5), "ignored filter: unrelated jobs");
        assert_eq!(m.clock_offset, chrono::TimeDelta::seconds(-300));
        let d = parse("{}").unwrap().check().unwrap();
        assert_eq!(
            (d.api.describe_jobs_unknown_id, d.api.job_action_filter, d.unrelated_jobs),
            (UnknownJobId::Error, true, 0)
        );
        let e = parse("api: {describe_jobs_order: sideways}").unwrap_err().to_string();
        assert!(e.contains("unknown variant `sideways`"), "{e}");
        let e = parse("api: {lag_ms: 1}").unwrap_err().to_string();
        assert!(e.contains("unknown field `lag_ms`"), "{e}");
        let e = parse("api: {list_lag_ms: 90000000}").unwrap_err().to_string();
        assert!(e.contains("api.list_lag_ms must be at most"), "{e}");
        let e = parse("api: {unrelated_jobs_per_zone: 1001}").unwrap_err().to_string();
        assert!(e.contains("api.unrelated_jobs_per_zone must be at most 1000"), "{e}");
        let e = parse("clock_offset_s: 90000").unwrap_err().to_string();
        assert!(e.contains("clock_offset_s must be between -86400 and 86400"), "{e}");
        let e = parse("jobs: {working_ms: 100, working_ms_max: 50}").unwrap_err().to_string();
        assert!(e.contains("jobs.working_ms_max must be at least jobs.working_ms (100), not 50"), "{e}");
        let e = parse("quota: {requests: 1, window_s: 1, scope: user}").unwrap_err().to_string();
        assert!(e.contains("unknown variant `user`"), "{e}");
        let e = parse("quota: {requests: 1, window_s: 1, penalty_s: -1}").unwrap_err().to_string();
        assert!(e.contains("quota.penalty_s must be 0 or a positive number"), "{e}");
        let q = parse("quota: {requests: 1, window_s: 1, scope: access_key, penalty_s: 1.5}").unwrap().check().unwrap();
        let q = q.quota.unwrap();
        assert_eq!((q.scope, q.penalty), (QuotaScope::AccessKey, Duration::from_millis(1500)));
        let e = parse("credentials: [{access_key_id: A, secret_access_key: a, account: ''}]").unwrap_err().to_string();
        assert!(e.contains("credentials[0].account must not be empty"), "{e}");
    }
}
