//! The qingcloud-cli / SDK `config.yaml` reader: the keys it knows (top level and
//! `accounts.<name>`), each value checked for its type and shape, unknown keys reported as
//! warnings, and a file other users can read warned about.
//!
//! The file's text and the parser's copy of the secret are wiped once read; no error quotes a
//! value, and YAML errors are scrubbed of anything that could be the secret. It does not decide
//! precedence: that is `resolve`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use zeroize::{Zeroize, Zeroizing};

use crate::domain::{AccountName, Zone};

use super::error::ConfigError;
use super::settings::{DEFAULT_HOST, DEFAULT_PROTOCOL, DEFAULT_URI};

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

/// The recognised contents of a config file.
pub(super) struct FileConfig {
    pub(super) path: PathBuf,
    pub(super) access_key_id: Option<String>,
    pub(super) secret: Option<SecretString>,
    pub(super) zone: Option<Zone>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) protocol: Option<String>,
    pub(super) uri: Option<String>,
    pub(super) connection_retries: Option<u32>,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) request_timeout: Option<Duration>,
    pub(super) absent_on: Vec<String>,
    /// `accounts:`, by name (only at the top level).
    pub(super) accounts: std::collections::BTreeMap<String, FileConfig>,
}

impl FileConfig {
    pub(super) fn read(path: &Path, warnings: &mut Vec<String>) -> Result<Self, ConfigError> {
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
    pub(super) fn endpoint_text(&self) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_secret_values() {
        let text = "qy_access_key_id: AK\nqy_secret_access_key: 'S3cr3tValue\n";
        assert_eq!(scrub("error near 'S3cr3tValue", text), "error near '[REDACTED]");
    }
}
