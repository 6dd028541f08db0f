//! `doctor`: read-only checks of an endpoint and access key before the first real run, printed
//! as `ok` / `warn` / `fail` with what to do, and saved in the database (audited) so runs can use
//! what was found.
//!
//! It sends only `DescribeJobs` (never `RunClusterCustomService`): one unfiltered page, one page
//! filtered by `job_action`, and one call naming a job id that cannot exist. The target is
//! resolved exactly as for `run`, `--simulate` included.
//!
//! Exit codes: 0 when no check failed, 69 when the API could not be used (unreachable, not the
//! API, credentials refused, a clock the API refuses), 78 for configuration problems (no zone,
//! a database that cannot be written).
//!
//! The command and the database check are here; the probes of the endpoint, credentials and
//! clock are `api`'s, the API's undocumented behaviours `behaviour`'s, and the shape of a
//! finding `finding`'s.

mod api;
mod behaviour;
mod finding;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::app::target::{env_zone, Target};
use crate::cli::{DoctorArgs, GlobalOpts};
use crate::exit::{Coded, Exit};
use crate::manifest::Zone;
use crate::qingcloud::client::Client;
use crate::store::{check, FindingStatus, NewFinding, Store};

use api::api_checks;
use finding::{finding, print_finding};

/// The zone probed when `--simulate` is given and nothing else names one.
const SIMULATED_ZONE: &str = "sh1a";

pub async fn run(global: &GlobalOpts, args: DoctorArgs) -> anyhow::Result<Exit> {
    let target = Target::resolve(&args.api, args.simulate).await?;
    let zone = match args.zone.clone().or_else(|| target.default_zone()).or_else(env_zone) {
        Some(z) => z,
        None if args.simulate => Zone::parse(SIMULATED_ZONE).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => {
            return Err(Coded::new(
                Exit::Config,
                "no zone to check: pass --zone, set QINGCLOUD_ZONE, or give `zone` in the config file",
            )
            .into())
        }
    };
    let access_key_id = target.settings.credentials.access_key_id.clone();
    println!("qc-offboard doctor: {} as {access_key_id}, zone {zone}", target.settings.endpoint);

    let client = Client::new(&target.settings)?;
    let mut findings = api_checks(&client, &zone).await;
    let api_unusable = findings.iter().any(|f| f.status == FindingStatus::Fail);
    for f in &findings {
        print_finding(f);
    }

    // The database last: it is where the findings go.
    let path = crate::store::resolve_path(global.db.as_deref(), target.simulate)?;
    let store = match Store::open(&path).await {
        Ok(store) => Some(store),
        Err(e) => {
            let f = finding(
                check::DATABASE,
                FindingStatus::Fail,
                "unusable",
                format!("cannot open or create {}: {e}", path.display()),
                Some("pass --db or set QC_OFFBOARD_DB to a path this user can write".to_owned()),
                json!({ "path": path.display().to_string() }),
            );
            print_finding(&f);
            None
        }
    };
    let Some(store) = store else {
        println!("findings not saved: the database cannot be used");
        return Ok(Exit::Config);
    };
    let db = database_check(&store);
    print_finding(&db);
    findings.push(db);
    let checkup =
        store.record_findings(&target.recorded_endpoint, &access_key_id, Some(zone.as_str()), &findings).await;
    store.close().await;
    match checkup {
        Ok(id) => println!("findings saved in {} (checkup {id})", path.display()),
        Err(e) => {
            println!("fail  database: cannot write the findings to {}: {e}", path.display());
            return Ok(Exit::Config);
        }
    }
    Ok(if api_unusable { Exit::Unavailable } else { Exit::Ok })
}

fn database_check(store: &Store) -> NewFinding {
    let path = store.path();
    let detail = json!({ "path": path.display().to_string() });
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 == 0 => finding(
            check::DATABASE,
            FindingStatus::Ok,
            "private",
            format!("{} is writable and private (mode {:o})", path.display(), meta.permissions().mode() & 0o777),
            None,
            detail,
        ),
        Ok(meta) => finding(
            check::DATABASE,
            FindingStatus::Warn,
            "readable_by_others",
            format!("{} is readable by other users (mode {:o})", path.display(), meta.permissions().mode() & 0o777),
            Some(format!("chmod 600 {}", path.display())),
            detail,
        ),
        Err(e) => finding(
            check::DATABASE,
            FindingStatus::Fail,
            "unusable",
            format!("{}: {e}", path.display()),
            Some("pass --db or set QC_OFFBOARD_DB to a path this user can write".to_owned()),
            detail,
        ),
    }
}
