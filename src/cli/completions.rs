//! `completions SHELL` and `man [COMMAND]`: the command line described for shells and for `man`,
//! generated from the clap definitions so they never drift from `--help`. Both print to stdout
//! and read nothing else.

use std::io::Write as _;

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::exit::{Coded, Exit};

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "qc-offboard", &mut out);
    out.flush()?;
    Ok(Exit::Ok)
}

/// The page of the program, `qc-offboard(1)`, or of one command, `qc-offboard-COMMAND(1)` (the
/// names the program's page refers to).
pub fn man(args: &ManArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match &args.command {
        None => cmd,
        Some(name) => {
            let sub = cmd.find_subcommand(name).cloned().ok_or_else(|| {
                let known: Vec<_> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
                Coded::new(Exit::Usage, format!("no command {name:?}; commands: {}", known.join(", ")))
            })?;
            let full = format!("qc-offboard-{name}");
            sub.name(full.clone())
                .display_name(full)
                .bin_name(format!("qc-offboard {name}"))
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&text)?;
    out.flush()?;
    Ok(Exit::Ok)
}
