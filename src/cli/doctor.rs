//! `doctor`: read-only checks of an endpoint and access key before the first real run, printed
//! as `ok` / `warn` / `fail` with what to do, and saved in the database (audited) so runs can use
//! what was found.
//!
//! It sends only `DescribeJobs` (never `RunClusterCustomService`): one unfiltered page, one page
//! filtered by `job_action`, and one call naming a job id that cannot exist. The target is
//! resolved exactly as for `run`, `--simulate` included.
//!
//! Exit codes: 0 when no check failed, 69 when the API could not be used (unreachable, not the
//! API, credentials refused, a clock the API refuses), 78 for configuration problems (no zone,
//! a database that cannot be written).

use std::os::unix::fs::PermissionsExt;

use chrono::TimeDelta;
use rand::Rng;
use serde_json::json;

use crate::app::target::{env_zone, Target};
use crate::cli::{DoctorArgs, GlobalOpts};
use crate::exit::{Coded, Exit};
use crate::manifest::Zone;
use crate::qingcloud::client::{Call, Client, JobFilter};
use crate::qingcloud::error::ApiError;
use crate::qingcloud::types::{DescribeJobsResponse, Job, RUN_CLUSTER_CUSTOM_SERVICE};
use crate::store::{check, FindingStatus, NewFinding, Store};

/// A clock difference up to this is within what the `Date` header (whole seconds) and the
/// latency can tell.
const CLOCK_OK: TimeDelta = TimeDelta::seconds(2);
/// The API refuses a `time_stamp` further off than this (1300).
const CLOCK_REFUSED: TimeDelta = TimeDelta::seconds(60);

/// The zone probed when `--simulate` is given and nothing else names one.
const SIMULATED_ZONE: &str = "sh1a";

pub async fn run(global: &GlobalOpts, args: DoctorArgs) -> anyhow::Result<Exit> {
    let target = Target::resolve(&args.api, args.simulate).await?;
    let zone = match args.zone.clone().or_else(|| target.default_zone()).or_else(env_zone) {
        Some(z) => z,
        None if args.simulate => Zone::parse(SIMULATED_ZONE).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => {
            return Err(Coded::new(
                Exit::Config,
                "no zone to check: pass --zone, set QINGCLOUD_ZONE, or give `zone` in the config file",
            )
            .into())
        }
    };
    let access_key_id = target.settings.credentials.access_key_id.clone();
    println!("qc-offboard doctor: {} as {access_key_id}, zone {zone}", target.settings.endpoint);

    let client = Client::new(&target.settings)?;
    let mut findings = api_checks(&client, &zone).await;
    let api_unusable = findings.iter().any(|f| f.status == FindingStatus::Fail);
    for f in &findings {
        print_finding(f);
    }

    // The database last: it is where the findings go.
    let path = crate::store::resolve_path(global.db.as_deref(), target.simulate)?;
    let store = match Store::open(&path).await {
        Ok(store) => Some(store),
        Err(e) => {
            let f = finding(
                check::DATABASE,
                FindingStatus::Fail,
                "unusable",
                format!("cannot open or create {}: {e}", path.display()),
                Some("pass --db or set QC_OFFBOARD_DB to a path this user can write".to_owned()),
                json!({ "path": path.display().to_string() }),
            );
            print_finding(&f);
            None
        }
    };
    let Some(store) = store else {
        println!("findings not saved: the database cannot be used");
        return Ok(Exit::Config);
    };
    let db = database_check(&store);
    print_finding(&db);
    findings.push(db);
    let checkup =
        store.record_findings(&target.recorded_endpoint, &access_key_id, Some(zone.as_str()), &findings).await;
    store.close().await;
    match checkup {
        Ok(id) => println!("findings saved in {} (checkup {id})", path.display()),
        Err(e) => {
            println!("fail  database: cannot write the findings to {}: {e}", path.display());
            return Ok(Exit::Config);
        }
    }
    Ok(if api_unusable { Exit::Unavailable } else { Exit::Ok })
}

fn print_finding(f: &NewFinding) {
    println!("{:<5} {}: {}", f.status.as_str(), f.name, f.summary);
    if let Some(advice) = &f.advice {
        println!("      what to do: {advice}");
    }
}

fn finding(
    name: &str,
    status: FindingStatus,
    value: &str,
    summary: String,
    advice: Option<String>,
    detail: serde_json::Value,
) -> NewFinding {
    NewFinding { name: name.to_owned(), status, value: value.to_owned(), summary, advice, detail }
}

/// Every check that needs the API. Stops after the endpoint or credential checks when the API
/// cannot be used (those findings then carry `fail`).
async fn api_checks(client: &Client, zone: &Zone) -> Vec<NewFinding> {
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

/// `j-` and 11 lower-case letters or digits, like a real job id, drawn at random so that it
/// names no job.
fn impossible_job_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..11).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("j-{tail}")
}

fn unknown_id_finding(id: &str, answer: Option<Result<DescribeJobsResponse, ApiError>>) -> NewFinding {
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
fn order_finding(page: Option<&DescribeJobsResponse>) -> NewFinding {
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
fn filter_finding(
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

fn database_check(store: &Store) -> NewFinding {
    let path = store.path();
    let detail = json!({ "path": path.display().to_string() });
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 == 0 => finding(
            check::DATABASE,
            FindingStatus::Ok,
            "private",
            format!("{} is writable and private (mode {:o})", path.display(), meta.permissions().mode() & 0o777),
            None,
            detail,
        ),
        Ok(meta) => finding(
            check::DATABASE,
            FindingStatus::Warn,
            "readable_by_others",
            format!("{} is readable by other users (mode {:o})", path.display(), meta.permissions().mode() & 0o777),
            Some(format!("chmod 600 {}", path.display())),
            detail,
        ),
        Err(e) => finding(
            check::DATABASE,
            FindingStatus::Fail,
            "unusable",
            format!("{}: {e}", path.display()),
            Some("pass --db or set QC_OFFBOARD_DB to a path this user can write".to_owned()),
            detail,
        ),
    }
}
