//! Why configuration could not be resolved: no credentials, an unreadable or malformed config
//! file, a bad endpoint, an unknown account, or an access key id that is not one. Every such
//! error exits 78.
//!
//! No message here quotes a value that may be the secret key.

use std::path::PathBuf;

use super::settings::ACCESS_KEY_ID_LEN;

/// Configuration could not be resolved: no credentials, unreadable file, bad endpoint. Exit 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no API credentials: {missing}; tried {tried}")]
    NoCredentials {
        /// What is missing, e.g. "no secret key".
        missing: String,
        /// The sources looked at, with the variable names and the config path.
        tried: String,
    },
    #[error("config file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("endpoint {value:?} ({source_name}): {reason}")]
    Endpoint { value: String, source_name: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no QingCloud account {account:?}: the config file {config} names these under `accounts:`: {known}; \
         add `accounts: {{{account}: {{qy_access_key_id: ..., qy_secret_access_key: ...}}}}` there, or set {env} \
         and its secret key variable"
    )]
    UnknownAccount { account: String, config: String, known: String, env: String },
    /// The value is not shown: it may be the secret key (see [`ACCESS_KEY_ID_LEN`]).
    #[error(
        "the access key id from {source_name} is not an access key id (they are {}-{} upper-case letters and \
         digits, e.g. QYACCESSKEYIDEXAMPLE); its value is not shown{hint}",
        ACCESS_KEY_ID_LEN.start(),
        ACCESS_KEY_ID_LEN.end()
    )]
    AccessKeyShape { source_name: String, hint: String },
}
