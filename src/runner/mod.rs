//! The runner (SPEC §4): submit, poll, retry, reconcile and record. It owns the order of work and
//! the state machine of a task; the API, the rate and the database are reached through
//! `qingcloud`, `limiter` and `store`.

pub mod policy;
pub mod queue;
