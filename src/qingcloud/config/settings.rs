//! The settings the API client runs with, and their defaults: the endpoint, the key pair
//! ([`Credentials`], whose `Debug` and `Display` never show the secret), the zone, timeouts and
//! retries, with where each came from ([`Sources`]) once [`resolve`](super::resolve) made them.
//!
//! These are plain types: nothing here reads a file or the environment. The secret is exposed
//! in one place only, [`secret_bytes`], for signing.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::domain::Zone;

/// The endpoint used when neither a flag, the environment nor the config file names one.
pub const DEFAULT_ENDPOINT: &str = "https://api.qingcloud.com/iaas/";
/// Host, path and protocol used for the parts of `host`/`port`/`protocol`/`uri` a file leaves out.
pub const DEFAULT_HOST: &str = "api.qingcloud.com";
pub const DEFAULT_PROTOCOL: &str = "https";
pub const DEFAULT_URI: &str = "/iaas/";
/// The Go SDK's dial timeout default (`connection_timeout: 30`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The Python SDK's socket timeout default (`http_socket_timeout: 60`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The Go SDK's default (`connection_retries: 3`).
pub const DEFAULT_CONNECTION_RETRIES: u32 = 3;

/// Access key ids QingCloud issues are 20 upper-case letters and digits
/// (`QYACCESSKEYIDEXAMPLE`). The accepted shape leaves room for other lengths (private clouds,
/// older keys) but not for anything else: a lower-case letter, a space, a colon or punctuation
/// means something else landed in the key id, typically the secret key of a line YAML folded
/// into it, and that value must not be sent, stored or printed.
pub const ACCESS_KEY_ID_LEN: std::ops::RangeInclusive<usize> = 4..=64;

/// The API key pair. `Debug` and `Display` show the access key id only.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret: SecretString,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { access_key_id: access_key_id.into(), secret: SecretString::from(secret.into()) }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access key {} (secret redacted)", self.access_key_id)
    }
}

/// Everything the API client needs. Fields are public so a caller (e.g. `--simulate`) can build
/// one directly without going through [`resolve`](super::resolve).
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Url,
    pub credentials: Credentials,
    /// Default zone for manifests that name none.
    pub zone: Option<Zone>,
    pub connect_timeout: Duration,
    /// Whole request, body included.
    pub request_timeout: Duration,
    /// How often the caller may retry a request that failed in transport (the client itself
    /// never retries).
    pub connection_retries: u32,
    /// The config file's `absent_on` rules, as written (the runner parses them).
    pub absent_on: Vec<String>,
}

impl Settings {
    /// Settings with the defaults for everything but the endpoint and the key pair.
    pub fn new(endpoint: Url, credentials: Credentials) -> Self {
        Self {
            endpoint,
            credentials,
            zone: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connection_retries: DEFAULT_CONNECTION_RETRIES,
            absent_on: Vec::new(),
        }
    }

    /// One line for logs: everything except the secret.
    pub fn redacted_summary(&self) -> String {
        format!(
            "endpoint={} access_key_id={} secret=[REDACTED] zone={} connect_timeout={} request_timeout={} connection_retries={}",
            self.endpoint,
            self.credentials.access_key_id,
            self.zone.as_ref().map_or("-", Zone::as_str),
            humantime::format_duration(self.connect_timeout),
            humantime::format_duration(self.request_timeout),
            self.connection_retries,
        )
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_summary())
    }
}

/// The flag values (clap has already folded `QINGCLOUD_ENDPOINT`/`QINGCLOUD_CONFIG` into them).
#[derive(Debug, Clone, Default)]
pub struct ConfigInput {
    pub endpoint: Option<String>,
    pub config: Option<PathBuf>,
}

/// Where one setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag or the environment variable clap reads for it.
    Flag,
    Environment,
    ConfigFile,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Environment => "environment",
            Source::ConfigFile => "config file",
            Source::Default => "default",
        })
    }
}

/// Where each resolved setting came from, for the log line at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub endpoint: Source,
    pub access_key_id: Source,
    pub secret: Source,
    /// `None` when no zone was configured.
    pub zone: Option<Source>,
}

/// The result of [`resolve`](super::resolve): settings plus what an operator should know about them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub settings: Settings,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub sources: Sources,
    /// Non-fatal findings (unknown keys, mixed credential sources); already logged.
    pub warnings: Vec<String>,
}

/// Expose the secret for signing. Kept as one named function so the uses are easy to audit.
pub(crate) fn secret_bytes(credentials: &Credentials) -> &[u8] {
    credentials.secret.expose_secret().as_bytes()
}
