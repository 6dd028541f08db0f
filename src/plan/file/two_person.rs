//! The two-person rule and what a run records of its approval: the approval arguments of
//! `run --plan`, a typed `--approved-by` or an SSH signature over the very bytes loaded
//! (`plan::approval`), the check that approver and requester differ, and the approval record
//! merged into the run's options.
//!
//! It decides whether a loaded plan may run; the file's format and its checks are `document`'s
//! and `load`'s.

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde_json::{json, Value};

use crate::plan::approval::{self, Approval};

use super::document::time;
use super::model::{invalid, PlanFile, PlanFileError, MAX_PLAN_BYTES};

impl PlanFile {
    /// What the run records about its plan and approval, to be merged into the run's `options`
    /// JSON (and so into its `run_started` audit record): `{"plan": {"path", "content_hash",
    /// "created_at"}, "approved_by", "approval", "require_approval"}`. `approval` is
    /// `{"signed": true, "principal", "principals", "key_fingerprint", "signature",
    /// "allowed_signers", "namespace"}` for a checked signature, `{"signed": false}` for a
    /// typed `--approved-by`, `null` without an approver. `report` reads these keys back.
    pub fn run_options(&self, path: &Path, approval: &RunApproval) -> Value {
        let record = match (&approval.signed, &approval.approved_by) {
            (Some(a), _) => json!({
                "signed": true,
                "principal": a.principal,
                "principals": a.principals,
                "key_fingerprint": a.key_fingerprint,
                "signature": a.signature.display().to_string(),
                "allowed_signers": approval.allowed_signers.as_ref().map(|p| p.display().to_string()),
                "namespace": approval::NAMESPACE,
            }),
            (None, Some(_)) => json!({"signed": false}),
            (None, None) => Value::Null,
        };
        json!({
            "plan": {
                "path": path.display().to_string(),
                "content_hash": self.content_hash,
                "created_at": time(self.created_at),
            },
            "approved_by": approval.approved_by,
            "approval": record,
            "require_approval": approval.require,
        })
    }

    /// Read a plan file once and check everything a run needs before it trusts it: the content
    /// hash, the shape, the target (see [`PlanFile::load_verified`]), the signature over the
    /// very bytes read (with `--allowed-signers`), and the two-person rule.
    pub fn load_approved(
        path: &Path,
        endpoint: &str,
        access_key_id: &str,
        asked: &ApprovalArgs<'_>,
    ) -> Result<(PlanFile, RunApproval), PlanFileError> {
        let read_err = |source| PlanFileError::Read { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_PLAN_BYTES {
            return Err(invalid(path, format!("{size} bytes is more than the {MAX_PLAN_BYTES} a plan may have")));
        }
        let text = std::fs::read(path).map_err(read_err)?;
        let plan = PlanFile::parse(path, &text)?;
        plan.check_target(path, endpoint, access_key_id)?;
        let approval = match asked.allowed_signers {
            None => {
                check_approval(&plan, asked.approved_by, asked.require)?;
                RunApproval {
                    approved_by: asked.approved_by.map(|a| a.trim().to_owned()),
                    signed: None,
                    allowed_signers: None,
                    require: asked.require,
                }
            }
            Some(signers) => {
                let signed = approval::verify(&text, &approval::signature_path(path), signers, Utc::now())?;
                check_signed_approval(&plan, &signed, asked.approved_by, asked.require)?;
                RunApproval {
                    approved_by: Some(signed.principal.clone()),
                    signed: Some(signed),
                    allowed_signers: Some(signers.to_path_buf()),
                    require: asked.require,
                }
            }
        };
        Ok((plan, approval))
    }
}

/// What `run --plan` was asked to check about approval.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalArgs<'a> {
    pub approved_by: Option<&'a str>,
    pub allowed_signers: Option<&'a Path>,
    pub require: bool,
}

impl<'a> ApprovalArgs<'a> {
    pub fn new(approved_by: Option<&'a str>, allowed_signers: Option<&'a Path>, require: bool) -> Self {
        ApprovalArgs { approved_by, allowed_signers, require }
    }
}

/// The approval a run carries: who (the signer's principal, or the name typed), and the
/// checked signature when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunApproval {
    pub approved_by: Option<String>,
    pub signed: Option<Approval>,
    pub allowed_signers: Option<PathBuf>,
    pub require: bool,
}

/// The two-person rule for a signed plan: with `require`, the plan must name its requester and
/// no principal of the signing key may be that requester. A name typed with `--approved-by`
/// next to a signature must be the signer's.
pub fn check_signed_approval(
    plan: &PlanFile,
    signed: &Approval,
    approved_by: Option<&str>,
    require: bool,
) -> Result<(), PlanFileError> {
    if let Some(name) = approved_by.map(str::trim) {
        if !signed.names(name) {
            return Err(PlanFileError::Approval(format!(
                "--approved-by {name:?} is not the signer: the plan is signed by {:?} (key {})",
                signed.principal, signed.key_fingerprint
            )));
        }
    }
    if !require {
        return Ok(());
    }
    let requester = plan.requested_by.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let Some(requester) = requester else {
        return Err(PlanFileError::Approval(
            "the plan names no requested_by (set it in the manifest), so approval by another person cannot be checked"
                .into(),
        ));
    };
    if signed.names(requester) {
        return Err(PlanFileError::Approval(format!(
            "the plan is signed by the requester {requester:?} (key {}); another person must sign it",
            signed.key_fingerprint
        )));
    }
    Ok(())
}

/// The two-person rule. `approved_by` is recorded whenever given; with `require`, a run is
/// refused unless an approver is named, the plan names who requested it, and the two differ
/// (compared without case and surrounding spaces: `Alice@Example.com` is `alice@example.com`).
/// A refusal is exit 65: the plan, as approved, is not fit to run, and nothing was sent.
pub fn check_approval(plan: &PlanFile, approved_by: Option<&str>, require: bool) -> Result<(), PlanFileError> {
    let approver = approved_by.map(str::trim);
    if approver == Some("") {
        return Err(PlanFileError::Approval("--approved-by is empty; name the person who approved the plan".into()));
    }
    if !require {
        return Ok(());
    }
    let Some(approver) = approver else {
        return Err(PlanFileError::Approval(
            "--require-approval needs --approved-by NAME, someone other than the requester".into(),
        ));
    };
    let requester = plan.requested_by.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let Some(requester) = requester else {
        return Err(PlanFileError::Approval(
            "the plan names no requested_by (set it in the manifest), so approval by another person cannot be checked"
                .into(),
        ));
    };
    if approver.to_lowercase() == requester.to_lowercase() {
        return Err(PlanFileError::Approval(format!(
            "the approver {approver:?} is the requester {requester:?}; another person must approve the plan"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::document::tests::sample;
    use super::*;

    #[test]
    fn two_person_rule() {
        let p = sample();
        assert!(check_approval(&p, None, false).is_ok());
        assert!(check_approval(&p, Some("alice@example.com"), false).is_ok(), "recorded, not enforced");
        assert!(check_approval(&p, Some("carol@example.com"), true).is_ok());
        for same in ["alice@example.com", " Alice@Example.COM "] {
            assert!(check_approval(&p, Some(same), true).unwrap_err().to_string().contains("another person"));
        }
        assert!(check_approval(&p, None, true).is_err());
        assert!(check_approval(&p, Some("  "), false).is_err());
        let anonymous = PlanFile { requested_by: None, ..p };
        assert!(check_approval(&anonymous, Some("carol"), true).unwrap_err().to_string().contains("requested_by"));
    }
}
