//! The plan file as a document: its JSON shape (members in the order people read them), the
//! plan file made from a plan, its text and its atomic write, and the content hash over the
//! RFC 8785 canonical form (see the module documentation of `plan::file`).
//!
//! It writes and hashes; it checks nothing it reads (that is `load`'s) and knows nothing of
//! approval.

use std::io::{self, Write as _};
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::manifest::ManifestSet;
use crate::plan::Plan;

use super::model::{PinnedTask, PlanFile, PlanFileError, FORMAT};

/// The prefix of `content_hash`.
const HASH_PREFIX: &str = "sha256:";

/// The document as written; field order is the order people read it in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Doc {
    pub(super) format: String,
    pub(super) created_at: String,
    pub(super) endpoint: String,
    pub(super) access_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) account: Option<String>,
    pub(super) manifests: Vec<DocManifest>,
    pub(super) ticket: Option<String>,
    pub(super) requested_by: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) due_by: Option<String>,
    pub(super) tasks: Vec<DocTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) discovered: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content_hash: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DocManifest {
    pub(super) path: String,
    pub(super) sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DocTask {
    pub(super) cluster: String,
    pub(super) zone: String,
    pub(super) user: String,
    pub(super) host: String,
    pub(super) state: String,
    pub(super) not_before: Option<String>,
    pub(super) due_by: Option<String>,
}

pub(super) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl PlanFile {
    /// The plan file of `plan` (built from `set`) for `endpoint` and `access_key_id`, made at
    /// `created_at`, with its content hash computed.
    pub fn new(
        set: &ManifestSet,
        plan: &Plan,
        endpoint: &str,
        access_key_id: &str,
        created_at: DateTime<Utc>,
    ) -> PlanFile {
        let first = set.files.first();
        let mut file = PlanFile {
            manifests: set.files.iter().map(|f| (f.path.display().to_string(), f.sha256.clone())).collect(),
            ticket: first.and_then(|f| f.ticket.clone()),
            requested_by: first.and_then(|f| f.requested_by.clone()),
            reason: first.and_then(|f| f.reason.clone()),
            due_by: set.files.iter().filter_map(|f| f.due_by).min(),
            endpoint: endpoint.to_owned(),
            access_key_id: access_key_id.to_owned(),
            account: None,
            // The file keeps whole seconds; keep the value equal to what a load returns.
            created_at: DateTime::from_timestamp(created_at.timestamp(), 0).unwrap_or(created_at),
            tasks: plan
                .tasks
                .iter()
                .map(|p| PinnedTask {
                    cluster: p.task.cluster.clone(),
                    zone: p.task.zone.clone(),
                    user: p.task.user.clone(),
                    host: p.task.host.clone(),
                    state: p.state,
                    not_before: p.task.not_before,
                    due_by: p.task.due_by,
                })
                .collect(),
            discovered: None,
            content_hash: String::new(),
        };
        file.content_hash = content_hash(&file.doc_value(false));
        file
    }

    /// The same plan pinning what discovery found (the hash covers it).
    pub fn with_discovered(mut self, discovered: Option<Value>) -> PlanFile {
        self.discovered = discovered;
        self.content_hash = content_hash(&self.doc_value(false));
        self
    }

    /// The same plan for a named account (the hash covers the account).
    pub fn for_account(mut self, account: &crate::manifest::AccountName) -> PlanFile {
        self.account = (!account.is_default()).then(|| account.to_string());
        self.content_hash = content_hash(&self.doc_value(false));
        self
    }

    fn doc(&self, with_hash: bool) -> Doc {
        Doc {
            format: FORMAT.to_owned(),
            created_at: time(self.created_at),
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            account: self.account.clone(),
            manifests: self
                .manifests
                .iter()
                .map(|(path, sha256)| DocManifest { path: path.clone(), sha256: sha256.clone() })
                .collect(),
            ticket: self.ticket.clone(),
            requested_by: self.requested_by.clone(),
            reason: self.reason.clone(),
            due_by: self.due_by.map(time),
            tasks: self
                .tasks
                .iter()
                .map(|t| DocTask {
                    cluster: t.cluster.to_string(),
                    zone: t.zone.to_string(),
                    user: t.user.to_string(),
                    host: t.host.to_string(),
                    state: t.state.as_str().to_owned(),
                    not_before: t.not_before.map(|d| d.format("%F").to_string()),
                    due_by: t.due_by.map(time),
                })
                .collect(),
            discovered: self.discovered.clone(),
            content_hash: with_hash.then(|| self.content_hash.clone()),
        }
    }

    pub(super) fn doc_value(&self, with_hash: bool) -> Value {
        serde_json::to_value(self.doc(with_hash)).expect("a plan document is plain JSON")
    }

    /// The file's text: pretty JSON and a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.doc(true)).expect("a plan document is plain JSON");
        text.push('\n');
        text
    }

    /// Write the file: to a temporary file beside `path`, then renamed over it, so a reader
    /// never sees half a plan.
    pub fn write(&self, path: &Path) -> Result<(), PlanFileError> {
        let err = |source| PlanFileError::Write { path: path.to_path_buf(), source };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().ok_or_else(|| err(io::Error::other("the path names no file")))?;
        let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.to_json().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }
}

/// `sha256:` and the hex SHA-256 of the canonical form of `value`.
pub fn content_hash(value: &Value) -> String {
    format!("{HASH_PREFIX}{}", hex::encode(Sha256::digest(canonical(value).as_bytes())))
}

/// RFC 8785 (JCS) canonical JSON of `value` (see the module documentation).
pub fn canonical(value: &Value) -> String {
    // A `Value` holds no non-finite number, the one thing JCS cannot write.
    serde_jcs::to_string(value).expect("JSON values serialize canonically")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::manifest::{ClusterId, HostSpec, UserName, Zone};
    use crate::plan::PlanState;

    pub(crate) fn sample() -> PlanFile {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut p = PlanFile {
            manifests: vec![("hr-4711.yaml".into(), "ab".repeat(32))],
            ticket: Some("HR-4711".into()),
            requested_by: Some("alice@example.com".into()),
            reason: Some("bob left".into()),
            due_by: Some(t("2026-11-28T12:00:00Z")),
            endpoint: "https://api.qingcloud.com/iaas/".into(),
            access_key_id: "QYACCESSKEYIDEXAMPLE".into(),
            account: None,
            created_at: t("2026-11-28T09:00:00Z"),
            tasks: vec![PinnedTask {
                cluster: ClusterId::parse("cl-abc12345").unwrap(),
                zone: Zone::parse("sh1a").unwrap(),
                user: UserName::parse("bob").unwrap(),
                host: HostSpec::parse("%").unwrap(),
                state: PlanState::Pending,
                not_before: None,
                due_by: Some(t("2026-11-28T12:00:00Z")),
            }],
            discovered: None,
            content_hash: String::new(),
        };
        p.content_hash = content_hash(&p.doc_value(false));
        p
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": [1, null, true], "a": {"é": "x\ny", "Z": "\u0001"} }"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":{"Z":"\u0001","é":"x\ny"},"b":[1,null,true]}"#);
    }
}
