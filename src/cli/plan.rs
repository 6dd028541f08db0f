//! `plan MANIFEST... [--output human|json]`: expand the manifests into tasks, mark those not
//! yet due (and, once the database exists, those already done), and estimate API calls and
//! duration under the configured rate. Nothing is sent and nothing is written.

use chrono::{NaiveDate, Utc};

use crate::cli::{GlobalOpts, OutputFormat, PlanArgs};
use crate::exit::{Coded, Exit};
use crate::limiter::Rate;
use crate::manifest::{self, Zone};
use crate::plan::{self, EstimateInputs};

/// The environment variable that pretends today (UTC) is another date, `YYYY-MM-DD`. Meant for
/// tests and for previewing which `not_before` entries a future run will pick up.
pub const TODAY_ENV: &str = "QC_OFFBOARD_TODAY";

pub fn run(_global: &GlobalOpts, args: PlanArgs) -> anyhow::Result<Exit> {
    // `--endpoint`/`--config` are accepted for symmetry with `run`; the plan reads neither
    // until already-done tasks are looked up in the database.
    let _ = &args.api;
    let zone = env_zone()?;
    let set = manifest::load_set(&args.manifests, zone.as_ref())?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let inputs = EstimateInputs { rate: args.rate.rate.unwrap_or(Rate::DEFAULT), ..EstimateInputs::default() };
    // Nothing is recorded yet, so nothing is done yet.
    let plan = plan::build(&set, today()?, |_| false, &inputs);
    match args.output {
        OutputFormat::Human => print!("{}", plan.to_human()),
        OutputFormat::Json => println!("{}", plan.to_json()),
    }
    Ok(Exit::Ok)
}

/// `QINGCLOUD_ZONE`, the zone of clusters whose manifest gives none. Empty counts as unset.
pub(crate) fn env_zone() -> anyhow::Result<Option<Zone>> {
    match std::env::var("QINGCLOUD_ZONE") {
        Ok(z) if !z.trim().is_empty() => Zone::parse(z.trim())
            .map(Some)
            .map_err(|why| Coded::new(Exit::Config, format!("QINGCLOUD_ZONE: {why}")).into()),
        _ => Ok(None),
    }
}

/// Today in UTC, or the date in [`TODAY_ENV`].
fn today() -> anyhow::Result<NaiveDate> {
    match std::env::var(TODAY_ENV) {
        Ok(d) if !d.trim().is_empty() => {
            manifest::parse_date(&d).map_err(|why| Coded::new(Exit::Config, format!("{TODAY_ENV}: {why}")).into())
        }
        _ => Ok(Utc::now().date_naive()),
    }
}
