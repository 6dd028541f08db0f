//! What a run takes from a loaded plan file: exactly its tasks in its order, a `pending` task
//! whose account was removed since the plan was made becoming `skipped` (never sent twice), and
//! their counts by planned state.
//!
//! It converts; it checks nothing (the plan was checked when loaded).

use std::collections::BTreeMap;

use crate::plan::PlanState;
use crate::store::{NewTask, TaskState};

use super::model::PlanFile;

impl PlanFile {
    /// The run's tasks: exactly the plan's, in its order, with the plan's state — except that a
    /// `pending` task whose account `is_done` reports removed since the plan was made becomes
    /// `skipped` (never sent twice). A `not_due` task stays `not_due`: the approver did not
    /// approve sending it in this run.
    pub fn new_tasks(&self, is_done: impl Fn(&str, &str, &str) -> bool) -> Vec<NewTask> {
        self.tasks
            .iter()
            .map(|t| {
                let state = match t.state {
                    PlanState::Pending if is_done(t.cluster.as_str(), t.user.as_str(), t.host.as_str()) => {
                        TaskState::Skipped
                    }
                    PlanState::Pending => TaskState::Pending,
                    PlanState::NotDue => TaskState::NotDue,
                    PlanState::Skipped => TaskState::Skipped,
                };
                NewTask {
                    cluster: t.cluster.to_string(),
                    zone: t.zone.to_string(),
                    user: t.user.to_string(),
                    host: t.host.to_string(),
                    state,
                    not_before: t.not_before,
                    due_by: t.due_by,
                }
            })
            .collect()
    }

    /// Task counts by planned state.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.tasks.iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(t.state.as_str()).or_default() += 1;
            m
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::document::tests::sample;
    use super::*;

    #[test]
    fn tasks_done_since_the_plan_are_skipped() {
        let p = sample();
        assert_eq!(p.new_tasks(|_, _, _| false)[0].state, TaskState::Pending);
        assert_eq!(p.new_tasks(|c, u, h| (c, u, h) == ("cl-abc12345", "bob", "%"))[0].state, TaskState::Skipped);
    }
}
