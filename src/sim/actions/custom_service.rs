//! `RunClusterCustomService` with `del_user` (reference §3): the parameters are checked, the
//! cluster must exist in the zone and be active, the user must not be protected, and (as the
//! world says) the cluster must be idle and the account must exist; then a job is created that
//! will delete the account when it runs.
//!
//! It creates the job and answers; what the job does and when is the book's business.

use std::collections::BTreeMap;

use rand::Rng;

use crate::qingcloud::types::{
    ret, DelUserParams, RunClusterCustomServiceResponse, DEL_USER, ROLE_MAININSTANCE, RUN_CLUSTER_CUSTOM_SERVICE,
};
use crate::sim::answer::{refuse, response_action, to_json, Refusal};
use crate::sim::clock::Now;
use crate::sim::jobs::NewJob;
use crate::sim::request::Params;
use crate::sim::world::{ListOrder, MissingAccount, Model};

use super::{new_job_id, Cloud};

/// Accounts the API refuses to delete (reference §3.2). Matched exactly, as MySQL does.
pub const PROTECTED_USERS: [&str; 4] = ["root", "qc_admin", "qc_repl", "qc_check"];

/// The refusal of `service_params` that is not del_user's.
const BAD_SERVICE_PARAMS: &str =
    "ParameterError, service_params must be a JSON object with exactly the non-empty strings host and user";

/// Answer one RunClusterCustomService request for `owner`: the body and the new job's id.
pub fn run(
    model: &Model,
    cloud: &mut Cloud,
    params: &Params<'_>,
    owner: &str,
    now: Now,
) -> Result<(Vec<u8>, String), Refusal> {
    if model.api.refuse_custom_service {
        // A key without the right to the action: the answer names no cluster and no user.
        return Err(refuse(ret::ACCESS_DENIED, "PermissionDenied, can't handle this request"));
    }
    let zone = params.zone()?;
    let cluster = params.require("cluster")?;
    let service = params.require("service")?;
    if service != DEL_USER {
        return Err(refuse(ret::MALFORMED, format!("ParameterError, service [{service}] is not supported")));
    }
    let role = params.require("role")?;
    if role != ROLE_MAININSTANCE {
        return Err(refuse(
            ret::MALFORMED,
            format!("ParameterError, service [{DEL_USER}] runs on role [{ROLE_MAININSTANCE}], not [{role}]"),
        ));
    }
    let raw = params.require("service_params")?;
    let target = serde_json::from_str::<DelUserParams>(raw)
        .ok()
        .filter(|p| !p.user.is_empty() && !p.host.is_empty())
        .ok_or_else(|| refuse(ret::MALFORMED, BAD_SERVICE_PARAMS))?;

    cloud.book.settle(now);
    cloud.seed_zone(zone, owner, now);
    if !cloud.book.cluster_in_zone(cluster, zone) {
        return Err(refuse(
            ret::NOT_FOUND,
            format!("ResourceNotFound, cluster [{cluster}] not found in zone [{zone}]"),
        ));
    }
    if let Some(c) = model.clusters.as_ref().and_then(|m| m.get(cluster)) {
        // A cluster that is not active (or is in transition) runs no custom service; the
        // answer names the cluster and its status, so it fails the task, not the run.
        if c.status != "active" || !c.transition_status.is_empty() {
            let status = if c.transition_status.is_empty() { &c.status } else { &c.transition_status };
            return Err(refuse(
                ret::ACCESS_DENIED,
                format!("PermissionDenied, cluster [{cluster}] is [{status}]; custom services run only on an active cluster"),
            ));
        }
    }
    if PROTECTED_USERS.contains(&target.user.as_str()) {
        return Err(refuse(
            ret::ACCESS_DENIED,
            format!("PermissionDenied, user [{}] is protected and cannot be deleted", target.user),
        ));
    }
    if model.one_job_per_cluster {
        if let Some(running) = cloud.book.running_job(cluster) {
            return Err(refuse(
                ret::ACCESS_DENIED,
                format!("PermissionDenied, cluster [{cluster}] is running job [{running}]; try again when it ends"),
            ));
        }
    }

    if model.api.missing_account == MissingAccount::Reject
        && !cloud.book.account_exists(cluster, &target.user, &target.host)
    {
        cloud.book.note_account(cluster, zone, &target.user, &target.host);
        return Err(refuse(
            ret::NOT_FOUND,
            format!(
                "ResourceNotFound, user [{}] with host [{}] does not exist in cluster [{cluster}]",
                target.user, target.host
            ),
        ));
    }

    let doomed = cloud.jobs_rng.random::<f64>() < model.fail_rate;
    let job_id = loop {
        let id = new_job_id(&mut cloud.jobs_rng);
        if !cloud.book.has_job(&id) {
            break id;
        }
    };
    let directive = directive(params);
    let working = if model.working_max > model.working {
        cloud.extra_rng.random_range(model.working..=model.working_max)
    } else {
        model.working
    };
    let shuffle = if model.api.describe_jobs_order == ListOrder::Random { cloud.extra_rng.random() } else { 0 };
    cloud.book.create(
        NewJob {
            id: job_id.clone(),
            action: RUN_CLUSTER_CUSTOM_SERVICE,
            zone,
            owner,
            cluster,
            user: &target.user,
            host: &target.host,
            doomed,
            directive,
            working,
            shuffle,
        },
        now,
    );
    let body = to_json(&RunClusterCustomServiceResponse {
        action: response_action(RUN_CLUSTER_CUSTOM_SERVICE),
        ret_code: ret::OK,
        message: String::new(),
        job_id: job_id.clone(),
        service: service.to_owned(),
        role: role.to_owned(),
        cluster_id: cluster.to_owned(),
    })?;
    Ok((body, job_id))
}

/// The original request as JSON, without the signature and the credentials it was made with.
fn directive(params: &Params<'_>) -> String {
    let kept: BTreeMap<&str, &str> = params
        .all()
        .filter(|(k, _)| !matches!(*k, "signature" | "signature_method" | "signature_version" | "access_key_id"))
        .collect();
    serde_json::to_string(&kept).unwrap_or_default()
}
