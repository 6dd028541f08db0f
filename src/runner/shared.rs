//! A run shared with other hosts (PostgreSQL): this process's hold on the run (its host lease)
//! and on the tasks it works on (task leases), and the writes that go through them.
//!
//! - **Claims.** The engine claims work cluster by cluster ([`Shared::claim`]): the due, free
//!   tasks of clusters no other host holds. A task whose holder died is free once its lease
//!   has run out, and is loaded as the engine loads an interrupted run's tasks: a `submitting`
//!   task is reconciled before anything is sent, a `submitted` job is polled.
//! - **Fencing.** Once this process has claimed, each of its task writes names the lease it
//!   claimed with (owner and epoch), so a write after the lease was taken over changes nothing
//!   and reads as a lost guard (`None`). A write on a task it holds no lease on writes nothing
//!   either; only before the first claim (preflight, on the host that starts the run) are
//!   writes made without a lease, and then only on tasks nobody holds.
//! - **The request's time.** The last check before a `del_user` renews the task's lease to its
//!   full length, and at least to the request's timeout and a margin ([`MIN_LEASE`]), and
//!   refuses when the lease is no longer this host's: no request leaves that another host could
//!   take over while it is on the wire.
//! - **Keeping and giving back.** [`Shared::extend`] renews the host lease and every task
//!   lease in one statement each (the engine's keeper calls it every third of the lease); a
//!   task that ends is given back at once, and leaving the run gives back everything.
//!
//! This module decides nothing about a task's next state; the engine and the state table do.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::postgres::{HostLease, Lease, LeasedTransition, LeasedWrite, PgStore};
use crate::store::{Adopted, StoreError, TaskRow, TaskState, Transition};

/// The shortest lease `--lease` allows, and the margin a request's lease has past its timeout.
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// The states a host claims: work waiting, a submission in doubt, a job to follow; and, where
/// the run moves `not_due` tasks whose date has come to `pending`, those.
const CLAIMABLE: [TaskState; 5] =
    [TaskState::Pending, TaskState::RetryWait, TaskState::Submitting, TaskState::Submitted, TaskState::NotDue];

/// This process's part in a shared run.
pub struct Shared {
    store: PgStore,
    host: HostLease,
    lease: Duration,
    /// The longest a request may take: the lease a request's last check renews is at least this.
    request: Duration,
    held: Mutex<HashMap<i64, Lease>>,
    /// Tasks whose lease a request lengthened, until the request's outcome is written.
    in_request: Mutex<HashSet<i64>>,
    /// Set by the first claim: from then on every write needs a lease.
    claimed: AtomicBool,
    /// Whether `not_due` tasks are claimed (see [`CLAIMABLE`]).
    promote_not_due: bool,
}

impl Shared {
    pub fn new(store: PgStore, host: HostLease, lease: Duration, request: Duration, promote_not_due: bool) -> Shared {
        Shared {
            request,
            promote_not_due,
            store,
            host,
            lease,
            held: Mutex::new(HashMap::new()),
            in_request: Mutex::new(HashSet::new()),
            claimed: AtomicBool::new(false),
        }
    }

    pub fn host(&self) -> &HostLease {
        &self.host
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Lease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lose(&self, task_id: i64) {
        self.held().remove(&task_id);
    }

    /// Claim the free, due tasks of up to `clusters` clusters nobody else holds; their rows.
    pub async fn claim(&self, clusters: usize) -> Result<Vec<TaskRow>, StoreError> {
        self.claimed.store(true, Ordering::SeqCst);
        if clusters == 0 {
            return Ok(Vec::new());
        }
        let n = i64::try_from(clusters).unwrap_or(i64::MAX);
        let states = if self.promote_not_due { &CLAIMABLE[..] } else { &CLAIMABLE[..4] };
        let claims = self.store.claim_clusters(self.host.run_id, states, &self.host.owner, self.lease, n).await?;
        let mut rows = Vec::with_capacity(claims.len());
        let mut held = self.held();
        for c in claims {
            if let Some((from, epoch)) = &c.taken_from {
                tracing::warn!(
                    task = c.task.id,
                    cluster = %c.task.cluster,
                    state = %c.task.state,
                    from = %from,
                    from_epoch = epoch,
                    "took over a task whose host's lease ran out"
                );
            }
            held.insert(c.task.id, c.lease);
            rows.push(c.task);
        }
        Ok(rows)
    }

    /// Tasks of the run with work ahead, whoever holds them.
    pub async fn unfinished(&self) -> Result<i64, StoreError> {
        self.store.unfinished(self.host.run_id).await
    }

    /// Does this process hold a lease on the task?
    pub fn holds(&self, task_id: i64) -> bool {
        self.held().contains_key(&task_id)
    }

    /// Apply one transition built by the state table, under this process's lease on its task.
    /// `None`, with nothing written, when the guard does not match or the task is not this
    /// process's to write (see the module's notes).
    pub async fn write(&self, t: &Transition) -> Result<Option<TaskRow>, StoreError> {
        Ok(self.write_all(std::slice::from_ref(t)).await?.pop().flatten())
    }

    /// [`Shared::write`] for several transitions: those under a lease go in one transaction,
    /// in order; one result per transition.
    pub async fn write_all(&self, ts: &[Transition]) -> Result<Vec<Option<TaskRow>>, StoreError> {
        let mut results: Vec<Option<TaskRow>> = vec![None; ts.len()];
        let mut leased: Vec<(usize, Lease, Option<Duration>)> = Vec::new();
        let mut unleased: Vec<usize> = Vec::new();
        {
            let held = self.held();
            let mut in_request = self.in_request.lock().unwrap_or_else(|p| p.into_inner());
            let claimed = self.claimed.load(Ordering::SeqCst);
            for (i, t) in ts.iter().enumerate() {
                let id = t.task_id();
                match held.get(&id) {
                    // A lease a request lengthened goes back to its usual length with the
                    // request's outcome.
                    Some(lease) => leased.push((i, lease.clone(), in_request.remove(&id).then_some(self.lease))),
                    // A lease is only ever held (and so lost) after the first claim.
                    None if claimed => {
                        tracing::warn!(task = id, "not written: this host holds no lease on the task");
                    }
                    None => unleased.push(i),
                }
            }
        }
        if !unleased.is_empty() {
            let batch: Vec<Transition> = unleased.iter().map(|&i| ts[i].clone()).collect();
            for (i, row) in unleased.iter().zip(self.store.steps(&batch).await?) {
                results[*i] = row;
            }
        }
        if leased.is_empty() {
            return Ok(results);
        }
        let writes: Vec<LeasedTransition<'_>> =
            leased.iter().map(|(i, lease, renew)| LeasedTransition { lease, t: &ts[*i], renew: *renew }).collect();
        let outcomes = self.store.transitions_leased(&writes).await?;
        let mut give_back = Vec::new();
        for ((i, lease, _), outcome) in leased.iter().zip(outcomes) {
            match outcome {
                LeasedWrite::Applied(row) => {
                    if !TaskState::OPEN.contains(&row.state) {
                        // Its work here is over: free at once (the epoch stays, so nothing
                        // written under this lease can land later).
                        give_back.push(lease.task_id);
                    }
                    results[*i] = Some(*row);
                }
                LeasedWrite::NotHeld => {
                    tracing::warn!(task = lease.task_id, "not written: the task's lease is no longer this host's");
                    self.lose(lease.task_id);
                }
                LeasedWrite::ClusterBusy => {
                    tracing::info!(
                        task = lease.task_id,
                        "another task of this cluster has a job (another host's, or a dead host's whose lease has not run out): the task is handed back"
                    );
                    give_back.push(lease.task_id);
                }
            }
        }
        if !give_back.is_empty() {
            self.release_many(&give_back).await?;
        }
        Ok(results)
    }

    /// The deferred adoption of a task this process holds (see `Prepared::deferred`), under its
    /// lease: [`Adopted::NotHeld`] when the lease is gone.
    pub async fn adopt_deferred(&self, task_id: i64, identity_runs: &[i64]) -> Result<Adopted, StoreError> {
        let run_id = self.host.run_id;
        if !self.claimed.load(Ordering::SeqCst) {
            return self.store.adopt_deferred(run_id, task_id, identity_runs, None).await;
        }
        let lease = self.held().get(&task_id).cloned();
        let Some(lease) = lease else { return Ok(Adopted::NotHeld) };
        let adopted = self.store.adopt_deferred(run_id, task_id, identity_runs, Some(&lease)).await?;
        match &adopted {
            Adopted::NotHeld => self.lose(task_id),
            // Skipped: its work here is over.
            Adopted::Moved(row) if !TaskState::OPEN.contains(&row.state) => self.release(task_id).await?,
            _ => {}
        }
        Ok(adopted)
    }

    /// The lease check before a request leaves: renewed to its full length, or `false` when it
    /// is no longer this process's.
    pub async fn renew_for_request(&self, task_id: i64) -> Result<bool, StoreError> {
        if !self.claimed.load(Ordering::SeqCst) {
            // Not claiming yet (no request is sent before the first claim): nothing to renew.
            return Ok(true);
        }
        let lease = self.held().get(&task_id).cloned();
        let Some(lease) = lease else { return Ok(false) };
        match self.store.extend_lease(&lease, self.lease.max(self.request + MIN_LEASE)).await? {
            Some(renewed) => {
                self.in_request.lock().unwrap_or_else(|p| p.into_inner()).insert(task_id);
                self.held().insert(task_id, renewed);
                Ok(true)
            }
            None => {
                self.lose(task_id);
                Ok(false)
            }
        }
    }

    /// The tasks this process holds a lease on.
    pub fn held_ids(&self) -> Vec<i64> {
        self.held().keys().copied().collect()
    }

    /// Give back every task of `ids` this process holds (the engine does not work on them).
    pub async fn release_many(&self, ids: &[i64]) -> Result<(), StoreError> {
        {
            let mut held = self.held();
            for id in ids {
                held.remove(id);
            }
        }
        self.store.release_all(&self.host.owner, ids).await.map(|_| ())
    }

    /// Give a task back (the engine let it go).
    pub async fn release(&self, task_id: i64) -> Result<(), StoreError> {
        let lease = self.held().remove(&task_id);
        if let Some(lease) = lease {
            self.store.release(&lease).await?;
        }
        Ok(())
    }

    /// Renew the host lease and every task lease; the tasks whose lease was lost meanwhile.
    pub async fn extend(&self) -> Result<Vec<i64>, StoreError> {
        if !self.store.extend_host(&self.host.owner, self.lease).await? {
            tracing::warn!("this host's lease on the run had run out: joining again");
            let joined = self.store.join_run(&self.host, self.lease).await?;
            if let crate::store::LockOutcome::Held(h) = joined.outcome {
                tracing::error!(run_id = h.run_id, "another run is live now; this host's writes are fenced");
            }
        }
        let ids: Vec<i64> = self.held().keys().copied().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let kept: HashSet<i64> =
            self.store.extend_leases(&self.host.owner, &ids, self.lease).await?.into_iter().collect();
        let gone: Vec<i64> = ids.into_iter().filter(|id| !kept.contains(id)).collect();
        for id in &gone {
            tracing::warn!(task = id, "the task's lease ran out before it was renewed: its writes are fenced");
            self.lose(*id);
        }
        Ok(gone)
    }

    /// Leave the run: the host lease is deleted and every task lease given back.
    pub async fn leave(&self) -> Result<(), StoreError> {
        self.held().clear();
        self.store.leave_run(&self.host).await
    }
}
