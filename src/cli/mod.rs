//! The command line (SPEC §1): clap definitions and the dispatch to one handler per command.
//!
//! This module owns argument shapes, defaults and environment variables. It does no work of its
//! own: each handler in a submodule turns arguments into calls on the library and returns an
//! [`Exit`]. Errors go up as `anyhow::Error` and are mapped to exit codes in [`crate::exit`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::Exit;
use crate::limiter::Rate;
pub use crate::runner::policy::MaxFail;
pub use crate::telemetry::LogFormat;

mod audit;
mod completions;
mod doctor;
mod metrics;
mod plan;
mod report;
mod run;
mod sim;
mod status;
mod validate;

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

/// Options accepted before or after the command name.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// SQLite database (queue and audit log) [default: $XDG_DATA_HOME/qc-offboard/audit.db;
    /// sim-audit.db beside it for --simulate runs]
    #[arg(long, global = true, env = "QC_OFFBOARD_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, env = "QC_OFFBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (repeat for less)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Never draw a progress bar
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
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
#[command(group(clap::ArgGroup::new("approver").multiple(true).args(["approved_by", "allowed_signers"])))]
pub struct RunArgs {
    /// Manifest files (YAML); `-` reads one from standard input
    #[arg(required_unless_present = "plan", conflicts_with = "plan", value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
    /// Execute exactly the tasks of a plan file written by `plan --out`; refused (exit 65,
    /// nothing sent) if it was edited or was made for another endpoint or access key
    #[arg(long, value_name = "PLAN_FILE")]
    pub plan: Option<PathBuf>,
    /// Who approved the plan; recorded with the run and in the audit log (as unsigned unless
    /// --allowed-signers checks a signature)
    #[arg(long, value_name = "NAME", requires = "plan")]
    pub approved_by: Option<String>,
    /// OpenSSH allowed_signers file: the plan must carry a valid signature (PLAN_FILE.sig, made
    /// with `ssh-keygen -Y sign -n qc-offboard-plan` or `plan sign`) by a key listed there;
    /// refused (exit 65, nothing sent) otherwise. The signer is recorded as the approver
    #[arg(long, value_name = "FILE", requires = "plan")]
    pub allowed_signers: Option<PathBuf>,
    /// Two-person rule: refuse the plan unless its approver (the signer, or --approved-by) is
    /// someone other than its requested_by
    #[arg(long, requires = "approver")]
    pub require_approval: bool,
    /// Same as `plan`: nothing is sent
    #[arg(long)]
    pub dry_run: bool,
    /// Run against an in-process simulator on a free loopback port (auto world, fast jobs)
    #[arg(long)]
    pub simulate: bool,
    #[command(flatten)]
    pub exec: ExecOpts,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue [default: the newest unfinished one]
    #[arg(value_name = "RUN_ID")]
    pub run_id: Option<i64>,
    /// Use the simulator's database and a fresh in-process simulator (runs made with --simulate)
    #[arg(long)]
    pub simulate: bool,
    #[command(flatten)]
    pub exec: ExecOpts,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The run whose failed tasks to try again, in a new linked run
    #[arg(value_name = "RUN_ID")]
    pub run_id: i64,
    /// Use the simulator's database and a fresh in-process simulator (runs made with --simulate)
    #[arg(long)]
    pub simulate: bool,
    #[command(flatten)]
    pub exec: ExecOpts,
}

/// Options shared by `run`, `resume` and `retry`.
#[derive(Debug, Clone, Args)]
pub struct ExecOpts {
    #[command(flatten)]
    pub api: ApiOpts,
    #[command(flatten)]
    pub rate: RateOpts,
    /// Jobs submitted and not yet finished, over all clusters (never more than one per cluster)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Submissions per task before it ends `failed`
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// A job still pending/working after this ends its task `failed`, never resubmitted (keep it
    /// above the service's 10-minute custom-service timeout); also bounds waiting out a busy cluster
    #[arg(long, default_value = "15m", value_parser = parse_job_timeout, value_name = "DUR")]
    pub job_timeout: Duration,
    /// Base interval between DescribeJobs rounds [default: 3s; 200ms with --simulate]
    #[arg(long, value_parser = parse_poll_interval, value_name = "DUR")]
    pub poll_interval: Option<Duration>,
    /// Stop submitting after this long and leave the rest pending (exit 75)
    #[arg(long, value_parser = parse_deadline, value_name = "DUR")]
    pub deadline: Option<Duration>,
    /// Stop submitting once this many tasks (N) or this share of tasks (N%) have failed
    #[arg(long, value_name = "N|N%")]
    pub max_fail: Option<MaxFail>,
    /// Who runs this, recorded with the run (and with a resume in the audit log) [default: the
    /// login name of this process's user id in the system user database]
    #[arg(long, env = "QC_OFFBOARD_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
    /// The end of the run on stdout: the summary for people, or one JSON object (run id, counts
    /// per outcome, exit code, failed accounts with reasons, duration, API calls by action)
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Write how the run ended as a node_exporter textfile (exit code, tasks by outcome, API
    /// calls by action and ret_code, duration), replaced atomically at the end of every run
    #[arg(long, env = "QC_OFFBOARD_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Healthcheck pings: URL/start when a run starts, URL/<exit code> whenever it ends (0 is a
    /// success; 65, 73 and 78 are reported too), with the summary or the error as the body
    #[arg(long, env = "QC_OFFBOARD_PING_URL", hide_env_values = true, value_name = "URL")]
    pub ping_url: Option<String>,
    /// What means "the account does not exist" (task ends `absent`): job:CODE (a failed job's
    /// error_codes) or refusal:RET_CODE[:TEXT]; repeat for several; replaces the defaults
    /// [default: job:2100, refusal:2100:does not exist]
    #[arg(long = "absent-on", value_name = "RULE")]
    pub absent_on: Vec<crate::runner::verdict::AbsentRule>,
    /// After a lost answer, how long listings are given to show the job before its absence
    /// counts as proven [default: 30s; 1s with --simulate]
    #[arg(long, value_parser = parse_settle, value_name = "DUR")]
    pub reconcile_settle: Option<Duration>,
    /// Skip the preflight check of the clusters (DescribeClusters before the first del_user)
    #[arg(long)]
    pub no_preflight: bool,
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

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// World file (YAML): credentials, clusters, job timings, quota, faults
    #[arg(long, value_name = "FILE")]
    pub world: Option<PathBuf>,
}

/// Options naming the API endpoint and where credentials come from (SPEC §1, §5).
#[derive(Debug, Clone, Args)]
pub struct ApiOpts {
    /// API endpoint; its path is part of the signature [default: https://api.qingcloud.com/iaas/]
    #[arg(long, env = "QINGCLOUD_ENDPOINT", hide_env_values = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// qingcloud-cli / SDK config file [default: ~/.qingcloud/config.yaml if it exists]
    #[arg(long, env = "QINGCLOUD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The rate ceiling for all API calls together.
#[derive(Debug, Clone, Args)]
pub struct RateOpts {
    /// Ceiling for all API calls together: N/s, N/m or N/h [default: 1800/h; 50/s with --simulate]
    #[arg(long, env = "QC_OFFBOARD_RATE", value_name = "RATE")]
    pub rate: Option<Rate>,
    /// GCRA burst: calls allowed back to back before the rate applies
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
}

/// `--reconcile-settle`: 0 s to 1 h.
fn parse_settle(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: --reconcile-settle is at most 1h"));
    }
    Ok(d)
}

/// A duration written as `500ms`, `3s`, `15m`, `2h` or a combination such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 3s, 15m, 2h)"))
}

fn parse_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min || d > max {
        return Err(format!(
            "{s:?} is out of range: between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// `--poll-interval`: from 10 ms (the simulator) to 10 min.
pub fn parse_poll_interval(s: &str) -> Result<Duration, String> {
    parse_within(s, Duration::from_millis(10), Duration::from_secs(600))
}

/// `--job-timeout`: from 1 s to 7 days.
pub fn parse_job_timeout(s: &str) -> Result<Duration, String> {
    parse_within(s, Duration::from_secs(1), Duration::from_secs(7 * 86_400))
}

/// `--deadline`: from 1 s to 366 days, so that adding it to any instant of the run stays
/// representable.
pub fn parse_deadline(s: &str) -> Result<Duration, String> {
    parse_within(s, Duration::from_secs(1), Duration::from_secs(366 * 86_400))
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
        Command::Doctor(args) => doctor::run(&global, args).await,
        Command::Completions(args) => completions::completions(&args),
        Command::Man(args) => completions::man(&args),
        Command::Schema { what: SchemaKind::Manifest } => {
            println!("{:#}", crate::manifest::json_schema());
            Ok(Exit::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_fail_parses_counts_and_percentages() {
        assert_eq!("3".parse::<MaxFail>(), Ok(MaxFail::Count(3)));
        assert_eq!("10%".parse::<MaxFail>(), Ok(MaxFail::Percent(10.0)));
        assert!("x%".parse::<MaxFail>().is_err());
        assert!("101%".parse::<MaxFail>().is_err());
        assert!(MaxFail::Percent(10.0).reached(1, 10));
        assert!(!MaxFail::Percent(10.0).reached(0, 10));
        assert!(MaxFail::Count(2).reached(2, 100));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_poll_interval("50ms"), Ok(Duration::from_millis(50)));
        assert!(parse_poll_interval("1ms").unwrap_err().contains("out of range"));
        assert!(parse_job_timeout("30d").is_err());
        assert_eq!(parse_job_timeout("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_deadline("584542046090y").unwrap_err().contains("out of range"));
        assert_eq!(parse_deadline("2h"), Ok(Duration::from_secs(7200)));
    }
}
