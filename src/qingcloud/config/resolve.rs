//! Resolution and precedence (SPEC §5): flags > environment > config file > defaults, for the
//! default account (the file's top level, `QINGCLOUD_*`) or a named one (`accounts.<name>`,
//! `QINGCLOUD_*_<NAME>`). The access key id and the secret each take their own source; a pair
//! from two places is warned about.
//!
//! It reads the environment only through the closure it is given (or, in [`env_zone`], this
//! process's), leaves reading the file to `file`, and does no network I/O. It never quotes the
//! secret, nor a value that may be it.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use url::Url;
use zeroize::Zeroizing;

use crate::domain::{AccountName, Zone};

use super::endpoint::parse_endpoint;
use super::error::ConfigError;
use super::file::FileConfig;
use super::settings::{
    ConfigInput, Credentials, Resolved, Settings, Source, Sources, ACCESS_KEY_ID_LEN, DEFAULT_CONNECTION_RETRIES,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT, DEFAULT_REQUEST_TIMEOUT,
};

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

/// Environment variables of a named account: `QINGCLOUD_ACCESS_KEY_<NAME>` and
/// `QINGCLOUD_SECRET_KEY_<NAME>`, the name upper-cased with `-` written `_`.
pub fn account_env_names(account: &AccountName) -> (String, String) {
    let suffix = account.as_str().to_ascii_uppercase().replace('-', "_");
    (format!("{ENV_ACCESS_KEY}_{suffix}"), format!("{ENV_SECRET_KEY}_{suffix}"))
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
