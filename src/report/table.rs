//! The table for people: aligned columns, long messages cut and line breaks flattened, then a
//! count by outcome and every row the audit chain does not prove.
//!
//! It writes rows it is given; it decides nothing about them.

use std::io::{self, Write};

use super::instant::time;
use super::row::ReportRow;

/// Aligned columns for people; long messages are cut and line breaks flattened.
pub fn write_table(mut w: impl Write, rows: &[ReportRow]) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(w, "no tasks match");
    }
    const MESSAGE_WIDTH: usize = 60;
    let header = [
        "RUN",
        "TASK",
        "CLUSTER",
        "PRE-STATE",
        "USER",
        "HOST",
        "OUTCOME",
        "TRIES",
        "JOB",
        "RET",
        "FINISHED",
        "LATE",
        "PROVEN",
        "MESSAGE",
    ];
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let cells: Vec<[String; 14]> = rows
        .iter()
        .map(|r| {
            let message: String = r.message.as_deref().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
            let message = if message.chars().count() > MESSAGE_WIDTH {
                format!("{}…", message.chars().take(MESSAGE_WIDTH - 1).collect::<String>())
            } else {
                message
            };
            [
                r.run_id.to_string(),
                r.task_id.to_string(),
                r.cluster.clone(),
                dash(r.pre_state.clone().unwrap_or_default()),
                r.user.clone(),
                r.host.clone(),
                r.outcome.label().to_string(),
                r.attempts.to_string(),
                dash(r.job_id.clone().unwrap_or_default()),
                dash(r.ret_code.map(|c| c.to_string()).unwrap_or_default()),
                dash(r.finished_at.map(time).unwrap_or_default()),
                if r.late { "late".into() } else { "-".into() },
                if r.verified { "yes".into() } else { "NO".into() },
                dash(message),
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
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    writeln!(w, "{}", line(&header.map(String::from)))?;
    for row in &cells {
        writeln!(w, "{}", line(row))?;
    }
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for r in rows {
        *counts.entry(r.outcome.label()).or_default() += 1;
    }
    let late = rows.iter().filter(|r| r.late).count();
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let unproven: Vec<&ReportRow> = rows.iter().filter(|r| !r.verified).collect();
    write!(w, "\n{} tasks: {}; {late} late", rows.len(), summary.join(", "))?;
    if unproven.is_empty() {
        return writeln!(w, "; every row proven by the audit chain");
    }
    writeln!(w, "; {} NOT proven by the audit chain:", unproven.len())?;
    for r in unproven {
        writeln!(w, "  task {}: {}", r.task_id, r.not_verified.join("; "))?;
    }
    Ok(())
}
