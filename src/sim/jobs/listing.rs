//! Listings and lookups of DescribeJobs: one owner's jobs in one zone, by id or listed, in the
//! world's order (newest or oldest first, or a seeded shuffle), with the world's listing lag,
//! `job_action` filter, omissions and answer to an unknown id.
//!
//! It reads the book (call after `settle`); it changes nothing.

use std::cmp::Reverse;

use crate::qingcloud::types::{Job, JobStatus};
use crate::sim::clock::Now;
use crate::sim::world::{ListOrder, UnknownJobId};

use super::{Book, JobRec};

/// Filters of a DescribeJobs call.
pub struct JobQuery<'a> {
    pub owner: &'a str,
    pub zone: &'a str,
    /// `jobs.N`; `None` means all jobs.
    pub ids: Option<&'a [String]>,
    /// `status.N`; empty means any status.
    pub statuses: &'a [JobStatus],
    pub job_action: Option<&'a str>,
}

/// Why a DescribeJobs call cannot be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum FindError {
    /// `jobs.N` named this job, which does not exist (for this owner, in this zone).
    UnknownJob(String),
}

impl Book {
    /// Jobs matching `q`, in the world's listing order (call after `settle`). With ids, an
    /// id this owner has no job of in this zone is an error or left out, as the world says;
    /// without, jobs younger than the listing lag are left out.
    pub fn find(&self, q: &JobQuery<'_>, now: Now) -> Result<Vec<Job>, FindError> {
        let visible = |j: &JobRec| j.zone == q.zone && j.owner == q.owner;
        let job_action = q.job_action.filter(|_| self.job_action_filter);
        let keep = |j: &JobRec| {
            job_action.is_none_or(|a| a == j.action)
                && (q.statuses.is_empty() || q.statuses.contains(&self.status(j, now).0))
        };
        let mut idx: Vec<usize> = match q.ids {
            Some(ids) => {
                let mut found = Vec::with_capacity(ids.len());
                for id in ids {
                    match self.by_id.get(id) {
                        Some(&i)
                            if visible(&self.jobs[i]) && (self.omit_every == 0 || (i + 1) % self.omit_every != 0) =>
                        {
                            found.push(i)
                        }
                        Some(&i) if visible(&self.jobs[i]) => {}
                        _ if self.unknown_id == UnknownJobId::Error => return Err(FindError::UnknownJob(id.clone())),
                        _ => {}
                    }
                }
                found.sort_unstable();
                found.dedup();
                found
            }
            None => (0..self.jobs.len())
                .filter(|&i| {
                    let j = &self.jobs[i];
                    visible(j) && now.mono.saturating_duration_since(j.created) >= self.list_lag
                })
                .collect(),
        };
        idx.retain(|&i| keep(&self.jobs[i]));
        self.sort(&mut idx);
        Ok(idx.iter().map(|&i| self.view(&self.jobs[i], now)).collect())
    }

    /// Put job indices in the listing order. Newest is by creation time (then by index, for
    /// jobs created in the same instant).
    fn sort(&self, idx: &mut [usize]) {
        let key = |i: &usize| (self.jobs[*i].created_wall, *i);
        match self.order {
            ListOrder::NewestFirst => idx.sort_unstable_by_key(|i| Reverse(key(i))),
            ListOrder::OldestFirst => idx.sort_unstable_by_key(key),
            ListOrder::Random => idx.sort_unstable_by_key(|i| (self.jobs[*i].shuffle, *i)),
        }
    }
}
