//! qc-offboard removes MySQL Plus database accounts across many QingCloud clusters in bulk,
//! safely and with proof. The binary in `main.rs` is a thin shell over this library so that
//! tests can drive every piece directly.
//!
//! Dependencies point one way: `cli` → `app` → (`plan`, `discover`, `runner`, `store`,
//! `report`, …); `runner` → (`qingcloud` through its `Api` trait, `limiter`, `store`). `cli` parses arguments, calls
//! `app` and prints; `app` does each command's work (target, preparing runs from manifests, a
//! plan file or a retry, driving them, their summary, exit code and pings) and never imports
//! `cli`; no library module below `app` imports either. `manifest` and `qingcloud::signer` are
//! pure and depend on nothing of ours. The simulator (`sim`) shares only the signer and the
//! wire types with the client.

pub mod app;
pub mod audit;
pub mod cli;
pub mod discover;
pub mod domain;
pub mod exit;
pub mod limiter;
pub mod manifest;
pub mod plan;
pub mod qingcloud;
pub mod report;
pub mod runner;
pub mod sim;
pub mod store;
pub mod telemetry;
