//! Loading a plan file back: size limit, JSON shape, `format`, the content hash recomputed
//! (an edited plan is refused), every task checked as a manifest's would be (a plan cannot
//! name a protected account, whatever its hash says), and the target it was made for.
//!
//! It reads and checks; it writes nothing and decides nothing about approval.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::manifest::{ClusterId, HostSpec, UserName, Zone};
use crate::plan::PlanState;

use super::document::{content_hash, Doc};
use super::model::{invalid, PinnedTask, PlanFile, PlanFileError, FORMAT, MAX_PLAN_BYTES};

impl PlanFile {
    /// Read a plan file and check it: its content hash, its shape, every task as a manifest
    /// would be checked, and that it was made for `endpoint` and `access_key_id` (what the run
    /// resolved from its configuration). Any failure means the run must send nothing.
    pub fn load_verified(path: &Path, endpoint: &str, access_key_id: &str) -> Result<PlanFile, PlanFileError> {
        let plan = PlanFile::load(path)?;
        plan.check_target(path, endpoint, access_key_id)?;
        Ok(plan)
    }

    /// Read a plan file and check its content hash and shape (not its target).
    pub fn load(path: &Path) -> Result<PlanFile, PlanFileError> {
        let read_err = |source| PlanFileError::Read { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_PLAN_BYTES {
            return Err(invalid(path, format!("{size} bytes is more than the {MAX_PLAN_BYTES} a plan may have")));
        }
        let text = std::fs::read(path).map_err(read_err)?;
        PlanFile::parse(path, &text)
    }

    /// Check the text of a plan file (see [`PlanFile::load`]); `path` is for messages.
    pub fn parse(path: &Path, text: &[u8]) -> Result<PlanFile, PlanFileError> {
        let mut value: Value =
            serde_json::from_slice(text).map_err(|e| invalid(path, format!("not a JSON plan: {e}")))?;
        let Some(obj) = value.as_object_mut() else {
            return Err(invalid(path, "not a JSON object".into()));
        };
        match obj.get("format") {
            Some(Value::String(f)) if f == FORMAT => {}
            Some(other) => return Err(invalid(path, format!("format {other} is not {FORMAT:?}"))),
            None => return Err(invalid(path, format!("no \"format\": {FORMAT:?}; is this a plan file?"))),
        }
        let recorded = match obj.remove("content_hash") {
            Some(Value::String(h)) => h,
            Some(_) => return Err(invalid(path, "content_hash is not a string".into())),
            None => return Err(invalid(path, "no content_hash: plans are made by `plan --out`".into())),
        };
        let computed = content_hash(&value);
        if recorded.to_ascii_lowercase() != computed {
            return Err(PlanFileError::Tampered { path: path.to_path_buf(), recorded, computed });
        }
        let doc: Doc = serde_json::from_value(value).map_err(|e| invalid(path, e.to_string()))?;
        let mut file = from_doc(path, doc)?;
        file.content_hash = computed;
        Ok(file)
    }

    pub(super) fn check_target(&self, path: &Path, endpoint: &str, access_key_id: &str) -> Result<(), PlanFileError> {
        let wrong = |what, planned: &str, actual: &str| PlanFileError::WrongTarget {
            path: path.to_path_buf(),
            what,
            planned: planned.to_owned(),
            actual: actual.to_owned(),
        };
        if self.endpoint != endpoint {
            return Err(wrong("endpoint", &self.endpoint, endpoint));
        }
        if self.access_key_id != access_key_id {
            return Err(wrong("access key id", &self.access_key_id, access_key_id));
        }
        Ok(())
    }
}

fn from_doc(path: &Path, doc: Doc) -> Result<PlanFile, PlanFileError> {
    let instant = |what: &str, s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| invalid(path, format!("{what} {s:?} is not an RFC 3339 instant: {e}")))
    };
    let mut tasks = Vec::with_capacity(doc.tasks.len());
    for (i, t) in doc.tasks.into_iter().enumerate() {
        let at = |why: String| invalid(path, format!("tasks[{i}]: {why}"));
        let state = match t.state.as_str() {
            "pending" => PlanState::Pending,
            "not_due" => PlanState::NotDue,
            "skipped" => PlanState::Skipped,
            other => return Err(at(format!("state {other:?} is not pending, not_due or skipped"))),
        };
        tasks.push(PinnedTask {
            cluster: ClusterId::parse(&t.cluster).map_err(at)?,
            zone: Zone::parse(&t.zone).map_err(at)?,
            user: UserName::parse(&t.user).map_err(at)?,
            host: HostSpec::parse(&t.host).map_err(at)?,
            state,
            not_before: t.not_before.as_deref().map(crate::manifest::parse_date).transpose().map_err(at)?,
            due_by: t.due_by.as_deref().map(|s| instant("due_by", s)).transpose().map_err(|e| at(e.to_string()))?,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tasks {
        if !seen.insert((&t.cluster, &t.user, &t.host)) {
            return Err(invalid(path, format!("task {} {}@{} appears twice", t.cluster, t.user, t.host)));
        }
    }
    if doc.endpoint.is_empty() || doc.access_key_id.is_empty() {
        return Err(invalid(path, "endpoint and access_key_id must not be empty".into()));
    }
    if let Some(a) = &doc.account {
        let a = crate::manifest::AccountName::parse(a).map_err(|e| invalid(path, format!("account: {e}")))?;
        if a.is_default() {
            return Err(invalid(path, "account: the default account is written by leaving `account` out".into()));
        }
    }
    Ok(PlanFile {
        manifests: doc.manifests.into_iter().map(|m| (m.path, m.sha256)).collect(),
        ticket: doc.ticket,
        requested_by: doc.requested_by,
        reason: doc.reason,
        due_by: doc.due_by.as_deref().map(|s| instant("due_by", s)).transpose()?,
        endpoint: doc.endpoint,
        account: doc.account,
        access_key_id: doc.access_key_id,
        created_at: instant("created_at", &doc.created_at)?,
        tasks,
        discovered: match doc.discovered {
            None => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => return Err(invalid(path, "discovered: not an object".into())),
        },
        content_hash: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::document::tests::sample;
    use super::*;
    use serde_json::json;

    #[test]
    fn a_written_plan_loads_back_equal() {
        let p = sample();
        let back = PlanFile::parse(Path::new("p.json"), p.to_json().as_bytes()).unwrap();
        assert_eq!(back, p);
        assert!(p.content_hash.starts_with("sha256:") && p.content_hash.len() == 7 + 64);
    }

    #[test]
    fn the_hash_covers_tasks_and_target() {
        let p = sample();
        let text = p.to_json();
        for (from, to) in [
            ("\"user\": \"bob\"", "\"user\": \"carol\""),
            ("\"endpoint\": \"https://api.qingcloud.com/iaas/\"", "\"endpoint\": \"https://evil.example/iaas/\""),
            ("\"state\": \"pending\"", "\"state\": \"skipped\""),
        ] {
            let edited = text.replace(from, to);
            assert_ne!(edited, text);
            let err = PlanFile::parse(Path::new("p.json"), edited.as_bytes()).unwrap_err();
            assert!(matches!(err, PlanFileError::Tampered { .. }), "{from}: {err}");
        }
        // Whitespace and member order are not content.
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(PlanFile::parse(Path::new("p.json"), v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn a_recomputed_hash_does_not_smuggle_a_protected_account() {
        let p = sample();
        let mut v = p.doc_value(false);
        v["tasks"][0]["user"] = json!("root");
        let hash = content_hash(&v);
        v["content_hash"] = json!(hash);
        let err = PlanFile::parse(Path::new("p.json"), v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("protected"), "{err}");
    }

    #[test]
    fn target_must_match() {
        let p = sample();
        assert!(p.check_target(Path::new("p"), "https://api.qingcloud.com/iaas/", "QYACCESSKEYIDEXAMPLE").is_ok());
        let e = p.check_target(Path::new("p"), "http://127.0.0.1:1/iaas/", "QYACCESSKEYIDEXAMPLE").unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        let e = p.check_target(Path::new("p"), "https://api.qingcloud.com/iaas/", "OTHER").unwrap_err();
        assert!(e.to_string().contains("access key id"), "{e}");
    }
}
