//! Credentials and endpoint (SPEC §5): flags > environment > config file > defaults.
//! The secret key is held in a redacting type and never printed.

/// Configuration could not be resolved: no credentials, unreadable file, bad endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}
