//! `validate MANIFEST...`: parse and check, print one summary line per file, warnings to
//! stderr. Every error of every file is reported (exit 65); no database, no network.

use crate::cli::{GlobalOpts, ValidateArgs};
use crate::exit::Exit;
use crate::manifest;

pub fn run(_global: &GlobalOpts, args: ValidateArgs) -> anyhow::Result<Exit> {
    let zone = crate::app::target::env_zone_checked()?;
    let set = manifest::load_set(&args.manifests, zone.as_ref())?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    for file in &set.files {
        let s = file.summary();
        println!(
            "{}: ok: {} {}, {} {}, {} {}, {} {}",
            file.path.display(),
            s.tasks,
            plural(s.tasks, "task", "tasks"),
            s.clusters,
            plural(s.clusters, "cluster", "clusters"),
            s.zones,
            plural(s.zones, "zone", "zones"),
            s.accounts,
            plural(s.accounts, "account", "accounts"),
        );
        let n = file.selectors.len();
        if n > 0 {
            // Checked for syntax only: which clusters they select is for `plan` to find out.
            println!(
                "{}: {n} discover {} (clusters are found at plan and run time)",
                file.path.display(),
                plural(n, "selector", "selectors")
            );
        }
    }
    Ok(Exit::Ok)
}

pub(crate) fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}
