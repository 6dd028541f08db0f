//! Credentials and endpoint (SPEC §5): flags > environment > config file > defaults.
//!
//! This module reads the qingcloud-cli / SDK `config.yaml` (`file`) and the environment once and
//! turns them into [`Settings`] (`resolve`, `settings`). It does no network I/O. The secret key
//! lives in a [`secrecy::SecretString`] from the moment it is read; no `Debug`, `Display`, error
//! or log line of this module contains it, and errors about the config file never quote its
//! values.

mod endpoint;
mod error;
mod file;
mod resolve;
mod settings;

pub use endpoint::parse_endpoint;
pub use error::ConfigError;
pub use resolve::{
    account_env_names, account_zones, env_zone, parse_env_zone, resolve, resolve_account, DEFAULT_CONFIG_RELATIVE,
    ENV_ACCESS_KEY, ENV_SECRET_KEY, ENV_ZONE,
};
pub(crate) use settings::secret_bytes;
pub use settings::{
    ConfigInput, Credentials, Resolved, Settings, Source, Sources, ACCESS_KEY_ID_LEN, DEFAULT_CONNECTION_RETRIES,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT, DEFAULT_HOST, DEFAULT_PROTOCOL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_URI,
};
