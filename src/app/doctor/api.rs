//! The probes that need the API, in order: one unfiltered DescribeJobs page (is it the API, are
//! the credentials accepted, how far is its clock), then the behaviour probes and the quota.
//! When the endpoint or the credentials cannot be used, it stops there with `fail`.
//!
//! It sends only DescribeJobs, never RunClusterCustomService, and writes nothing.

use chrono::TimeDelta;
use serde_json::json;

use crate::manifest::Zone;
use crate::qingcloud::client::{Call, Client, JobFilter};
use crate::qingcloud::error::ApiError;
use crate::qingcloud::types::{DescribeJobsResponse, RUN_CLUSTER_CUSTOM_SERVICE};
use crate::store::{check, FindingStatus, NewFinding};

use super::behaviour::{filter_finding, impossible_job_id, order_finding, unknown_id_finding};
use super::finding::finding;

/// A clock difference up to this is within what the `Date` header (whole seconds) and the
/// latency can tell.
const CLOCK_OK: TimeDelta = TimeDelta::seconds(2);
/// The API refuses a `time_stamp` further off than this (1300).
const CLOCK_REFUSED: TimeDelta = TimeDelta::seconds(60);

/// Every check that needs the API. Stops after the endpoint or credential checks when the API
/// cannot be used (those findings then carry `fail`).
pub(super) async fn api_checks(client: &Client, zone: &Zone) -> Vec<NewFinding> {
    let mut out = Vec::new();
    let mut quota_hit = false;

    // 1. One unfiltered page: is it the API, are the credentials accepted, what is the clock?
    let mut first = list(client, zone, None).await;
    let skew = first.record.clock_skew();
    if matches!(first.result, Err(ApiError::Expired(_))) {
        // The API refused our time stamp: sign with its clock once, so the other checks can
        // run, and report the clock.
        if let Some(skew) = skew {
            client.set_clock_offset(skew);
            first = list(client, zone, None).await;
        }
    }
    quota_hit |= matches!(first.result, Err(ApiError::Throttled(_)));
    match &first.result {
        Ok(_) => {
            out.push(finding(
                check::ENDPOINT,
                FindingStatus::Ok,
                "api",
                "answers as the QingCloud API".to_owned(),
                None,
                json!({}),
            ));
            out.push(finding(
                check::CREDENTIALS,
                FindingStatus::Ok,
                "accepted",
                "accepted (DescribeJobs answered ret_code 0)".to_owned(),
                None,
                json!({}),
            ));
        }
        Err(e) => {
            let (endpoint, credentials) = first_call_failed(e);
            let stop = endpoint.status == FindingStatus::Fail || credentials.status == FindingStatus::Fail;
            out.push(endpoint);
            out.push(credentials);
            if stop {
                if let Some(skew) = skew {
                    out.push(clock_finding(skew));
                }
                return out;
            }
        }
    }
    out.push(match skew {
        Some(skew) => clock_finding(skew),
        None => finding(
            check::CLOCK_SKEW,
            FindingStatus::Warn,
            "unknown",
            "the API sent no readable Date header, so the clock difference is unknown".to_owned(),
            Some("keep this machine's clock synchronised (NTP)".to_owned()),
            json!({}),
        ),
    });

    // 2. An id that cannot exist.
    let id = impossible_job_id();
    let calls = client.describe_jobs(zone, std::slice::from_ref(&id)).await;
    let answer = calls.into_iter().next().map(|c| c.result);
    quota_hit |= matches!(answer, Some(Err(ApiError::Throttled(_))));
    out.push(unknown_id_finding(&id, answer));

    // 3. The order of the unfiltered page.
    out.push(order_finding(first.result.as_ref().ok()));

    // 4. A page filtered by job_action.
    let filtered = list(client, zone, Some(RUN_CLUSTER_CUSTOM_SERVICE)).await;
    quota_hit |= matches!(filtered.result, Err(ApiError::Throttled(_)));
    out.push(filter_finding(first.result.as_ref().ok(), filtered.result.as_ref()));

    // 5. The quota: the API does not report it.
    out.push(if quota_hit {
        finding(
            check::QUOTA,
            FindingStatus::Warn,
            "exhausted",
            "the API refused a request with 2500: the quota is used up for now".to_owned(),
            Some("wait before a run (the penalty lasts \"a period of time\"), or lower --rate".to_owned()),
            json!({}),
        )
    } else {
        finding(
            check::QUOTA,
            FindingStatus::Ok,
            "unreported",
            "the API does not report how much of the quota is used (documented: 2000 requests per 3600 s \
             per account, all its keys together)"
                .to_owned(),
            Some("keep --rate at or below the default 1800/h for all tools using this account together".to_owned()),
            json!({}),
        )
    });
    out
}

/// A filtered or unfiltered page of up to 100 jobs.
async fn list(client: &Client, zone: &Zone, job_action: Option<&str>) -> Call<DescribeJobsResponse> {
    let filter = JobFilter { job_action: job_action.map(str::to_owned), ..JobFilter::default() };
    client.describe_jobs_filtered(zone, &filter).await
}

/// The endpoint and credential findings when the first call failed.
fn first_call_failed(e: &ApiError) -> (NewFinding, NewFinding) {
    let detail = json!({ "class": e.class(), "ret_code": e.ret_code(), "http_status": e.http_status() });
    let unchecked = |why: &str| {
        finding(check::CREDENTIALS, FindingStatus::Fail, "unknown", format!("not checked: {why}"), None, detail.clone())
    };
    match e {
        ApiError::NotApi(_) => (
            finding(
                check::ENDPOINT,
                FindingStatus::Fail,
                "not_api",
                format!("this is not the QingCloud API: {}", e.failure()),
                Some("check the endpoint URL (--endpoint, QINGCLOUD_ENDPOINT) and any proxy in between".to_owned()),
                detail.clone(),
            ),
            unchecked("the endpoint is not the API"),
        ),
        ApiError::AuthFailed(_) => (
            finding(check::ENDPOINT, FindingStatus::Ok, "api", "answers as the QingCloud API".to_owned(), None, json!({})),
            finding(
                check::CREDENTIALS,
                FindingStatus::Fail,
                "refused",
                format!("refused: {}", e.failure()),
                Some("check the access key id and secret (QINGCLOUD_ACCESS_KEY, QINGCLOUD_SECRET_KEY or the config file)".to_owned()),
                detail.clone(),
            ),
        ),
        _ if e.ret_code().is_some() => {
            // The API answered (2500, 5100, 1300 with no usable Date, …): it is there, and the
            // credentials passed the signature check before such an answer.
            let api = finding(check::ENDPOINT, FindingStatus::Ok, "api", "answers as the QingCloud API".to_owned(), None, json!({}));
            let status = if matches!(e, ApiError::Expired(_)) { FindingStatus::Fail } else { FindingStatus::Warn };
            let credentials = finding(
                check::CREDENTIALS,
                status,
                "unknown",
                format!("not confirmed: {e}"),
                Some("run doctor again later; a run would meet the same answer".to_owned()),
                detail.clone(),
            );
            (api, credentials)
        }
        _ => (
            finding(
                check::ENDPOINT,
                FindingStatus::Fail,
                "unreachable",
                format!("cannot be used: {e}"),
                Some("check the endpoint URL, DNS, firewalls and proxies".to_owned()),
                detail.clone(),
            ),
            unchecked("the endpoint could not be used"),
        ),
    }
}

fn clock_finding(skew: TimeDelta) -> NewFinding {
    let secs = skew.num_seconds();
    let (ahead, by) = if secs >= 0 { ("ahead of", secs) } else { ("behind", -secs) };
    let summary = format!("the API's clock is about {by} s {ahead} this machine's (from its Date header)");
    let detail = json!({ "skew_ms": skew.num_milliseconds() });
    let advice = "synchronise this machine's clock (NTP); runs measure the difference, but the API refuses \
                  time stamps more than 60 s off";
    let status = if skew.abs() <= CLOCK_OK {
        FindingStatus::Ok
    } else if skew.abs() <= CLOCK_REFUSED {
        FindingStatus::Warn
    } else {
        FindingStatus::Fail
    };
    let advice = (status != FindingStatus::Ok).then(|| advice.to_owned());
    finding(check::CLOCK_SKEW, status, &secs.to_string(), summary, advice, detail)
}
