//! One manifest file, read safely and checked: bounded in size, a regular file (or standard
//! input, once), UTF-8 without a byte order mark or hidden line breaks, flow collections not
//! nested too deep, no YAML tags; then deserialized (`raw`), checked (`check`) and, when
//! something is wrong, every error placed at its line and column (`locate`).
//!
//! It reads the one file it is given; checking files against each other is `merge`'s.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::check::{self, Origin};
use super::error::ManifestError;
use super::locate::{self, Pos, Seg};
use super::model::{Selector, Task};
use super::raw;
use crate::domain::{AccountName, Zone};

/// Files larger than this are refused unread: 16 MiB holds several hundred thousand accounts.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// One manifest file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, lower-case hex: which version of the file a run used.
    pub sha256: String,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub due_by: Option<DateTime<Utc>>,
    /// The file's tasks as written, in file order (clusters form first), before merging.
    pub tasks: Vec<Task>,
    /// The file's `discover:` selectors, each `source` naming the file.
    pub selectors: Vec<Selector>,
}

/// Counts for a one-line summary of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Distinct (cluster, user, host).
    pub tasks: usize,
    pub clusters: usize,
    pub zones: usize,
    /// Distinct (user, host).
    pub accounts: usize,
}

impl ManifestFile {
    pub fn summary(&self) -> Summary {
        use std::collections::HashSet;
        let tasks: HashSet<_> = self.tasks.iter().map(|t| (&t.cluster, &t.user, &t.host)).collect();
        let clusters: HashSet<_> = self.tasks.iter().map(|t| &t.cluster).collect();
        let zones: HashSet<_> = self.tasks.iter().map(|t| &t.zone).collect();
        let accounts: HashSet<_> = self.tasks.iter().map(|t| (&t.user, &t.host)).collect();
        Summary { tasks: tasks.len(), clusters: clusters.len(), zones: zones.len(), accounts: accounts.len() }
    }
}

/// A file read and checked, with what is needed to point at its lines later.
pub(super) struct Loaded {
    pub(super) file: ManifestFile,
    pub(super) text: String,
    pub(super) origins: Vec<Origin>,
}

pub(super) fn read_checked(
    path: &Path,
    default_zone: Option<&Zone>,
    account_zones: &HashMap<AccountName, Zone>,
) -> Result<Loaded, Vec<ManifestError>> {
    let whole = |reason: String| vec![ManifestError::at(path, Pos::START, reason)];
    let bytes = read_bounded(path).map_err(whole)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
            let column = 1 + good.iter().rev().take_while(|&&b| b != b'\n').count();
            return Err(vec![ManifestError {
                file: path.to_owned(),
                line,
                column,
                reason: "the file is not UTF-8 text".to_owned(),
            }]);
        }
    };
    // A byte order mark is not part of the document (YAML allows one at the start); left in,
    // serde_yaml reads it as the start of a second document.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    if let Some((pos, c)) = hidden_line_break(&text) {
        return Err(vec![ManifestError::at(
            path,
            pos,
            format!(
                "the file contains U+{:04X} ({}), which YAML reads as a line break although most editors and \
                 terminals do not show one; remove it or write a plain line break",
                c as u32,
                match c {
                    '\u{85}' => "NEXT LINE",
                    '\u{2028}' => "LINE SEPARATOR",
                    _ => "PARAGRAPH SEPARATOR",
                }
            ),
        )]);
    }
    if let Err((line, column)) = raw::check_flow_depth(&text) {
        return Err(vec![ManifestError::at(
            path,
            Pos { line, column },
            format!(
                "flow collections ([…], {{…}}) are nested more than {} deep; a manifest needs 3",
                raw::MAX_FLOW_DEPTH
            ),
        )]);
    }
    if let Some(pos) = locate::first_tag(&text) {
        return Err(vec![ManifestError::at(
            path,
            pos,
            "YAML tags (`!name`, `!!type`) are not allowed: a manifest holds plain text values only; \
             remove the tag",
        )]);
    }
    let raw = raw::from_yaml(&text).map_err(|e| vec![yaml_error(path, &text, &e)])?;
    let (checked, problems) = check::check(raw, default_zone, account_zones);
    if !problems.is_empty() {
        let paths: Vec<&[Seg]> = problems.iter().map(|(p, _)| p.as_slice()).collect();
        let positions = locate::locate(&text, &paths);
        return Err(problems
            .into_iter()
            .zip(positions)
            .map(|((_, why), pos)| ManifestError::at(path, pos, why))
            .collect());
    }
    let file = ManifestFile {
        path: path.to_owned(),
        sha256,
        ticket: checked.ticket,
        requested_by: checked.requested_by,
        reason: checked.reason,
        due_by: checked.due_by,
        tasks: checked.tasks,
        selectors: checked
            .selectors
            .into_iter()
            .map(|mut s| {
                s.source = format!("{}: {}", path.display(), s.source);
                s
            })
            .collect(),
    };
    Ok(Loaded { file, text, origins: checked.origins })
}

/// The manifest name that means standard input (`validate -`, `plan -`, `run -`).
pub const STDIN: &str = "-";

/// Standard input as a manifest, bounded like a file. A terminal is refused instead of waited
/// on; a second `-` in the same command finds standard input already read and is refused too.
fn read_stdin() -> Result<Vec<u8>, String> {
    use std::io::IsTerminal as _;
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(
            "standard input is a terminal: pipe a manifest in (`cat m.yaml | qc-offboard run -`) or give a file"
                .to_owned(),
        );
    }
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err("standard input can be given as a manifest only once".to_owned());
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "standard input is larger than {} MiB; split it into several manifests",
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// Read a file, refusing one larger than [`MAX_MANIFEST_BYTES`] without reading it all, and
/// anything that is not a regular file: a FIFO or a terminal would block the command forever,
/// a device would never end. The file is opened without blocking (opening a FIFO for reading
/// waits for a writer otherwise) and checked on the open descriptor, so it cannot be swapped
/// between the check and the read.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if path == Path::new(STDIN) {
        return read_stdin();
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| format!("cannot read the manifest: {e}"))?;
    let kind = f.metadata().map_err(|e| format!("cannot read the manifest: {e}"))?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(format!("the manifest is {what}; give a regular file (write a pipe's output to a file first)"));
    }
    let mut bytes = Vec::new();
    f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read the manifest: {e}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the file is larger than {} MiB; split it into several manifests",
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// The first character that YAML 1.1 parsers (libyaml, behind serde_yaml) treat as a line break
/// but that people do not see as one, with its position counted in `\n` lines: one visible line
/// would become two entries. U+2028 and U+2029 are refused in YAML 1.2 terms too, for safety.
fn hidden_line_break(text: &str) -> Option<(Pos, char)> {
    let (offset, c) = text.char_indices().find(|(_, c)| matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}'))?;
    let before = &text[..offset];
    let line = 1 + before.matches('\n').count();
    let column = 1 + before.rsplit('\n').next().map_or(0, |l| l.chars().count());
    Some((Pos { line, column }, c))
}

/// A serde_yaml error as a manifest error: its position, its message without the position
/// that serde_yaml appends, and plainer words for the limits.
fn yaml_error(path: &Path, text: &str, e: &serde_yaml::Error) -> ManifestError {
    let full = e.to_string();
    let message = match e.location() {
        Some(l) => {
            full.strip_suffix(&format!(" at line {} column {}", l.line(), l.column())).unwrap_or(&full).to_owned()
        }
        None => full.clone(),
    };
    let (pos, reason) = if message.ends_with("recursion limit exceeded") {
        (None, "the document is nested too deeply (more than 128 levels); a manifest needs 5".to_owned())
    } else if message.ends_with(raw::TOO_MANY_ENTRIES) {
        (
            locate::first_alias(text),
            format!(
                "{}; aliases repeat lists too often (an alias bomb?); write the entries out or split the manifest",
                raw::TOO_MANY_ENTRIES
            ),
        )
    } else if message.ends_with("repetition limit exceeded") {
        (
            locate::first_alias(text),
            "aliases expand to far more data than the file holds (an alias bomb?); write the entries out".to_owned(),
        )
    } else {
        (None, message)
    };
    let pos = pos.or_else(|| e.location().map(|l| Pos { line: l.line(), column: l.column() })).unwrap_or(Pos::START);
    ManifestError::at(path, pos, reason)
}
