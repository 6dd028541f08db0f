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
//! (after three tries; a quota refusal is waited out, not counted) is left unchecked, logged and
//! audited: its tasks go on as without preflight. A stop (a signal) ends the lookups at once:
//! what was not looked up stays `pending`, for `resume`.
//!
//! The verdict ([`judge`]) is pure; [`run`] does the calls and the writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::domain::Zone;
use crate::qingcloud::api::Api;
use crate::qingcloud::client::{ApiError, Call, MAX_CLUSTERS_PER_CALL};
use crate::qingcloud::types::{ClusterInfo, DescribeClustersResponse, MYSQL_PLUS_APP_ID};
use crate::runner::error::RunnerError;
use crate::store::{TaskChange, TaskState};

use super::clock::Clock;
use super::context::Ctx;
use super::state::{self, Event};

/// Quota refusals (2500) per batch that are waited out before the batch counts as unanswered:
/// the waits add up to about four minutes.
const MAX_THROTTLED: u32 = 8;
/// The wait after a batch's first quota refusal; it doubles with each one in a row.
const THROTTLE_WAIT: Duration = Duration::from_secs(2);
const THROTTLE_WAIT_CAP: Duration = Duration::from_secs(60);

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
    /// The run stopped (a signal) during the lookups: the clusters not looked up yet were
    /// left as they were, their tasks `pending`.
    pub stopped: bool,
}

/// What the lookups of one preflight returned.
pub struct Looked {
    /// (zone, cluster) → what the API said (`None`: not in the answer); absent: unchecked.
    pub seen: HashMap<(String, String), Option<ClusterInfo>>,
    /// Every call made, with when it was started.
    pub calls: Vec<(Call<DescribeClustersResponse>, tokio::time::Instant)>,
    /// (zone, cluster ids) of the batches that got no usable answer.
    pub unchecked: Vec<(String, Vec<String>)>,
    /// The run stopped (a signal) before every batch was looked up: the batches not looked up
    /// are neither in `seen` nor in `unchecked`.
    pub stopped: bool,
}

/// Look up `by_zone`'s clusters with `DescribeClusters`, 100 ids a call, each batch tried
/// [`Api::lookup_tries`] times (`connection_retries`, default 3) before the zone's batch is
/// left unchecked. `plan` uses it as it is; a run uses [`lookup_until`].
pub async fn lookup(
    api: &dyn Api,
    clock: &dyn Clock,
    by_zone: &BTreeMap<&str, BTreeSet<&str>>,
) -> super::error::Result<Looked> {
    let (_never, stop) = watch::channel(false);
    lookup_until(api, clock, by_zone, stop).await
}

/// [`lookup`] until `stop` turns true: a lookup under way then is abandoned (it changes nothing
/// on the API's side) and the rest are not made.
///
/// Only an answer about the clusters ends a batch's tries. A quota refusal (2500) is no answer
/// and costs no try: the batch waits (2 s, doubling, at most a minute) and asks again, up to
/// [`MAX_THROTTLED`] times. A transient failure is tried again after 1 s, then 2 s; a refused
/// time stamp (1300) at once with the API's clock; refused credentials are not asked again.
pub async fn lookup_until(
    api: &dyn Api,
    clock: &dyn Clock,
    by_zone: &BTreeMap<&str, BTreeSet<&str>>,
    mut stop: watch::Receiver<bool>,
) -> super::error::Result<Looked> {
    let mut out = Looked { seen: HashMap::new(), calls: Vec::new(), unchecked: Vec::new(), stopped: false };
    for (zone, clusters) in by_zone {
        let zone_id = Zone::parse(zone).map_err(|e| RunnerError::BadRow(e.to_string()))?;
        let ids: Vec<String> = clusters.iter().map(|c| (*c).to_owned()).collect();
        for batch in ids.chunks(MAX_CLUSTERS_PER_CALL) {
            let mut answer = None;
            let (mut tries, mut throttled) = (0, 0);
            let max_tries = api.lookup_tries();
            while tries < max_tries {
                let sent_at = clock.instant();
                let mut calls = tokio::select! {
                    calls = api.describe_clusters(&zone_id, batch) => calls,
                    () = stopped(&mut stop) => {
                        out.stopped = true;
                        return Ok(out);
                    }
                };
                let Some(call) = calls.pop() else { break };
                let wait = match &call.result {
                    Ok(resp) => {
                        answer = Some(resp.clone());
                        Duration::ZERO
                    }
                    Err(ApiError::Throttled(e)) if throttled < MAX_THROTTLED => {
                        throttled += 1;
                        let wait = THROTTLE_WAIT.saturating_mul(1 << (throttled - 1)).min(THROTTLE_WAIT_CAP);
                        tracing::warn!(zone = %zone, error = %e, wait_s = wait.as_secs(), "preflight: quota exceeded; asking again");
                        wait
                    }
                    Err(e) => {
                        tries += 1;
                        tracing::warn!(zone = %zone, error = %e, "preflight: DescribeClusters failed");
                        match e {
                            // Refused credentials stay refused: the run stops on its first request.
                            ApiError::AuthFailed(_) => {
                                tries = max_tries;
                                Duration::ZERO
                            }
                            // Signed again at once, with the API's clock.
                            ApiError::Expired(_) => {
                                if let Some(skew) = call.record.clock_skew() {
                                    api.set_clock_offset(skew);
                                }
                                Duration::ZERO
                            }
                            _ => Duration::from_secs(tries as u64),
                        }
                    }
                };
                out.calls.push((call, sent_at));
                if answer.is_some() {
                    break;
                }
                if tries < max_tries && !wait.is_zero() {
                    tokio::select! {
                        () = clock.sleep_until(clock.instant() + wait) => {}
                        () = stopped(&mut stop) => {
                            out.stopped = true;
                            return Ok(out);
                        }
                    }
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

/// Resolves once `stop` is true; never, when its sender is gone without it.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Check the clusters of the run's `pending` and `retry_wait` tasks; end the tasks whose cluster
/// cannot take a `del_user`.
pub async fn run(ctx: &Ctx) -> super::error::Result<Outcome> {
    let rows = ctx.store.tasks(ctx.run_id).await?;
    let waiting: Vec<_> =
        rows.into_iter().filter(|r| matches!(r.state, TaskState::Pending | TaskState::RetryWait)).collect();
    let mut by_zone: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &waiting {
        by_zone.entry(r.zone.as_str()).or_default().insert(r.cluster.as_str());
    }
    let mut out = Outcome::default();
    let looked = lookup_until(ctx.api.as_ref(), ctx.clock.as_ref(), &by_zone, ctx.stop.subscribe()).await?;
    out.stopped = looked.stopped;
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
        let (event, message) = match &verdict {
            Verdict::Ready => (None, String::new()),
            Verdict::NotReady(m) => (Some(Event::NotReady), m.clone()),
            Verdict::Refused(m) => (Some(Event::Refused), m.clone()),
        };
        // The move, built once through the task state table; its target is the verdict recorded.
        let open = [TaskState::Pending, TaskState::RetryWait];
        let moved = event
            .map(|e| {
                let change = TaskChange::new().message(message).finished_at(ctx.now());
                state::transition(r.id, &open, e, change, json!({ "reason": "preflight", "preflight": seen_json }))
            })
            .transpose()?;
        events.push((
            Some(r.id),
            json!({
                "cluster": r.cluster, "zone": r.zone, "seen": seen_json,
                "verdict": moved.as_ref().map_or("ready", |t| t.to().as_str()),
            }),
        ));
        if let Some(t) = moved {
            if event == Some(Event::Refused) {
                out.refused += 1;
            } else {
                out.not_ready += 1;
            }
            transitions.push(t);
        }
    }
    ctx.store.audit_events(ctx.run_id, AUDIT_KIND, &events).await?;
    if !transitions.is_empty() {
        ctx.store.steps(&transitions).await?;
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
