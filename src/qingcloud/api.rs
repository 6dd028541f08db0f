//! The QingCloud API as the runner sees it: the few actions a run makes, behind one trait, so the
//! runner can be driven by the HTTP [`Client`] in production and by a scripted fake in its unit
//! tests.
//!
//! It owns the *shape* of each action — what goes in, and the [`Call`] (the record to store and
//! the typed result) that comes out — and nothing else. An implementation must not retry, sleep
//! for back-off or decide anything about tasks, and every `del_user` it sends must pass the
//! runner's last check ([`SendGuard`]) right before it is signed: an implementation that skips the
//! guard could send a request after a stop.

use std::future::Future;
use std::pin::Pin;

use chrono::TimeDelta;

use crate::domain::{ClusterId, Zone};
use crate::qingcloud::client::{Call, Client, JobFilter, SendGuard, Withheld};
use crate::qingcloud::types::{
    DelUserParams, DescribeClustersResponse, DescribeJobsResponse, RunClusterCustomServiceResponse, DEL_USER,
    ROLE_MAININSTANCE,
};

/// A future an [`Api`] returns: boxed, so the runner holds the API as `dyn Api`.
pub type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The actions a run makes.
pub trait Api: Send + Sync {
    /// `RunClusterCustomService` with `service=del_user` on the cluster's `maininstance` role.
    /// `Err` when `guard` withheld the request: nothing was signed or sent.
    fn del_user<'a>(
        &'a self,
        cluster: &'a ClusterId,
        zone: &'a Zone,
        params: &'a DelUserParams,
        guard: &'a dyn SendGuard,
    ) -> ApiFuture<'a, Result<Call<RunClusterCustomServiceResponse>, Withheld>>;

    /// `DescribeJobs` by id: one [`Call`] per batch of at most 100 ids.
    fn describe_jobs<'a>(&'a self, zone: &'a Zone, ids: &'a [String])
        -> ApiFuture<'a, Vec<Call<DescribeJobsResponse>>>;

    /// One page of `DescribeJobs` selected by `filter` (reconciliation's listing).
    fn list_jobs<'a>(&'a self, zone: &'a Zone, filter: &'a JobFilter) -> ApiFuture<'a, Call<DescribeJobsResponse>>;

    /// `DescribeClusters` by id: one [`Call`] per batch of at most 100 ids (preflight).
    fn describe_clusters<'a>(
        &'a self,
        zone: &'a Zone,
        ids: &'a [String],
    ) -> ApiFuture<'a, Vec<Call<DescribeClustersResponse>>>;

    /// Sign from now on with our clock shifted by `offset` (the API's clock minus ours), after
    /// the API refused a time stamp or before it would.
    fn set_clock_offset(&self, offset: TimeDelta);

    /// Tries of a read-only lookup that got no usable answer (preflight): the client's
    /// `connection_retries`; three unless an implementation says otherwise.
    fn lookup_tries(&self) -> u32 {
        3
    }
}

impl Api for Client {
    fn del_user<'a>(
        &'a self,
        cluster: &'a ClusterId,
        zone: &'a Zone,
        params: &'a DelUserParams,
        guard: &'a dyn SendGuard,
    ) -> ApiFuture<'a, Result<Call<RunClusterCustomServiceResponse>, Withheld>> {
        Box::pin(self.run_cluster_custom_service_guarded(
            cluster,
            zone,
            ROLE_MAININSTANCE,
            DEL_USER,
            params,
            Some(guard),
        ))
    }

    fn describe_jobs<'a>(
        &'a self,
        zone: &'a Zone,
        ids: &'a [String],
    ) -> ApiFuture<'a, Vec<Call<DescribeJobsResponse>>> {
        Box::pin(Client::describe_jobs(self, zone, ids))
    }

    fn list_jobs<'a>(&'a self, zone: &'a Zone, filter: &'a JobFilter) -> ApiFuture<'a, Call<DescribeJobsResponse>> {
        Box::pin(self.describe_jobs_filtered(zone, filter))
    }

    fn describe_clusters<'a>(
        &'a self,
        zone: &'a Zone,
        ids: &'a [String],
    ) -> ApiFuture<'a, Vec<Call<DescribeClustersResponse>>> {
        Box::pin(Client::describe_clusters(self, zone, ids))
    }

    fn set_clock_offset(&self, offset: TimeDelta) {
        Client::set_clock_offset(self, offset);
    }

    fn lookup_tries(&self) -> u32 {
        Client::lookup_tries(self)
    }
}
