//! Jobs that ran at once on one cluster: the evidence behind "never two jobs at once on a
//! cluster", served in `/sim/stats` as `cluster_overlaps`.
//!
//! A job created by a request overlaps when, at its creation (the simulator's clock), an
//! earlier job of the same cluster (same cluster id and zone) has not ended yet, whether or not
//! a client has seen it end. A job ends when it turns final (`successful` or `failed`), which is
//! the instant [`super::Book::settle`] applies it; a job ending exactly at the new one's creation
//! has ended. Every job created by a request counts, whoever made it and whatever it became;
//! a request refused (1400 with `one_job_per_cluster`, or any other refusal) creates no job and
//! so no overlap.
//!
//! The unrelated jobs a zone starts with (`unrelated`) are not watched: they are finished before
//! the owner's first request, on clusters of their own, so they can never be running when a
//! job is created.
//!
//! It only records; it never refuses a request.

use std::collections::HashMap;
use std::time::Instant;

use crate::sim::stats::{Overlap, MAX_OVERLAP_LOG};

/// A job as the watch needs it.
pub struct Watched<'a> {
    pub id: &'a str,
    pub zone: &'a str,
    pub cluster: &'a str,
    pub user: &'a str,
    pub host: &'a str,
    pub created: Instant,
    /// When it turns final.
    pub ends: Instant,
}

/// The job of a cluster that ends last, of those created so far.
struct Latest {
    id: String,
    user: String,
    host: String,
    ends: Instant,
}

/// Per cluster, the job that ends last; and the overlaps seen.
#[derive(Default)]
pub struct OverlapWatch {
    /// (zone, cluster) → its job that ends last.
    latest: HashMap<(String, String), Latest>,
    overlaps: Vec<Overlap>,
    not_logged: u64,
}

impl OverlapWatch {
    /// Note a job created by a request, recording an overlap when an earlier job of its cluster
    /// ends after the new one is created.
    pub fn created(&mut self, job: Watched<'_>) {
        let key = (job.zone.to_owned(), job.cluster.to_owned());
        let latest = self.latest.get(&key);
        if let Some(running) = latest.filter(|l| l.ends > job.created) {
            let left = running.ends.duration_since(job.created);
            let overlap = Overlap {
                cluster: job.cluster.to_owned(),
                zone: job.zone.to_owned(),
                job_id: job.id.to_owned(),
                user: job.user.to_owned(),
                host: job.host.to_owned(),
                running_job_id: running.id.clone(),
                running_user: running.user.clone(),
                running_host: running.host.clone(),
                running_left_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            };
            if self.overlaps.len() < MAX_OVERLAP_LOG {
                self.overlaps.push(overlap);
            } else {
                self.not_logged += 1;
            }
        }
        // Durations may differ: an earlier job can outlast a later one, so keep the latest end.
        if latest.is_none_or(|l| job.ends > l.ends) {
            let latest =
                Latest { id: job.id.to_owned(), user: job.user.to_owned(), host: job.host.to_owned(), ends: job.ends };
            self.latest.insert(key, latest);
        }
    }

    /// The overlaps seen, in the order the jobs were created (the first [`MAX_OVERLAP_LOG`]).
    pub fn overlaps(&self) -> &[Overlap] {
        &self.overlaps
    }

    /// Overlaps seen after the log was full.
    pub fn not_logged(&self) -> u64 {
        self.not_logged
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn job<'a>(id: &'a str, cluster: &'a str, user: &'a str, created: Instant, lasts_ms: u64) -> Watched<'a> {
        Watched { id, zone: "sh1a", cluster, user, host: "%", created, ends: created + Duration::from_millis(lasts_ms) }
    }

    #[test]
    fn a_job_created_while_another_runs_on_its_cluster_is_an_overlap() {
        let mut w = OverlapWatch::default();
        let t0 = Instant::now();
        w.created(job("j-1", "cl-a", "bob", t0, 300));
        w.created(job("j-2", "cl-a", "eve", t0 + Duration::from_millis(100), 300));
        let [o] = w.overlaps() else { panic!("one overlap: {:?}", w.overlaps()) };
        assert_eq!((o.job_id.as_str(), o.user.as_str()), ("j-2", "eve"));
        assert_eq!((o.running_job_id.as_str(), o.running_user.as_str()), ("j-1", "bob"));
        assert_eq!(o.running_left_ms, 200);
    }

    #[test]
    fn sequential_jobs_other_clusters_and_other_zones_are_not() {
        let mut w = OverlapWatch::default();
        let t0 = Instant::now();
        w.created(job("j-1", "cl-a", "bob", t0, 300));
        // Ending exactly as the next is created counts as ended.
        w.created(job("j-2", "cl-a", "eve", t0 + Duration::from_millis(300), 300));
        w.created(job("j-3", "cl-b", "bob", t0 + Duration::from_millis(350), 300));
        w.created(Watched { zone: "pek3", ..job("j-4", "cl-a", "bob", t0 + Duration::from_millis(350), 300) });
        assert_eq!(w.overlaps(), &[] as &[Overlap]);
    }

    #[test]
    fn an_earlier_job_that_outlasts_a_later_one_still_counts() {
        let mut w = OverlapWatch::default();
        let t0 = Instant::now();
        w.created(job("j-1", "cl-a", "bob", t0, 1_000));
        w.created(job("j-2", "cl-a", "eve", t0 + Duration::from_millis(10), 10));
        w.created(job("j-3", "cl-a", "ann", t0 + Duration::from_millis(500), 10));
        let running: Vec<&str> = w.overlaps().iter().map(|o| o.running_job_id.as_str()).collect();
        assert_eq!(running, ["j-1", "j-1"]);
        w.created(job("j-4", "cl-a", "kim", t0 + Duration::from_millis(1_000), 10));
        assert_eq!(w.overlaps().len(), 2);
    }
}
