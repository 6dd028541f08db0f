//! `report`: one row per task with its outcome, the evidence export. With `--user` (and always
//! as HTML) each row carries its evidence: API calls, audit records and the chain's verdict.
//! [`records::evidence`] reads it; this file picks the writer for the format asked.

use std::io::Write;

use crate::app::records;
use crate::cli::{GlobalOpts, ReportArgs, ReportFormat};
use crate::exit::Exit;
use crate::report::{self, evidence, html, latest, Filter};

pub async fn run(global: &GlobalOpts, args: ReportArgs) -> anyhow::Result<Exit> {
    let scope = scope(&args);
    let filter = Filter {
        run_id: args.run,
        user: args.user.clone(),
        cluster: args.cluster.clone(),
        ticket: args.ticket.clone(),
        since: args.since,
        until: args.until,
    };
    // Every format reads the chain replayed and checked against the tables.
    let evidence = records::evidence(global.db.as_deref(), args.simulate, &filter).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.latest {
        let standings = latest::roll_up(&evidence);
        match args.format {
            ReportFormat::Html => html::write_html(&mut out, &evidence, &scope)?,
            ReportFormat::Table => latest::write_table(&mut out, &standings)?,
            ReportFormat::Json => latest::write_json(&mut out, &standings)?,
            ReportFormat::Csv => latest::write_csv(&mut out, &standings)?,
        }
    } else if args.format == ReportFormat::Html || filter.user.is_some() {
        match args.format {
            ReportFormat::Html => html::write_html(&mut out, &evidence, &scope)?,
            ReportFormat::Table => evidence::write_table(&mut out, &evidence)?,
            ReportFormat::Json => evidence::write_json(&mut out, &evidence)?,
            ReportFormat::Csv => evidence::write_csv(&mut out, &evidence)?,
        }
    } else {
        let rows = evidence.rows();
        match args.format {
            ReportFormat::Json => report::write_json(&mut out, &rows)?,
            ReportFormat::Csv => report::write_csv(&mut out, &rows)?,
            ReportFormat::Table | ReportFormat::Html => report::write_table(&mut out, &rows)?,
        }
    }
    out.flush()?;
    Ok(Exit::Ok)
}

/// The filter in words, for the HTML heading: `user bob, cluster cl-x` or `all tasks`.
fn scope(args: &ReportArgs) -> String {
    let mut parts = Vec::new();
    if let Some(u) = &args.user {
        parts.push(format!("user {u}"));
    }
    if let Some(c) = &args.cluster {
        parts.push(format!("cluster {c}"));
    }
    if let Some(r) = args.run {
        parts.push(format!("run {r}"));
    }
    if let Some(t) = &args.ticket {
        parts.push(format!("ticket {t}"));
    }
    if let Some(s) = args.since {
        parts.push(format!("since {}", s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    if let Some(u) = args.until {
        parts.push(format!("until {}", u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    if parts.is_empty() {
        "all tasks".into()
    } else {
        parts.join(", ")
    }
}
