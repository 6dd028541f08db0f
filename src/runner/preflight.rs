//! Preflight: before the first `del_user` of a run, every cluster a pending task names is looked
//! up with `DescribeClusters`, batched by zone (`clusters.N`, at most 100 ids per call, so a zone
//! with N clusters costs ceil(N / 100) calls). A task whose cluster cannot take the request ends
//! without anything sent for it:
//!
//! - `failed`: the cluster is unknown in the task's zone (unknown, or in another zone: the answer
//!   carries no zone), is not a MySQL Plus cluster (`app-00r26u27`), or is `ceased`/`deleted`;
//! - `not_ready`: any other status than `active`, or a `transition_status` (stopped, suspended,
//!   starting…): a later run of the manifest tries the account again.
//!
//! The status seen for every checked task is an audit record of kind `preflight` (so `audit
//! verify` covers it, and reports show it as evidence). A zone whose lookups get no usable answer
//! (after three tries) is left unchecked, logged and audited: its tasks go on as without
//! preflight.
//!
//! The verdict ([`judge`]) is pure; [`run`] does the calls and the writes, through the run's
//! [`Api`] and [`Clock`] only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;

use crate::manifest::model::Zone;
use crate::qingcloud::api::Api;
use crate::qingcloud::client::{Call, MAX_CLUSTERS_PER_CALL};
use crate::qingcloud::types::{ClusterInfo, DescribeClustersResponse, MYSQL_PLUS_APP_ID};
use crate::store::{TaskChange, TaskState, Transition};

use super::clock::Clock;
use super::context::Ctx;

/// Tries per batch of ids before the zone's batch is left unchecked.
const TRIES: usize = 3;

/// The kind of the audit record that keeps what preflight saw for a task.
pub const AUDIT_KIND: &str = "preflight";

/// What preflight decides for the tasks of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// Transient: `not_ready`, with the reason.
    NotReady(String),
    /// Permanent: `failed`, with the reason.
    Refused(String),
}

/// Statuses after which a cluster never runs a service again.
const GONE: [&str; 2] = ["ceased", "deleted"];

/// The verdict for `cluster` in `zone`, given what DescribeClusters returned for it.
pub fn judge(cluster: &str, zone: &str, info: Option<&ClusterInfo>) -> Verdict {
    let Some(c) = info else {
        return Verdict::Refused(format!(
            "preflight: cluster {cluster} not found in zone {zone} (unknown, or in another zone); nothing was sent"
        ));
    };
    if c.app_id != MYSQL_PLUS_APP_ID {
        return Verdict::Refused(format!(
            "preflight: cluster {cluster} is not a MySQL Plus cluster (app {:?}, not {MYSQL_PLUS_APP_ID}); nothing was sent",
            c.app_id
        ));
    }
    if GONE.contains(&c.status.as_str()) {
        return Verdict::Refused(format!("preflight: cluster {cluster} is {}; nothing was sent", c.status));
    }
    if c.status == "active" && c.transition_status.is_empty() {
        return Verdict::Ready;
    }
    let status = if c.transition_status.is_empty() {
        c.status.clone()
    } else {
        format!("{} ({})", c.status, c.transition_status)
    };
    Verdict::NotReady(format!(
        "preflight: cluster {cluster} is {status}, not active; nothing was sent, a later run tries again"
    ))
}

/// What one preflight did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub calls: usize,
    pub refused: usize,
    pub not_ready: usize,
    /// Clusters left unchecked because their lookups got no usable answer.
    pub unchecked: usize,
}

/// What the lookups of one preflight returned.
pub struct Looked {
    /// (zone, cluster) → what the API said (`None`: not in the answer); absent: unchecked.
    pub seen: HashMap<(String, String), Option<ClusterInfo>>,
    /// Every call made, with when it was started.
    pub calls: Vec<(Call<DescribeClustersResponse>, tokio::time::Instant)>,
    /// (zone, cluster ids) of the batches that got no usable answer.
    pub unchecked: Vec<(String, Vec<String>)>,
}

/// Look up `by_zone`'s clusters with `DescribeClusters`, 100 ids a call, each batch tried
/// [`TRIES`] times. `run` and `plan` share it.
pub async fn lookup(
    api: &dyn Api,
    clock: &dyn Clock,
    by_zone: &BTreeMap<&str, BTreeSet<&str>>,
) -> anyhow::Result<Looked> {
    let mut out = Looked { seen: HashMap::new(), calls: Vec::new(), unchecked: Vec::new() };
    for (zone, clusters) in by_zone {
        let zone_id = Zone::parse(zone).map_err(anyhow::Error::msg)?;
        let ids: Vec<String> = clusters.iter().map(|c| (*c).to_owned()).collect();
        for batch in ids.chunks(MAX_CLUSTERS_PER_CALL) {
            let mut answer = None;
            for _ in 0..TRIES {
                let sent_at = clock.instant();
                let mut calls = api.describe_clusters(&zone_id, batch).await;
                let Some(call) = calls.pop() else { break };
                match &call.result {
                    Ok(resp) => answer = Some(resp.clone()),
                    Err(e) => tracing::warn!(zone = %zone, error = %e, "preflight: DescribeClusters failed"),
                }
                out.calls.push((call, sent_at));
                if answer.is_some() {
                    break;
                }
            }
            let Some(resp) = answer else {
                tracing::warn!(zone = %zone, clusters = batch.len(), "preflight: no usable answer; these clusters are not checked");
                out.unchecked.push(((*zone).to_owned(), batch.to_vec()));
                continue;
            };
            let mut found: HashMap<&str, &ClusterInfo> =
                resp.cluster_set.iter().map(|c| (c.cluster_id.as_str(), c)).collect();
            for id in batch {
                out.seen.insert(((*zone).to_owned(), id.clone()), found.remove(id.as_str()).cloned());
            }
        }
    }
    Ok(out)
}

/// Check the clusters of the run's `pending` and `retry_wait` tasks; end the tasks whose cluster
/// cannot take a `del_user`.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let rows = ctx.store.tasks(ctx.run_id).await?;
    let waiting: Vec<_> =
        rows.into_iter().filter(|r| matches!(r.state, TaskState::Pending | TaskState::RetryWait)).collect();
    let mut by_zone: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &waiting {
        by_zone.entry(r.zone.as_str()).or_default().insert(r.cluster.as_str());
    }
    let mut out = Outcome::default();
    let looked = lookup(ctx.api.as_ref(), ctx.clock.as_ref(), &by_zone).await?;
    for (call, sent_at) in &looked.calls {
        out.calls += 1;
        ctx.note_call(None, call, *sent_at).await?;
    }
    for (zone, batch) in &looked.unchecked {
        out.unchecked += batch.len();
        ctx.store
            .audit_event(Some(ctx.run_id), None, "preflight_unchecked", json!({ "zone": zone, "clusters": batch }))
            .await?;
    }
    let seen = looked.seen;

    let mut events = Vec::new();
    let mut transitions = Vec::new();
    for r in &waiting {
        let Some(info) = seen.get(&(r.zone.clone(), r.cluster.clone())) else { continue };
        let verdict = judge(&r.cluster, &r.zone, info.as_ref());
        let seen_json = match info {
            Some(c) => json!({
                "found": true, "status": c.status, "transition_status": c.transition_status,
                "app_id": c.app_id, "name": c.name,
            }),
            None => json!({ "found": false }),
        };
        let (to, message) = match &verdict {
            Verdict::Ready => (None, None),
            Verdict::NotReady(m) => (Some(TaskState::NotReady), Some(m.clone())),
            Verdict::Refused(m) => (Some(TaskState::Failed), Some(m.clone())),
        };
        events.push((
            Some(r.id),
            json!({
                "cluster": r.cluster, "zone": r.zone, "seen": seen_json,
                "verdict": to.map_or("ready", TaskState::as_str),
            }),
        ));
        if let (Some(to), Some(message)) = (to, message) {
            if to == TaskState::Failed {
                out.refused += 1;
            } else {
                out.not_ready += 1;
            }
            transitions.push(Transition {
                task_id: r.id,
                from: vec![TaskState::Pending, TaskState::RetryWait],
                to,
                change: TaskChange::new().message(message).finished_at(ctx.now()),
                detail: json!({ "reason": "preflight", "preflight": seen_json }),
            });
        }
    }
    ctx.store.audit_events(ctx.run_id, AUDIT_KIND, &events).await?;
    if !transitions.is_empty() {
        ctx.store.transition_many(&transitions).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(status: &str, transition: &str, app: &str) -> ClusterInfo {
        ClusterInfo {
            cluster_id: "cl-a".to_owned(),
            status: status.to_owned(),
            transition_status: transition.to_owned(),
            app_id: app.to_owned(),
            ..ClusterInfo::default()
        }
    }

    #[test]
    fn only_an_active_mysql_plus_cluster_in_the_zone_is_ready() {
        let mp = MYSQL_PLUS_APP_ID;
        assert_eq!(judge("cl-a", "sh1a", Some(&cluster("active", "", mp))), Verdict::Ready);
        assert!(matches!(judge("cl-a", "sh1a", None), Verdict::Refused(m) if m.contains("not found in zone sh1a")));
        assert!(matches!(
            judge("cl-a", "sh1a", Some(&cluster("active", "", "app-other"))),
            Verdict::Refused(m) if m.contains("not a MySQL Plus cluster")
        ));
        assert!(
            matches!(judge("cl-a", "sh1a", Some(&cluster("ceased", "", mp))), Verdict::Refused(m) if m.contains("ceased"))
        );
        assert!(matches!(judge("cl-a", "sh1a", Some(&cluster("deleted", "", mp))), Verdict::Refused(_)));
        for (status, transition) in [("stopped", ""), ("suspended", ""), ("active", "stopping"), ("pending", "")] {
            assert!(
                matches!(judge("cl-a", "sh1a", Some(&cluster(status, transition, mp))), Verdict::NotReady(m) if m.contains(status)),
                "{status}/{transition}"
            );
        }
    }
}
