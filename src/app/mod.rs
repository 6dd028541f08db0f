//! The application: what each command does, between the command line and the library. `cli`
//! turns arguments into the plain options here, calls in, and prints what comes back; this
//! layer resolves the target ([`target`]), prepares runs from manifests, a plan file, a retry
//! or a resume ([`prepare`]), drives them ([`drive`]), reads how they ended ([`summary`]), pings
//! ([`ping`]), makes plans ([`preview`]) and reads the records the read-only commands show
//! ([`records`]).
//!
//! It must not import `cli` nor print to stdout: what the user reads is `cli`'s to write, from
//! the values and [`Event`]s this layer hands back. Logs (tracing, on stderr) are fine.

pub mod copy;
pub mod database;
pub mod discovery;
pub mod doctor;
pub mod drive;
pub mod metrics;
pub mod options;
pub mod ping;
pub mod prepare;
pub mod preview;
pub mod records;
pub mod result;
pub mod signals;
pub mod summary;
pub mod target;

pub use options::RunOptions;
pub use prepare::{Idle, Source};
pub use summary::{Conclusion, Ending, RunResult};
pub use target::Target;

use crate::exit::Exit;

/// What happens during `run`, `resume` and `retry` that the user is told about, in order.
pub enum Event<'a> {
    /// The command ends before driving any run.
    Idle(&'a Idle),
    /// A new run was recorded and holds the lock (`retry_of`: the run it retries).
    Created { run_id: i64, retry_of: Option<i64>, tasks: usize },
    /// One account's run ended.
    RunEnded(&'a Ending),
    /// Every run ended: the command's exit code is chosen (the final ping follows).
    Concluded(&'a Conclusion),
}

/// `run`, `resume` and `retry`: prepare the runs `source` asks for, drive them, and end with
/// one exit code. However it ends — with an error too — the metrics file and the ping URL hear
/// of it. `simulate`: against an in-process simulator and its database. `on` hears each
/// [`Event`] as it happens; an error it returns ends the command with that error.
pub async fn run(
    opts: &RunOptions,
    source: &Source,
    simulate: bool,
    on: &mut dyn FnMut(Event<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<Exit> {
    let outcome = async {
        let signals = signals::Signals::install()?;
        match prepare::prepare(opts, source, simulate, &signals).await? {
            prepare::Prepared::Idle(idle) => {
                on(Event::Idle(&idle))?;
                Ok(Exit::Ok)
            }
            prepare::Prepared::Runs { store, launches } => drive::execute(opts, &store, launches, &signals, on).await,
        }
    }
    .await;
    ping::ended_with_error(opts.ping_url.as_deref(), opts.metrics_file.as_deref(), outcome).await
}
