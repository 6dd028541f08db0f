//! Credentials and endpoint (SPEC §5): flags > environment > config file > defaults.
//!
//! This module reads the qingcloud-cli / SDK `config.yaml` and the environment once and turns
//! them into [`Settings`]. It does no network I/O. The secret key lives in a
//! [`secrecy::SecretString`] from the moment it is read; no `Debug`, `Display`, error or log line
//! of this module contains it, and errors about the config file never quote its values.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;
use zeroize::{Zeroize, Zeroizing};

use crate::domain::{AccountName, Zone};

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

/// Environment variables read through the `env` closure of [`resolve`] (the Terraform
/// provider's names). `QINGCLOUD_ENDPOINT` and `QINGCLOUD_CONFIG` are read by clap into
/// [`ConfigInput`].
pub const ENV_ACCESS_KEY: &str = "QINGCLOUD_ACCESS_KEY";
pub const ENV_SECRET_KEY: &str = "QINGCLOUD_SECRET_KEY";
pub const ENV_ZONE: &str = "QINGCLOUD_ZONE";

/// `QINGCLOUD_ZONE` from the variable's text, the one place it is parsed: blank is unset; a
/// value is trimmed, and one that is not a zone (`[a-z0-9-]+`) is a configuration error.
pub fn parse_env_zone(value: Option<&str>) -> Result<Option<Zone>, ConfigError> {
    match value.map(str::trim) {
        Some(z) if !z.is_empty() => {
            Zone::parse(z).map(Some).map_err(|e| ConfigError::Invalid(format!("{ENV_ZONE}: {e}")))
        }
        _ => Ok(None),
    }
}

/// `QINGCLOUD_ZONE` from this process's environment (see [`parse_env_zone`]).
pub fn env_zone() -> Result<Option<Zone>, ConfigError> {
    parse_env_zone(std::env::var(ENV_ZONE).ok().as_deref())
}

/// The config file looked for under the home directory when `--config` is not given.
pub const DEFAULT_CONFIG_RELATIVE: &str = ".qingcloud/config.yaml";

/// Access key ids QingCloud issues are 20 upper-case letters and digits
/// (`QYACCESSKEYIDEXAMPLE`). The accepted shape leaves room for other lengths (private clouds,
/// older keys) but not for anything else: a lower-case letter, a space, a colon or punctuation
/// means something else landed in the key id, typically the secret key of a line YAML folded
/// into it, and that value must not be sent, stored or printed.
pub const ACCESS_KEY_ID_LEN: std::ops::RangeInclusive<usize> = 4..=64;

const KNOWN_KEYS: [&str; 12] = [
    "qy_access_key_id",
    "qy_secret_access_key",
    "zone",
    "host",
    "port",
    "protocol",
    "uri",
    "connection_retries",
    "connection_timeout",
    "http_socket_timeout",
    // qc-offboard's own: which answers mean "the account does not exist" (`--absent-on`).
    "absent_on",
    // qc-offboard's own: further QingCloud accounts, by name, each a mapping of the keys above.
    "accounts",
];

/// Environment variables of a named account: `QINGCLOUD_ACCESS_KEY_<NAME>` and
/// `QINGCLOUD_SECRET_KEY_<NAME>`, the name upper-cased with `-` written `_`.
pub fn account_env_names(account: &AccountName) -> (String, String) {
    let suffix = account.as_str().to_ascii_uppercase().replace('-', "_");
    (format!("{ENV_ACCESS_KEY}_{suffix}"), format!("{ENV_SECRET_KEY}_{suffix}"))
}

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
/// one directly without going through [`resolve`].
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

/// The result of [`resolve`]: settings plus what an operator should know about them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub settings: Settings,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub sources: Sources,
    /// Non-fatal findings (unknown keys, mixed credential sources); already logged.
    pub warnings: Vec<String>,
}

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

/// Resolve settings from flag values, the environment (through `env`) and the config file
/// (`input.config`, which must then exist, else `home/.qingcloud/config.yaml` if it exists).
pub fn resolve(
    input: &ConfigInput,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<Resolved, ConfigError> {
    resolve_account(input, env, home, &AccountName::default_account())
}

/// [`resolve`] for one QingCloud account. The default account is the config file's top level
/// (the qingcloud-cli file as it is) with `QINGCLOUD_ACCESS_KEY`/`QINGCLOUD_SECRET_KEY`/
/// `QINGCLOUD_ZONE`; a named account is the file's `accounts.<name>` with the variables of
/// [`account_env_names`]. `--endpoint` applies to every account; a named account without
/// `host`/`port`/`protocol`/`uri` of its own uses the top level's.
pub fn resolve_account(
    input: &ConfigInput,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
    account: &AccountName,
) -> Result<Resolved, ConfigError> {
    let env_value = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut warnings = Vec::new();

    let (file, config_path_note) = match (&input.config, home) {
        (Some(path), _) => (Some(FileConfig::read(path, &mut warnings)?), path.display().to_string()),
        (None, Some(home)) => {
            let path = home.join(DEFAULT_CONFIG_RELATIVE);
            if path.exists() {
                (Some(FileConfig::read(&path, &mut warnings)?), path.display().to_string())
            } else {
                (None, format!("{} (not found)", path.display()))
            }
        }
        (None, None) => (None, format!("~/{DEFAULT_CONFIG_RELATIVE} (no home directory)")),
    };
    let top = file.as_ref();
    let (env_ak_name, env_sk_name) = if account.is_default() {
        (ENV_ACCESS_KEY.to_owned(), ENV_SECRET_KEY.to_owned())
    } else {
        account_env_names(account)
    };
    let profile = if account.is_default() {
        top
    } else {
        match top.and_then(|f| f.accounts.get(account.as_str())) {
            Some(p) => Some(p),
            // The environment alone may give a named account its key pair.
            None if env_value(&env_ak_name).is_some() => None,
            None => {
                let known: Vec<&str> = top.map(|f| f.accounts.keys().map(String::as_str).collect()).unwrap_or_default();
                return Err(ConfigError::UnknownAccount {
                    account: account.to_string(),
                    config: config_path_note,
                    known: if known.is_empty() { "none".to_owned() } else { known.join(", ") },
                    env: env_ak_name,
                });
            }
        }
    };
    let file_ref = profile;

    // Endpoint.
    let (endpoint, endpoint_source) = match &input.endpoint {
        Some(raw) if !raw.trim().is_empty() => {
            (parse_endpoint(raw.trim(), "--endpoint / QINGCLOUD_ENDPOINT")?, Source::Flag)
        }
        _ => match file_ref.and_then(FileConfig::endpoint_text).or_else(|| top.and_then(FileConfig::endpoint_text)) {
            Some(text) => (
                // A value from the file may hold a folded line (the secret's): it is not shown.
                parse_endpoint(&text, &format!("built from host/port/protocol/uri in {config_path_note}")).map_err(
                    |e| match e {
                        ConfigError::Endpoint { source_name, reason, .. } => {
                            ConfigError::Endpoint { value: "(not shown)".to_owned(), source_name, reason }
                        }
                        other => other,
                    },
                )?,
                Source::ConfigFile,
            ),
            // A constant URL, parsed by the tests too.
            None => (Url::parse(DEFAULT_ENDPOINT).expect("default endpoint parses"), Source::Default),
        },
    };

    // Credentials, each half by precedence.
    let env_ak = env_value(&env_ak_name);
    let env_sk = env(&env_sk_name).map(Zeroizing::new).and_then(|raw| {
        let trimmed = raw.trim();
        (!trimmed.is_empty()).then(|| SecretString::from(trimmed))
    });
    let (access_key_id, ak_source) = match (env_ak, file_ref.and_then(|f| f.access_key_id.clone())) {
        (Some(v), _) => (Some(v), Source::Environment),
        (None, Some(v)) => (Some(v), Source::ConfigFile),
        (None, None) => (None, Source::Default),
    };
    let (secret, sk_source) = match (env_sk, file_ref.and_then(|f| f.secret.clone())) {
        (Some(v), _) => (Some(v), Source::Environment),
        (None, Some(v)) => (Some(v), Source::ConfigFile),
        (None, None) => (None, Source::Default),
    };
    let file_part = if account.is_default() { String::new() } else { format!(" (accounts.{account})") };
    let tried =
        format!("environment variables {env_ak_name} and {env_sk_name}, config file {config_path_note}{file_part}");
    let credentials = match (access_key_id, secret) {
        (Some(access_key_id), Some(secret)) => {
            let source_name = match ak_source {
                Source::Environment => env_ak_name.clone(),
                _ => format!("qy_access_key_id{file_part} in {config_path_note}"),
            };
            check_access_key_id(&access_key_id, &secret, source_name)?;
            Credentials { access_key_id, secret }
        }
        (ak, sk) => {
            let missing = match (ak.is_none(), sk.is_none()) {
                (true, true) => "no access key id and no secret key",
                (true, false) => "no access key id",
                _ => "no secret key",
            };
            return Err(ConfigError::NoCredentials { missing: missing.to_owned(), tried });
        }
    };
    if ak_source != sk_source {
        warnings.push(format!(
            "the access key id comes from the {ak_source} but the secret key from the {sk_source}; \
             set both in one place if this is not intended"
        ));
    }

    // Zone.
    let env_zone = if account.is_default() { parse_env_zone(env(ENV_ZONE).as_deref())? } else { None };
    let (zone, zone_source) = match env_zone {
        Some(zone) => (Some(zone), Some(Source::Environment)),
        None => match file_ref.and_then(|f| f.zone.clone()) {
            Some(zone) => (Some(zone), Some(Source::ConfigFile)),
            None => (None, None),
        },
    };

    let settings = Settings {
        endpoint,
        credentials,
        zone,
        connect_timeout: file_ref
            .and_then(|f| f.connect_timeout)
            .or_else(|| top.and_then(|f| f.connect_timeout))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        request_timeout: file_ref
            .and_then(|f| f.request_timeout)
            .or_else(|| top.and_then(|f| f.request_timeout))
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        connection_retries: file_ref
            .and_then(|f| f.connection_retries)
            .or_else(|| top.and_then(|f| f.connection_retries))
            .unwrap_or(DEFAULT_CONNECTION_RETRIES),
        absent_on: top.map(|f| f.absent_on.clone()).unwrap_or_default(),
    };
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let sources = Sources { endpoint: endpoint_source, access_key_id: ak_source, secret: sk_source, zone: zone_source };
    tracing::debug!(settings = %settings.redacted_summary(), ?sources, "configuration resolved");
    let config_file = file.map(|f| f.path);
    Ok(Resolved { settings, config_file, sources, warnings })
}

/// The zones the config file gives its named accounts (`accounts.<name>.zone`), for manifests
/// whose clusters of those accounts name none. A file that cannot be read gives none here;
/// resolving the account reports why.
pub fn account_zones(input: &ConfigInput, home: Option<&Path>) -> std::collections::HashMap<AccountName, Zone> {
    let path = match (&input.config, home) {
        (Some(p), _) => p.clone(),
        (None, Some(h)) => h.join(DEFAULT_CONFIG_RELATIVE),
        (None, None) => return Default::default(),
    };
    if !path.is_file() {
        return Default::default();
    }
    let Ok(file) = FileConfig::read(&path, &mut Vec::new()) else { return Default::default() };
    file.accounts.iter().filter_map(|(name, p)| Some((AccountName::parse(name).ok()?, p.zone.clone()?))).collect()
}

/// Refuse an access key id that does not have the shape of one, or that is the secret key,
/// without ever quoting it: whatever it is, it is not to be sent, stored or printed.
fn check_access_key_id(value: &str, secret: &SecretString, source_name: String) -> Result<(), ConfigError> {
    let shaped =
        ACCESS_KEY_ID_LEN.contains(&value.len()) && value.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let hint = if value.contains("qy_secret_access_key") {
        "; it contains `qy_secret_access_key`: the line after qy_access_key_id is indented, so YAML folded \
         it into the key id; remove the indentation"
    } else if value == secret.expose_secret() {
        "; it is the same as the secret key"
    } else if value.chars().any(char::is_whitespace) {
        "; it contains whitespace: if it is followed by an indented line, YAML folded that line into it"
    } else {
        ""
    };
    if shaped && hint.is_empty() {
        return Ok(());
    }
    Err(ConfigError::AccessKeyShape { source_name, hint: hint.to_owned() })
}

/// Parse and check an endpoint URL: http or https, with a host, no query, fragment or user info.
pub fn parse_endpoint(raw: &str, source_name: &str) -> Result<Url, ConfigError> {
    let fail = |reason: &str| ConfigError::Endpoint {
        value: printable_endpoint(raw),
        source_name: source_name.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw).map_err(|e| fail(&format!("{e} (expected e.g. {DEFAULT_ENDPOINT})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            "user information in the URL is not supported; credentials come from the environment or the config file",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail("the URL must not have a query or a fragment; its path is signed as it is"));
    }
    Ok(url)
}

/// The endpoint as it may be echoed: without any password in it.
fn printable_endpoint(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("[REDACTED]"));
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) if raw.contains('@') => "[not shown: contains '@']".to_owned(),
        Err(_) => raw.to_owned(),
    }
}

/// The recognised contents of a config file.
struct FileConfig {
    path: PathBuf,
    access_key_id: Option<String>,
    secret: Option<SecretString>,
    zone: Option<Zone>,
    host: Option<String>,
    port: Option<u16>,
    protocol: Option<String>,
    uri: Option<String>,
    connection_retries: Option<u32>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    absent_on: Vec<String>,
    /// `accounts:`, by name (only at the top level).
    accounts: std::collections::BTreeMap<String, FileConfig>,
}

impl FileConfig {
    fn read(path: &Path, warnings: &mut Vec<String>) -> Result<Self, ConfigError> {
        let fail = |reason: String| ConfigError::File { path: path.to_owned(), reason };
        // The whole text holds the secret: it is wiped when it goes out of scope.
        let text = Zeroizing::new(read_regular(path).map_err(|e| fail(format!("cannot read: {e}")))?);
        warn_if_shared(path, warnings);
        let value: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| fail(scrub(&format!("invalid YAML: {e}"), &text)))?;
        let map = match value {
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            serde_yaml::Value::Mapping(m) => m,
            _ => return Err(fail("expected a mapping of keys to values at the top level".to_owned())),
        };
        Self::from_map(path, map, None, warnings)
    }

    /// The keys of one mapping: the top level (`account` `None`) or `accounts.<account>`.
    fn from_map(
        path: &Path,
        map: serde_yaml::Mapping,
        account: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let prefix = account.map(|a| format!("accounts.{a}.")).unwrap_or_default();
        let fail = |reason: String| ConfigError::File { path: path.to_owned(), reason: format!("{prefix}{reason}") };
        let mut cfg = FileConfig {
            path: path.to_owned(),
            access_key_id: None,
            secret: None,
            zone: None,
            host: None,
            port: None,
            protocol: None,
            uri: None,
            connection_retries: None,
            connect_timeout: None,
            request_timeout: None,
            absent_on: Vec::new(),
            accounts: std::collections::BTreeMap::new(),
        };
        for (key, value) in map {
            let Some(key) = key.as_str().map(str::to_owned) else {
                return Err(fail("every key must be a string".to_owned()));
            };
            if !KNOWN_KEYS.contains(&key.as_str()) {
                warnings.push(format!("config file {}: unknown key {prefix}{key:?} is ignored", path.display()));
                continue;
            }
            if account.is_some() && matches!(key.as_str(), "accounts" | "absent_on") {
                return Err(fail(format!("{key}: belongs at the top level of the file, not under an account")));
            }
            // A null value (`zone:` with nothing after it) counts as absent.
            if value.is_null() {
                continue;
            }
            let bad = |what: &str| fail(format!("{key}: {what}"));
            // `key: v` followed by an indented `qy_secret_access_key: S` is one scalar to YAML:
            // the secret would become this key's value and be echoed, sent or stored.
            if key != "qy_secret_access_key" && value.as_str().is_some_and(|v| v.contains("qy_secret_access_key")) {
                return Err(bad(
                    "its value contains `qy_secret_access_key`: the line after it is indented, so YAML folded \
                     that line into this value; remove the indentation (the value is not shown)",
                ));
            }
            match key.as_str() {
                "qy_access_key_id" => {
                    cfg.access_key_id = Some(string_value(&value).ok_or_else(|| bad("must be a string"))?)
                }
                "qy_secret_access_key" => {
                    // Never describe the value: only its type or its shape is wrong.
                    let serde_yaml::Value::String(mut s) = value else {
                        return Err(bad("must be a string (quote the value)"));
                    };
                    let whitespace = s.trim().chars().any(char::is_whitespace);
                    // Copied once into the secret's own zeroizing buffer; the parser's copy is wiped.
                    cfg.secret = (!whitespace).then(|| SecretString::from(s.trim()));
                    s.zeroize();
                    if whitespace {
                        return Err(bad(
                            "must be one word; it contains whitespace (is the next line indented into it?); \
                             its value is not shown",
                        ));
                    }
                }
                "zone" => {
                    let z = string_value(&value).ok_or_else(|| bad("must be a string"))?;
                    // Not quoted: a line folded into it (the secret's?) would be echoed.
                    let zone = Zone::parse(&z.to_ascii_lowercase());
                    cfg.zone = Some(zone.map_err(|_| {
                        bad("must be a zone id such as sh1a (lower-case letters, digits and '-'); its value is not shown")
                    })?);
                }
                "host" => cfg.host = Some(string_value(&value).ok_or_else(|| bad("must be a string"))?),
                "port" => {
                    let port = integer_value(&value)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad("must be a port number from 1 to 65535"))?;
                    cfg.port = Some(port);
                }
                "protocol" => {
                    let p = string_value(&value).ok_or_else(|| bad("must be a string"))?.to_ascii_lowercase();
                    if !matches!(p.as_str(), "http" | "https") {
                        return Err(bad("must be http or https"));
                    }
                    cfg.protocol = Some(p);
                }
                "uri" => {
                    let u = string_value(&value).ok_or_else(|| bad("must be a string"))?;
                    if !u.starts_with('/') {
                        return Err(bad("must start with '/' (e.g. /iaas/)"));
                    }
                    cfg.uri = Some(u);
                }
                "connection_retries" => {
                    let n = integer_value(&value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad("must be a non-negative whole number"))?;
                    cfg.connection_retries = Some(n);
                }
                "connection_timeout" => {
                    cfg.connect_timeout =
                        Some(seconds_value(&value).ok_or_else(|| bad("must be a positive number of seconds"))?)
                }
                "absent_on" => {
                    let list = match &value {
                        serde_yaml::Value::Sequence(items) => {
                            items.iter().map(string_value).collect::<Option<Vec<_>>>()
                        }
                        other => string_value(other).map(|s| vec![s]),
                    };
                    cfg.absent_on = list.ok_or_else(|| bad("must be a list of rules such as job:2100"))?;
                }
                "accounts" => {
                    let serde_yaml::Value::Mapping(accounts) = value else {
                        return Err(bad("must be a mapping of account names to their keys"));
                    };
                    for (name, body) in accounts {
                        let Some(name) = name.as_str().map(str::to_owned) else {
                            return Err(bad("account names must be strings"));
                        };
                        let parsed = AccountName::parse(&name).map_err(|e| bad(&e))?;
                        if parsed.is_default() {
                            return Err(bad(
                                "`default` is the account of the file's top-level keys; give this one another name",
                            ));
                        }
                        let body = match body {
                            serde_yaml::Value::Mapping(m) => m,
                            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
                            _ => return Err(bad(&format!("{name}: must be a mapping of keys to values"))),
                        };
                        let profile = Self::from_map(path, body, Some(&name), warnings)?;
                        cfg.accounts.insert(name, profile);
                    }
                }
                "http_socket_timeout" => {
                    cfg.request_timeout =
                        Some(seconds_value(&value).ok_or_else(|| bad("must be a positive number of seconds"))?)
                }
                // Every key of KNOWN_KEYS has its arm above; one added there without an arm
                // is ignored like an unknown key rather than stopping the program.
                _ => warnings.push(format!("config file {}: key {key:?} is ignored", path.display())),
            }
        }
        if let Some(secret) = cfg.secret.as_ref().map(ExposeSecret::expose_secret).filter(|s| !s.is_empty()) {
            let holders = [("qy_access_key_id", &cfg.access_key_id), ("host", &cfg.host), ("uri", &cfg.uri)];
            if let Some((key, _)) = holders.iter().find(|(_, v)| v.as_deref().is_some_and(|v| v.contains(secret))) {
                return Err(fail(format!("{key}: holds the secret key's value; the value is not shown")));
            }
        }
        Ok(cfg)
    }

    /// The endpoint URL text built from `host`/`port`/`protocol`/`uri`, when any is set.
    fn endpoint_text(&self) -> Option<String> {
        if self.host.is_none() && self.port.is_none() && self.protocol.is_none() && self.uri.is_none() {
            return None;
        }
        let protocol = self.protocol.as_deref().unwrap_or(DEFAULT_PROTOCOL);
        let host = self.host.as_deref().unwrap_or(DEFAULT_HOST);
        // An IPv6 literal needs brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let uri = self.uri.as_deref().unwrap_or(DEFAULT_URI);
        Some(format!("{protocol}://{host}{port}{uri}"))
    }
}

/// The config file holds the secret key: one that other users can read gets a warning, like
/// the database does.
fn warn_if_shared(path: &Path, warnings: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "config file {} is readable by other users (mode {mode:o}) and holds the secret key; `chmod 600` it",
                path.display()
            ));
        }
    }
}

/// Read a regular file; anything else (a FIFO that would block forever, a directory, a device)
/// is refused on the open descriptor, which is opened without blocking.
fn read_regular(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

fn string_value(v: &serde_yaml::Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn integer_value(v: &serde_yaml::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn seconds_value(v: &serde_yaml::Value) -> Option<Duration> {
    let secs = v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
    (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// A YAML syntax error may quote the line it failed on. Remove anything that could be the
/// secret: the value of every line that mentions the secret key.
fn scrub(message: &str, text: &str) -> String {
    let mut out = message.to_owned();
    for line in text.lines().filter(|l| l.contains("qy_secret_access_key")) {
        let value = line.split_once(':').map_or("", |(_, v)| v).trim().trim_matches(['\'', '"']).trim();
        if value.len() >= 3 {
            out = out.replace(value, "[REDACTED]");
        }
    }
    out
}

/// Expose the secret for signing. Kept as one named function so the uses are easy to audit.
pub(crate) fn secret_bytes(credentials: &Credentials) -> &[u8] {
    credentials.secret.expose_secret().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_checks() {
        assert!(parse_endpoint("https://api.qingcloud.com/iaas/", "t").is_ok());
        assert_eq!(parse_endpoint("http://127.0.0.1:8787/iaas", "t").unwrap().path(), "/iaas");
        for bad in
            ["ftp://x/iaas/", "https://", "file:///iaas/", "not a url", "https://h/iaas/?a=1", "https://u:p@h/iaas/"]
        {
            assert!(matches!(parse_endpoint(bad, "t"), Err(ConfigError::Endpoint { .. })), "{bad}");
        }
        let e = parse_endpoint("https://u:hunter22@h/", "t").unwrap_err().to_string();
        assert!(!e.contains("hunter22"), "{e}");
    }

    #[test]
    fn scrub_removes_secret_values() {
        let text = "qy_access_key_id: AK\nqy_secret_access_key: 'S3cr3tValue\n";
        assert_eq!(scrub("error near 'S3cr3tValue", text), "error near '[REDACTED]");
    }
}
