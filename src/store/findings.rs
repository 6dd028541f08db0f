//! What `doctor` found out about an endpoint and access key (its "checkups"), so that runs can
//! use it: how DescribeJobs answers an unknown id, which order it lists in, whether it honours
//! `job_action`, the clock skew. Each finding is written together with its audit record
//! (kind `doctor_finding`) in one transaction.
//!
//! This module stores and reads findings; it does not decide what they mean.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::audit::{self, Entry};
use super::details;
use super::{ts, Store, StoreError};

/// The names of the checks (`Finding::name`) and the values they record (`Finding::value`).
pub mod check {
    /// Does the endpoint answer as the QingCloud API? Values `api`, `not_api`, `unreachable`.
    pub const ENDPOINT: &str = "endpoint";
    /// Values `accepted`, `refused`, `unknown`.
    pub const CREDENTIALS: &str = "credentials";
    /// The API's clock minus ours, in whole seconds (e.g. `-3`, `300`), or `unknown`.
    pub const CLOCK_SKEW: &str = "clock_skew";
    /// DescribeJobs with an unknown id: `error` (the whole call is refused), `drop` (the id is
    /// left out), `unknown`.
    pub const UNKNOWN_JOB_ID: &str = "unknown_job_id";
    /// `newest_first`, `oldest_first`, `unordered`, `unknown`.
    pub const LISTING_ORDER: &str = "listing_order";
    /// `honoured`, `ignored`, `unknown`.
    pub const JOB_ACTION_FILTER: &str = "job_action_filter";
    /// `unreported` (the API does not say), `exhausted` (a 2500 was seen).
    pub const QUOTA: &str = "quota";
    /// `private` (mode 0600), `readable_by_others`, `unusable`.
    pub const DATABASE: &str = "database";
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    Ok,
    Warn,
    Fail,
}

impl FindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Ok => "ok",
            FindingStatus::Warn => "warn",
            FindingStatus::Fail => "fail",
        }
    }
}

impl fmt::Display for FindingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FindingStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ok" => Ok(FindingStatus::Ok),
            "warn" => Ok(FindingStatus::Warn),
            "fail" => Ok(FindingStatus::Fail),
            other => Err(format!("finding status {other:?}")),
        }
    }
}

/// One finding to record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewFinding {
    /// One of [`check`].
    pub name: String,
    pub status: FindingStatus,
    /// The machine-readable answer (see [`check`]).
    pub value: String,
    /// One line for people.
    pub summary: String,
    /// What to do about it, when anything.
    pub advice: Option<String>,
    /// Anything else worth keeping (messages, counts), as JSON.
    pub detail: serde_json::Value,
}

/// A finding as stored, with the checkup it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub checkup_id: i64,
    pub checked_at: DateTime<Utc>,
    pub endpoint: String,
    pub access_key_id: String,
    pub zone: Option<String>,
    pub name: String,
    pub status: FindingStatus,
    pub value: String,
    pub summary: String,
    pub advice: Option<String>,
    pub detail: serde_json::Value,
}

impl Store {
    /// Record one checkup of `endpoint` with `access_key_id` and its findings, each audited
    /// as `doctor_finding`. Returns the checkup's id.
    pub async fn record_findings(
        &self,
        endpoint: &str,
        access_key_id: &str,
        zone: Option<&str>,
        findings: &[NewFinding],
    ) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let at = ts(Utc::now());
        let checkup_id: i64 = sqlx::query_scalar(
            "INSERT INTO doctor_checkups (checked_at, endpoint, access_key_id, zone) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(&at)
        .bind(endpoint)
        .bind(access_key_id)
        .bind(zone)
        .fetch_one(&mut *tx)
        .await?;
        let mut entries = Vec::with_capacity(findings.len());
        for (ord, f) in findings.iter().enumerate() {
            sqlx::query(
                "INSERT INTO doctor_findings (checkup_id, ord, name, status, value, summary, advice, detail) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(checkup_id)
            .bind(ord as i64)
            .bind(&f.name)
            .bind(f.status.as_str())
            .bind(&f.value)
            .bind(&f.summary)
            .bind(&f.advice)
            .bind(f.detail.to_string())
            .execute(&mut *tx)
            .await?;
            let detail = details::doctor_finding(checkup_id, endpoint, access_key_id, zone, f);
            entries.push(Entry::new(None, None, "doctor_finding", &detail));
        }
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(checkup_id)
    }

    /// The findings of the newest checkup of `endpoint` with `access_key_id`, in the order they
    /// were checked; empty when doctor never checked them.
    pub async fn latest_findings(&self, endpoint: &str, access_key_id: &str) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.checked_at, c.endpoint, c.access_key_id, c.zone, \
                    f.name, f.status, f.value, f.summary, f.advice, f.detail \
             FROM doctor_findings f JOIN doctor_checkups c ON c.id = f.checkup_id \
             WHERE c.id = (SELECT MAX(id) FROM doctor_checkups WHERE endpoint = ? AND access_key_id = ?) \
             ORDER BY f.ord",
        )
        .bind(endpoint)
        .bind(access_key_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(finding_from_row).collect()
    }

    /// The newest finding of check `name` for `endpoint` and `access_key_id` (from the newest
    /// checkup), e.g. `latest_finding(e, k, check::LISTING_ORDER)`.
    pub async fn latest_finding(
        &self,
        endpoint: &str,
        access_key_id: &str,
        name: &str,
    ) -> Result<Option<Finding>, StoreError> {
        Ok(self.latest_findings(endpoint, access_key_id).await?.into_iter().find(|f| f.name == name))
    }
}

fn finding_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Finding, StoreError> {
    let checked_at: String = row.try_get("checked_at")?;
    let checked_at = DateTime::parse_from_rfc3339(&checked_at)
        .map_err(|_| StoreError::Corrupt(format!("doctor_checkups.checked_at {checked_at:?}")))?
        .with_timezone(&Utc);
    let status: String = row.try_get("status")?;
    let detail: String = row.try_get("detail")?;
    Ok(Finding {
        checkup_id: row.try_get("id")?,
        checked_at,
        endpoint: row.try_get("endpoint")?,
        access_key_id: row.try_get("access_key_id")?,
        zone: row.try_get("zone")?,
        name: row.try_get("name")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        value: row.try_get("value")?,
        summary: row.try_get("summary")?,
        advice: row.try_get("advice")?,
        detail: serde_json::from_str(&detail)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finding(name: &str, status: FindingStatus, value: &str) -> NewFinding {
        NewFinding {
            name: name.to_owned(),
            status,
            value: value.to_owned(),
            summary: format!("{name} is {value}"),
            advice: (status != FindingStatus::Ok).then(|| "do something".to_owned()),
            detail: json!({ "n": 1 }),
        }
    }

    #[tokio::test]
    async fn the_newest_checkup_of_a_target_is_read_back_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("audit.db")).await.unwrap();
        assert!(store.latest_findings("e", "k").await.unwrap().is_empty());
        let first = [finding(check::LISTING_ORDER, FindingStatus::Ok, "newest_first")];
        store.record_findings("e", "k", Some("sh1a"), &first).await.unwrap();
        let second = [
            finding(check::LISTING_ORDER, FindingStatus::Warn, "oldest_first"),
            finding(check::UNKNOWN_JOB_ID, FindingStatus::Warn, "drop"),
        ];
        let id = store.record_findings("e", "k", Some("sh1a"), &second).await.unwrap();
        store.record_findings("other", "k", None, &first).await.unwrap();

        let got = store.latest_findings("e", "k").await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|f| f.checkup_id == id && f.endpoint == "e" && f.zone.as_deref() == Some("sh1a")));
        assert_eq!(
            (got[0].name.as_str(), got[0].value.as_str(), got[0].status),
            ("listing_order", "oldest_first", FindingStatus::Warn)
        );
        assert_eq!(got[1].detail, json!({ "n": 1 }));
        let order = store.latest_finding("e", "k", check::LISTING_ORDER).await.unwrap().unwrap();
        assert_eq!(order.value, "oldest_first");
        assert_eq!(store.latest_finding("e", "k", check::QUOTA).await.unwrap(), None);

        let kinds: Vec<String> =
            sqlx::query_scalar("SELECT kind FROM audit_log ORDER BY seq").fetch_all(&store.reader).await.unwrap();
        assert_eq!(kinds, vec!["doctor_finding"; 4]);
        assert!(store.verify_audit(None).await.unwrap().is_intact(), "the chain stays intact");
        let refused = sqlx::query("DELETE FROM doctor_findings").execute(&store.writer).await;
        assert!(refused.is_err(), "findings are append-only");
    }
}
