//! `DescribeJobs` (reference §4): one owner's jobs in one zone, by id (`jobs.N`) or listed,
//! filtered by `status.N` and `job_action`, paged by `offset`/`limit`. Listing order, lag and
//! unknown ids follow the world's `api` block, which the book applies.
//!
//! It reads the book and changes nothing but the unrelated jobs a zone starts with.

use crate::qingcloud::types::{ret, DescribeJobsResponse, JobStatus, DESCRIBE_JOBS};
use crate::sim::answer::{refuse, response_action, to_json, Refusal};
use crate::sim::clock::Now;
use crate::sim::jobs::listing::{FindError, JobQuery};
use crate::sim::request::Params;

use super::{Cloud, DEFAULT_LIMIT, MAX_LIMIT};

pub fn describe_jobs(cloud: &mut Cloud, params: &Params<'_>, owner: &str, now: Now) -> Result<Vec<u8>, Refusal> {
    let zone = params.zone()?;
    let ids = params.indexed("jobs")?;
    let mut statuses = Vec::new();
    for s in params.indexed("status")? {
        match JobStatus::parse(&s) {
            JobStatus::Unknown(_) | JobStatus::DoneWithFailure => {
                return Err(refuse(ret::MALFORMED, format!("ParameterError, status [{s}] is not a job status")));
            }
            known => statuses.push(known),
        }
    }
    let offset = params.number("offset")?.unwrap_or(0);
    let limit = params.number("limit")?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    if params.number("verbose")?.is_some_and(|v| v > 1) {
        return Err(refuse(ret::MALFORMED, "ParameterError, verbose must be 0 or 1"));
    }
    cloud.book.settle(now);
    cloud.seed_zone(zone, owner, now);
    let query = JobQuery {
        owner,
        zone,
        ids: (!ids.is_empty()).then_some(ids.as_slice()),
        statuses: &statuses,
        job_action: params.get("job_action"),
    };
    let found = cloud.book.find(&query, now).map_err(|e| match e {
        FindError::UnknownJob(id) => refuse(ret::NOT_FOUND, format!("ResourceNotFound, job [{id}] not found")),
    })?;
    to_json(&DescribeJobsResponse {
        action: response_action(DESCRIBE_JOBS),
        ret_code: ret::OK,
        message: String::new(),
        total_count: found.len() as u64,
        job_set: found.into_iter().skip(offset).take(limit).collect(),
    })
}
