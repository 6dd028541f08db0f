//! qc-offboard removes MySQL Plus database accounts across many QingCloud clusters in bulk,
//! safely and with proof. The binary in `main.rs` is a thin shell over this library so that
//! tests can drive every piece directly.
//!
//! Dependencies point one way: `cli` → `runner` → (`qingcloud`, `limiter`, `store`);
//! `manifest` and `qingcloud::signer` are pure and depend on nothing of ours. The simulator
//! (`sim`) shares only the signer and the wire types with the client.

pub mod audit;
pub mod cli;
pub mod discover;
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
