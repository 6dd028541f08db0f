//! `status [RUN_ID]`: the runs, newest first, or one run's counts by state, and how its tasks
//! stand against their deadlines (on time, late, still open; see `store::DeadlineCounts`).
//! [`records`] reads them and whether the audit chain proves them; this file prints them.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::app::records::{self, Detail, Listing, Proof};
use crate::cli::{GlobalOpts, OutputFormat, StatusArgs};
use crate::exit::Exit;
use crate::store::TaskState;

pub async fn run(global: &GlobalOpts, args: StatusArgs) -> anyhow::Result<Exit> {
    match args.run_id {
        None => list(&records::runs(global.db.as_deref(), args.simulate).await?, args.output)?,
        Some(id) => one(&records::run(global.db.as_deref(), args.simulate, id).await?, args.output)?,
    }
    Ok(Exit::Ok)
}

/// What disagrees about one run (its own rows, its tasks and their API calls).
fn problems_of(proof: &Proof, run_id: i64) -> Vec<String> {
    let mut out: Vec<String> = proof.chain_problem.iter().map(|p| format!("audit chain NOT intact: {p}")).collect();
    out.extend(proof.differences.iter().filter(|d| d.run_id == Some(run_id)).map(ToString::to_string));
    out
}

fn proof_json(proof: &Proof, run_id: i64) -> serde_json::Value {
    let problems = problems_of(proof, run_id);
    json!({ "verified": problems.is_empty(), "not_verified": problems })
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Every state with its count, zeros included, in the order of [`TaskState::ALL`].
fn all_counts(counts: &BTreeMap<TaskState, i64>) -> serde_json::Map<String, serde_json::Value> {
    TaskState::ALL.iter().map(|s| (s.as_str().to_string(), json!(counts.get(s).copied().unwrap_or(0)))).collect()
}

fn in_progress(counts: &BTreeMap<TaskState, i64>) -> i64 {
    TaskState::OPEN.iter().map(|s| counts.get(s).copied().unwrap_or(0)).sum()
}

fn list(listing: &Listing, output: OutputFormat) -> anyhow::Result<()> {
    let Listing { location, runs, counts, deadlines, proof } = listing;
    match output {
        OutputFormat::Json => {
            let items: Vec<_> = runs
                .iter()
                .map(|r| {
                    let c = counts.get(&r.id).cloned().unwrap_or_default();
                    let d = deadlines.get(&r.id).copied().unwrap_or_default();
                    json!({
                        "id": r.id,
                        "started_at": time(r.started_at),
                        "finished_at": r.finished_at.map(time),
                        "exit_code": r.exit_code,
                        "ticket": r.ticket,
                        "retry_of": r.retry_of,
                        "simulated": r.simulated,
                        "total": c.values().sum::<i64>(),
                        "counts": all_counts(&c),
                        "deadline": d,
                        "evidence": proof_json(proof, r.id),
                    })
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&items)?);
        }
        OutputFormat::Human if runs.is_empty() => outln!("no runs recorded in {location}"),
        OutputFormat::Human => {
            let header = [
                "RUN", "STARTED", "FINISHED", "EXIT", "TICKET", "TASKS", "DELETED", "ABSENT", "FAILED", "SKIPPED",
                "PENDING", "NOT_DUE", "ON_TIME", "LATE",
            ];
            let rows: Vec<[String; 14]> = runs
                .iter()
                .map(|r| {
                    let c = counts.get(&r.id).cloned().unwrap_or_default();
                    let d = deadlines.get(&r.id).copied().unwrap_or_default();
                    let n = |s: TaskState| c.get(&s).copied().unwrap_or(0).to_string();
                    [
                        if r.simulated { format!("{} (sim)", r.id) } else { r.id.to_string() },
                        time(r.started_at),
                        r.finished_at.map(time).unwrap_or_else(|| "-".into()),
                        r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                        r.ticket.clone().unwrap_or_else(|| "-".into()),
                        c.values().sum::<i64>().to_string(),
                        n(TaskState::Deleted),
                        n(TaskState::Absent),
                        n(TaskState::Failed),
                        n(TaskState::Skipped),
                        in_progress(&c).to_string(),
                        n(TaskState::NotDue),
                        d.on_time.to_string(),
                        d.late.to_string(),
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: Vec<&str>| {
                cells
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            outln!("{}", line(header.to_vec()));
            for row in &rows {
                outln!("{}", line(row.iter().map(String::as_str).collect()));
            }
            match (&proof.chain_problem, proof.differences.len()) {
                (None, 0) => outln!("\naudit: chain intact, every stored run and task agrees with it"),
                (Some(p), _) => outln!("\naudit: chain NOT intact: {p} (`audit verify` says more)"),
                (None, n) => outln!(
                    "\naudit: NOT verified: {n} stored values disagree with the audit chain (`audit verify` lists them)"
                ),
            }
        }
    }
    Ok(())
}

fn one(detail: &Detail, output: OutputFormat) -> anyhow::Result<()> {
    let Detail { run, counts, deadline, proof, hosts } = detail;
    let total: i64 = counts.values().sum();
    match output {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(run)?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("total".into(), json!(total));
                obj.insert("counts".into(), serde_json::Value::Object(all_counts(counts)));
                obj.insert("deadline".into(), serde_json::to_value(deadline)?);
                obj.insert("evidence".into(), proof_json(proof, run.id));
                let live: Vec<_> = hosts.iter().map(|(host, pid)| json!({ "host": host, "pid": pid })).collect();
                obj.insert("live_hosts".into(), json!(live));
            }
            outln!("{}", serde_json::to_string_pretty(&value)?);
        }
        OutputFormat::Human => {
            // A failed write here is seen by the `outln!` lines that follow (the state counts):
            // a closed pipe ends quietly, a full disk with its error.
            let label = |l: &str, v: String| {
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout(), "{l:<12}{}{v}", if l.len() >= 12 { " " } else { "" });
            };
            label("run", format!("{}{}", run.id, if run.simulated { " (simulated)" } else { "" }));
            if let Some(t) = &run.ticket {
                label("ticket", t.clone());
            }
            if let Some(r) = &run.requested_by {
                label("requested by", r.clone());
            }
            if let Some(r) = &run.reason {
                label("reason", r.clone());
            }
            if let Some(d) = run.due_by {
                label("due by", time(d));
            }
            label("started", format!("{} by {} on {}", time(run.started_at), run.operator, run.host));
            label(
                "finished",
                match (run.finished_at, run.exit_code) {
                    (Some(f), Some(c)) => format!("{} (exit {c})", time(f)),
                    (Some(f), None) => time(f),
                    _ => "not yet".into(),
                },
            );
            if !hosts.is_empty() {
                let live: Vec<String> = hosts.iter().map(|(host, pid)| format!("{host} (pid {pid})")).collect();
                label("working on", live.join(", "));
            }
            label("endpoint", format!("{} (access key {})", run.endpoint, run.access_key_id));
            if let Some(prev) = run.retry_of {
                label("retry of", format!("run {prev}"));
            }
            for (path, sha) in &run.manifests {
                label("manifest", format!("{path} (sha256 {sha})"));
            }
            label("tasks", total.to_string());
            for s in TaskState::ALL {
                let note = if s == TaskState::Absent { "  (account not found)" } else { "" };
                outln!("  {:<12}{}{note}", s.as_str(), counts.get(&s).copied().unwrap_or(0));
            }
            label(
                "deadline",
                format!(
                    "{} on time, {} late, {} open, {} without due_by",
                    deadline.on_time, deadline.late, deadline.open, deadline.no_deadline
                ),
            );
            let problems = problems_of(proof, run.id);
            if problems.is_empty() {
                label("evidence", "verified: the audit chain is intact and proves every row shown".into());
            } else {
                label("evidence", format!("NOT verified ({} problems):", problems.len()));
                for p in &problems {
                    outln!("  {p}");
                }
            }
        }
    }
    Ok(())
}
