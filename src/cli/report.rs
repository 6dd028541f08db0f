//! `report`: one row per task with its outcome, the evidence export. With `--user` (and always
//! as HTML) each row carries its evidence: API calls, audit records and the chain's verdict.

use std::io::Write;

use crate::cli::{GlobalOpts, ReportArgs, ReportFormat};
use crate::exit::Exit;
use crate::report::{self, evidence, html};
use crate::store::ReportFilter;

pub async fn run(global: &GlobalOpts, args: ReportArgs) -> anyhow::Result<Exit> {
    let store = super::status::open_existing(global).await?;
    let scope = scope(&args);
    let filter = ReportFilter { run_id: args.run, user: args.user, cluster: args.cluster, since: args.since };
    let now = chrono::Utc::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.format == ReportFormat::Html || filter.user.is_some() {
        let evidence = evidence::gather(&store, &filter, now).await?;
        store.close().await;
        match args.format {
            ReportFormat::Html => html::write_html(&mut out, &evidence, &scope)?,
            ReportFormat::Table => evidence::write_table(&mut out, &evidence)?,
            ReportFormat::Json => evidence::write_json(&mut out, &evidence)?,
            ReportFormat::Csv => evidence::write_csv(&mut out, &evidence)?,
        }
    } else {
        let rows = report::rows(&store, &filter, now).await?;
        store.close().await;
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
    if let Some(s) = args.since {
        parts.push(format!("since {}", s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    if parts.is_empty() {
        "all tasks".into()
    } else {
        parts.join(", ")
    }
}
