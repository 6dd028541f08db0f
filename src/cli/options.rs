//! Options several commands share: the global ones (database, logging, progress), the output
//! format, the API endpoint and config file, and the rate ceiling.
//!
//! Argument shapes only: nothing here resolves a setting or reads a file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::limiter::Rate;
use crate::telemetry::LogFormat;

/// Options accepted before or after the command name.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// SQLite database (queue and audit log), or a postgres:// URL for status, report and audit
    /// [default: $XDG_DATA_HOME/qc-offboard/audit.db; sim-audit.db beside it for --simulate runs]
    #[arg(long, global = true, env = "QC_OFFBOARD_DB", hide_env_values = true, value_name = "PATH")]
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
