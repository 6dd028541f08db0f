//! Integration tests, compiled as one binary. Each area has its own module; `helpers` holds what
//! they share (the real binary with a scrubbed environment, temporary directories, the simulator).

// Test helpers unwrap: a panic is the failure message.
#![allow(clippy::unwrap_used)]

mod accounts;
mod audit;
mod auditor_pg;
mod cli;
mod client;
mod config;
mod contrib;
mod db_copy;
mod db_readonly;
mod discover;
mod doctor;
mod endings;
mod evidence;
mod hardening;
mod helpers;
mod layout;
mod manifest;
mod multihost;
mod operator;
mod pg_bench;
mod pg_copy;
mod pg_db;
mod pg_hosts;
mod pg_quota;
mod pg_store;
mod polling;
mod pre_state;
mod preflight;
mod preflight_ops;
mod props;
mod runner;
mod safety;
mod schema;
mod shared_limiter;
mod sim;
mod store;
mod store_conformance;
mod variants;
