//! The simulated cloud's state: clusters, their accounts and the jobs run against them.
//!
//! A job's status is a function of time: `pending` for `pending_ms`, then `working` for
//! `working_ms` (or a duration drawn from `working_ms..=working_ms_max` at creation), then
//! final. Nothing runs in the background; [`Book::settle`] applies the effects of every job
//! whose end has passed, in the order they ended, before anything reads or changes the state.
//! That is when a job "runs": it succeeds and deletes the account if the account exists at that
//! moment; otherwise it fails (or succeeds without effect, as the world's `api.missing_account`
//! says), and it fails when the fail-rate draw doomed it.
//!
//! Listings follow the world's `api` block: their order, whether `job_action` filters, how
//! long a new job stays out of listings, and whether an unknown id in `jobs.N` is an error.
//!
//! The book and a job's lifecycle live here; the clusters and accounts jobs act on are
//! `inventory`, listings `listing`, the unrelated jobs a zone starts with `unrelated`, and the
//! jobs that ran at once on one cluster `overlaps`.
//!
//! This module knows nothing about HTTP, signatures or quotas.

mod inventory;
pub mod listing;
mod overlaps;
mod unrelated;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::qingcloud::signer::format_time_stamp;
use crate::qingcloud::types::{Job, JobStatus};

use super::clock::Now;
use super::stats::Overlap;
use super::world::{ListOrder, MissingAccount, Model, UnknownJobId};

/// `error_codes` of a job whose account did not exist when it ran.
pub const ERROR_NO_SUCH_ACCOUNT: &str = "2100";
/// `error_codes` of a job failed by the world's `fail_rate`.
pub const ERROR_INJECTED: &str = "5000";

/// (cluster, user, host).
pub type AccountKey = (String, String, String);

#[derive(Debug)]
struct AccountRec {
    zone: String,
    exists: bool,
    del_user_accepted: u64,
    deleted_by: Option<String>,
}

#[derive(Debug)]
struct JobRec {
    id: String,
    action: String,
    zone: String,
    owner: String,
    account: AccountKey,
    created: Instant,
    created_wall: DateTime<Utc>,
    /// How long it stays `working`.
    working: Duration,
    /// Sort key of `ListOrder::Random`, drawn at creation.
    shuffle: u64,
    /// One of the unrelated jobs a zone starts with (not counted in statistics).
    unrelated: bool,
    /// The fail-rate draw made at creation.
    doomed: bool,
    /// Set by `settle` once the job has ended: (status, error_codes).
    outcome: Option<(JobStatus, &'static str)>,
    directive: String,
}

/// What a new job is asked to do.
pub struct NewJob<'a> {
    pub id: String,
    pub action: &'a str,
    pub zone: &'a str,
    pub owner: &'a str,
    pub cluster: &'a str,
    pub user: &'a str,
    pub host: &'a str,
    pub doomed: bool,
    pub directive: String,
    /// How long it stays `working`.
    pub working: Duration,
    /// Sort key of `ListOrder::Random`.
    pub shuffle: u64,
}

pub struct Book {
    pending: Duration,
    auto: bool,
    missing_account: MissingAccount,
    order: ListOrder,
    unknown_id: UnknownJobId,
    /// `api.describe_jobs_omit_every`: every Nth job created is left out of answers by id.
    omit_every: usize,
    job_action_filter: bool,
    list_lag: Duration,
    unrelated_jobs: u32,
    /// (zone, owner) pairs already given their unrelated jobs.
    seeded: HashSet<(String, String)>,
    /// cluster id → zone. The auto world adds clusters as they are first addressed.
    clusters: HashMap<String, String>,
    accounts: BTreeMap<AccountKey, AccountRec>,
    jobs: Vec<JobRec>,
    by_id: HashMap<String, usize>,
    /// Jobs without an outcome, soonest end first.
    unsettled: BinaryHeap<Reverse<(Instant, usize)>>,
    /// cluster → the newest job on it.
    last_job: HashMap<String, usize>,
    /// Jobs created while another ran on their cluster.
    overlaps: overlaps::OverlapWatch,
}

impl Book {
    pub fn new(model: &Model) -> Self {
        let mut clusters = HashMap::new();
        let mut accounts = BTreeMap::new();
        if let Some(list) = &model.clusters {
            for (id, c) in list {
                clusters.insert(id.clone(), c.zone.clone());
                for (user, host) in &c.users {
                    let rec = AccountRec { zone: c.zone.clone(), exists: true, del_user_accepted: 0, deleted_by: None };
                    accounts.insert((id.clone(), user.clone(), host.clone()), rec);
                }
            }
        }
        Self {
            pending: model.pending,
            auto: model.clusters.is_none(),
            missing_account: model.api.missing_account,
            order: model.api.describe_jobs_order,
            unknown_id: model.api.describe_jobs_unknown_id,
            omit_every: usize::try_from(model.api.describe_jobs_omit_every).unwrap_or(usize::MAX),
            job_action_filter: model.api.job_action_filter,
            list_lag: model.list_lag,
            unrelated_jobs: model.unrelated_jobs,
            seeded: HashSet::new(),
            clusters,
            accounts,
            jobs: Vec::new(),
            by_id: HashMap::new(),
            unsettled: BinaryHeap::new(),
            last_job: HashMap::new(),
            overlaps: overlaps::OverlapWatch::default(),
        }
    }

    /// Apply the outcome of every job that has ended by `now`.
    pub fn settle(&mut self, now: Now) {
        while let Some(&Reverse((ends, i))) = self.unsettled.peek() {
            if ends > now.mono {
                break;
            }
            self.unsettled.pop();
            let job = &mut self.jobs[i];
            let account = self.accounts.get_mut(&job.account);
            job.outcome = Some(match account {
                _ if job.doomed => (JobStatus::Failed, ERROR_INJECTED),
                Some(acc) if acc.exists => {
                    acc.exists = false;
                    acc.deleted_by = Some(job.id.clone());
                    (JobStatus::Successful, "")
                }
                _ if self.missing_account == MissingAccount::Succeed => (JobStatus::Successful, ""),
                _ => (JobStatus::Failed, ERROR_NO_SUCH_ACCOUNT),
            });
        }
    }

    /// The job still pending or working on `cluster`, if any (call after `settle`).
    pub fn running_job(&self, cluster: &str) -> Option<&str> {
        let job = &self.jobs[*self.last_job.get(cluster)?];
        job.outcome.is_none().then_some(job.id.as_str())
    }

    pub fn has_job(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Record an accepted request's job. The account is created on first mention: existing in
    /// the auto world, missing in a world that lists its accounts.
    pub fn create(&mut self, new: NewJob<'_>, now: Now) {
        let key: AccountKey = (new.cluster.to_owned(), new.user.to_owned(), new.host.to_owned());
        let acc = self.accounts.entry(key.clone()).or_insert_with(|| AccountRec {
            zone: new.zone.to_owned(),
            exists: self.auto,
            del_user_accepted: 0,
            deleted_by: None,
        });
        acc.del_user_accepted += 1;
        // Concurrent requests may reach the lock in another order than their clocks were read.
        let created = self.jobs.last().map_or(now.mono, |j| j.created.max(now.mono));
        let ends = created + self.pending + new.working;
        self.overlaps.created(overlaps::Watched {
            id: &new.id,
            zone: new.zone,
            cluster: new.cluster,
            user: new.user,
            host: new.host,
            created,
            ends,
        });
        let idx = self.jobs.len();
        self.by_id.insert(new.id.clone(), idx);
        self.last_job.insert(new.cluster.to_owned(), idx);
        self.unsettled.push(Reverse((ends, idx)));
        self.jobs.push(JobRec {
            id: new.id,
            action: new.action.to_owned(),
            zone: new.zone.to_owned(),
            owner: new.owner.to_owned(),
            account: key,
            created,
            created_wall: now.wall,
            working: new.working,
            shuffle: new.shuffle,
            unrelated: false,
            doomed: new.doomed,
            outcome: None,
            directive: new.directive,
        });
    }

    /// Status and status time of a job at `now`.
    fn status(&self, j: &JobRec, now: Now) -> (JobStatus, DateTime<Utc>) {
        let since = |d: Duration| j.created_wall + chrono::Duration::from_std(d).unwrap_or_default();
        if let Some((status, _)) = &j.outcome {
            return (status.clone(), since(self.pending + j.working));
        }
        let elapsed = now.mono.saturating_duration_since(j.created);
        if elapsed < self.pending {
            (JobStatus::Pending, j.created_wall)
        } else {
            (JobStatus::Working, since(self.pending))
        }
    }

    fn view(&self, j: &JobRec, now: Now) -> Job {
        let (status, status_time) = self.status(j, now);
        Job {
            job_id: j.id.clone(),
            job_action: j.action.clone(),
            status,
            create_time: format_time_stamp(j.created_wall),
            status_time: format_time_stamp(status_time),
            resource_ids: j.account.0.clone(),
            owner: j.owner.clone(),
            error_codes: j.outcome.as_ref().map_or("", |(_, e)| *e).to_owned(),
            directive: j.directive.clone(),
        }
    }

    /// Jobs created by requests (the unrelated ones a zone starts with are not counted).
    pub fn job_count(&self) -> u64 {
        self.jobs.iter().filter(|j| !j.unrelated).count() as u64
    }

    /// Jobs created while an earlier job of their cluster was running (as many as the log
    /// holds), and how many more there were.
    pub fn overlaps(&self) -> (&[Overlap], u64) {
        (self.overlaps.overlaps(), self.overlaps.not_logged())
    }

    pub fn jobs_by_status(&self, now: Now) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for j in self.jobs.iter().filter(|j| !j.unrelated) {
            *out.entry(self.status(j, now).0.as_str().to_owned()).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::listing::JobQuery;
    use super::*;
    use crate::sim::world::World;

    pub(super) fn book(yaml: &str) -> Book {
        let world = World::parse(yaml, std::path::Path::new("w.yaml")).unwrap();
        Book::new(&world.check().unwrap())
    }

    fn job<'a>(id: &str, cluster: &'a str, user: &'a str, doomed: bool) -> NewJob<'a> {
        NewJob {
            id: id.to_owned(),
            action: "RunClusterCustomService",
            zone: "sh1a",
            owner: "usr-1",
            cluster,
            user,
            host: "%",
            doomed,
            directive: "{}".to_owned(),
            working: Duration::from_millis(200),
            shuffle: 0,
        }
    }

    fn status_of(b: &Book, id: &str, now: Now) -> (JobStatus, String) {
        let ids = [id.to_owned()];
        let q = JobQuery { owner: "usr-1", zone: "sh1a", ids: Some(&ids), statuses: &[], job_action: None };
        let j = b.find(&q, now).unwrap().pop().unwrap();
        (j.status, j.error_codes)
    }

    pub(super) const LISTED: &str =
        "clusters: [{id: cl-a, zone: sh1a, users: ['bob@%']}]\njobs: {pending_ms: 100, working_ms: 200}";

    #[test]
    fn a_job_moves_through_its_states_and_deletes_the_account() {
        let mut b = book(LISTED);
        let t0 = Now::current();
        assert!(b.cluster_in_zone("cl-a", "sh1a"));
        b.create(job("j-1", "cl-a", "bob", false), t0);
        assert_eq!(status_of(&b, "j-1", t0).0, JobStatus::Pending);
        let t1 = t0.after(Duration::from_millis(150));
        b.settle(t1);
        assert_eq!(status_of(&b, "j-1", t1).0, JobStatus::Working);
        assert_eq!(b.running_job("cl-a"), Some("j-1"));
        assert!(b.accounts()[0].exists);
        let t2 = t0.after(Duration::from_millis(300));
        b.settle(t2);
        assert_eq!(status_of(&b, "j-1", t2), (JobStatus::Successful, String::new()));
        assert_eq!(b.running_job("cl-a"), None);
        let acc = &b.accounts()[0];
        assert!(!acc.exists);
        assert_eq!((acc.del_user_accepted, acc.deleted_by.as_deref()), (1, Some("j-1")));
    }

    #[test]
    fn the_second_of_two_jobs_for_one_account_fails_and_unlisted_accounts_fail() {
        let mut b = book(LISTED);
        let t0 = Now::current();
        b.create(job("j-1", "cl-a", "bob", false), t0);
        b.create(job("j-2", "cl-a", "bob", false), t0);
        b.create(job("j-3", "cl-a", "eve", false), t0);
        let t = t0.after(Duration::from_secs(1));
        b.settle(t);
        assert_eq!(status_of(&b, "j-1", t).0, JobStatus::Successful);
        assert_eq!(status_of(&b, "j-2", t), (JobStatus::Failed, ERROR_NO_SUCH_ACCOUNT.to_owned()));
        assert_eq!(status_of(&b, "j-3", t), (JobStatus::Failed, ERROR_NO_SUCH_ACCOUNT.to_owned()));
        assert_eq!(b.accounts()[0].del_user_accepted, 2);
    }

    #[test]
    fn doomed_jobs_fail_and_leave_the_account() {
        let mut b = book(LISTED);
        let t0 = Now::current();
        b.create(job("j-1", "cl-a", "bob", true), t0);
        let t = t0.after(Duration::from_secs(1));
        b.settle(t);
        assert_eq!(status_of(&b, "j-1", t), (JobStatus::Failed, ERROR_INJECTED.to_owned()));
        assert!(b.accounts()[0].exists);
    }
}
