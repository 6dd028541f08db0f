//! A local, faithful QingCloud endpoint (SPEC §6) for demos, tests and benchmarks: signature
//! checks, `RunClusterCustomService`/`del_user`, `DescribeJobs`, jobs that take time, a request
//! quota, and faults on demand (5100, 5000, HTTP 502, resets, lost responses, latency). Where
//! the public documentation leaves the API's behaviour open, the world's `api:` block picks one
//! (unknown job ids, listing order and lag, the `job_action` filter, `del_user` of a missing
//! account, an endpoint that answers HTML), so clients can be tried against each.
//!
//! It shares only the signer and the wire types with the client, so the two cannot agree on a
//! mistake anywhere else. It never touches the database or any real endpoint.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use qc_offboard::sim::{self, World};
//! let sim = sim::start(World::auto_fast(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("{}", sim.endpoint()); // http://127.0.0.1:PORT/iaas/
//! let stats = sim.stats();
//! sim.shutdown().await;
//! # let _ = stats; Ok(()) }
//! ```

mod actions;
mod answer;
mod auth;
mod clock;
mod engine;
mod faults;
mod jobs;
mod quota;
mod request;
mod server;
mod stats;
mod world;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use actions::custom_service::PROTECTED_USERS;
pub use actions::{DEFAULT_LIMIT, MAX_LIMIT};
pub use auth::MAX_SKEW;
pub use faults::Fault;
pub use jobs::{ERROR_INJECTED, ERROR_NO_SUCH_ACCOUNT};
pub use quota::QUOTA_MESSAGE;
pub use server::Limits;
pub use server::HTML_PAGE;
pub use stats::{AccountStats, Overlap, RequestRecord, Stats, MAX_OVERLAP_LOG, MAX_REQUEST_LOG};
pub use world::{
    ApiBehaviour, ClusterSpec, Credential, Faults, JobTimings, ListOrder, MissingAccount, Quota, QuotaScope,
    UnknownJobId, World, WorldError, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY, MAX_UNRELATED_JOBS,
    MAX_WORLD_DURATION,
};

/// A running simulator. Dropping it stops accepting connections; [`SimHandle::shutdown`] also
/// waits for requests in flight.
pub struct SimHandle {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    engine: Arc<engine::Engine>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Check `world`, bind `addr` and serve in the background on the current tokio runtime, with
/// the default [`Limits`]. An invalid world is an `InvalidInput` error.
pub async fn start(world: World, addr: SocketAddr) -> io::Result<SimHandle> {
    start_with_limits(world, addr, Limits::default()).await
}

/// [`start`] with other per-connection [`Limits`] (tests use short timeouts).
pub async fn start_with_limits(world: World, addr: SocketAddr, limits: Limits) -> io::Result<SimHandle> {
    let model = world.check().map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, format!("world: {m}")))?;
    let seed = world.seed.unwrap_or_else(|| rand::rng().random());
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let engine = Arc::new(engine::Engine::new(model, seed));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(server::serve(listener, engine.clone(), limits, shutdown_rx));
    tracing::info!(%addr, seed, "simulator listening");
    Ok(SimHandle { addr, engine, shutdown, task: Some(task) })
}

impl SimHandle {
    /// `http://ADDR/iaas/`, the endpoint to give a client.
    pub fn endpoint(&self) -> String {
        format!("http://{}/iaas/", self.addr)
    }

    /// The same snapshot `GET /sim/stats` serves.
    pub fn stats(&self) -> Stats {
        self.engine.stats(self.engine.now())
    }

    /// Stop accepting, let requests in flight finish (up to a few seconds), then return.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::warn!(%err, "simulator: server task ended abnormally");
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
