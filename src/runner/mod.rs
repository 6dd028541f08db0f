//! The runner (SPEC §4): submit, poll, retry, reconcile and record. It owns the order of work and
//! the state machine of a task; the API, the rate and the database are reached through
//! `qingcloud`, `limiter` and `store`.
//!
//! Task states: `pending` → `submitting` (intent committed before the request leaves) →
//! `submitted` (job id recorded) → `deleted` | `retry_wait` → … | `failed`; `skipped` and
//! `not_due` are decided when the run is made.

// pub mod context;  (wired when the store, client and simulator land)
// pub mod engine;  (wired when the store, client and simulator land)
// pub mod poll;  (wired when the store, client and simulator land)
pub mod policy;
// pub mod progress;  (wired when the store, client and simulator land)
pub mod queue;
// pub mod submit;  (wired when the store, client and simulator land)

