//! Signed audit checkpoints: the key file and the HMAC-SHA256 over a checkpoint.
//!
//! A checkpoint `SEQ:HASH` kept outside the database proves that the log up to `SEQ` was not
//! rewritten or cut — as long as the checkpoint itself is genuine. Signed, it reads
//! `SEQ:HASH:HMAC`, where
//!
//! ```text
//! HMAC = lower-case hex of HMAC-SHA256(key, ASCII bytes of "SEQ:HASH")
//! key  = the bytes spelled by the key file's hex digits (surrounding whitespace ignored)
//! ```
//!
//! so anyone holding the key can check one without this tool:
//! `printf %s "SEQ:HASH" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$(cat KEYFILE)`.
//! Someone who can edit the database but not read the key cannot make a checkpoint that
//! matches a rewritten log.
//!
//! The key file holds 32 random bytes as 64 hex digits and a newline, created with mode 0600.
//! The key is never printed, logged or written anywhere else. This module does no I/O beyond
//! the key file.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::chain::Checkpoint;

/// Bytes of a key made by [`AuditKey::create`]; also the least a key file may hold.
pub const KEY_BYTES: usize = 32;

/// An HMAC key read from a key file. `Debug` never shows it.
pub struct AuditKey {
    bytes: Vec<u8>,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey([REDACTED])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("key file {} already exists; it is never overwritten (drop --create-key to use it)", path.display())]
    Exists { path: PathBuf },
    #[error("key file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl AuditKey {
    /// Read a key file: hex digits for at least [`KEY_BYTES`] bytes. Warns when other users
    /// can read it.
    pub fn load(path: &Path) -> Result<AuditKey, KeyError> {
        let io_err = |source| KeyError::Io { path: path.to_path_buf(), source };
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format_args!("{mode:o}"), "the key file is readable by other users; `chmod 600` it");
            }
        }
        let invalid = |reason: String| KeyError::Invalid { path: path.to_path_buf(), reason };
        // The message never quotes the content: it is the key.
        let bytes = hex::decode(text.trim()).map_err(|_| invalid("is not hex digits".into()))?;
        if bytes.len() < KEY_BYTES {
            return Err(invalid(format!("holds {} bytes; a key needs at least {KEY_BYTES}", bytes.len())));
        }
        Ok(AuditKey { bytes })
    }

    /// Create a new key file with mode 0600 from [`KEY_BYTES`] random bytes; refuses to
    /// overwrite an existing file.
    pub fn create(path: &Path) -> Result<AuditKey, KeyError> {
        let mut bytes = vec![0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyError::Exists { path: path.to_path_buf() }
            } else {
                KeyError::Io { path: path.to_path_buf(), source }
            }
        })?;
        let written = file.write_all(format!("{}\n", hex::encode(&bytes)).as_bytes()).and_then(|()| file.sync_all());
        if let Err(source) = written {
            let _ = std::fs::remove_file(path);
            return Err(KeyError::Io { path: path.to_path_buf(), source });
        }
        Ok(AuditKey { bytes })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.bytes).expect("HMAC takes keys of any length")
    }

    /// Sign a checkpoint.
    pub fn sign(&self, checkpoint: &Checkpoint) -> SignedCheckpoint {
        let mut mac = self.mac();
        mac.update(checkpoint.to_string().as_bytes());
        SignedCheckpoint { checkpoint: checkpoint.clone(), hmac: Some(hex::encode(mac.finalize().into_bytes())) }
    }

    /// Does the checkpoint carry this key's signature? (Compared in constant time.)
    pub fn verify(&self, signed: &SignedCheckpoint) -> bool {
        let Some(tag) = signed.hmac.as_deref().and_then(|h| hex::decode(h).ok()) else { return false };
        let mut mac = self.mac();
        mac.update(signed.checkpoint.to_string().as_bytes());
        mac.verify_slice(&tag).is_ok()
    }
}

/// `SEQ:HASH` or `SEQ:HASH:HMAC`, as printed by `audit checkpoint [--key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// 64 lower-case hex digits when signed.
    pub hmac: Option<String>,
}

impl fmt::Display for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hmac {
            Some(h) => write!(f, "{}:{h}", self.checkpoint),
            None => write!(f, "{}", self.checkpoint),
        }
    }
}

impl FromStr for SignedCheckpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not SEQ:HASH or SEQ:HASH:HMAC (as printed by `audit checkpoint`)");
        let parts: Vec<&str> = s.split(':').collect();
        let (cp, hmac) = match parts.as_slice() {
            [seq, hash] => (format!("{seq}:{hash}"), None),
            [seq, hash, hmac] => {
                let hmac = hmac.to_ascii_lowercase();
                if hmac.len() != 64 || !hmac.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                (format!("{seq}:{hash}"), Some(hmac))
            }
            _ => return Err(bad()),
        };
        let checkpoint = cp.parse::<Checkpoint>().map_err(|_| bad())?;
        Ok(SignedCheckpoint { checkpoint, hmac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp() -> Checkpoint {
        format!("12:{}", "ab".repeat(32)).parse().unwrap()
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_checkpoint_text() {
        // RFC 4231 test case 2 shape: any key length works; here a fixed 32-byte key.
        let key = AuditKey { bytes: vec![0x0b; 32] };
        let signed = key.sign(&cp());
        let mut mac = Hmac::<Sha256>::new_from_slice(&[0x0b; 32]).unwrap();
        mac.update(format!("12:{}", "ab".repeat(32)).as_bytes());
        assert_eq!(signed.hmac.as_deref(), Some(hex::encode(mac.finalize().into_bytes()).as_str()));
        assert!(key.verify(&signed));
        let text = signed.to_string();
        assert_eq!(text.parse::<SignedCheckpoint>().unwrap(), signed);
    }

    #[test]
    fn forged_or_foreign_signatures_fail() {
        let key = AuditKey { bytes: vec![1; 32] };
        let other = AuditKey { bytes: vec![2; 32] };
        let signed = key.sign(&cp());
        assert!(!other.verify(&signed));
        let mut moved = signed.clone();
        moved.checkpoint.seq = 11;
        assert!(!key.verify(&moved));
        let unsigned = SignedCheckpoint { checkpoint: cp(), hmac: None };
        assert!(!key.verify(&unsigned));
    }

    #[test]
    fn parsing() {
        let h = "ab".repeat(32);
        assert!(format!("3:{h}").parse::<SignedCheckpoint>().unwrap().hmac.is_none());
        assert!(format!("3:{h}:{h}").parse::<SignedCheckpoint>().unwrap().hmac.is_some());
        for bad in [format!("3:{h}:xyz"), format!("3:{h}:{h}:{h}"), "3".into(), format!("x:{h}")] {
            assert!(bad.parse::<SignedCheckpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let made = AuditKey::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = AuditKey::load(&path).unwrap();
        assert_eq!(made.bytes, loaded.bytes);
        assert!(matches!(AuditKey::create(&path), Err(KeyError::Exists { .. })));
        assert_eq!(format!("{loaded:?}"), "AuditKey([REDACTED])");
        std::fs::write(dir.path().join("short"), "abcd").unwrap();
        let err = AuditKey::load(&dir.path().join("short")).unwrap_err().to_string();
        assert!(err.contains("at least 32") && !err.contains("abcd"), "{err}");
        std::fs::write(dir.path().join("nothex"), "secret words").unwrap();
        let err = AuditKey::load(&dir.path().join("nothex")).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
