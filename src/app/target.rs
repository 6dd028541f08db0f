//! Where the API is and with what key: one QingCloud account's endpoint, credentials and zone
//! from flags, environment and config file, or (for `--simulate`) an in-process simulator kept
//! alive for as long as the target is. Each target owns its account's rate limiter, which
//! discovery, preflight and the run share.
//!
//! This module only resolves and hands out clients: it sends nothing itself, opens no database
//! and prints nothing.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::limiter::{Limiter, Rate};
use crate::manifest::{AccountName, Zone};
use crate::qingcloud::client::Client;
use crate::qingcloud::config::{self, ConfigInput, Credentials, Settings};
use crate::runner::LimiterGate;
use crate::store;

/// The endpoint recorded for runs against the in-process simulator. Its port changes every
/// time, so a fixed name keeps "already deleted" lookups working between simulated runs.
pub const SIMULATED_ENDPOINT: &str = "simulator";

/// Where the API is, with what key, and (for `--simulate`) the simulator keeping it alive.
pub struct Target {
    pub settings: Settings,
    pub recorded_endpoint: String,
    pub simulate: bool,
    /// The QingCloud account (config profile) the settings are of.
    pub account: AccountName,
    /// The account's rate limiter, made on first use: discovery and the run share it.
    limiter: std::sync::OnceLock<Arc<Limiter>>,
    _sim: Option<crate::sim::SimHandle>,
}

impl Target {
    /// The default account's target.
    pub async fn resolve(api: impl Into<ConfigInput>, simulate: bool) -> anyhow::Result<Target> {
        Self::resolve_account(api, simulate, &AccountName::default_account()).await
    }

    /// The target of one account: its key pair, endpoint and zone from the config file's
    /// `accounts.<name>` (or the top level for the default account) and the environment. Under
    /// `--simulate` every account is the in-process simulator's.
    pub async fn resolve_account(
        api: impl Into<ConfigInput>,
        simulate: bool,
        account: &AccountName,
    ) -> anyhow::Result<Target> {
        if simulate {
            let sim = crate::sim::start(crate::sim::World::auto_fast(), "127.0.0.1:0".parse()?)
                .await
                .context("cannot start the in-process simulator")?;
            let endpoint = url::Url::parse(&sim.endpoint())?;
            tracing::info!(endpoint = %endpoint, "running against the in-process simulator");
            let credentials =
                Credentials::new(crate::sim::DEFAULT_ACCESS_KEY_ID, crate::sim::DEFAULT_SECRET_ACCESS_KEY);
            let settings = Settings::new(endpoint, credentials);
            return Ok(Target {
                settings,
                recorded_endpoint: SIMULATED_ENDPOINT.to_owned(),
                simulate,
                account: account.clone(),
                limiter: std::sync::OnceLock::new(),
                _sim: Some(sim),
            });
        }
        let input = api.into();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let resolved = config::resolve_account(&input, &|k| std::env::var(k).ok(), home.as_deref(), account)?;
        // Recorded as an identity: `/iaas` and `/iaas/` (or a default port) are one endpoint.
        let recorded_endpoint = store::endpoint_identity(resolved.settings.endpoint.as_str());
        Ok(Target {
            settings: resolved.settings,
            recorded_endpoint,
            simulate,
            account: account.clone(),
            limiter: std::sync::OnceLock::new(),
            _sim: None,
        })
    }

    /// Share the account's quota with the other hosts of a PostgreSQL database: the limiter
    /// takes its turns from `quota` (called before the first [`Target::limiter`]; later calls
    /// change nothing).
    pub fn share_quota(&self, rate: Rate, burst: u32, quota: Arc<dyn crate::limiter::SharedQuota>) {
        let _ = self.limiter.set(Arc::new(Limiter::shared(rate, burst, quota)));
    }

    /// The account's limiter: every call of the command for this account waits on it.
    pub fn limiter(&self, rate: Rate, burst: u32) -> Arc<Limiter> {
        Arc::clone(self.limiter.get_or_init(|| Arc::new(Limiter::new(rate, burst))))
    }

    /// A client for this account, gated by its limiter.
    pub fn client(&self, rate: Rate, burst: u32) -> anyhow::Result<Client> {
        Ok(Client::new(&self.settings)?.with_gate(Arc::new(LimiterGate(self.limiter(rate, burst)))))
    }

    pub fn default_zone(&self) -> Option<Zone> {
        self.settings.zone.clone()
    }
}

/// The default zone when neither config nor flags give one: `QINGCLOUD_ZONE`. A value that is
/// not a zone gives none here; resolving the configuration reports it (exit 78).
pub fn env_zone() -> Option<Zone> {
    config::env_zone().ok().flatten()
}

/// `QINGCLOUD_ZONE`, the zone of clusters whose manifest gives none, for commands that need no
/// credentials: a value that is not a zone is a configuration error here (exit 78).
pub fn env_zone_checked() -> anyhow::Result<Option<Zone>> {
    Ok(config::env_zone()?)
}

/// The zone each named account's config section gives, for manifests that name an account
/// but no zone (none under `--simulate`).
pub fn account_zones(config: Option<PathBuf>, simulate: bool) -> std::collections::HashMap<AccountName, Zone> {
    if simulate {
        return Default::default();
    }
    let input = ConfigInput { endpoint: None, config };
    config::account_zones(&input, std::env::var_os("HOME").map(PathBuf::from).as_deref())
}
