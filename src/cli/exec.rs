//! The arguments of the commands that send requests: `run` (manifests or a plan file, with its
//! approval), `resume` and `retry`, and the execution options they share (in-flight ceiling,
//! attempts, timeouts, failure budget, operator, outputs, what counts as absent).
//!
//! Argument shapes only: the commands themselves are `run`'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::durations::{
    parse_deadline, parse_job_timeout, parse_lease, parse_poll_interval, parse_retry_base, parse_settle,
};
use super::options::{ApiOpts, OutputFormat, RateOpts};
use crate::runner::policy::MaxFail;

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
    /// Base of the exponential back-off (full jitter, capped at 5m) between attempts after a
    /// transient failure [default: 2s]
    #[arg(long, value_parser = parse_retry_base, value_name = "DUR")]
    pub retry_base: Option<Duration>,
    /// Skip the preflight check of the clusters (DescribeClusters before the first del_user)
    #[arg(long)]
    pub no_preflight: bool,
    /// With a PostgreSQL --db: how long this host's hold on the run and on each task it works on
    /// lasts unless renewed (renewed every third of it); the other hosts take over the tasks of
    /// a host silent for that long
    #[arg(long, value_parser = parse_lease, default_value = "60s", value_name = "DUR")]
    pub lease: Duration,
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
}
