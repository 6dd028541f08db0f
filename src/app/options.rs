//! What `run`, `resume` and `retry` are asked to do, as plain values: the limits, the outputs
//! beside stdout (metrics file, pings), the database and the configuration's location. `cli`
//! fills these from its flags; everything here turns them into what the runner and the run
//! record need (defaults that depend on `--simulate`, the operator's name, the options JSON
//! recorded with a run, the "account does not exist" rules).
//!
//! Nothing here reads the database or the network.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::exit::{Coded, Exit};
use crate::limiter::Rate;
use crate::manifest::AccountName;
use crate::qingcloud::config::{ConfigInput, Settings};
use crate::runner::policy::MaxFail;
use crate::runner::verdict::{AbsentRule, AbsentRules};

/// The options shared by `run`, `resume` and `retry`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The database (`--db`); `None` is the default path.
    pub db: Option<PathBuf>,
    /// Draw a progress bar (not with `--no-progress` or JSON logs).
    pub progress: bool,
    /// Where the endpoint and credentials come from.
    pub api: ConfigInput,
    /// The rate ceiling; `None` is the default for the target.
    pub rate: Option<Rate>,
    pub burst: u32,
    pub max_in_flight: u32,
    pub max_attempts: u32,
    pub job_timeout: Duration,
    pub poll_interval: Option<Duration>,
    pub deadline: Option<Duration>,
    pub max_fail: Option<MaxFail>,
    /// `--operator`: who runs the command, when given.
    pub operator: Option<String>,
    pub metrics_file: Option<PathBuf>,
    pub ping_url: Option<String>,
    pub absent_on: Vec<AbsentRule>,
    pub reconcile_settle: Option<Duration>,
    /// `--retry-base`: the back-off base between attempts (SPEC §4's 2 s unless given).
    pub retry_base: Option<Duration>,
    pub no_preflight: bool,
    /// `--lease`: on PostgreSQL, how long this host's claims last unless renewed.
    pub lease: Duration,
}

impl RunOptions {
    pub fn rate(&self, simulate: bool) -> Rate {
        self.rate.unwrap_or(if simulate { Rate::SIMULATE } else { Rate::DEFAULT })
    }

    /// The simulator's jobs take tens of milliseconds; real ones take seconds.
    pub fn poll_interval(&self, simulate: bool) -> Duration {
        self.poll_interval.unwrap_or(if simulate { Duration::from_millis(200) } else { Duration::from_secs(3) })
    }

    pub fn reconcile_settle(&self, simulate: bool) -> Duration {
        self.reconcile_settle.unwrap_or(if simulate { Duration::from_secs(1) } else { Duration::from_secs(30) })
    }

    /// Who runs the command, as recorded with the run: `--operator` (or `QC_OFFBOARD_OPERATOR`),
    /// else the login name the system user database gives this process's user id (what `id -un`
    /// prints; cron and systemd set no `$USER`), else `$USER`/`$LOGNAME`, else the numeric uid.
    pub fn operator(&self) -> String {
        if let Some(name) = self.operator.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            return name.to_owned();
        }
        let uid = uzers::get_current_uid();
        if let Some(name) = uzers::get_user_by_uid(uid).and_then(|u| u.name().to_str().map(str::to_owned)) {
            return name;
        }
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("uid {uid}"))
    }

    /// The options recorded with a run (its `options` column and `run_started` record).
    pub fn to_json(&self, rate: Rate, account: &AccountName) -> serde_json::Value {
        let absent: Vec<String> = self.absent_on.iter().map(ToString::to_string).collect();
        let mut options = json!({
            "absent_on": if absent.is_empty() { serde_json::Value::Null } else { json!(absent) },
            "reconcile_settle_ms": self.reconcile_settle.map(|d| d.as_millis() as u64),
            "rate": rate.to_string(),
            "burst": self.burst,
            "max_in_flight": self.max_in_flight,
            "max_attempts": self.max_attempts,
            "job_timeout_s": self.job_timeout.as_secs(),
            "poll_interval_ms": self.poll_interval.map(|d| d.as_millis() as u64),
            "deadline_s": self.deadline.map(|d| d.as_secs()),
            "max_fail": self.max_fail.map(|m| format!("{m:?}")),
        });
        // The default account's runs look as they always did; a named account is on record, for
        // `resume` and `retry` to pick its key pair again.
        if let (false, Some(o)) = (account.is_default(), options.as_object_mut()) {
            o.insert("account".to_owned(), json!(account.as_str()));
        }
        // Recorded only when given, so runs on the default look as they always did.
        if let (Some(base), Some(o)) = (self.retry_base, options.as_object_mut()) {
            o.insert("retry_base_ms".to_owned(), json!(base.as_millis() as u64));
        }
        options
    }

    /// The "account does not exist" table: `--absent-on` flags, else the config file's
    /// `absent_on`, else the defaults. A rule that does not parse is a configuration error (78).
    pub fn absent_rules(&self, settings: &Settings) -> anyhow::Result<AbsentRules> {
        if !self.absent_on.is_empty() {
            return Ok(AbsentRules(self.absent_on.clone()));
        }
        if settings.absent_on.is_empty() {
            return Ok(AbsentRules::default());
        }
        let rules = settings
            .absent_on
            .iter()
            .map(|r| r.parse().map_err(|e: String| Coded::new(Exit::Config, format!("config file: absent_on: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AbsentRules(rules))
    }
}

/// The account a run was made for (its `options.account`; absent: the default account).
pub fn run_account(options: &serde_json::Value) -> anyhow::Result<AccountName> {
    match options.get("account").and_then(serde_json::Value::as_str) {
        None => Ok(AccountName::default_account()),
        Some(a) => AccountName::parse(a).map_err(|e| anyhow::anyhow!("the run's recorded account: {e}")),
    }
}
