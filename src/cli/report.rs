//! `report`: one row per task with its outcome, the evidence export.

use std::io::Write;

use crate::cli::{GlobalOpts, ReportArgs, ReportFormat};
use crate::exit::Exit;
use crate::report;
use crate::store::ReportFilter;

pub async fn run(global: &GlobalOpts, args: ReportArgs) -> anyhow::Result<Exit> {
    let store = super::status::open_existing(global).await?;
    let filter = ReportFilter { run_id: args.run, user: args.user, cluster: args.cluster, since: args.since };
    let rows = report::rows(&store, &filter, chrono::Utc::now()).await?;
    store.close().await;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        ReportFormat::Table => report::write_table(&mut out, &rows)?,
        ReportFormat::Json => report::write_json(&mut out, &rows)?,
        ReportFormat::Csv => report::write_csv(&mut out, &rows)?,
    }
    out.flush()?;
    Ok(Exit::Ok)
}
