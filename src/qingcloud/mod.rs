//! Everything that speaks QingCloud: the pure request signer, the wire types shared with the
//! simulator, credentials and endpoint configuration, and the HTTP client.

pub mod client;
pub mod config;
pub mod error;
pub mod signer;
pub mod types;
