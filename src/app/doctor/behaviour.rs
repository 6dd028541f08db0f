//! What the API does where its documentation is silent, judged from answers already received:
//! a DescribeJobs naming a job that cannot exist (an error, or the id silently dropped), the
//! order of a listing, and whether `job_action` filters. Runs rely on none of these; the
//! findings say what a run does about each.
//!
//! It judges answers it is given; the only thing it makes is the made-up job id.

use rand::Rng;
use serde_json::json;

use crate::qingcloud::error::ApiError;
use crate::qingcloud::types::{DescribeJobsResponse, Job, RUN_CLUSTER_CUSTOM_SERVICE};
use crate::store::{check, FindingStatus, NewFinding};

use super::finding::finding;

/// `j-` and 11 lower-case letters or digits, like a real job id, drawn at random so that it
/// names no job.
pub(super) fn impossible_job_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..11).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("j-{tail}")
}

pub(super) fn unknown_id_finding(id: &str, answer: Option<Result<DescribeJobsResponse, ApiError>>) -> NewFinding {
    let name = check::UNKNOWN_JOB_ID;
    match answer {
        Some(Err(e)) if e.unknown_job_id() == Some(id) => finding(
            name,
            FindingStatus::Ok,
            "error",
            format!("error: a DescribeJobs naming an unknown job is refused as a whole ({})", e.failure()),
            None,
            json!({ "probe": id, "ret_code": e.ret_code(), "message": e.message() }),
        ),
        Some(Err(e)) if e.ret_code() == Some(crate::qingcloud::types::ret::NOT_FOUND) => finding(
            name,
            FindingStatus::Warn,
            "error",
            format!("error, without naming the id: {}", e.failure()),
            Some("runs isolate an unknown id by splitting its batch".to_owned()),
            json!({ "probe": id, "ret_code": e.ret_code(), "message": e.message() }),
        ),
        Some(Ok(resp)) if resp.job_set.iter().all(|j| j.job_id != id) => finding(
            name,
            FindingStatus::Warn,
            "drop",
            "drop: an unknown job is silently left out of the answer (undocumented)".to_owned(),
            Some("nothing; runs never take a missing job for proof that none exists".to_owned()),
            json!({ "probe": id, "total_count": resp.total_count }),
        ),
        Some(Ok(_)) => finding(
            name,
            FindingStatus::Warn,
            "unknown",
            format!("the API listed the made-up job {id}"),
            None,
            json!({ "probe": id }),
        ),
        Some(Err(e)) => finding(
            name,
            FindingStatus::Warn,
            "unknown",
            format!("not determined: {e}"),
            Some("run doctor again".to_owned()),
            json!({ "probe": id, "class": e.class(), "ret_code": e.ret_code() }),
        ),
        None => finding(name, FindingStatus::Warn, "unknown", "not determined".to_owned(), None, json!({})),
    }
}

/// Listing order from the create times of one page (newest first is what runs read fastest).
pub(super) fn order_finding(page: Option<&DescribeJobsResponse>) -> NewFinding {
    let name = check::LISTING_ORDER;
    let Some(page) = page else {
        return finding(name, FindingStatus::Warn, "unknown", "not determined".to_owned(), None, json!({}));
    };
    let times: Vec<_> = page.job_set.iter().filter_map(Job::create_time).collect();
    let detail = json!({ "jobs": page.job_set.len(), "with_create_time": times.len() });
    let (mut up, mut down) = (false, false);
    for w in times.windows(2) {
        up |= w[1] > w[0];
        down |= w[1] < w[0];
    }
    let unknown = |why: String| {
        finding(
            name,
            FindingStatus::Warn,
            "unknown",
            why,
            Some("run doctor again once the zone has jobs; until then runs assume no order".to_owned()),
            detail.clone(),
        )
    };
    match (up, down) {
        _ if times.len() < 2 => unknown(format!(
            "unknown: the zone's first page has {} job(s) with a create_time, fewer than 2",
            times.len()
        )),
        (false, false) => unknown("unknown: every listed job has the same create_time".to_owned()),
        (false, true) => {
            finding(name, FindingStatus::Ok, "newest_first", "newest first".to_owned(), None, detail.clone())
        }
        (true, false) => finding(
            name,
            FindingStatus::Warn,
            "oldest_first",
            "oldest first (undocumented)".to_owned(),
            Some("nothing; runs read every page when looking for a job".to_owned()),
            detail.clone(),
        ),
        (true, true) => finding(
            name,
            FindingStatus::Warn,
            "unordered",
            "in no order of create_time".to_owned(),
            Some("nothing; runs read every page when looking for a job".to_owned()),
            detail.clone(),
        ),
    }
}

/// Is `job_action` honoured? A filtered page holding other actions means ignored; other
/// actions in the unfiltered page and none in the filtered one means honoured.
pub(super) fn filter_finding(
    all: Option<&DescribeJobsResponse>,
    filtered: Result<&DescribeJobsResponse, &ApiError>,
) -> NewFinding {
    let name = check::JOB_ACTION_FILTER;
    let filtered = match filtered {
        Ok(page) => page,
        Err(e) => {
            return finding(
                name,
                FindingStatus::Warn,
                "unknown",
                format!("not determined: {e}"),
                Some("run doctor again".to_owned()),
                json!({ "class": e.class(), "ret_code": e.ret_code() }),
            )
        }
    };
    let other = |j: &&Job| j.job_action != RUN_CLUSTER_CUSTOM_SERVICE;
    let others_filtered = filtered.job_set.iter().filter(other).count();
    let others_all = all.map_or(0, |p| p.job_set.iter().filter(other).count());
    let detail =
        json!({ "other_actions_in_filtered_page": others_filtered, "other_actions_in_unfiltered_page": others_all });
    if others_filtered > 0 {
        finding(
            name,
            FindingStatus::Warn,
            "ignored",
            format!("ignored: a page filtered by job_action={RUN_CLUSTER_CUSTOM_SERVICE} held {others_filtered} job(s) of other kinds"),
            Some("nothing; runs filter pages themselves".to_owned()),
            detail,
        )
    } else if others_all > 0 {
        finding(name, FindingStatus::Ok, "honoured", "honoured".to_owned(), None, detail)
    } else {
        finding(
            name,
            FindingStatus::Warn,
            "unknown",
            "unknown: the zone's first page holds no jobs of other kinds to tell by".to_owned(),
            Some("nothing; runs filter pages themselves until doctor can tell".to_owned()),
            detail,
        )
    }
}
