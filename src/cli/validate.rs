//! `validate MANIFEST...`: parse and check, print one summary line per file.

use crate::cli::{GlobalOpts, ValidateArgs};
use crate::exit::Exit;

pub fn run(_global: &GlobalOpts, args: ValidateArgs) -> anyhow::Result<Exit> {
    for path in &args.manifests {
        let tasks = crate::manifest::load(path)?;
        println!("{}: {} tasks", path.display(), tasks.len());
    }
    Ok(Exit::Ok)
}
