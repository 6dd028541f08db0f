//! Which tasks a report shows: by run, user, cluster, ticket and when their work started, and
//! the part of that the store can apply in SQL.
//!
//! It selects; it reads nothing and formats nothing.

use chrono::{DateTime, Utc};

use crate::store::ReportFilter;

/// Which tasks a report shows. Every field narrows; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub run_id: Option<i64>,
    pub user: Option<String>,
    pub cluster: Option<String>,
    /// The ticket of the task's run.
    pub ticket: Option<String>,
    /// Tasks whose work started at or after this instant (a task never started counts from its
    /// run's start).
    pub since: Option<DateTime<Utc>>,
    /// Tasks whose work started at or before this instant (counted the same way).
    pub until: Option<DateTime<Utc>>,
}

impl From<&ReportFilter> for Filter {
    fn from(f: &ReportFilter) -> Filter {
        Filter {
            run_id: f.run_id,
            user: f.user.clone(),
            cluster: f.cluster.clone(),
            since: f.since,
            ..Filter::default()
        }
    }
}

impl Filter {
    /// Does a task of run `run_id` with these values pass? `started` is when its work started,
    /// else when its run started.
    pub fn admits(
        &self,
        run_id: i64,
        user: &str,
        cluster: &str,
        ticket: Option<&str>,
        started: Option<DateTime<Utc>>,
    ) -> bool {
        self.run_id.is_none_or(|r| r == run_id)
            && self.user.as_deref().is_none_or(|u| u == user)
            && self.cluster.as_deref().is_none_or(|c| c == cluster)
            && self.ticket.as_deref().is_none_or(|t| Some(t) == ticket)
            && self.since.is_none_or(|s| started.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| started.is_some_and(|t| t <= u))
    }

    /// The parts of the filter that `store::ReportFilter` can apply in SQL.
    pub fn store_filter(&self) -> ReportFilter {
        ReportFilter { run_id: self.run_id, user: self.user.clone(), cluster: self.cluster.clone(), since: self.since }
    }
}
