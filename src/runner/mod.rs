//! The runner (SPEC §4): submit, poll, retry, reconcile and record. It owns the order of work and
//! the state machine of a task; the rate and the database are reached through `limiter` and
//! `store`.
//!
//! Task states: `pending` → `submitting` (intent committed before the request leaves) →
//! `submitted` (job id recorded) → `deleted` | `absent` | `retry_wait` → … | `failed`; `skipped`
//! and `not_due` are decided when the run is made; `handed_over` when a later run adopts a
//! task's live attempt. [`state`] is the one table of which event may move a task from which
//! state; every state change is built through it. The account is the unit of safety: [`guard`]
//! is the last check before a request is signed, and `store::Store::prepare_run` adopts what
//! other runs left in flight.
//!
//! The core — [`engine`] (the loop), [`submit`], [`reconcile`], [`poll`] and [`outcome`] — sees
//! the world through three seams held by [`Ctx`]: the API ([`crate::qingcloud::api::Api`], the
//! HTTP client in production), the time ([`clock::Clock`]) and the random source of back-off
//! jitter. It must not reach the network, the system clock or randomness any other way; its
//! unit tests (`tests`, under `cfg(test)`) drive it against a scripted fake API on tokio's paused
//! clock. The pure pieces ([`policy`], [`poll_plan`], [`queue`], [`verdict`], [`state`]) take
//! what they need as arguments. What can end the work with an error is [`error::RunnerError`]:
//! the store's own error kept (never its text), a row it cannot read, or a bug.

pub mod clock;
pub mod context;
pub mod engine;
pub mod error;
pub mod guard;
pub mod journal;
pub mod outcome;
pub mod policy;
pub mod poll;
pub mod poll_plan;
pub mod preflight;
pub mod progress;
pub mod queue;
pub mod reconcile;
pub mod shared;
pub mod state;
pub mod stop;
pub mod submit;
pub mod task;
pub mod verdict;

pub use context::{Ctx, LimiterGate, RunOptions};
pub use engine::{execute, execute_with};
pub use progress::Progress;
pub use stop::{StopReason, StopRequests};

#[cfg(test)]
mod tests;
