//! The unrelated jobs a zone starts with (`api.unrelated_jobs_per_zone`): finished jobs of
//! other kinds each owner finds the first time it uses a zone, older than anything it creates,
//! so a client that ignores `job_action` shows.
//!
//! They never touch an account and are left out of statistics.

use std::time::Duration;

use crate::qingcloud::types::JobStatus;
use crate::sim::clock::Now;

use super::{Book, JobRec};

/// Kinds of the unrelated jobs a zone starts with, when the world asks for them.
const UNRELATED_ACTIONS: [&str; 5] =
    ["StartClusters", "StopClusters", "ResizeCluster", "AddClusterNodes", "CreateClusterSnapshots"];

impl Book {
    /// Give `owner` its unrelated finished jobs in `zone` the first time it uses the zone (when
    /// the world asks for them). They are dated before `now`, so they are older than anything
    /// the owner creates; their ids come from `fresh_id`.
    pub fn seed_zone(&mut self, zone: &str, owner: &str, now: Now, mut fresh_id: impl FnMut(&Self) -> String) {
        if self.unrelated_jobs == 0 || !self.seeded.insert((zone.to_owned(), owner.to_owned())) {
            return;
        }
        for n in 0..self.unrelated_jobs {
            let id = fresh_id(self);
            let action = UNRELATED_ACTIONS[n as usize % UNRELATED_ACTIONS.len()];
            // An hour ago and onward, one minute apart.
            let created_wall = now.wall - chrono::TimeDelta::minutes(60) + chrono::TimeDelta::minutes(i64::from(n));
            let cluster = format!("cl-other{n}");
            let idx = self.jobs.len();
            self.by_id.insert(id.clone(), idx);
            self.jobs.push(JobRec {
                id,
                action: action.to_owned(),
                zone: zone.to_owned(),
                owner: owner.to_owned(),
                account: (cluster.clone(), String::new(), String::new()),
                // Long past the listing lag, like its create_time.
                created: now.mono.checked_sub(Duration::from_secs(3600)).unwrap_or(now.mono),
                created_wall,
                working: Duration::ZERO,
                shuffle: u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                unrelated: true,
                doomed: false,
                outcome: Some((JobStatus::Successful, "")),
                directive: serde_json::json!({ "action": action, "clusters.1": cluster, "zone": zone }).to_string(),
            });
        }
    }
}
