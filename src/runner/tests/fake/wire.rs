//! The fake's side of the [`Api`] trait: each action shaped as the HTTP client shapes it — the
//! record to store (parameters without a signature, status, ret_code, job id, latency) and the
//! classified result — from what the fake world holds at that virtual instant.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

use super::{account_key, make_job, Answer, FakeApi, FakeJob};
use crate::domain::{ClusterId, Zone};
use crate::qingcloud::api::{Api, ApiFuture};
use crate::qingcloud::client::{ApiError, Call, CallRecord, Failure, JobFilter, SendGuard, Withheld};
use crate::qingcloud::signer::format_time_stamp;
use crate::qingcloud::types::{
    ret, ClusterInfo, DelUserParams, DescribeClustersResponse, DescribeJobsResponse, Job, JobStatus,
    RunClusterCustomServiceResponse, DEL_USER, DESCRIBE_CLUSTERS, DESCRIBE_JOBS, MYSQL_PLUS_APP_ID, ROLE_MAININSTANCE,
    RUN_CLUSTER_CUSTOM_SERVICE,
};

impl FakeApi {
    fn record(
        &self,
        action: &str,
        zone: &Zone,
        params: Vec<(String, String)>,
        started_at: DateTime<Utc>,
    ) -> CallRecord {
        let mut all = vec![("action".to_owned(), action.to_owned()), ("zone".to_owned(), zone.as_str().to_owned())];
        all.extend(params);
        all.sort();
        CallRecord {
            action: action.to_owned(),
            params: all,
            http_status: Some(200),
            ret_code: Some(ret::OK),
            message: None,
            job_id: None,
            started_at,
            latency: self.latency,
            server_date: None,
        }
    }

    /// `ahead`: how far the API's clock is ahead of the runner's.
    fn job_view(&self, j: &FakeJob, now: Instant, wall: DateTime<Utc>, ahead: Duration) -> Job {
        let age = now.saturating_duration_since(j.created);
        let done = j.runs_for.is_some_and(|d| age >= d);
        let status = match (done, age < Duration::from_millis(100)) {
            (true, _) => JobStatus::Successful,
            (false, true) => JobStatus::Pending,
            (false, false) => JobStatus::Working,
        };
        let status_time = match (done, j.runs_for) {
            (true, Some(d)) => j.created_wall + TimeDelta::from_std(d).unwrap_or_default(),
            _ => wall,
        };
        let ahead = TimeDelta::from_std(ahead).unwrap_or_default();
        let params = DelUserParams::new(&j.user, &j.host).to_json();
        let directive = serde_json::json!({
            "action": RUN_CLUSTER_CUSTOM_SERVICE, "cluster": j.cluster, "role": ROLE_MAININSTANCE,
            "service": DEL_USER, "service_params": params, "zone": j.zone,
        });
        Job {
            job_id: j.id.clone(),
            job_action: RUN_CLUSTER_CUSTOM_SERVICE.to_owned(),
            status,
            create_time: format_time_stamp(j.created_wall + ahead),
            status_time: format_time_stamp(status_time + ahead),
            resource_ids: j.cluster.clone(),
            owner: "usr-fake".to_owned(),
            error_codes: String::new(),
            directive: directive.to_string(),
        }
    }
}

fn lost(record: &mut CallRecord) -> ApiError {
    record.http_status = None;
    record.ret_code = None;
    let message = "connection lost before the answer: connection reset by peer".to_owned();
    record.message = Some(message.clone());
    ApiError::Transient(Failure { ret_code: None, http_status: None, message, maybe_applied: true })
}

fn refused(record: &mut CallRecord, code: i64, message: &str) -> ApiError {
    record.ret_code = Some(code);
    record.message = Some(message.to_owned());
    ApiError::from_ret_code(code, message, Some(200))
}

fn throttled<T>(mut record: CallRecord) -> Call<T> {
    let err = refused(&mut record, ret::QUOTA_EXCEEDED, "QuotaExceeded, request quota exceeded; try again later");
    Call { record, result: Err(err) }
}

impl Api for FakeApi {
    fn del_user<'a>(
        &'a self,
        cluster: &'a ClusterId,
        zone: &'a Zone,
        params: &'a DelUserParams,
        guard: &'a dyn SendGuard,
    ) -> ApiFuture<'a, Result<Call<RunClusterCustomServiceResponse>, Withheld>> {
        Box::pin(async move {
            tokio::select! {
                biased;
                () = guard.cancelled() => return Err(Withheld("the run is stopping".to_owned())),
                () = self.gate() => {}
            }
            guard.check().await.map_err(Withheld)?;
            let (started, started_at) = (self.clock.instant(), self.clock.now());
            let key = account_key(cluster.as_str(), &params.user, &params.host);
            let sent = vec![
                ("cluster".to_owned(), cluster.as_str().to_owned()),
                ("role".to_owned(), ROLE_MAININSTANCE.to_owned()),
                ("service".to_owned(), DEL_USER.to_owned()),
                ("service_params".to_owned(), params.to_json()),
            ];
            let mut record = self.record(RUN_CLUSTER_CUSTOM_SERVICE, zone, sent, started_at);
            if self.arrive(RUN_CLUSTER_CUSTOM_SERVICE, false, Some(key)) {
                self.clock.sleep_until(started + self.latency).await;
                return Ok(throttled(record));
            }
            let (answer, job) = {
                let mut w = self.world();
                let answer = w.scripts.get_mut(&params.user).and_then(VecDeque::pop_front).unwrap_or(Answer::Accept);
                let runs_for = w.runs_for.get(&params.user).copied().unwrap_or(Some(w.job_runs_for));
                let job = matches!(answer, Answer::Accept | Answer::LostAfterEffect).then(|| {
                    make_job(
                        &mut w,
                        zone.as_str(),
                        cluster.as_str(),
                        &params.user,
                        &params.host,
                        runs_for,
                        started,
                        started_at,
                    )
                });
                (answer, job)
            };
            self.clock.sleep_until(started + self.latency).await;
            let result = match (answer, job) {
                (Answer::Accept, Some(job_id)) => {
                    record.job_id = Some(job_id.clone());
                    Ok(RunClusterCustomServiceResponse {
                        action: format!("{RUN_CLUSTER_CUSTOM_SERVICE}Response"),
                        ret_code: ret::OK,
                        job_id,
                        cluster_id: cluster.as_str().to_owned(),
                        ..RunClusterCustomServiceResponse::default()
                    })
                }
                (Answer::Refuse(code, message), _) => Err(refused(&mut record, code, &message)),
                _ => Err(lost(&mut record)),
            };
            Ok(Call { record, result })
        })
    }

    fn describe_jobs<'a>(
        &'a self,
        zone: &'a Zone,
        ids: &'a [String],
    ) -> ApiFuture<'a, Vec<Call<DescribeJobsResponse>>> {
        Box::pin(async move {
            let mut calls = Vec::new();
            for batch in ids.chunks(100) {
                self.gate().await;
                let (started, started_at) = (self.clock.instant(), self.clock.now());
                let mut sent: Vec<(String, String)> =
                    batch.iter().enumerate().map(|(i, id)| (format!("jobs.{}", i + 1), id.clone())).collect();
                sent.push(("limit".to_owned(), batch.len().to_string()));
                let mut record = self.record(DESCRIBE_JOBS, zone, sent, started_at);
                let throttled_now = self.arrive(DESCRIBE_JOBS, false, None);
                self.asked_for(batch);
                self.clock.sleep_until(started + self.latency).await;
                if throttled_now {
                    calls.push(throttled(record));
                    continue;
                }
                let w = self.world();
                let in_zone = |id: &String| w.jobs.iter().find(|j| &j.id == id && j.zone == zone.as_str());
                // The documented behaviour: an id the API does not know fails the whole call.
                if let Some(unknown) = batch.iter().find(|id| in_zone(id).is_none()) {
                    let message = format!("ResourceNotFound, resource [{unknown}] not found");
                    let err = refused(&mut record, ret::NOT_FOUND, &message);
                    calls.push(Call { record, result: Err(err) });
                    continue;
                }
                let job_set: Vec<Job> = batch
                    .iter()
                    .filter_map(in_zone)
                    .map(|j| self.job_view(j, started, started_at, w.clock_ahead))
                    .collect();
                let total_count = job_set.len() as u64;
                let resp = DescribeJobsResponse { ret_code: ret::OK, total_count, job_set, ..Default::default() };
                calls.push(Call { record, result: Ok(resp) });
            }
            calls
        })
    }

    fn list_jobs<'a>(&'a self, zone: &'a Zone, filter: &'a JobFilter) -> ApiFuture<'a, Call<DescribeJobsResponse>> {
        Box::pin(async move {
            self.gate().await;
            let (started, started_at) = (self.clock.instant(), self.clock.now());
            let mut sent =
                vec![("offset".to_owned(), filter.offset.to_string()), ("limit".to_owned(), filter.limit.to_string())];
            if let Some(action) = &filter.job_action {
                sent.push(("job_action".to_owned(), action.clone()));
            }
            let record = self.record(DESCRIBE_JOBS, zone, sent, started_at);
            let throttled_now = self.arrive(DESCRIBE_JOBS, true, None);
            self.clock.sleep_until(started + self.latency).await;
            if throttled_now {
                return throttled(record);
            }
            let w = self.world();
            // Newest first, as the API lists.
            let listed: Vec<&FakeJob> = w.jobs.iter().rev().filter(|j| j.zone == zone.as_str()).collect();
            let page: Vec<Job> = listed
                .iter()
                .skip(filter.offset as usize)
                .take(filter.limit.clamp(1, 100) as usize)
                .map(|j| self.job_view(j, started, started_at, w.clock_ahead))
                .collect();
            let resp = DescribeJobsResponse {
                ret_code: ret::OK,
                total_count: listed.len() as u64,
                job_set: page,
                ..Default::default()
            };
            Call { record, result: Ok(resp) }
        })
    }

    fn describe_clusters<'a>(
        &'a self,
        zone: &'a Zone,
        ids: &'a [String],
    ) -> ApiFuture<'a, Vec<Call<DescribeClustersResponse>>> {
        Box::pin(async move {
            let mut calls = Vec::new();
            for batch in ids.chunks(100) {
                self.gate().await;
                let record = self.record(DESCRIBE_CLUSTERS, zone, Vec::new(), self.clock.now());
                if self.arrive(DESCRIBE_CLUSTERS, false, None) {
                    calls.push(throttled(record));
                    continue;
                }
                // A cluster named `cl-gone…` does not exist: it is left out of the answer.
                let cluster_set = batch
                    .iter()
                    .filter(|id| !id.starts_with("cl-gone"))
                    .map(|id| ClusterInfo {
                        cluster_id: id.clone(),
                        app_id: MYSQL_PLUS_APP_ID.to_owned(),
                        status: "active".to_owned(),
                        ..ClusterInfo::default()
                    })
                    .collect::<Vec<_>>();
                let total_count = cluster_set.len() as u64;
                let resp =
                    DescribeClustersResponse { ret_code: ret::OK, total_count, cluster_set, ..Default::default() };
                calls.push(Call { record, result: Ok(resp) });
            }
            calls
        })
    }

    fn set_clock_offset(&self, _offset: TimeDelta) {}
}
