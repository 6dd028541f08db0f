//! The `qc-offboard` binary: parse the command line, start telemetry, hand over to the library,
//! and turn the outcome into a process exit code. Nothing else lives here.

use clap::Parser;
use qc_offboard::cli::Cli;
use qc_offboard::exit;

fn main() -> std::process::ExitCode {
    forbid_core_dumps();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap's own message (usage errors, --help, --version), with any password in a URL it
        // echoes (a value given to the wrong option, say) masked.
        Err(err) => {
            let text = exit::redact_urls(&err.render().to_string());
            if err.use_stderr() {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
            return std::process::ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    qc_offboard::telemetry::init(cli.global.log_format, cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(exit::Exit::Software.code());
        }
    };
    let outcome = runtime.block_on(qc_offboard::cli::dispatch(cli));
    std::process::ExitCode::from(exit::report(outcome).code())
}

/// A core dump or a ptrace attach would expose the secret key (and a healthcheck URL) in
/// memory: make the process non-dumpable and its core size limit zero before anything is read.
/// Both are best effort; a failure is reported, not fatal.
fn forbid_core_dumps() {
    use rustix::process::{setrlimit, Resource, Rlimit};
    if let Err(err) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        eprintln!("warning: cannot make the process non-dumpable: {err}");
    }
    if let Err(err) = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }) {
        eprintln!("warning: cannot turn core dumps off: {err}");
    }
}
