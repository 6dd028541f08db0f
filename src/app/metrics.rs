//! `--metrics-file`: how the last run ended, in the node_exporter textfile collector's format.
//!
//! The file is replaced atomically (a temporary file in the same folder, then a rename), so the
//! collector never reads half a file; the temporary name does not end in `.prom`, so the collector
//! never reads it at all. Writing it must not change the run's outcome: failures are reported
//! by the caller as warnings.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::result::RunResult;

/// The text of the file: the runs of the last command when it got to their summaries, else only
/// the exit code and the time (a command that ended with an error has no counts to show). The
/// series of a run carry an `account` label when the command ran several QingCloud accounts or
/// a named one.
pub fn render(exit_code: u8, ended_at: chrono::DateTime<chrono::Utc>, results: &[&RunResult]) -> String {
    let mut out = String::new();
    let ts = ended_at.timestamp_millis() as f64 / 1000.0;
    family(&mut out, "qc_offboard_last_run_timestamp_seconds", "Unix time at which the last run ended.");
    let _ = writeln!(out, "qc_offboard_last_run_timestamp_seconds {ts}");
    family(
        &mut out,
        "qc_offboard_last_run_exit_code",
        "Exit code of the last run (0 done, 1 some tasks failed, 75 stopped early, ...).",
    );
    let _ = writeln!(out, "qc_offboard_last_run_exit_code {exit_code}");
    if results.is_empty() {
        return out;
    }
    let labelled = results.len() > 1 || results.iter().any(|r| r.account != crate::manifest::AccountName::DEFAULT);
    // `{account="…"}` alone, and `account="…",` before other labels.
    let only = |r: &RunResult| if labelled { format!("{{account=\"{}\"}}", label(&r.account)) } else { String::new() };
    let first = |r: &RunResult| if labelled { format!("account=\"{}\",", label(&r.account)) } else { String::new() };
    family(&mut out, "qc_offboard_last_run_id", "Run id of the last run in its database.");
    for r in results {
        let _ = writeln!(out, "qc_offboard_last_run_id{} {}", only(r), r.run_id);
    }
    family(&mut out, "qc_offboard_tasks", "Tasks of the last run by outcome.");
    for r in results {
        for (outcome, n) in r.counts.named() {
            let _ = writeln!(out, "qc_offboard_tasks{{{}outcome=\"{outcome}\"}} {n}", first(r));
        }
    }
    family(
        &mut out,
        "qc_offboard_api_calls_total",
        "API calls the last run made, by action and ret_code (none: no answer).",
    );
    for r in results {
        for (action, codes) in &r.api_calls.by_action_and_ret_code {
            for (code, n) in codes {
                let _ = writeln!(
                    out,
                    "qc_offboard_api_calls_total{{{}action=\"{}\",ret_code=\"{}\"}} {n}",
                    first(r),
                    label(action),
                    label(code)
                );
            }
        }
    }
    family(&mut out, "qc_offboard_run_duration_seconds", "How long the last run took to execute its tasks.");
    for r in results {
        let _ = writeln!(out, "qc_offboard_run_duration_seconds{} {}", only(r), r.duration_s);
    }
    family(
        &mut out,
        "qc_offboard_quota_exceeded_total",
        "Answers with ret_code 2500 (quota exceeded) in the last run.",
    );
    for r in results {
        let _ = writeln!(out, "qc_offboard_quota_exceeded_total{} {}", only(r), r.api_calls.quota_exceeded);
    }
    out
}

/// Values describe the last run, not a count since the process started: every family is a gauge.
fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// A label value as the exposition format writes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Replace `path` with `text`: a temporary file beside it, flushed to disk, then renamed over it.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the metrics file path names no file"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `--metrics-file`: best effort, like the pings; a failure is a warning, never the run's exit.
pub fn write_metrics(path: Option<&Path>, exit_code: u8, results: &[&RunResult]) {
    let Some(path) = path else { return };
    let text = render(exit_code, chrono::Utc::now(), results);
    if let Err(e) = write_atomically(path, &text) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the metrics file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_run_that_ended_with_an_error_has_only_its_exit_code_and_time() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 500_000_000).unwrap();
        let text = render(78, at, &[]);
        assert!(text.contains("\nqc_offboard_last_run_exit_code 78\n"), "{text}");
        assert!(text.contains("\nqc_offboard_last_run_timestamp_seconds 1700000000.5\n"), "{text}");
        assert!(!text.contains("qc_offboard_tasks"), "{text}");
    }

    #[test]
    fn the_file_is_replaced_and_no_temporary_file_stays() {
        let dir = std::env::temp_dir().join(format!("qc-offboard-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qc.prom");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
