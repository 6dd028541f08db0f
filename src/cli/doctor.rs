//! `doctor`: read-only checks of an endpoint and access key before the first real run, printed
//! as `ok` / `warn` / `fail` with what to do. The checks and saving them are `app::doctor`'s;
//! this prints each step's findings as they come and picks nothing but the words.
//!
//! Exit codes: 0 when no check failed, 69 when the API could not be used (unreachable, not the
//! API, credentials refused, a clock the API refuses), 78 for configuration problems (no zone,
//! a database that cannot be written).

use crate::app::doctor::{api_unusable, Doctor, Saved};
use crate::cli::{DoctorArgs, GlobalOpts};
use crate::exit::Exit;
use crate::store::NewFinding;

pub async fn run(global: &GlobalOpts, args: DoctorArgs) -> anyhow::Result<Exit> {
    let doctor = Doctor::prepare(&args.api, args.simulate, args.zone.clone()).await?;
    println!("qc-offboard doctor: {} as {}, zone {}", doctor.endpoint(), doctor.access_key_id(), doctor.zone);

    let findings = doctor.api_checks().await?;
    for f in &findings {
        print_finding(f);
    }
    let unusable = api_unusable(&findings);

    // The database last: it is where the findings go.
    let (db, saved) = doctor.save(global.db.as_deref(), findings).await?;
    print_finding(&db);
    match &saved {
        Saved::Checkup { id, path } => println!("findings saved in {} (checkup {id})", path.display()),
        Saved::NoDatabase => println!("findings not saved: the database cannot be used"),
        Saved::WriteFailed { path, error } => {
            println!("fail  database: cannot write the findings to {}: {error}", path.display())
        }
    }
    if let Some(exit) = saved.exit() {
        return Ok(exit);
    }
    Ok(if unusable { Exit::Unavailable } else { Exit::Ok })
}

fn print_finding(f: &NewFinding) {
    println!("{:<5} {}: {}", f.status.as_str(), f.name, f.summary);
    if let Some(advice) = &f.advice {
        println!("      what to do: {advice}");
    }
}
