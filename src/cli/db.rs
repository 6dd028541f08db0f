//! `db copy`: prints what `app::copy` moved — the rows per table and the audit chain's tip as
//! verified on the PostgreSQL side, a checkpoint that `audit verify --checkpoint` accepts on
//! either database. It only converts arguments and prints.

use crate::cli::DbCopyArgs;
use crate::exit::Exit;

pub async fn copy(args: DbCopyArgs) -> anyhow::Result<Exit> {
    let done = crate::app::copy::copy(&args.from, &args.to).await?;
    for (table, rows) in &done.copied.rows {
        outln!("{table:<16} {rows:>9} rows");
    }
    outln!("copied {} into {}; audit chain verified there, tip {}", args.from.display(), done.target, done.copied.tip);
    Ok(Exit::Ok)
}
