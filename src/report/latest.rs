//! `report --latest`: one row per account — (endpoint, cluster, user, host) — across every run
//! and retry run that had a task for it, saying where the account stands now:
//!
//! - `deleted`: some task deleted it; when, by which run and job (the first deletion);
//! - `absent`: the account did not exist when a run tried (and no task deleted it);
//! - otherwise the newest task decides: `pending` (still being worked on), `failed` (after N
//!   attempts in M runs, counted over every task of the account), `not_due`, `skipped`
//!   (deleted by a run outside the report's filter), or any other state under its own name.
//!
//! A roll-up row is verified only when every task row behind it is.

use std::collections::BTreeMap;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::evidence::Evidence;
use super::{time, write_csv_records, Outcome, ReportRow};

/// Where one account stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub endpoint: String,
    pub cluster: String,
    pub zone: String,
    pub user: String,
    pub host: String,
    pub outcome: Outcome,
    /// The outcome in words: `deleted at … by run 3, job j-1`, `failed after 5 attempts in 3 runs`.
    pub summary: String,
    /// The task that decides the outcome, and its run.
    pub task_id: i64,
    pub run_id: i64,
    pub job_id: Option<String>,
    #[serde(serialize_with = "super::ser_time")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Submissions over every task of the account.
    pub attempts: i64,
    /// The runs that had a task for the account, oldest first.
    pub runs: Vec<i64>,
    pub late: bool,
    pub verified: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_verified: Vec<String>,
}

/// Roll the evidence's rows up into one standing per account, ordered by cluster, user, host.
pub fn roll_up(evidence: &Evidence) -> Vec<Standing> {
    let endpoint =
        |run_id: i64| evidence.runs.iter().find(|r| r.id == run_id).map(|r| r.endpoint.clone()).unwrap_or_default();
    let mut accounts: BTreeMap<(String, String, String, String), Vec<&ReportRow>> = BTreeMap::new();
    for t in &evidence.tasks {
        let r = &t.row;
        let key = (r.cluster.clone(), r.user.clone(), r.host.clone(), endpoint(r.run_id));
        accounts.entry(key).or_default().push(r);
    }
    accounts.into_iter().map(|((_, _, _, endpoint), rows)| standing(endpoint, rows)).collect()
}

fn standing(endpoint: String, mut rows: Vec<&ReportRow>) -> Standing {
    rows.sort_by_key(|r| (r.run_id, r.task_id));
    let attempts: i64 = rows.iter().map(|r| r.attempts).sum();
    let mut runs: Vec<i64> = rows.iter().map(|r| r.run_id).collect();
    runs.dedup();
    let tried_runs = {
        let mut v: Vec<i64> = rows.iter().filter(|r| r.attempts > 0).map(|r| r.run_id).collect();
        v.dedup();
        v.len()
    };
    let decided = rows
        .iter()
        .find(|r| r.outcome == Outcome::Deleted)
        .or_else(|| rows.iter().find(|r| r.outcome == Outcome::Absent))
        .or(rows.last())
        .copied()
        .expect("an account has at least one task");
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let when = decided.finished_at.map(time).unwrap_or_else(|| "an unrecorded time".into());
    let summary = match &decided.outcome {
        Outcome::Deleted => format!(
            "deleted at {when} by run {}{}",
            decided.run_id,
            decided.job_id.as_deref().map(|j| format!(", job {j}")).unwrap_or_default()
        ),
        Outcome::Absent => format!("account not found (run {}, {when})", decided.run_id),
        Outcome::Failed => format!(
            "failed after {} in {}",
            plural(usize::try_from(attempts).unwrap_or(0), "attempt"),
            plural(tried_runs, "run")
        ),
        Outcome::Pending => format!("pending in run {}", decided.run_id),
        Outcome::Skipped => format!("skipped by run {}: already deleted by an earlier run", decided.run_id),
        other => format!("{} (run {})", other.label(), decided.run_id),
    };
    let mut not_verified = Vec::new();
    for r in &rows {
        not_verified.extend(r.not_verified.iter().map(|p| format!("task {}: {p}", r.task_id)));
    }
    Standing {
        endpoint,
        cluster: decided.cluster.clone(),
        zone: decided.zone.clone(),
        user: decided.user.clone(),
        host: decided.host.clone(),
        outcome: decided.outcome.clone(),
        summary,
        task_id: decided.task_id,
        run_id: decided.run_id,
        job_id: decided.job_id.clone(),
        finished_at: decided.finished_at,
        attempts,
        runs,
        late: decided.late,
        verified: rows.iter().all(|r| r.verified),
        not_verified,
    }
}

/// A JSON array of standings.
pub fn write_json(mut w: impl Write, rows: &[Standing]) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, rows)?;
    writeln!(w)
}

/// The columns of `report --latest --format csv`.
pub const CSV_HEADER: [&str; 14] = [
    "cluster",
    "zone",
    "user",
    "host",
    "outcome",
    "summary",
    "run_id",
    "task_id",
    "job_id",
    "finished_at",
    "attempts",
    "runs",
    "late",
    "verified",
];

/// RFC 4180, as the task report.
pub fn write_csv(w: impl Write, rows: &[Standing]) -> io::Result<()> {
    let records = rows.iter().map(|s| {
        let runs: Vec<String> = s.runs.iter().map(ToString::to_string).collect();
        vec![
            s.cluster.clone(),
            s.zone.clone(),
            s.user.clone(),
            s.host.clone(),
            s.outcome.as_str().to_string(),
            s.summary.clone(),
            s.run_id.to_string(),
            s.task_id.to_string(),
            s.job_id.clone().unwrap_or_default(),
            s.finished_at.map(time).unwrap_or_default(),
            s.attempts.to_string(),
            runs.join(" "),
            s.late.to_string(),
            s.verified.to_string(),
        ]
    });
    write_csv_records(w, &CSV_HEADER, records)
}

/// Aligned columns for people, then what is not proven.
pub fn write_table(mut w: impl Write, rows: &[Standing]) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(w, "no accounts match");
    }
    let header = ["CLUSTER", "USER", "HOST", "STANDING", "RUNS", "LATE", "PROVEN"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|s| {
            let runs: Vec<String> = s.runs.iter().map(ToString::to_string).collect();
            [
                s.cluster.clone(),
                s.user.clone(),
                s.host.clone(),
                s.summary.clone(),
                runs.join(","),
                if s.late { "late".into() } else { "-".into() },
                if s.verified { "yes".into() } else { "NO".into() },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        cols.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    writeln!(w, "{}", line(&header.map(String::from)))?;
    for row in &cells {
        writeln!(w, "{}", line(row))?;
    }
    let mut counts = BTreeMap::<&str, usize>::new();
    for s in rows {
        *counts.entry(s.outcome.label()).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    writeln!(w, "\n{} accounts: {}", rows.len(), summary.join(", "))?;
    for s in rows.iter().filter(|s| !s.verified) {
        writeln!(w, "NOT proven: {}@{} on {}: {}", s.user, s.host, s.cluster, s.not_verified.join("; "))?;
    }
    Ok(())
}
