//! Everything that speaks QingCloud: the pure request signer, the wire types shared with the
//! simulator, credentials and endpoint configuration, the HTTP client, and the [`api::Api`]
//! trait through which the runner reaches it.

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod signer;
pub mod types;
