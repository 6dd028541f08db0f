//! Manifest validation through the real binary: every rule of SPEC §3 is refused with exit 65
//! and `FILE:LINE:COLUMN`, every error of a file is reported, the shipped manifests validate,
//! and hostile documents are refused.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use qc_offboard::manifest::{self, HostSpec, UserName};
use qc_offboard::qingcloud::types::DelUserParams;

use crate::helpers::{qc, tempdir};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Validate `yaml` and expect exit 65 with `m.yaml:LINE:COLUMN: …needle…` on stderr and
/// nothing on stdout.
fn refused(yaml: &str, line: usize, column: usize, needle: &str) {
    let dir = tempdir();
    let p = write(dir.path(), "m.yaml", yaml);
    let out = qc(dir.path()).arg("validate").arg(&p).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    let at = format!("{}:{line}:{column}: ", p.display());
    assert!(
        stderr.lines().any(|l| l.starts_with(&at) && l.contains(needle)),
        "expected `{at}…{needle}…` in:\n{stderr}"
    );
}

/// A valid manifest around one account entry, which is on line 6, column 9.
fn with_user(entry: &str) -> String {
    format!("version: 1\ndefaults: {{zone: sh1a}}\nclusters:\n  - id: cl-abc1\n    users:\n      - {entry}\n")
}

const USER_LINE: usize = 6;
const USER_COL: usize = 9;

#[test]
fn unknown_field_at_the_top() {
    refused(
        "version: 1\ntickets: X-1\nclusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n",
        2,
        1,
        "unknown field `tickets`",
    );
}

#[test]
fn unknown_field_in_an_account() {
    refused(&with_user("{user: u1, hots: '%'}"), USER_LINE, 20, "unknown field `hots`");
}

#[test]
fn missing_version() {
    refused("clusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n", 1, 1, "version is missing");
}

#[test]
fn unknown_version() {
    refused("version: 2\nclusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n", 1, 10, "unknown version \"2\"");
}

#[test]
fn empty_file() {
    refused("", 1, 1, "manifest is empty");
    refused("# only a comment\n", 1, 1, "manifest is empty");
}

#[test]
fn manifest_without_accounts() {
    refused("version: 1\nclusters: []\n", 1, 1, "lists no accounts");
}

#[test]
fn bad_cluster_id() {
    refused(
        "version: 1\nclusters:\n  - id: cl_abc\n    zone: sh1a\n    users: [u1]\n",
        3,
        9,
        "does not match cl-[a-z0-9]+",
    );
    refused("version: 1\nusers:\n  - user: bob\n    clusters: [cl-ok1, CL-BAD]\n", 4, 24, "cluster id \"CL-BAD\"");
}

#[test]
fn bad_zone() {
    refused("version: 1\nclusters:\n  - id: cl-a\n    zone: SH1A\n    users: [u1]\n", 4, 11, "zone \"SH1A\"");
    refused("version: 1\ndefaults: {zone: 'sh 1'}\nclusters: [{id: cl-a, users: [u1]}]\n", 2, 18, "zone \"sh 1\"");
}

#[test]
fn missing_zone() {
    refused("version: 1\nclusters:\n  - id: cl-a\n    users: [u1]\n", 3, 5, "zone missing for cluster \"cl-a\"");
    refused("version: 1\nusers:\n  - user: bob\n    clusters: [cl-a]\n", 4, 16, "zone missing");
}

#[test]
fn missing_zone_comes_from_the_environment() {
    let dir = tempdir();
    let p = write(dir.path(), "m.yaml", "version: 1\nclusters:\n  - id: cl-a\n    users: [u1]\n");
    qc(dir.path()).arg("validate").arg(&p).env("QINGCLOUD_ZONE", "pek3").assert().success();
    qc(dir.path()).arg("validate").arg(&p).env("QINGCLOUD_ZONE", "PEK3").assert().code(78);
}

#[test]
fn empty_user() {
    refused(&with_user("''"), USER_LINE, USER_COL, "user is empty");
    refused(&with_user("{user: '', host: '%'}"), USER_LINE, 16, "user is empty");
}

#[test]
fn too_long_user() {
    refused(&with_user(&"a".repeat(33)), USER_LINE, USER_COL, "the limit is 32");
}

#[test]
fn control_character_in_user() {
    refused(&with_user("\"a\\ab\""), USER_LINE, USER_COL, "a control character (U+0007)");
}

#[test]
fn quotes_in_user() {
    refused(&with_user("\"a'b\""), USER_LINE, USER_COL, "a quote (')");
    refused(&with_user("'a\"b'"), USER_LINE, USER_COL, "a double quote");
}

#[test]
fn backquote_in_user() {
    refused(&with_user("'a`b'"), USER_LINE, USER_COL, "a backquote");
}

#[test]
fn whitespace_in_user() {
    refused(&with_user("'a b'"), USER_LINE, USER_COL, "whitespace (U+0020)");
    refused(&with_user("\"a\\tb\""), USER_LINE, USER_COL, "U+0009");
}

#[test]
fn protected_accounts() {
    for user in ["root", "qc_admin", "qc_repl", "qc_check", "Root"] {
        refused(&with_user(user), USER_LINE, USER_COL, "is protected and cannot be removed");
    }
    refused("version: 1\nusers:\n  - user: qc_repl\n    clusters: [{id: cl-a, zone: sh1a}]\n", 3, 11, "protected");
}

#[test]
fn empty_host() {
    refused(&with_user("{user: u1, host: ''}"), USER_LINE, 26, "host is empty");
}

#[test]
fn bad_hosts() {
    for host in [
        "10.0.0.300",
        "10.0.0.0/33",
        "10.0.0.0/255.0.255.0",
        "a b",
        "host..name",
        "-bad.example",
        "%;",
        "2001:zz::1",
        "x'y",
    ] {
        let entry = format!("{{user: u1, host: \"{host}\"}}");
        refused(&with_user(&entry), USER_LINE, 26, "host ");
    }
    refused("version: 1\ndefaults: {zone: sh1a, host: 'a;;b'}\nclusters: [{id: cl-a, users: [u1]}]\n", 2, 30, "empty");
}

#[test]
fn bad_dates() {
    refused(&with_user("{user: u1, not_before: 2026-02-30}"), USER_LINE, 32, "date \"2026-02-30\" does not parse");
    refused(&with_user("{user: u1, not_before: tomorrow}"), USER_LINE, 32, "write YYYY-MM-DD");
    refused(&with_user("{user: u1, due_by: 2026-11-28}"), USER_LINE, 28, "write RFC 3339");
    refused(
        "version: 1\ndue_by: 'next week'\nclusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n",
        2,
        9,
        "time \"next week\"",
    );
}

#[test]
fn not_before_after_due_by() {
    refused(
        &with_user("{user: u1, not_before: 2026-12-02, due_by: 2026-12-01T00:00:00Z}"),
        USER_LINE,
        32,
        "could never be done on time",
    );
}

#[test]
fn numbers_are_not_user_names() {
    refused(&with_user("123"), USER_LINE, USER_COL, "quote names that look like numbers");
}

#[test]
fn syntax_error() {
    refused("version: 1\nclusters: [\n", 3, 1, "");
}

#[test]
fn not_utf8() {
    let dir = tempdir();
    let p = dir.path().join("m.yaml");
    std::fs::write(&p, b"version: 1\nticket: \xff\n").unwrap();
    let out = qc(dir.path()).arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:2:9: the file is not UTF-8", p.display())));
}

#[test]
fn every_error_of_every_file_is_reported() {
    let dir = tempdir();
    let a = write(
        dir.path(),
        "a.yaml",
        "version: 1\ndefaults: {zone: sh1a}\nclusters:\n  - id: cl-a\n    users:\n      - root\n      - 'x y'\n      - {user: ok, host: ''}\n  - id: BAD\n    users: [fine]\n",
    );
    let b = write(dir.path(), "b.yaml", "version: 3\nusers:\n  - user: qc_admin\n    clusters: [cl-b]\n");
    let good = write(dir.path(), "good.yaml", "version: 1\nclusters: [{id: cl-z, zone: sh1a, users: [u1]}]\n");
    let out = qc(dir.path()).arg("validate").arg(&good).arg(&a).arg(&b).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(out.stdout.is_empty(), "no summary when any file is invalid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = [
        format!("{}:6:9: user \"root\"", a.display()),
        format!("{}:7:9: user \"x y\"", a.display()),
        format!("{}:8:26: host is empty", a.display()),
        format!("{}:9:9: cluster id \"BAD\"", a.display()),
        format!("{}:1:10: unknown version", b.display()),
        format!("{}:3:11: user \"qc_admin\"", b.display()),
        format!("{}:4:16: zone missing", b.display()),
    ];
    for want in &expected {
        assert!(stderr.lines().any(|l| l.starts_with(want.as_str())), "missing `{want}` in:\n{stderr}");
    }
    assert!(stderr.starts_with("error: 7 manifest errors; nothing was sent"), "{stderr}");
}

#[test]
fn a_cluster_has_one_zone_across_files() {
    let dir = tempdir();
    let a = write(dir.path(), "a.yaml", "version: 1\nclusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n");
    let b = write(dir.path(), "b.yaml", "version: 1\nusers:\n  - user: bob\n    clusters: [{id: cl-a, zone: pek3}]\n");
    let out = qc(dir.path()).arg("validate").arg(&a).arg(&b).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want =
        format!("{}:4:16: cluster cl-a is in zone pek3 here but in zone sh1a at {}:2:", b.display(), a.display());
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn duplicates_are_merged_with_a_warning() {
    let dir = tempdir();
    let a = write(
        dir.path(),
        "a.yaml",
        "version: 1\ndefaults: {zone: sh1a}\nclusters:\n  - id: cl-a\n    users:\n      - {user: bob, not_before: 2030-01-10}\n",
    );
    let b = write(
        dir.path(),
        "b.yaml",
        "version: 1\ndefaults: {zone: sh1a}\nusers:\n  - user: bob\n    not_before: 2030-01-05\n    clusters: [cl-a, cl-b]\n",
    );
    let set = manifest::load_set(&[a.clone(), b.clone()], None).unwrap();
    assert_eq!(set.tasks.len(), 2);
    assert_eq!(set.tasks[0].not_before, "2030-01-05".parse().ok(), "the earliest not_before wins");
    assert_eq!(set.warnings.len(), 1);
    let want = format!("{}:6:16: bob@% on cl-a is also listed at {}:6:9; merged", b.display(), a.display());
    assert!(set.warnings[0].starts_with(&want), "{:?}", set.warnings);

    let out = qc(dir.path()).arg("validate").arg(&a).arg(&b).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("warning: {want}")));
}

#[test]
fn shipped_manifests_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let home = tempdir();
    for f in &files {
        // Each on its own, with no QINGCLOUD_ZONE: the files name their zones.
        let loaded = manifest::load(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!loaded.tasks.is_empty());
        assert_eq!(loaded.sha256.len(), 64);
        let out = qc(home.path()).arg("validate").arg(f).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{}: ok: ", f.display())));
    }
    qc(home.path()).arg("validate").args(&files).assert().success();
}

#[test]
fn files_over_the_size_limit_are_refused_unparsed() {
    let dir = tempdir();
    let p = dir.path().join("big.yaml");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(manifest::MAX_MANIFEST_BYTES + 1).unwrap();
    let err = manifest::load(&p).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].to_string().starts_with(&format!("{}:1:1: the file is larger than 16 MiB", p.display())));
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    // A million levels: libyaml alone would need hours for this.
    let n = 1_000_000;
    let text = format!("version: 1\nclusters: {}{}\n", "[".repeat(n), "]".repeat(n));
    refused(&text, 2, 11 + manifest::MAX_FLOW_DEPTH, "nested more than 64 deep");
}

#[test]
fn billion_laughs_is_refused() {
    // Ten levels of ten aliases each: 10^10 accounts if expanded.
    let mut doc = String::from("version: 1\ndefaults: {zone: sh1a}\nclusters:\n  - id: cl-a\n    users: &l0 [u0, u1, u2, u3, u4, u5, u6, u7, u8, u9]\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        doc.push_str(&format!("  - id: cl-b{i}\n    users: &l{i} [{refs}]\n"));
    }
    // serde_yaml points at the aliased list itself.
    refused(&doc, 5, 12, "invalid type: sequence");
}

#[test]
fn alias_amplification_is_refused() {
    // One list of 1,000 accounts repeated under 2,000 clusters: 2,000,000 entries from 60 KB.
    let users: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    let mut doc = format!(
        "version: 1\ndefaults: {{zone: sh1a}}\nclusters:\n  - id: cl-a\n    users: &u [{}]\n",
        users.join(", ")
    );
    for i in 0..2000 {
        doc.push_str(&format!("  - {{id: cl-{i}, users: *u}}\n"));
    }
    refused(&doc, 6, 23, "expands to more than 1000000 entries");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever user and host the validator accepts, the `service_params` JSON carries exactly
    /// them, under exactly the keys `host` and `user`.
    #[test]
    fn accepted_values_round_trip_through_service_params(
        user in prop_oneof![
            "[a-zA-Z0-9_.$@%-]{1,32}",
            "\\PC{1,40}",
            any::<String>(),
        ],
        host in prop_oneof![
            Just("%".to_owned()),
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9%]{1,3}\\.[0-9%_]{1,3}",
            "[a-z0-9%_]{1,10}(\\.[a-z0-9-]{1,10}){0,3}(;[0-9.%]{1,15}){0,2}",
            "[0-9a-f:%/]{1,20}",
            any::<String>(),
        ],
    ) {
        let (Ok(u), Ok(h)) = (UserName::parse(&user), HostSpec::parse(&host)) else {
            return Ok(());
        };
        let json = DelUserParams::new(u.as_str(), h.as_str()).to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        prop_assert_eq!(keys, vec!["host", "user"]);
        prop_assert_eq!(obj["user"].as_str(), Some(user.as_str()));
        prop_assert_eq!(obj["host"].as_str(), Some(host.as_str()));
    }
}

/// A FIFO as a manifest used to block `validate` (and `run`) forever waiting for a writer.
/// Nothing ever writes to this one: the command must refuse it instead of waiting.
#[test]
fn a_fifo_or_a_directory_is_refused_not_waited_on() {
    let dir = tempdir();
    let fifo = dir.path().join("m.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    for (path, what) in [(fifo.clone(), "FIFO"), (dir.path().to_path_buf(), "directory")] {
        for command in ["validate", "plan"] {
            let out =
                qc(dir.path()).arg(command).arg(&path).timeout(std::time::Duration::from_secs(60)).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(65), "{command} {what}: {stderr}");
            assert!(
                stderr.contains(&format!("{}:1:1: the manifest is", path.display())) && stderr.contains(what),
                "{stderr}"
            );
        }
    }
}

/// U+2028, U+2029 and U+0085 are line breaks to libyaml but not on screen: the one visible line
/// `- u1 - u2` (with U+2028 before the second dash) would be two accounts.
#[test]
fn invisible_line_breaks_are_refused_with_their_place() {
    for (c, name) in [('\u{2028}', "LINE SEPARATOR"), ('\u{85}', "NEXT LINE"), ('\u{2029}', "PARAGRAPH SEPARATOR")] {
        let yaml = format!(
            "version: 1\ndefaults: {{zone: sh1a}}\nclusters:\n  - id: cl-abc1\n    users:\n      - u1{c}      - u2\n"
        );
        refused(&yaml, 6, 11, &format!("U+{:04X} ({name})", c as u32));
    }
    // In a comment too: what follows it would be read as YAML.
    refused("version: 1 # note\u{2028}ticket: X\nclusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n", 1, 18, "U+2028");
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let dir = tempdir();
    let p = write(dir.path(), "m.yaml", "\u{feff}version: 1\nclusters: [{id: cl-abc1, zone: sh1a, users: [u1, u2]}]\n");
    let out = qc(dir.path()).arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 tasks"), "{}", String::from_utf8_lossy(&out.stdout));
    // Positions after the mark are those an editor shows.
    refused(
        "\u{feff}version: 1\ntickets: X\nclusters: [{id: cl-a, zone: sh1a, users: [u1]}]\n",
        2,
        1,
        "unknown field `tickets`",
    );
}

/// `!!binary cm9vdA==` decodes to `root`; serde_yaml ignored the tag and read the user
/// `cm9vdA==`. No tag has a meaning in a manifest, so every one is refused.
#[test]
fn yaml_tags_are_refused() {
    refused(&with_user("!!binary cm9vdA=="), USER_LINE, USER_COL, "YAML tags");
    refused(&with_user("{user: !!str u1, host: '%'}"), USER_LINE, 16, "YAML tags");
    refused("version: 1\nclusters: !mine [{id: cl-a, zone: sh1a, users: [u1]}]\n", 2, 11, "YAML tags");
    // An exclamation mark inside a value is not a tag.
    let dir = tempdir();
    let p = write(
        dir.path(),
        "m.yaml",
        "version: 1\nreason: 'left!'\nclusters: [{id: cl-abc1, zone: sh1a, users: [u1]}]\n",
    );
    let out = qc(dir.path()).arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
