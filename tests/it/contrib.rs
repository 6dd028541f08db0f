//! The scheduling files in `contrib/`: the systemd units parse (and pass `systemd-analyze
//! verify` where it is installed), and the command lines in them and in the cron line are ones
//! the real binary accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::helpers::{qc, tempdir};

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(name)
}

/// A unit file as section → key → values (a key may repeat).
fn unit(name: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(contrib(name)).expect("unit file");
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(section.to_owned());
            sections.entry(section.to_owned()).or_default();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{name}:{}: not KEY=VALUE: {line}", n + 1));
        let section = current.clone().unwrap_or_else(|| panic!("{name}:{}: a key before any section", n + 1));
        sections.entry(section).or_default().entry(key.trim().to_owned()).or_default().push(value.trim().to_owned());
    }
    sections
}

/// The arguments after the program name are accepted by the real binary: with `--help` at the
/// end, clap parses (and checks the values of) everything before it, then prints help.
fn assert_accepted(args: &[&str]) {
    let home = tempdir();
    let out = qc(home.path()).args(args).arg("--help").output().expect("the binary runs");
    assert!(out.status.success(), "{args:?} refused: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_systemd_units_are_consistent() {
    let service = unit("qc-offboard.service");
    let s = &service["Service"];
    assert_eq!(s["Type"], ["oneshot"]);
    assert_eq!(s["SuccessExitStatus"], ["75"], "only a run stopped with work left is fine");
    let exec = &s["ExecStart"][0];
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/qc-offboard"), "{exec}");
    assert!(words.contains(&"run"), "{exec}");
    assert_accepted(&words[1..]);
    let timer = unit("qc-offboard.timer");
    assert_eq!(timer["Timer"]["Unit"], ["qc-offboard.service"]);
    assert_eq!(timer["Install"]["WantedBy"], ["timers.target"]);
    assert!(timer["Timer"].contains_key("OnCalendar"));
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let probe = std::process::Command::new("systemd-analyze").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("skipped: systemd-analyze is not installed");
        return;
    }
    // `verify` checks that the command exists: point it at the binary under test.
    let dir = tempdir();
    let bin = assert_cmd::cargo::cargo_bin("qc-offboard");
    let service = std::fs::read_to_string(contrib("qc-offboard.service")).unwrap();
    let service = service.replace("/usr/local/bin/qc-offboard", bin.to_str().expect("utf-8 path"));
    std::fs::write(dir.path().join("qc-offboard.service"), service).unwrap();
    std::fs::copy(contrib("qc-offboard.timer"), dir.path().join("qc-offboard.timer")).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("qc-offboard.service"))
        .arg(dir.path().join("qc-offboard.timer"))
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings to systemd: none is allowed here.
    assert!(!stderr.contains("ignoring") && !stderr.contains("Unknown"), "{stderr}");
}

#[test]
fn the_cron_line_is_a_cron_d_entry_the_binary_accepts() {
    let text = std::fs::read_to_string(contrib("qc-offboard.cron")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    // Five time fields, then the user (the /etc/cron.d format), then the command.
    for (i, f) in fields[..5].iter().enumerate() {
        assert!(f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c)), "time field {i}: {f}");
    }
    assert_eq!(fields[5], "qc-offboard");
    let command: Vec<&str> = fields[6..].iter().copied().skip_while(|w| w.contains('=')).collect();
    assert!(command[0].ends_with("/qc-offboard"), "{command:?}");
    let args: Vec<&str> = command[1..].iter().copied().take_while(|w| !w.starts_with(">>")).collect();
    assert!(args.contains(&"run"), "{args:?}");
    assert_accepted(&args);
}
