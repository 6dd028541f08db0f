//! Logging setup: tracing to stderr, as text or JSON, with `-v`/`-q` choosing the level.
//! Output meant for people goes to stdout and never passes through here.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `--log-format`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The level chosen by `-v`/`-q` counts (default `info`).
pub fn level(verbose: u8, quiet: u8) -> &'static str {
    match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// Install the global subscriber. `RUST_LOG` refines the level when set.
pub fn init(format: LogFormat, verbose: u8, quiet: u8) {
    let default = format!("qc_offboard={}", level(verbose, quiet));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests calling into the library twice) is harmless: keep the first.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}
