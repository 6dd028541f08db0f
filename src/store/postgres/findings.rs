//! What `doctor` found out about an endpoint and access key, on PostgreSQL: one checkup with
//! its findings written together with their `doctor_finding` audit records (the detail built by
//! `store::details`, as the SQLite store's), and the newest checkup read back. It stores and
//! reads findings; it does not decide what they mean.
//!
//! New rows lock nothing another writer waits for; the audit append serialises the records
//! across hosts, and the checkup's id orders checkups as the SQLite store's does.

use chrono::Utc;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::audit::append;
use super::PgStore;
use crate::store::audit::Entry;
use crate::store::details;
use crate::store::{Finding, NewFinding, StoreError};

impl PgStore {
    /// Record one checkup of `endpoint` with `access_key_id` and its findings, each audited as
    /// `doctor_finding`. Returns the checkup's id.
    pub async fn record_findings(
        &self,
        endpoint: &str,
        access_key_id: &str,
        zone: Option<&str>,
        findings: &[NewFinding],
    ) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let checkup_id: i64 = sqlx::query_scalar(
            "INSERT INTO doctor_checkups (checked_at, endpoint, access_key_id, zone) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(Utc::now())
        .bind(endpoint)
        .bind(access_key_id)
        .bind(zone)
        .fetch_one(&mut *tx)
        .await?;
        let mut entries = Vec::with_capacity(findings.len());
        for (ord, f) in findings.iter().enumerate() {
            sqlx::query(
                "INSERT INTO doctor_findings (checkup_id, ord, name, status, value, summary, advice, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
        append(&mut tx, &entries).await?;
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
             WHERE c.id = (SELECT MAX(id) FROM doctor_checkups WHERE endpoint = $1 AND access_key_id = $2) \
             ORDER BY f.ord",
        )
        .bind(endpoint)
        .bind(access_key_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(finding_from_row).collect()
    }

    /// The newest finding of check `name` for `endpoint` and `access_key_id`.
    pub async fn latest_finding(
        &self,
        endpoint: &str,
        access_key_id: &str,
        name: &str,
    ) -> Result<Option<Finding>, StoreError> {
        Ok(self.latest_findings(endpoint, access_key_id).await?.into_iter().find(|f| f.name == name))
    }
}

fn finding_from_row(row: &PgRow) -> Result<Finding, StoreError> {
    let status: String = row.try_get("status")?;
    let detail: String = row.try_get("detail")?;
    Ok(Finding {
        checkup_id: row.try_get("id")?,
        checked_at: row.try_get("checked_at")?,
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
