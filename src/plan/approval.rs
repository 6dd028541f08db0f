//! Signed approvals: an approver signs the plan file with their SSH key, in the form git uses
//! for signed commits, and `run --plan … --allowed-signers FILE` checks the signature before
//! anything is sent.
//!
//! - The signature is an OpenSSH `SSHSIG` (`ssh-keygen -Y sign -f KEY -n qc-offboard-plan
//!   PLAN` writes `PLAN.sig`; `qc-offboard plan sign` writes the same format) over the plan
//!   file's exact bytes, in the namespace [`NAMESPACE`]. A signature made for another namespace
//!   (a git commit, a file signed for something else) is refused.
//! - The signer must be listed in an OpenSSH `allowed_signers` file (ssh-keygen(1), "ALLOWED
//!   SIGNERS"): `principals [options] keytype base64-key [comment]`, with the `namespaces="…"`,
//!   `valid-after` and `valid-before` options honoured. `cert-authority` lines name CAs of
//!   certificates, which a plan signature never carries; they never match.
//! - The principal is the signer's name: the first principal of the line that lists the key.
//!
//! Anyone can check a plan without this tool:
//! `ssh-keygen -Y verify -f allowed_signers -I PRINCIPAL -n qc-offboard-plan -s PLAN.sig < PLAN`.
//!
//! This module reads the three files it is given and nothing else; it never sees a private key
//! except in [`sign_file`], which reads it, signs and forgets it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The namespace every plan signature is made in.
pub const NAMESPACE: &str = "qc-offboard-plan";

/// Why a signature cannot be trusted (exit 65: nothing was sent), or cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(
        "no signature {}: the approver signs the plan with `ssh-keygen -Y sign -f KEY -n {NAMESPACE} PLAN` \
         (or `qc-offboard plan sign PLAN --key KEY`)",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: signed for namespace {found:?}, not {NAMESPACE:?}; sign the plan with -n {NAMESPACE}", path.display())]
    Namespace { path: PathBuf, found: String },
    #[error("{}: signed with key {fingerprint}, which {} does not allow for {NAMESPACE}", path.display(), signers.display())]
    UnknownKey { path: PathBuf, fingerprint: String, signers: PathBuf },
    #[error("{}: the signature does not match the plan file (edited after it was signed?): {reason}", path.display())]
    BadSignature { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
}

/// A valid signature over a plan, and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The signer's name: the first principal of the `allowed_signers` line listing the key.
    pub principal: String,
    /// Every principal (pattern) of that line.
    pub principals: Vec<String>,
    /// `SHA256:…` of the signing key.
    pub key_fingerprint: String,
    pub signature: PathBuf,
}

/// One line of an `allowed_signers` file.
#[derive(Debug, Clone)]
struct Signer {
    principals: Vec<String>,
    namespaces: Option<Vec<String>>,
    valid_after: Option<DateTime<Utc>>,
    valid_before: Option<DateTime<Utc>>,
    cert_authority: bool,
    key: PublicKey,
}

impl Signer {
    fn allows(&self, key: &ssh_key::public::KeyData, now: DateTime<Utc>) -> bool {
        !self.cert_authority
            && self.key.key_data() == key
            && self.namespaces.as_ref().is_none_or(|ns| ns.iter().any(|n| pattern_matches(n, NAMESPACE)))
            && self.valid_after.is_none_or(|t| now >= t)
            && self.valid_before.is_none_or(|t| now <= t)
    }
}

/// The signature file of a plan: `PLAN.sig`, as `ssh-keygen -Y sign` writes it.
pub fn signature_path(plan: &Path) -> PathBuf {
    let mut name = plan.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Check `signature` over `message` (the plan file's bytes) against `allowed_signers` at `now`.
pub fn verify(
    message: &[u8],
    signature: &Path,
    allowed_signers: &Path,
    now: DateTime<Utc>,
) -> Result<Approval, ApprovalError> {
    let text = match std::fs::read(signature) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApprovalError::Missing(signature.into())),
        Err(source) => return Err(ApprovalError::Read { path: signature.into(), source }),
    };
    let sig = SshSig::from_pem(&text).map_err(|e| ApprovalError::Invalid {
        path: signature.into(),
        reason: format!("not an SSH signature (-----BEGIN SSH SIGNATURE-----): {e}"),
    })?;
    if sig.namespace() != NAMESPACE {
        return Err(ApprovalError::Namespace { path: signature.into(), found: sig.namespace().to_owned() });
    }
    let signers = read_allowed_signers(allowed_signers)?;
    let fingerprint = PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256).to_string();
    let Some(signer) = signers.iter().find(|s| s.allows(sig.public_key(), now)) else {
        return Err(ApprovalError::UnknownKey { path: signature.into(), fingerprint, signers: allowed_signers.into() });
    };
    signer
        .key
        .verify(NAMESPACE, message, &sig)
        .map_err(|e| ApprovalError::BadSignature { path: signature.into(), reason: e.to_string() })?;
    Ok(Approval {
        principal: signer.principals.first().cloned().unwrap_or_default(),
        principals: signer.principals.clone(),
        key_fingerprint: fingerprint,
        signature: signature.into(),
    })
}

impl Approval {
    /// Could this signer be `person`? True when any principal of the signer's line matches
    /// (without case): a key listed for the requester cannot approve the requester's plan.
    pub fn names(&self, person: &str) -> bool {
        let person = person.trim().to_lowercase();
        self.principals.iter().any(|p| pattern_matches(&p.to_lowercase(), &person))
    }
}

/// Sign `plan` with the unencrypted OpenSSH private key `key`, writing `PLAN.sig` in the format
/// of `ssh-keygen -Y sign`. Returns the signature file and the key's fingerprint.
pub fn sign_file(plan: &Path, key: &Path) -> Result<(PathBuf, String), ApprovalError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| ApprovalError::Read { path: path.into(), source });
    let message = read(plan)?;
    let invalid = |reason: String| ApprovalError::Invalid { path: key.into(), reason };
    let private =
        PrivateKey::from_openssh(read(key)?).map_err(|e| invalid(format!("not an OpenSSH private key: {e}")))?;
    if private.is_encrypted() {
        return Err(invalid(format!(
            "the key is protected by a passphrase; sign with `ssh-keygen -Y sign -f {} -n {NAMESPACE} {}`",
            key.display(),
            plan.display()
        )));
    }
    let sig = private
        .sign(NAMESPACE, HashAlg::Sha512, &message)
        .map_err(|e| invalid(format!("cannot sign with this key: {e}")))?;
    let pem = sig.to_pem(LineEnding::LF).map_err(|e| invalid(e.to_string()))?;
    let out = signature_path(plan);
    std::fs::write(&out, pem).map_err(|source| ApprovalError::Read { path: out.clone(), source })?;
    Ok((out, private.public_key().fingerprint(HashAlg::Sha256).to_string()))
}

fn read_allowed_signers(path: &Path) -> Result<Vec<Signer>, ApprovalError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApprovalError::Read { path: path.into(), source })?;
    parse_allowed_signers(&text).map_err(|(line, reason)| ApprovalError::Invalid {
        path: path.into(),
        reason: format!("line {line}: {reason}"),
    })
}

/// Parse an `allowed_signers` file; an error names the line (1-based).
fn parse_allowed_signers(text: &str) -> Result<Vec<Signer>, (usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|e| (n + 1, e))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Signer, String> {
    let (principals, rest) = token(line);
    let principals: Vec<String> =
        principals.trim_matches('"').split(',').map(str::to_owned).filter(|p| !p.is_empty()).collect();
    if principals.is_empty() {
        return Err("no principals".into());
    }
    let (key, options) = match PublicKey::from_openssh(rest) {
        Ok(key) => (key, ""),
        Err(_) => {
            let (options, key) = token(rest);
            (PublicKey::from_openssh(key).map_err(|e| format!("no readable public key: {e}"))?, options)
        }
    };
    let mut signer =
        Signer { principals, namespaces: None, valid_after: None, valid_before: None, cert_authority: false, key };
    for option in split_options(options) {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.trim_matches('"').to_string())),
            None => (option.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("cert-authority", None) => signer.cert_authority = true,
            ("namespaces", Some(v)) => signer.namespaces = Some(v.split(',').map(str::to_owned).collect()),
            ("valid-after", Some(v)) => signer.valid_after = Some(parse_time(&v)?),
            ("valid-before", Some(v)) => signer.valid_before = Some(parse_time(&v)?),
            (other, _) => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(signer)
}

/// The first whitespace-separated token (quotes keep spaces), and the rest.
fn token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], s[i..].trim_start()),
            _ => {}
        }
    }
    (s, "")
}

/// Comma-separated options; commas inside quotes belong to the value.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `YYYYMMDD[HHMM[SS]]`, optionally ending in `Z`; read as UTC.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let digits = s.trim_end_matches(['Z', 'z']);
    let bad = || format!("time {s:?} is not YYYYMMDD[HHMM[SS]][Z]");
    let t = match digits.len() {
        8 => NaiveDate::parse_from_str(digits, "%Y%m%d").map_err(|_| bad())?.and_hms_opt(0, 0, 0).ok_or_else(bad)?,
        12 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M").map_err(|_| bad())?,
        14 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S").map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    Ok(t.and_utc())
}

/// OpenSSH patterns: `*` any run of characters, `?` one character; a leading `!` negates
/// (a negated pattern never names anyone here).
fn pattern_matches(pattern: &str, text: &str) -> bool {
    if pattern.starts_with('!') {
        return false;
    }
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN7wRAz7wwOm582s2/Mp6TKz57e5z6Uyo/+dONVujSOd bob@laptop";

    #[test]
    fn allowed_signers_lines_parse_with_and_without_options() {
        let text = format!(
            "# team\nbob@example.com {KEY}\n\ncarol@example.com,c@example.com namespaces=\"git,{NAMESPACE}\",valid-after=20260101 {KEY}\n\
             *@example.com cert-authority {KEY}\n"
        );
        let signers = parse_allowed_signers(&text).unwrap();
        assert_eq!(signers.len(), 3);
        assert_eq!(signers[0].principals, ["bob@example.com"]);
        assert_eq!(signers[1].principals, ["carol@example.com", "c@example.com"]);
        assert_eq!(signers[1].namespaces.as_deref(), Some(&["git".to_string(), NAMESPACE.to_string()][..]));
        assert!(signers[2].cert_authority);
        let key = signers[0].key.key_data().clone();
        let now = parse_time("20260601").unwrap();
        assert!(signers[0].allows(&key, now) && signers[1].allows(&key, now));
        assert!(!signers[1].allows(&key, parse_time("20251231").unwrap()), "not yet valid");
        assert!(!signers[2].allows(&key, now), "a CA line never matches a plain key");
        let git_only = parse_allowed_signers(&format!("dan namespaces=\"git\" {KEY}")).unwrap();
        assert!(!git_only[0].allows(&key, now), "a key allowed only for git cannot approve plans");
        assert_eq!(parse_allowed_signers(&format!("x bogus=1 {KEY}")).unwrap_err().0, 1);
        assert!(parse_allowed_signers("x ssh-ed25519 notbase64").is_err());
    }

    #[test]
    fn patterns_match_like_openssh() {
        assert!(pattern_matches("*@example.com", "alice@example.com"));
        assert!(pattern_matches("al?ce", "alice"));
        assert!(!pattern_matches("bob", "alice"));
        assert!(!pattern_matches("!alice", "alice"));
        let a = Approval {
            principal: "Alice@Example.com".into(),
            principals: vec!["Alice@Example.com".into()],
            key_fingerprint: String::new(),
            signature: PathBuf::new(),
        };
        assert!(a.names(" alice@example.com ") && !a.names("bob@example.com"));
    }

    #[test]
    fn signature_files_sit_beside_the_plan() {
        assert_eq!(signature_path(Path::new("/x/bob.plan.json")), PathBuf::from("/x/bob.plan.json.sig"));
    }
}
