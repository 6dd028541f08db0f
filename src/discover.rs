//! `discover:` selectors, expanded through the API into ordinary tasks.
//!
//! For each selector and each of its zones:
//!
//! 1. every tag name is resolved to its tag ids with `DescribeTags` (`search_word` = the name,
//!    kept: the tags whose name is exactly it); a name no tag has is an error (the selector
//!    would silently select nothing);
//! 2. the zone's MySQL Plus clusters are listed with `DescribeClusters` (`apps.1=app-00r26u27`,
//!    `limit` 100, paged by `offset` up to `total_count`), once per tag id when tags are given.
//!    A cluster must carry every tag name of the selector: the listings of one name are joined,
//!    those of several names intersected, so the result does not depend on whether the API
//!    reads several `tags.N` as "any" or "all";
//! 3. the cluster's name must match `name_matches`, and its `app_id` must be MySQL Plus (checked
//!    again here, in case an endpoint ignores the filter).
//!
//! An `active` cluster is selected (one in transition too: preflight then leaves its tasks
//! `not_ready`, for a later run). A cluster that is not active is not selected but *named*
//! ([`Discovery::passed_over`]): a stopped cluster still holds the account, and the operator
//! should know it was left out. `ceased`/`deleted` clusters are left out silently. No status
//! filter is sent: it is the listing of the other statuses that lets the plan name them.
//!
//! Listings are shared between selectors (same zone, same tag id), each call is tried up to
//! three times, and every call made is returned for the run's `api_calls`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use regex::Regex;
use serde::Serialize;

use crate::exit::{Coded, Exit};
use crate::manifest::{ClusterId, ManifestSet, Selector, Task, Zone};
use crate::qingcloud::client::{ApiError, Call, CallRecord, Client, ClusterQuery};
use crate::qingcloud::types::{ClusterInfo, MYSQL_PLUS_APP_ID};

/// Pages per listing at most (100 each: 100,000 clusters in one zone).
const MAX_PAGES: usize = 1000;
/// Statuses after which a cluster never runs a service again: left out without a word.
const GONE: [&str; 2] = ["ceased", "deleted"];

/// A cluster a selector selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The selector: `FILE: discover[i]`.
    pub selector: String,
    pub zone: String,
    pub cluster: String,
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub transition_status: String,
}

/// What the expansion found.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Tasks for the selected clusters, in selector, zone and cluster order.
    pub tasks: Vec<Task>,
    /// The selected clusters.
    pub found: Vec<Found>,
    /// MySQL Plus clusters a selector matched but did not select because they are not active.
    pub passed_over: Vec<Found>,
    /// Every call made, in order.
    pub calls: Vec<CallRecord>,
}

impl Discovery {
    /// The discovered list as recorded with a run and pinned in a plan file.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "found": self.found, "passed_over": self.passed_over })
    }

    /// Lines for people: what each selector selected and left out.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let mut by_selector: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
        for f in &self.found {
            let e = by_selector.entry(&f.selector).or_default();
            e.0 += 1;
            e.1.insert(&f.zone);
        }
        for (selector, (n, zones)) in &by_selector {
            let zones: Vec<&str> = zones.iter().copied().collect();
            out.push_str(&format!(
                "Discovered by {selector}: {n} cluster{} in {}\n",
                if *n == 1 { "" } else { "s" },
                zones.join(", ")
            ));
        }
        for f in &self.passed_over {
            let status = if f.transition_status.is_empty() {
                f.status.clone()
            } else {
                format!("{} ({})", f.status, f.transition_status)
            };
            out.push_str(&format!(
                "Not selected by {}: {} in {} ({}) is {status}, not active; its accounts stay until it runs again\n",
                f.selector,
                f.cluster,
                f.zone,
                if f.name.is_empty() { "no name" } else { &f.name }
            ));
        }
        out
    }
}

/// Why an expansion stopped.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("{selector}: no tag named {tag:?} in zone {zone} (DescribeTags found none); nothing was selected")]
    TagNotFound { selector: String, zone: String, tag: String },
    #[error("discover: {action} in zone {zone} failed ({message}; {tries} tries); nothing was selected")]
    Api { action: &'static str, zone: String, tries: u32, message: String, auth: bool },
    /// The pages listed fewer items than their `total_count`: the listing changed while it
    /// was paged, or was cut short. A partial list would leave clusters out without a word.
    #[error(
        "discover: {action} in zone {zone} listed {listed} of the {total} it counted (the listing changed or \
         was cut short); nothing was selected: try again"
    )]
    Incomplete { action: &'static str, zone: String, listed: usize, total: u64 },
}

impl DiscoverError {
    /// The exit code: a tag that does not exist is the manifest's (65), a refused key the
    /// configuration's (78), anything else the API's (69).
    pub fn into_coded(self) -> Coded {
        let exit = match &self {
            DiscoverError::TagNotFound { .. } => Exit::DataErr,
            DiscoverError::Api { auth: true, .. } => Exit::Config,
            DiscoverError::Api { .. } | DiscoverError::Incomplete { .. } => Exit::Unavailable,
        };
        Coded::new(exit, self.to_string())
    }
}

/// Expand `selectors` with `client` (signed and gated like every call).
pub async fn expand(client: &Client, selectors: &[&Selector]) -> Result<Discovery, DiscoverError> {
    let mut out = Discovery::default();
    let mut tag_ids: HashMap<(Zone, String), Vec<String>> = HashMap::new();
    // (zone, tag id or "" for untagged) → the MySQL Plus clusters listed.
    let mut listings: HashMap<(Zone, String), Vec<ClusterInfo>> = HashMap::new();
    let mut seen_tasks = BTreeSet::new();
    for sel in selectors {
        let pattern = match &sel.name_matches {
            // Checked when the manifest was loaded; a failure here cannot select anything.
            Some(p) => Some(Regex::new(p).map_err(|e| DiscoverError::Api {
                action: "name_matches",
                zone: String::new(),
                tries: 0,
                message: e.to_string(),
                auth: false,
            })?),
            None => None,
        };
        for zone in &sel.zones {
            // Per tag name: the clusters carrying it (any of its ids).
            let mut sets: Vec<BTreeMap<String, ClusterInfo>> = Vec::new();
            let keys: Vec<String> = if sel.tags.is_empty() {
                vec![String::new()]
            } else {
                let mut keys = Vec::new();
                for tag in &sel.tags {
                    let key = (zone.clone(), tag.clone());
                    if !tag_ids.contains_key(&key) {
                        let ids = resolve_tag(client, zone, tag, &mut out.calls).await?;
                        tag_ids.insert(key.clone(), ids);
                    }
                    let ids = tag_ids.get(&key).cloned().unwrap_or_default();
                    if ids.is_empty() {
                        return Err(DiscoverError::TagNotFound {
                            selector: sel.source.clone(),
                            zone: zone.to_string(),
                            tag: tag.clone(),
                        });
                    }
                    keys.extend(ids.into_iter().map(|id| format!("{tag}\u{0}{id}")));
                }
                keys
            };
            let mut by_name: BTreeMap<String, BTreeMap<String, ClusterInfo>> = BTreeMap::new();
            for key in keys {
                let (name, id) = key.split_once('\u{0}').unwrap_or(("", ""));
                let lkey = (zone.clone(), id.to_owned());
                if !listings.contains_key(&lkey) {
                    let listed = list(client, zone, id, &mut out.calls).await?;
                    listings.insert(lkey.clone(), listed);
                }
                let entry = by_name.entry(name.to_owned()).or_default();
                for c in listings.get(&lkey).into_iter().flatten() {
                    entry.insert(c.cluster_id.clone(), c.clone());
                }
            }
            sets.extend(by_name.into_values());
            let mut selected: BTreeMap<String, ClusterInfo> = sets.first().cloned().unwrap_or_default();
            for other in sets.iter().skip(1) {
                selected.retain(|id, _| other.contains_key(id));
            }
            for (id, c) in selected {
                if c.app_id != MYSQL_PLUS_APP_ID || GONE.contains(&c.status.as_str()) {
                    continue;
                }
                if pattern.as_ref().is_some_and(|p| !p.is_match(&c.name)) {
                    continue;
                }
                let found = Found {
                    selector: sel.source.clone(),
                    zone: zone.to_string(),
                    cluster: id.clone(),
                    name: c.name.clone(),
                    status: c.status.clone(),
                    transition_status: c.transition_status.clone(),
                };
                if c.status != "active" {
                    out.passed_over.push(found);
                    continue;
                }
                let Ok(cluster) = ClusterId::parse(&id) else {
                    tracing::warn!(cluster = %id, zone = %zone, "discover: the API listed a cluster id this tool does not accept; left out");
                    continue;
                };
                out.found.push(found);
                for u in &sel.users {
                    let task = Task {
                        cluster: cluster.clone(),
                        zone: zone.clone(),
                        user: u.user.clone(),
                        host: u.host.clone(),
                        not_before: u.not_before,
                        due_by: u.due_by,
                        account: sel.account.clone(),
                    };
                    if seen_tasks.insert(task.key()) {
                        out.tasks.push(task);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The ids of the tags named exactly `name` in `zone`.
async fn resolve_tag(
    client: &Client,
    zone: &Zone,
    name: &str,
    calls: &mut Vec<CallRecord>,
) -> Result<Vec<String>, DiscoverError> {
    let pages = tried(client, "DescribeTags", zone, calls, || client.describe_tags(zone, name, MAX_PAGES)).await?;
    in_full("DescribeTags", zone, pages.iter().map(|p| (p.tag_set.len(), p.total_count)))?;
    let mut ids: Vec<String> = pages
        .into_iter()
        .flat_map(|p| p.tag_set)
        .filter(|t| t.tag_name == name && !t.tag_id.is_empty())
        .map(|t| t.tag_id)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The MySQL Plus clusters of `zone`, carrying the tag `tag_id` unless it is empty.
async fn list(
    client: &Client,
    zone: &Zone,
    tag_id: &str,
    calls: &mut Vec<CallRecord>,
) -> Result<Vec<ClusterInfo>, DiscoverError> {
    let query = ClusterQuery {
        apps: vec![MYSQL_PLUS_APP_ID.to_owned()],
        status: Vec::new(),
        tags: if tag_id.is_empty() { Vec::new() } else { vec![tag_id.to_owned()] },
    };
    let pages =
        tried(client, "DescribeClusters", zone, calls, || client.describe_clusters_pages(zone, &query, MAX_PAGES))
            .await?;
    in_full("DescribeClusters", zone, pages.iter().map(|p| (p.cluster_set.len(), p.total_count)))?;
    Ok(pages.into_iter().flat_map(|p| p.cluster_set).collect())
}

/// Do the pages, as (items, total_count), list as many items as the last one counted?
fn in_full(action: &'static str, zone: &Zone, pages: impl Iterator<Item = (usize, u64)>) -> Result<(), DiscoverError> {
    let (listed, total) = pages.fold((0usize, 0u64), |(n, _), (items, total)| (n + items, total));
    if (listed as u64) < total {
        return Err(DiscoverError::Incomplete { action, zone: zone.to_string(), listed, total });
    }
    Ok(())
}

/// Run a paged listing until every page answered, at most [`Client::lookup_tries`] times
/// (`connection_retries`, default 3); every call is kept.
/// A refused time stamp (1300) is tried again at once, signed with the API's clock (from the
/// answer's `Date`), as the runner does.
async fn tried<T, F, Fut>(
    client: &Client,
    action: &'static str,
    zone: &Zone,
    calls: &mut Vec<CallRecord>,
    mut listing: F,
) -> Result<Vec<T>, DiscoverError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Call<T>>>,
{
    let mut last = String::from("no answer");
    let mut auth = false;
    let mut tries = 0;
    let max_tries = client.lookup_tries();
    for attempt in 1..=max_tries {
        tries = attempt;
        let pages = listing().await;
        let mut ok = Vec::with_capacity(pages.len());
        let mut failed = None;
        for p in pages {
            if let (Err(ApiError::Expired(_)), Some(skew)) = (&p.result, p.record.clock_skew()) {
                client.set_clock_offset(skew);
            }
            calls.push(p.record);
            match p.result {
                Ok(v) => ok.push(v),
                Err(e) => failed = Some(e),
            }
        }
        let Some(e) = failed else { return Ok(ok) };
        auth = matches!(e, ApiError::AuthFailed(_));
        last = e.to_string();
        tracing::warn!(zone = %zone, attempt, error = %last, "discover: {action} failed");
        if auth {
            break;
        }
        if attempt < max_tries && !matches!(e, ApiError::Expired(_)) {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }
    Err(DiscoverError::Api { action, zone: zone.to_string(), tries, message: last, auth })
}

/// Add the discovered tasks to `set`: a task the manifests list already keeps its listed form
/// (its dates and zone); returns how many were added.
pub fn merge_into(set: &mut ManifestSet, discovered: &Discovery) -> usize {
    let have: BTreeSet<_> = set.tasks.iter().map(Task::key).collect();
    let before = set.tasks.len();
    set.tasks.extend(discovered.tasks.iter().filter(|t| !have.contains(&t.key())).cloned());
    set.tasks.len() - before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_short_of_its_count_is_refused() {
        let zone = Zone::parse("sh1a").unwrap();
        assert!(in_full("DescribeClusters", &zone, [(100, 250), (100, 250), (50, 250)].into_iter()).is_ok());
        assert!(in_full("DescribeClusters", &zone, std::iter::empty()).is_ok());
        let cut = in_full("DescribeClusters", &zone, [(100, 250), (0, 250)].into_iter()).unwrap_err();
        assert!(matches!(cut, DiscoverError::Incomplete { listed: 100, total: 250, .. }), "{cut}");
        // The count grew while paging: the last count is the one to meet.
        assert!(in_full("DescribeTags", &zone, [(100, 150), (50, 160)].into_iter()).is_err());
    }
}
