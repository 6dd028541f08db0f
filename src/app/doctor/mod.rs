//! `doctor`'s work: read-only checks of an endpoint and access key before the first real run,
//! and saving what was found in the database (audited) so runs can use it.
//!
//! It sends only `DescribeJobs` (never `RunClusterCustomService`): one unfiltered page, one page
//! filtered by `job_action`, and one call naming a job id that cannot exist. The target is
//! resolved exactly as for `run`, `--simulate` included.
//!
//! The steps are separate ([`Doctor::prepare`], [`Doctor::api_checks`], [`Doctor::save`]) so that
//! `cli` prints each one's findings as they come; this module prints nothing. The probes of the
//! endpoint, credentials and clock are `api`'s, the API's undocumented behaviours `behaviour`'s,
//! and the shape of a finding `finding`'s.

mod api;
mod behaviour;
mod finding;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::app::target::{env_zone, Target};
use crate::exit::{Coded, Exit};
use crate::manifest::Zone;
use crate::qingcloud::client::Client;
use crate::qingcloud::config::ConfigInput;
use crate::store::postgres::{is_postgres_url, redacted, PgStore};
use crate::store::{check, Db, FindingStatus, NewFinding, Store};

use finding::finding;

/// The zone probed when `--simulate` is given and nothing else names one.
const SIMULATED_ZONE: &str = "sh1a";

/// A checkup about to run: the target and the zone whose jobs it lists.
pub struct Doctor {
    target: Target,
    pub zone: Zone,
}

/// Where the findings went.
pub enum Saved {
    /// Written as checkup `id` in the database at `path`.
    Checkup { id: i64, path: PathBuf },
    /// The database could not be opened or created (its finding says why): nothing was saved.
    NoDatabase,
    /// The database opened but refused the write.
    WriteFailed { path: PathBuf, error: String },
}

impl Saved {
    pub fn exit(&self) -> Option<Exit> {
        match self {
            Saved::Checkup { .. } => None,
            Saved::NoDatabase | Saved::WriteFailed { .. } => Some(Exit::Config),
        }
    }
}

impl Doctor {
    /// Resolve the target and the zone (`zone`, else the config's, else `QINGCLOUD_ZONE`, else
    /// the simulator's). No zone at all is a configuration error (78).
    pub async fn prepare(api: impl Into<ConfigInput>, simulate: bool, zone: Option<Zone>) -> anyhow::Result<Doctor> {
        let target = Target::resolve(api, simulate).await?;
        let zone = match zone.or_else(|| target.default_zone()).or_else(env_zone) {
            Some(z) => z,
            None if simulate => Zone::parse(SIMULATED_ZONE).map_err(|e| anyhow::anyhow!("{e}"))?,
            None => {
                return Err(Coded::new(
                    Exit::Config,
                    "no zone to check: pass --zone, set QINGCLOUD_ZONE, or give `zone` in the config file",
                )
                .into())
            }
        };
        Ok(Doctor { target, zone })
    }

    pub fn endpoint(&self) -> String {
        self.target.settings.endpoint.to_string()
    }

    pub fn access_key_id(&self) -> &str {
        &self.target.settings.credentials.access_key_id
    }

    /// Every check that needs the API, in order. When the endpoint or the credentials cannot be
    /// used they stop there, with `fail`.
    pub async fn api_checks(&self) -> anyhow::Result<Vec<NewFinding>> {
        let client = Client::new(&self.target.settings)?;
        Ok(api::api_checks(&client, &self.zone).await)
    }

    /// The database check, then the findings (with it) saved as one checkup. The database
    /// check's finding is returned for printing whether or not the database could be used.
    pub async fn save(&self, db: Option<&Path>, mut findings: Vec<NewFinding>) -> anyhow::Result<(NewFinding, Saved)> {
        if let Some(url) = db.and_then(Path::to_str).filter(|s| is_postgres_url(s)) {
            return self.save_postgres(url.trim(), findings).await;
        }
        let path = crate::store::resolve_path(db, self.target.simulate)?;
        let store = match Store::open(&path).await {
            Ok(store) => store,
            Err(e) => {
                let f = finding(
                    check::DATABASE,
                    FindingStatus::Fail,
                    "unusable",
                    format!("cannot open or create {}: {e}", path.display()),
                    Some("pass --db or set QC_OFFBOARD_DB to a path this user can write".to_owned()),
                    json!({ "path": path.display().to_string() }),
                );
                return Ok((f, Saved::NoDatabase));
            }
        };
        let db = database_check(&store);
        findings.push(db.clone());
        Ok((db, self.record(store.into(), path, &findings).await))
    }

    /// Save the findings as one checkup in `store`, shown as `shown`; close it.
    async fn record(&self, store: Db, shown: PathBuf, findings: &[NewFinding]) -> Saved {
        let checkup = store
            .record_findings(&self.target.recorded_endpoint, self.access_key_id(), Some(self.zone.as_str()), findings)
            .await;
        store.close().await;
        match checkup {
            Ok(id) => Saved::Checkup { id, path: shown },
            Err(e) => Saved::WriteFailed { path: shown, error: e.to_string() },
        }
    }
}

impl Doctor {
    /// [`Doctor::save`] on PostgreSQL: the database check is that the server answers and holds
    /// (or was brought up to) this version's schema.
    async fn save_postgres(&self, url: &str, mut findings: Vec<NewFinding>) -> anyhow::Result<(NewFinding, Saved)> {
        let shown = PathBuf::from(redacted(url));
        let detail = json!({ "database": redacted(url) });
        let store = match PgStore::open(url).await {
            Ok(store) => store,
            Err(e) => {
                let f = finding(
                    check::DATABASE,
                    FindingStatus::Fail,
                    "unusable",
                    e.to_string(),
                    Some("check the server and the --db / QC_OFFBOARD_DB URL".to_owned()),
                    detail,
                );
                return Ok((f, Saved::NoDatabase));
            }
        };
        let db = finding(
            check::DATABASE,
            FindingStatus::Ok,
            "postgres",
            format!("{} answers and holds this version's schema", store.target()),
            None,
            detail,
        );
        findings.push(db.clone());
        Ok((db, self.record(store.into(), shown, &findings).await))
    }
}

/// Is any finding a `fail`: the API could not be used (69 when the database was fine).
pub fn api_unusable(findings: &[NewFinding]) -> bool {
    findings.iter().any(|f| f.status == FindingStatus::Fail)
}

fn database_check(store: &Store) -> NewFinding {
    let path = store.path();
    let detail = json!({ "path": path.display().to_string() });
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 == 0 => finding(
            check::DATABASE,
            FindingStatus::Ok,
            "private",
            format!("{} is writable and private (mode {:o})", path.display(), meta.permissions().mode() & 0o777),
            None,
            detail,
        ),
        Ok(meta) => finding(
            check::DATABASE,
            FindingStatus::Warn,
            "readable_by_others",
            format!("{} is readable by other users (mode {:o})", path.display(), meta.permissions().mode() & 0o777),
            Some(format!("chmod 600 {}", path.display())),
            detail,
        ),
        Err(e) => finding(
            check::DATABASE,
            FindingStatus::Fail,
            "unusable",
            format!("{}: {e}", path.display()),
            Some("pass --db or set QC_OFFBOARD_DB to a path this user can write".to_owned()),
            detail,
        ),
    }
}
