//! Everything that speaks QingCloud: the pure request signer, the wire types shared with the
//! simulator, credentials and endpoint configuration, and the HTTP client.

// Outside tests, every possible failure is an error or an `expect` that says why it cannot fire.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod client;
pub mod config;
pub mod error;
pub mod signer;
pub mod types;
