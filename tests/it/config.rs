//! Configuration resolution (SPEC §5): precedence, the endpoint built from file keys, warnings,
//! the errors an operator sees (exit 78), and that the secret never shows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qc_offboard::exit::{code_for, Exit};
use qc_offboard::manifest::AccountName;
use qc_offboard::qingcloud::config::{resolve, resolve_account, ConfigError, ConfigInput, Resolved, Source};

const FILE_SECRET: &str = "FileSecret-9f8e7d-do-not-print";
const ENV_SECRET: &str = "EnvSecret-1a2b3c-do-not-print";

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |k: &str| map.get(k).cloned()
}

fn write_home_config(home: &Path, text: &str) -> std::path::PathBuf {
    let dir = home.join(".qingcloud");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    // As a config file holding a secret should be (a shared one gets a warning of its own).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn file_with_everything() -> String {
    format!(
        "qy_access_key_id: 'FILEAK'\nqy_secret_access_key: '{FILE_SECRET}'\nzone: 'PEK3A'\n\
         host: 127.0.0.1\nport: 8787\nprotocol: http\nuri: /iaas\nconnection_retries: 7\nconnection_timeout: 5\n"
    )
}

fn secret_of(r: &Resolved) -> String {
    use secrecy::ExposeSecret;
    r.settings.credentials.secret.expose_secret().to_owned()
}

#[test]
fn defaults_apply_when_only_the_environment_has_credentials() {
    let home = helpers_tempdir();
    let r = resolve(
        &ConfigInput::default(),
        &env(&[("QINGCLOUD_ACCESS_KEY", "ENVAK"), ("QINGCLOUD_SECRET_KEY", ENV_SECRET)]),
        Some(home.path()),
    )
    .unwrap();
    assert_eq!(r.settings.endpoint.as_str(), "https://api.qingcloud.com/iaas/");
    assert_eq!(r.settings.credentials.access_key_id, "ENVAK");
    assert_eq!(secret_of(&r), ENV_SECRET);
    assert_eq!(r.settings.zone, None);
    assert_eq!(r.settings.connect_timeout, Duration::from_secs(30));
    assert_eq!(r.settings.request_timeout, Duration::from_secs(60));
    assert_eq!(r.settings.connection_retries, 3);
    assert_eq!(r.config_file, None);
    assert_eq!(
        (r.sources.endpoint, r.sources.access_key_id, r.sources.secret),
        (Source::Default, Source::Environment, Source::Environment)
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn the_home_config_file_supplies_everything_it_has() {
    let home = helpers_tempdir();
    let path = write_home_config(home.path(), &file_with_everything());
    let r = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap();
    assert_eq!(r.config_file.as_deref(), Some(path.as_path()));
    assert_eq!(r.settings.credentials.access_key_id, "FILEAK");
    assert_eq!(secret_of(&r), FILE_SECRET);
    assert_eq!(r.settings.zone.as_ref().map(|z| z.as_str()), Some("pek3a"), "zones are lower-cased like the CLI does");
    assert_eq!(r.settings.endpoint.as_str(), "http://127.0.0.1:8787/iaas", "built from host/port/protocol/uri");
    assert_eq!(r.settings.endpoint.path(), "/iaas", "the uri is kept exactly: it is signed");
    assert_eq!(r.settings.connection_retries, 7);
    assert_eq!(r.settings.connect_timeout, Duration::from_secs(5));
    assert_eq!(r.sources.endpoint, Source::ConfigFile);
    assert_eq!(r.sources.zone, Some(Source::ConfigFile));
}

#[test]
fn missing_endpoint_parts_take_the_defaults() {
    let home = helpers_tempdir();
    write_home_config(
        home.path(),
        "qy_access_key_id: QYACCESSKEYIDEXAMPLE\nqy_secret_access_key: 'xxxx'\nhost: api.example.internal\n",
    );
    let r = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap();
    assert_eq!(r.settings.endpoint.as_str(), "https://api.example.internal/iaas/");

    write_home_config(
        home.path(),
        "qy_access_key_id: QYACCESSKEYIDEXAMPLE\nqy_secret_access_key: 'xxxx'\nprotocol: http\nport: 80\n",
    );
    let r = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap();
    assert_eq!(r.settings.endpoint.as_str(), "http://api.qingcloud.com/iaas/");
}

#[test]
fn environment_beats_the_file_and_flags_beat_both() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &file_with_everything());
    let vars =
        env(&[("QINGCLOUD_ACCESS_KEY", "ENVAK"), ("QINGCLOUD_SECRET_KEY", ENV_SECRET), ("QINGCLOUD_ZONE", "sh1a")]);
    let r = resolve(&ConfigInput::default(), &vars, Some(home.path())).unwrap();
    assert_eq!(r.settings.credentials.access_key_id, "ENVAK");
    assert_eq!(secret_of(&r), ENV_SECRET);
    assert_eq!(r.settings.zone.as_ref().map(|z| z.as_str()), Some("sh1a"));
    assert_eq!(r.settings.endpoint.as_str(), "http://127.0.0.1:8787/iaas", "no flag: the file's endpoint");

    let input = ConfigInput { endpoint: Some("https://api.example.com:8443/iaas/".into()), config: None };
    let r = resolve(&input, &vars, Some(home.path())).unwrap();
    assert_eq!(r.settings.endpoint.as_str(), "https://api.example.com:8443/iaas/");
    assert_eq!(r.sources.endpoint, Source::Flag);
    assert_eq!(r.settings.connection_retries, 7, "keys no flag sets still come from the file");
}

#[test]
fn half_a_key_pair_from_each_source_works_with_a_warning() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &file_with_everything());
    let r = resolve(&ConfigInput::default(), &env(&[("QINGCLOUD_ACCESS_KEY", "ENVAK")]), Some(home.path())).unwrap();
    assert_eq!((r.settings.credentials.access_key_id.as_str(), secret_of(&r).as_str()), ("ENVAK", FILE_SECRET));
    assert!(r.warnings.iter().any(|w| w.contains("access key id comes from the environment")), "{:?}", r.warnings);
}

#[test]
fn an_explicit_config_path_replaces_the_home_file_and_must_exist() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &file_with_everything());
    let other = home.path().join("other.yaml");
    std::fs::write(&other, "qy_access_key_id: OTHER\nqy_secret_access_key: 'other-secret'\n").unwrap();
    let r =
        resolve(&ConfigInput { endpoint: None, config: Some(other.clone()) }, &env(&[]), Some(home.path())).unwrap();
    assert_eq!(r.settings.credentials.access_key_id, "OTHER");
    assert_eq!(r.settings.endpoint.as_str(), "https://api.qingcloud.com/iaas/", "the home file was not read");

    let missing = home.path().join("nope.yaml");
    let err = resolve(&ConfigInput { endpoint: None, config: Some(missing.clone()) }, &env(&[]), Some(home.path()))
        .unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()) && msg.contains("cannot read"), "{msg}");
}

#[test]
fn unknown_keys_are_warnings_not_errors() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &format!("{}log_level: warn\nfavourite_colour: blue\n", file_with_everything()));
    let log = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || Sink(sink.clone()))
        .finish();
    let r = tracing::subscriber::with_default(subscriber, || {
        resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap()
    });
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN") && log.contains("favourite_colour"), "warnings are logged: {log}");
    assert!(log.contains("configuration resolved") && !log.contains(FILE_SECRET), "{log}");
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("\"log_level\"") && r.warnings[0].contains("ignored"));
    assert!(r.warnings[1].contains("\"favourite_colour\""));
    assert!(!r.warnings.iter().any(|w| w.contains("blue")), "values are not echoed");
}

#[test]
fn missing_credentials_name_every_source_tried() {
    let home = helpers_tempdir();
    let err = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap_err();
    let msg = err.to_string();
    let expected_path = home.path().join(".qingcloud/config.yaml");
    assert!(msg.contains("QINGCLOUD_ACCESS_KEY") && msg.contains("QINGCLOUD_SECRET_KEY"), "{msg}");
    assert!(msg.contains(&format!("{} (not found)", expected_path.display())), "{msg}");
    assert!(msg.contains("no access key id and no secret key"), "{msg}");
    assert_eq!(code_for(&anyhow::Error::new(err)), Exit::Config);

    write_home_config(home.path(), "qy_access_key_id: ONLYAK\n");
    let msg = resolve(&ConfigInput::default(), &env(&[("QINGCLOUD_SECRET_KEY", "  ")]), Some(home.path()))
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("no API credentials: no secret key"), "blank variables count as unset: {msg}");
    assert!(msg.contains(&expected_path.display().to_string()) && !msg.contains("not found"), "{msg}");

    let msg = resolve(&ConfigInput::default(), &env(&[]), None).unwrap_err().to_string();
    assert!(msg.contains("no home directory"), "{msg}");
}

#[test]
fn bad_endpoints_are_refused() {
    let vars = env(&[("QINGCLOUD_ACCESS_KEY", "QYACCESSKEYIDEXAMPLE"), ("QINGCLOUD_SECRET_KEY", ENV_SECRET)]);
    for (bad, why) in [
        ("ftp://api.qingcloud.com/iaas/", "http or https"),
        ("api.qingcloud.com/iaas/", "relative URL"),
        ("https://api.qingcloud.com/iaas/?x=1", "query"),
        ("http://", "empty host"),
    ] {
        let err = resolve(&ConfigInput { endpoint: Some(bad.into()), config: None }, &vars, None).unwrap_err();
        assert!(matches!(err, ConfigError::Endpoint { .. }), "{bad}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(why) && msg.contains("QINGCLOUD_ENDPOINT"), "{bad}: {msg}");
        assert_eq!(code_for(&anyhow::Error::new(err)), Exit::Config);
    }

    let home = helpers_tempdir();
    write_home_config(
        home.path(),
        "qy_access_key_id: QYACCESSKEYIDEXAMPLE\nqy_secret_access_key: 'xxxx'\nprotocol: gopher\n",
    );
    let msg = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap_err().to_string();
    assert!(msg.contains("protocol: must be http or https"), "{msg}");
}

#[test]
fn invalid_files_say_where_and_why_without_the_secret() {
    let home = helpers_tempdir();
    let cases = [
        // An unterminated quote on the secret's own line.
        format!("qy_access_key_id: QYACCESSKEYIDEXAMPLE\nqy_secret_access_key: \"{FILE_SECRET}\nzone: sh1a\n"),
        // The secret with the wrong type.
        format!("qy_access_key_id: QYACCESSKEYIDEXAMPLE\nqy_secret_access_key: [{FILE_SECRET}]\n"),
        format!("qy_secret_access_key: '{FILE_SECRET}'\nport: http\n"),
        format!("qy_secret_access_key: '{FILE_SECRET}'\nzone: 'Sh 1a'\n"),
        format!("qy_secret_access_key: '{FILE_SECRET}'\nuri: iaas\n"),
        format!("- qy_secret_access_key: '{FILE_SECRET}'\n"),
    ];
    for text in cases {
        let path = write_home_config(home.path(), &text);
        let err = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, ConfigError::File { .. }), "{text}: {err:?}");
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(!shown.contains(FILE_SECRET), "secret leaked: {shown}");
        assert_eq!(code_for(&anyhow::Error::new(err)), Exit::Config);
    }
}

#[test]
fn nothing_resolved_shows_the_secret() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &format!("{}extra: 1\n", file_with_everything()));
    let r = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap();
    for shown in [
        format!("{r:?}"),
        format!("{:?}", r.settings),
        format!("{}", r.settings),
        r.settings.redacted_summary(),
        format!("{:?}", r.settings.credentials),
        format!("{}", r.settings.credentials),
        r.warnings.join("\n"),
    ] {
        assert!(!shown.contains(FILE_SECRET), "{shown}");
        assert!(shown.contains("FILEAK") || shown.contains("extra"), "{shown}");
    }
    assert!(r.settings.redacted_summary().contains("endpoint=http://127.0.0.1:8787/iaas"));
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn helpers_tempdir() -> tempfile::TempDir {
    crate::helpers::tempdir()
}

/// `qy_access_key_id: AK` followed by an indented secret line is one scalar to YAML
/// ("AK qy_secret_access_key:SECRET"): the secret must not become the access key id, even with
/// a secret key in the environment to complete the pair.
#[test]
fn a_secret_line_folded_into_the_key_id_is_refused_without_showing_it() {
    let home = helpers_tempdir();
    for text in [
        format!("qy_access_key_id: AK\n qy_secret_access_key:{FILE_SECRET}\n"),
        format!("qy_access_key_id: QYACCESSKEYIDEXAMPLE\n    qy_secret_access_key:'{FILE_SECRET}'\nzone: sh1a\n"),
        format!("zone: sh1a\nhost: api.example.internal\n qy_secret_access_key:{FILE_SECRET}\n"),
    ] {
        write_home_config(home.path(), &text);
        let vars = env(&[("QINGCLOUD_SECRET_KEY", ENV_SECRET), ("QINGCLOUD_ACCESS_KEY", "")]);
        let err = resolve(&ConfigInput::default(), &vars, Some(home.path())).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, ConfigError::File { .. }), "{text}: {err:?}");
        assert!(shown.contains("indented"), "says what to fix: {shown}");
        assert!(!shown.contains(FILE_SECRET) && !shown.contains(ENV_SECRET), "secret leaked: {shown}");
        assert_eq!(code_for(&anyhow::Error::new(err)), Exit::Config);
    }
}

#[test]
fn an_access_key_id_of_the_wrong_shape_is_refused_without_showing_it() {
    let home = helpers_tempdir();
    // From the environment: lower-case, punctuation, too long, the secret itself.
    for bad in ["qyaccesskeyidexample", "QYACCESS KEYID", "QY-ACCESS", &"Q".repeat(65), "AK", ENV_SECRET] {
        let vars = env(&[("QINGCLOUD_ACCESS_KEY", bad), ("QINGCLOUD_SECRET_KEY", ENV_SECRET)]);
        let err = resolve(&ConfigInput::default(), &vars, Some(home.path())).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, ConfigError::AccessKeyShape { .. }), "{bad}: {err:?}");
        assert!(shown.contains("QINGCLOUD_ACCESS_KEY") && shown.contains("upper-case"), "{shown}");
        assert!(!shown.contains(bad) && !shown.contains(ENV_SECRET), "value echoed: {shown}");
        assert_eq!(code_for(&anyhow::Error::new(err)), Exit::Config);
    }
    let same = "SAMEVALUEFORBOTHKEYS";
    let err = resolve(
        &ConfigInput::default(),
        &env(&[("QINGCLOUD_ACCESS_KEY", same), ("QINGCLOUD_SECRET_KEY", same)]),
        Some(home.path()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("same as the secret key") && !err.to_string().contains(same), "{err}");

    // From the file: the message names the file's key, not the value.
    let path =
        write_home_config(home.path(), &format!("qy_access_key_id: 'ak-1'\nqy_secret_access_key: '{FILE_SECRET}'\n"));
    let err = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap_err().to_string();
    assert!(err.contains("qy_access_key_id in") && err.contains(&path.display().to_string()), "{err}");
    assert!(!err.contains("ak-1"), "{err}");

    // The documented example and other plausible ids are accepted.
    for good in ["QYACCESSKEYIDEXAMPLE", "QYOTHERKEY", "ENVAK", "IYUQKUOTIMAAJBCNCJKX", &"Q1".repeat(32)] {
        let vars = env(&[("QINGCLOUD_ACCESS_KEY", good), ("QINGCLOUD_SECRET_KEY", ENV_SECRET)]);
        let r = resolve(&ConfigInput::default(), &vars, Some(home.path())).unwrap();
        assert_eq!(r.settings.credentials.access_key_id, good);
    }
}

#[test]
fn a_secret_with_an_indented_line_folded_into_it_is_refused_without_showing_it() {
    let home = helpers_tempdir();
    write_home_config(
        home.path(),
        &format!("qy_access_key_id: QYACCESSKEYIDEXAMPLE\nqy_secret_access_key: {FILE_SECRET}\n  tail\n"),
    );
    let err = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("qy_secret_access_key: must be one word"), "{shown}");
    assert!(!shown.contains(FILE_SECRET), "{shown}");
}

#[test]
fn a_zone_that_is_not_one_is_not_echoed() {
    let home = helpers_tempdir();
    write_home_config(
        home.path(),
        &format!(
            "qy_access_key_id: QYACCESSKEYIDEXAMPLE\nqy_secret_access_key: '{FILE_SECRET}'\nzone: 'S3cretLike Value'\n"
        ),
    );
    let err = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap_err().to_string();
    assert!(err.contains("zone: must be a zone id") && !err.contains("S3cretLike"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Several QingCloud accounts: `accounts:` beside the qingcloud-cli keys.

const STAGING_SECRET: &str = "StagingSecret-77aa-do-not-print";

fn two_accounts_file() -> String {
    format!(
        "{}accounts:\n  staging:\n    qy_access_key_id: QYSTAGINGKEY0000001\n    qy_secret_access_key: '{STAGING_SECRET}'\n    \
         zone: gd2\n  other-cloud:\n    qy_access_key_id: QYOTHERKEY000000001\n    qy_secret_access_key: x{STAGING_SECRET}\n    \
         host: api.example.net\n",
        file_with_everything()
    )
}

fn account(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

#[test]
fn the_top_level_is_the_default_account_and_each_named_account_has_its_own_key_pair() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &two_accounts_file());
    let default = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap();
    assert_eq!(default.settings.credentials.access_key_id, "FILEAK");
    assert_eq!(secret_of(&default), FILE_SECRET);
    assert!(default.warnings.is_empty(), "{:?}", default.warnings);

    let staging = resolve_account(&ConfigInput::default(), &env(&[]), Some(home.path()), &account("staging")).unwrap();
    assert_eq!(staging.settings.credentials.access_key_id, "QYSTAGINGKEY0000001");
    assert_eq!(secret_of(&staging), STAGING_SECRET);
    assert_eq!(staging.settings.zone.as_ref().map(|z| z.as_str()), Some("gd2"));
    // No endpoint keys of its own: the top level's endpoint and timeouts.
    assert_eq!(staging.settings.endpoint.as_str(), "http://127.0.0.1:8787/iaas");
    assert_eq!(staging.settings.connect_timeout, Duration::from_secs(5));
    assert_eq!(staging.settings.connection_retries, 7);

    let other =
        resolve_account(&ConfigInput::default(), &env(&[]), Some(home.path()), &account("other-cloud")).unwrap();
    assert_eq!(other.settings.endpoint.as_str(), "https://api.example.net/iaas/");
    // `--endpoint` applies to every account.
    let flag = ConfigInput { endpoint: Some("http://127.0.0.1:9/iaas/".into()), config: None };
    let other = resolve_account(&flag, &env(&[]), Some(home.path()), &account("other-cloud")).unwrap();
    assert_eq!(other.settings.endpoint.as_str(), "http://127.0.0.1:9/iaas/");
}

#[test]
fn a_named_account_takes_its_own_environment_variables_and_not_the_default_ones() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &two_accounts_file());
    let vars = env(&[
        ("QINGCLOUD_ACCESS_KEY", "ENVAK"),
        ("QINGCLOUD_SECRET_KEY", ENV_SECRET),
        ("QINGCLOUD_ZONE", "sh1a"),
        ("QINGCLOUD_ACCESS_KEY_OTHER_CLOUD", "QYFROMENV0000000001"),
        ("QINGCLOUD_SECRET_KEY_OTHER_CLOUD", "env-other-secret"),
    ]);
    let staging = resolve_account(&ConfigInput::default(), &vars, Some(home.path()), &account("staging")).unwrap();
    assert_eq!(staging.settings.credentials.access_key_id, "QYSTAGINGKEY0000001", "not QINGCLOUD_ACCESS_KEY");
    assert_eq!(staging.settings.zone.as_ref().map(|z| z.as_str()), Some("gd2"), "not QINGCLOUD_ZONE");
    let other = resolve_account(&ConfigInput::default(), &vars, Some(home.path()), &account("other-cloud")).unwrap();
    assert_eq!(other.settings.credentials.access_key_id, "QYFROMENV0000000001");
    assert_eq!(secret_of(&other), "env-other-secret");
    assert_eq!(other.sources.access_key_id, Source::Environment);
    // An account the file does not name, given wholly by the environment.
    let only_env = env(&[("QINGCLOUD_ACCESS_KEY_CI", "QYCIKEY000000000001"), ("QINGCLOUD_SECRET_KEY_CI", "s")]);
    let ci = resolve_account(&ConfigInput::default(), &only_env, Some(home.path()), &account("ci")).unwrap();
    assert_eq!(ci.settings.credentials.access_key_id, "QYCIKEY000000000001");
}

#[test]
fn an_unknown_account_is_a_configuration_error_naming_the_known_ones_without_secrets() {
    let home = helpers_tempdir();
    write_home_config(home.path(), &two_accounts_file());
    let e = resolve_account(&ConfigInput::default(), &env(&[]), Some(home.path()), &account("prod")).unwrap_err();
    assert!(matches!(e, ConfigError::UnknownAccount { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("\"prod\"") && msg.contains("other-cloud, staging"), "{msg}");
    assert!(msg.contains("QINGCLOUD_ACCESS_KEY_PROD"), "{msg}");
    assert!(!msg.contains(STAGING_SECRET) && !msg.contains(FILE_SECRET), "{msg}");
    assert_eq!(code_for(&anyhow::Error::from(e)), Exit::Config);
}

#[test]
fn malformed_accounts_are_refused_with_the_key_path_and_never_the_value() {
    let home = helpers_tempdir();
    let cases = [
        ("accounts:\n  default:\n    qy_access_key_id: QYAAAAAAAAAAAAAAAAAA\n", "`default` is the account"),
        ("accounts:\n  Prod:\n    qy_access_key_id: QYAAAAAAAAAAAAAAAAAA\n", "does not match"),
        ("accounts:\n  prod:\n    absent_on: [job:2100]\n", "accounts.prod.absent_on: belongs at the top level"),
        ("accounts: [prod]\n", "accounts: must be a mapping"),
        (
            &format!("accounts:\n  prod:\n    qy_access_key_id: QYAAAAAAAAAAAAAAAAAA\n      qy_secret_access_key:{STAGING_SECRET}\n"),
            "accounts.prod.qy_access_key_id",
        ),
    ];
    for (text, expected) in cases {
        let path = write_home_config(home.path(), &format!("{}{text}", file_with_everything()));
        let e = resolve(&ConfigInput { endpoint: None, config: Some(path) }, &env(&[]), None).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}: {e}");
        assert!(!e.contains(STAGING_SECRET) && !e.contains(FILE_SECRET), "{e}");
    }
}

#[test]
fn a_config_file_readable_by_others_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let home = helpers_tempdir();
    let path = write_home_config(home.path(), &file_with_everything());
    let quiet = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap();
    assert!(quiet.warnings.is_empty(), "mode 600: {:?}", quiet.warnings);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shared = resolve(&ConfigInput::default(), &env(&[]), Some(home.path())).unwrap();
    assert_eq!(shared.warnings.len(), 1, "{:?}", shared.warnings);
    let w = &shared.warnings[0];
    assert!(w.contains("readable by other users") && w.contains("644") && w.contains("chmod 600"), "{w}");
    assert!(!w.contains(FILE_SECRET), "{w}");
}
