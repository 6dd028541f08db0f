//! Which task to submit next. Pure bookkeeping, no I/O and no clock (times are passed in).
//!
//! Rules it enforces: at most one job per cluster (a cluster with a job in flight is *busy* and
//! none of its tasks is handed out); among idle clusters, the one whose next task has the
//! earliest deadline goes first; then the one with the most tasks left, since jobs on a cluster
//! run one after another and its queue is the longest chain of work (this keeps the end of a
//! run from trailing on a few clusters); then round-robin; tasks waiting for a retry come back
//! when their time has come.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

pub type TaskId = i64;

/// Sort key of a deadline: tasks with one come before tasks without.
type DueKey = (bool, Option<DateTime<Utc>>);

fn due_key(due: Option<DateTime<Utc>>) -> DueKey {
    (due.is_none(), due)
}

#[derive(Debug, Default)]
pub struct Queue {
    ready: HashMap<String, VecDeque<TaskId>>,
    due: HashMap<TaskId, DueKey>,
    idle_with_work: BTreeSet<(DueKey, Reverse<usize>, u64, String)>,
    in_idle_set: HashMap<String, (DueKey, Reverse<usize>, u64)>,
    busy: HashSet<String>,
    waiting: BinaryHeap<Reverse<(Instant, TaskId)>>,
    waiting_cluster: HashMap<TaskId, String>,
    seq: u64,
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    /// A task ready to submit, behind the others of its cluster.
    pub fn push(&mut self, task: TaskId, cluster: &str, due: Option<DateTime<Utc>>) {
        self.due.insert(task, due_key(due));
        self.ready.entry(cluster.to_owned()).or_default().push_back(task);
        self.refresh(cluster);
    }

    /// A task that must go next on its cluster (it was throttled before it could be sent).
    pub fn push_front(&mut self, task: TaskId, cluster: &str) {
        self.due.entry(task).or_insert_with(|| due_key(None));
        self.ready.entry(cluster.to_owned()).or_default().push_front(task);
        self.refresh(cluster);
    }

    /// A task to retry at `at`.
    pub fn defer(&mut self, task: TaskId, cluster: &str, at: Instant) {
        self.waiting.push(Reverse((at, task)));
        self.waiting_cluster.insert(task, cluster.to_owned());
    }

    /// Move tasks whose retry time has come back to the front of their cluster.
    pub fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, task))) = self.waiting.peek().copied() {
            if at > now {
                break;
            }
            self.waiting.pop();
            if let Some(cluster) = self.waiting_cluster.remove(&task) {
                self.push_front(task, &cluster);
            }
        }
    }

    /// When the next deferred task becomes ready.
    pub fn next_wake(&self) -> Option<Instant> {
        self.waiting.peek().map(|Reverse((at, _))| *at)
    }

    /// Take the next task to submit and mark its cluster busy.
    pub fn pop(&mut self) -> Option<(TaskId, String)> {
        let first = self.idle_with_work.iter().next().cloned()?;
        self.idle_with_work.remove(&first);
        let cluster = first.3;
        self.in_idle_set.remove(&cluster);
        let queue = self.ready.get_mut(&cluster)?;
        let task = queue.pop_front()?;
        if queue.is_empty() {
            self.ready.remove(&cluster);
        }
        self.due.remove(&task);
        self.busy.insert(cluster.clone());
        Some((task, cluster))
    }

    /// A cluster has a job in flight that did not come from [`Queue::pop`] (a resumed run).
    pub fn mark_busy(&mut self, cluster: &str) {
        self.busy.insert(cluster.to_owned());
        if let Some(key) = self.in_idle_set.remove(cluster) {
            self.idle_with_work.remove(&(key.0, key.1, key.2, cluster.to_owned()));
        }
    }

    /// The cluster's job is over; its next task may go.
    pub fn release(&mut self, cluster: &str) {
        self.busy.remove(cluster);
        self.refresh(cluster);
    }

    pub fn is_busy(&self, cluster: &str) -> bool {
        self.busy.contains(cluster)
    }

    /// Tasks ready now or waiting for a retry.
    pub fn queued(&self) -> usize {
        self.ready.values().map(VecDeque::len).sum::<usize>() + self.waiting.len()
    }

    /// The clusters with work here: a job in flight, a task ready, or one waiting for a retry.
    pub fn clusters(&self) -> usize {
        let mut all: HashSet<&str> = self.busy.iter().map(String::as_str).collect();
        all.extend(self.ready.keys().map(String::as_str));
        all.extend(self.waiting_cluster.values().map(String::as_str));
        all.len()
    }

    /// Is the task here, ready or waiting for a retry?
    pub fn contains(&self, task: TaskId) -> bool {
        self.due.contains_key(&task) || self.waiting_cluster.contains_key(&task)
    }

    /// Is any task ready to go on an idle cluster?
    pub fn has_ready(&self) -> bool {
        !self.idle_with_work.is_empty()
    }

    /// Does `cluster` have a task ready to go once its job is over?
    pub fn has_ready_for(&self, cluster: &str) -> bool {
        self.ready.get(cluster).is_some_and(|q| !q.is_empty())
    }

    /// Forget every queued task (used when a run stops submitting); returns them.
    pub fn drain(&mut self) -> Vec<TaskId> {
        let mut out: Vec<TaskId> = self.ready.drain().flat_map(|(_, q)| q).collect();
        out.extend(self.waiting.drain().map(|Reverse((_, t))| t));
        self.waiting_cluster.clear();
        self.idle_with_work.clear();
        self.in_idle_set.clear();
        self.due.clear();
        out
    }

    /// Put the cluster in (or take it out of) the idle-with-work set according to its state.
    fn refresh(&mut self, cluster: &str) {
        if let Some(key) = self.in_idle_set.remove(cluster) {
            self.idle_with_work.remove(&(key.0, key.1, key.2, cluster.to_owned()));
        }
        if self.busy.contains(cluster) {
            return;
        }
        let Some(queue) = self.ready.get(cluster) else { return };
        let Some(head) = queue.front() else { return };
        let due = self.due.get(head).copied().unwrap_or((true, None));
        let left = Reverse(queue.len());
        self.seq += 1;
        self.idle_with_work.insert((due, left, self.seq, cluster.to_owned()));
        self.in_idle_set.insert(cluster.to_owned(), (due, left, self.seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    #[test]
    fn one_job_per_cluster_round_robin() {
        let mut q = Queue::new();
        q.push(1, "cl-a", None);
        q.push(2, "cl-a", None);
        q.push(3, "cl-b", None);
        assert_eq!(q.pop(), Some((1, "cl-a".into())));
        assert_eq!(q.pop(), Some((3, "cl-b".into())));
        // cl-a is busy: nothing else may go.
        assert_eq!(q.pop(), None);
        q.release("cl-b");
        assert_eq!(q.pop(), None);
        q.release("cl-a");
        assert_eq!(q.pop(), Some((2, "cl-a".into())));
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn the_cluster_with_most_work_left_goes_first() {
        let mut q = Queue::new();
        q.push(1, "cl-a", None);
        q.push(2, "cl-b", None);
        q.push(3, "cl-b", None);
        assert_eq!(q.pop(), Some((2, "cl-b".into())));
        assert_eq!(q.pop(), Some((1, "cl-a".into())));
    }

    #[test]
    fn earliest_deadline_first() {
        let mut q = Queue::new();
        let soon = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let later = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        q.push(1, "cl-a", None);
        q.push(2, "cl-b", Some(later));
        q.push(3, "cl-c", Some(soon));
        let order: Vec<TaskId> = std::iter::from_fn(|| q.pop().map(|(t, _)| t)).collect();
        assert_eq!(order, [3, 2, 1]);
    }

    #[test]
    fn deferred_tasks_come_back_first_on_their_cluster() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        q.push(1, "cl-a", None);
        let (t, c) = q.pop().unwrap();
        q.push(2, "cl-a", None);
        q.defer(t, &c, t0 + Duration::from_secs(5));
        q.release(&c);
        assert_eq!(q.next_wake(), Some(t0 + Duration::from_secs(5)));
        q.promote_due(t0 + Duration::from_secs(1));
        assert_eq!(q.pop(), Some((2, "cl-a".into())));
        q.release("cl-a");
        q.promote_due(t0 + Duration::from_secs(5));
        assert_eq!(q.pop(), Some((1, "cl-a".into())));
        assert_eq!(q.next_wake(), None);
    }

    #[test]
    fn busy_from_resume_and_drain() {
        let mut q = Queue::new();
        q.push(1, "cl-a", None);
        q.mark_busy("cl-a");
        assert!(!q.has_ready());
        q.push(2, "cl-b", None);
        q.defer(3, "cl-c", Instant::now());
        let mut drained = q.drain();
        drained.sort();
        assert_eq!(drained, [1, 2, 3]);
        assert_eq!(q.pop(), None);
    }
}
