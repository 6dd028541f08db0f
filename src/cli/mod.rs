//! The command line (SPEC §1): clap definitions and the dispatch to one handler per command.
//!
//! This module owns argument shapes, defaults and environment variables. It does no work of its
//! own: each handler in a submodule turns arguments into calls on the library and returns an
//! [`Exit`]. Errors go up as `anyhow::Error` and are mapped to exit codes in [`crate::exit`].
//!
//! The command list and each command's own arguments are here; options several commands share
//! are `options`'s, the arguments of the commands that send (`run`, `resume`, `retry`) `exec`'s,
//! and the duration flags `durations`'s.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::Exit;
pub use crate::runner::policy::MaxFail;
pub use crate::telemetry::LogFormat;

/// `println!` that returns the write's error instead of panicking: a reader that stopped
/// reading (`qc-offboard audit verify | head`) ends the command quietly with 0, and a full disk
/// is an error with its exit code, not a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod audit;
mod completions;
mod db;
mod doctor;
mod durations;
mod exec;
mod options;
mod plan;
mod report;
mod run;
mod sim;
mod status;
mod validate;

pub use durations::{parse_deadline, parse_duration, parse_job_timeout, parse_poll_interval};
pub use exec::{ExecOpts, ResumeArgs, RetryArgs, RunArgs};
pub use options::{ApiOpts, GlobalOpts, OutputFormat, RateOpts};

/// Remove MySQL Plus database accounts across many QingCloud clusters in bulk, safely and with
/// proof.
#[derive(Debug, Parser)]
#[command(name = "qc-offboard", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate manifests; one summary line per file. No database, no network.
    Validate(ValidateArgs),
    /// Expand manifests into tasks and estimate API calls and duration. Nothing is sent.
    Plan(PlanArgs),
    /// Execute: submit del_user requests, poll the jobs, retry, record everything
    Run(RunArgs),
    /// Continue an interrupted run (default: the newest unfinished one)
    Resume(ResumeArgs),
    /// Start a new run, linked to RUN_ID, over RUN_ID's tasks that ended failed
    Retry(RetryArgs),
    /// Runs (newest first), or one run's counts by state
    Status(StatusArgs),
    /// One row per task with its outcome: the evidence export
    Report(ReportArgs),
    /// Verify the audit log's hash chain, or print a checkpoint of it
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Move the database: copy an SQLite database into an empty PostgreSQL one
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Run the QingCloud API simulator (for rehearsals, tests and benchmarks)
    Sim(SimArgs),
    /// Read-only checks of endpoint, credentials, clock and API behaviour; sends no del_user
    ///
    /// Run it before a first real run. Each check prints ok, warn or fail with what to do; the
    /// findings are saved in the database (audited) for runs to use.
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout
    Completions(CompletionsArgs),
    /// Print the man page (roff) of the program, or of one command, to stdout
    Man(ManArgs),
    /// Print a JSON Schema (draft 2020-12) to stdout, for editors and CI checks of manifests
    Schema {
        #[arg(value_enum, value_name = "WHAT")]
        what: SchemaKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// The shape of a manifest file (schema/manifest.schema.json)
    Manifest,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command whose page to print (qc-offboard-COMMAND(1)) [default: the program's page]
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub api: ApiOpts,
    /// Zone whose jobs to list [default: QINGCLOUD_ZONE, else the config file's zone]
    #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
    pub zone: Option<crate::manifest::Zone>,
    /// Check an in-process simulator instead (auto world; its database is sim-audit.db)
    #[arg(long)]
    pub simulate: bool,
}

fn parse_zone(s: &str) -> Result<crate::manifest::Zone, String> {
    crate::manifest::Zone::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files (YAML); `-` reads one from standard input
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
    /// Manifest files (YAML); `-` reads one from standard input
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
    /// Output for people or a stable JSON document
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub api: ApiOpts,
    #[command(flatten)]
    pub rate: RateOpts,
    /// Also write the plan as a file for `run --plan`: the exact tasks, the manifests' SHA-256,
    /// the ticket, the endpoint and access key id it is for, and a content hash (needs
    /// credentials)
    #[arg(long, value_name = "PLAN_FILE")]
    pub out: Option<PathBuf>,
    /// Preview the plan as of another day (UTC), e.g. which `not_before` entries a later night
    /// picks up; not with --out (a plan file is made for today). `run` always uses the clock
    #[arg(long, env = "QC_OFFBOARD_TODAY", hide_env_values = true, value_name = "YYYY-MM-DD", value_parser = parse_today)]
    pub today: Option<chrono::NaiveDate>,
    /// Do not check the pending tasks' clusters with DescribeClusters (done when credentials
    /// are configured; what it finds is printed on stderr)
    #[arg(long)]
    pub no_preflight: bool,
}

fn parse_today(s: &str) -> Result<chrono::NaiveDate, String> {
    crate::manifest::parse_date(s.trim())
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Sign a plan file with an SSH key: writes PLAN_FILE.sig exactly as
    /// `ssh-keygen -Y sign -f KEY -n qc-offboard-plan PLAN_FILE` does
    Sign {
        /// The plan file to approve
        #[arg(value_name = "PLAN_FILE")]
        plan: PathBuf,
        /// OpenSSH private key without a passphrase (for one with a passphrase, use ssh-keygen)
        #[arg(short = 'f', long, value_name = "KEY")]
        key: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One run's counts by state [default: list the runs, newest first]
    #[arg(value_name = "RUN_ID")]
    pub run_id: Option<i64>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Read the simulator's database (sim-audit.db, where `run --simulate` records) [ignored
    /// with --db]
    #[arg(long)]
    pub simulate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
    /// One self-contained HTML page (no scripts) for auditors
    Html,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this run
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
    /// Only this database user
    #[arg(long, value_name = "U")]
    pub user: Option<String>,
    /// Only this cluster
    #[arg(long, value_name = "C")]
    pub cluster: Option<String>,
    /// Only runs with this ticket
    #[arg(long, value_name = "T")]
    pub ticket: Option<String>,
    /// Only tasks started at or after this instant (RFC 3339)
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only tasks started at or before this instant (RFC 3339)
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// One row per account (cluster, user, host) across runs and retry runs: where it stands now
    #[arg(long)]
    pub latest: bool,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Read the simulator's database (sim-audit.db, where `run --simulate` records) [ignored
    /// with --db]
    #[arg(long)]
    pub simulate: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit hash chain: exit 0 when intact, 1 naming the first bad record
    Verify {
        /// A SEQ:HASH printed earlier by `audit checkpoint`; detects truncation after it
        #[arg(long, value_name = "SEQ:HASH[:HMAC]")]
        checkpoint: Option<String>,
        /// Key file: check the checkpoint's HMAC-SHA256 signature (written by `audit checkpoint --key`)
        #[arg(long, value_name = "KEYFILE", requires = "checkpoint")]
        key: Option<PathBuf>,
    },
    /// Print the newest SEQ:HASH so it can be stored outside the database
    Checkpoint {
        /// Key file: sign the checkpoint with HMAC-SHA256 and print SEQ:HASH:HMAC
        #[arg(long, value_name = "KEYFILE")]
        key: Option<PathBuf>,
        /// Create the key file (32 random bytes as hex, mode 0600); refuses to overwrite one
        #[arg(long, requires = "key")]
        create_key: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy every table and the audit log (byte for byte) of an SQLite database into an empty
    /// PostgreSQL database, then verify the chain there; the source is only read
    Copy(DbCopyArgs),
}

#[derive(Debug, Args)]
pub struct DbCopyArgs {
    /// The SQLite database to copy, as sqlite:PATH (it must exist; its chain must verify)
    #[arg(long, value_name = "sqlite:PATH", value_parser = parse_sqlite_source)]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into (postgres://USER@HOST:PORT/DB); it must hold no runs
    /// and no audit records
    #[arg(long, value_name = "URL")]
    pub to: String,
}

fn parse_sqlite_source(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("sqlite:") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err("give the source as sqlite:PATH".to_owned()),
    }
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// World file (YAML): credentials, clusters, job timings, quota, faults
    #[arg(long, value_name = "FILE")]
    pub world: Option<PathBuf>,
}

/// Run the command and return the exit code it earned.
pub async fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    let Cli { global, command } = cli;
    match command {
        Command::Validate(args) => validate::run(&global, args),
        Command::Plan(args) => plan::run(&global, args).await,
        Command::Run(args) => run::run(&global, args).await,
        Command::Resume(args) => run::resume(&global, args).await,
        Command::Retry(args) => run::retry(&global, args).await,
        Command::Sim(args) => sim::run(&global, args).await,
        Command::Status(args) => status::run(&global, args).await,
        Command::Report(args) => report::run(&global, args).await,
        Command::Audit { command } => audit::run(&global, command).await,
        Command::Db { command: DbCommand::Copy(args) } => db::copy(args).await,
        Command::Doctor(args) => doctor::run(&global, args).await,
        Command::Completions(args) => completions::completions(&args),
        Command::Man(args) => completions::man(&args),
        Command::Schema { what: SchemaKind::Manifest } => {
            println!("{:#}", crate::manifest::json_schema());
            Ok(Exit::Ok)
        }
    }
}
