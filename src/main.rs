//! The `qc-offboard` binary: parse the command line, start telemetry, hand over to the library,
//! and turn the outcome into a process exit code. Nothing else lives here.

use clap::Parser;
use qc_offboard::cli::Cli;
use qc_offboard::exit;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    qc_offboard::telemetry::init(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(exit::Exit::Software as u8);
        }
    };
    let outcome = runtime.block_on(qc_offboard::cli::dispatch(cli));
    std::process::ExitCode::from(exit::report(outcome) as u8)
}
