//! The world file (SPEC §6): who may call, which clusters and accounts exist, how long jobs take,
//! the request quota and the faults to inject. [`World`] is the raw serde shape (unknown keys are
//! refused, `file`); [`World::check`] turns it once into the checked [`Model`] the engine runs on
//! (`load`, `model`).
//!
//! This module reads files and checks values; it serves nothing and keeps no state.

mod file;
mod load;
mod model;

pub use file::{
    ApiBehaviour, ClusterSpec, Credential, Faults, JobTimings, ListOrder, MissingAccount, Quota, QuotaScope,
    UnknownJobId, World, DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY,
};
pub use load::{check_cluster_id, check_zone, WorldError, MAX_UNRELATED_JOBS, MAX_WORLD_DURATION};
pub use model::{Account, Model, QuotaModel};
