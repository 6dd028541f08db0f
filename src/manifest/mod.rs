//! Manifests (SPEC §3): YAML files listing the accounts to remove. This module owns loading,
//! validation and expansion into [`Task`]s. It is pure: it reads the files it is given and
//! nothing else (no database, no network, no environment, no clock).
//!
//! Loading goes in three steps, each in its own submodule:
//! 1. [`raw`]: serde_yaml deserializes the text into structs that mirror the YAML and refuse
//!    unknown fields. This is the only place serde_yaml is used. Its own errors (syntax, wrong
//!    types, unknown or duplicate fields, nesting and alias limits) come with a position and
//!    stop that file.
//! 2. [`check`]: one pass turns the raw structs into checked [`Task`]s and collects *every*
//!    rule violation of the file with the YAML path of the node at fault.
//! 3. [`locate`]: only when a file has errors (or a warning to place), its text is read again
//!    with an event parser that keeps marks, to turn those paths into `LINE:COLUMN`.
//!
//! [`load_set`] then checks the files against each other (one zone per cluster) and merges the
//! same (cluster, user, host) listed more than once into one task with a warning. The merged
//! task keeps the earliest `not_before` (an entry without one asks for removal now, which wins)
//! and the earliest `due_by` (the strictest deadline asked for).
//!
//! Limits, each reported as an error of the file, quickly:
//! - a file larger than [`MAX_MANIFEST_BYTES`] is refused before it is read in full;
//! - flow collections nested deeper than [`MAX_FLOW_DEPTH`] are refused by a linear scan
//!   before parsing, because libyaml's time grows with depth × tokens;
//! - a document that expands (through aliases) to more than [`MAX_ENTRIES`] accounts and
//!   cluster references is refused while it is deserialized;
//! - serde_yaml itself refuses nesting deeper than 128 levels and alias expansions of more than
//!   100 times the document's own events ("billion laughs"). The manifest's schema has no
//!   free-form nested values, so a nested alias bomb is refused as a type error at its first
//!   element anyway.

mod check;
mod locate;
pub mod model;
mod raw;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use check::Origin;
use locate::{Pos, Seg, YamlPath};

pub use check::{parse_date, parse_instant, DEFAULT_HOST, VERSION};
pub use raw::{json_schema, MAX_ENTRIES, MAX_FLOW_DEPTH};

pub use model::{Account, AccountName, ClusterId, HostSpec, Selector, SelectorUser, Task, TaskKey, UserName, Zone};

/// One reason a manifest is refused, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.reason)
    }
}

/// Every error found in a set of manifests (all of them, not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} manifest error{}; nothing was sent", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

impl ManifestError {
    fn at(file: &Path, pos: Pos, reason: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line: pos.line, column: pos.column, reason: reason.into() }
    }
}

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

/// A set of manifests loaded together: every file, and their tasks merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSet {
    pub files: Vec<ManifestFile>,
    /// One task per (cluster, user, host), in the order first met.
    pub tasks: Vec<Task>,
    /// Things worth knowing that are not errors (merged duplicates), as `FILE:LINE:COLUMN: …`.
    pub warnings: Vec<String>,
    /// Every file's `discover:` selectors, in file order: expanded through the API by `plan`
    /// and `run` ([`crate::discover`]) into further tasks.
    pub selectors: Vec<Selector>,
}

/// A file read and checked, with what is needed to point at its lines later.
struct Loaded {
    file: ManifestFile,
    text: String,
    origins: Vec<Origin>,
}

/// Load and check one manifest file on its own. Clusters must get their zone from the file
/// (their own `zone` or `defaults.zone`); see [`load_set`] for a fallback zone and merging.
pub fn load(path: &Path) -> Result<ManifestFile, ManifestErrors> {
    read_checked(path, None, &HashMap::new()).map(|l| l.file).map_err(ManifestErrors)
}

/// Load and check a set of manifests as one: every error of every file is reported, and
/// nothing is returned unless all are valid. `default_zone` is the zone of clusters for which
/// neither the cluster entry nor the file's `defaults.zone` gives one.
pub fn load_set(paths: &[PathBuf], default_zone: Option<&Zone>) -> Result<ManifestSet, ManifestErrors> {
    load_set_zoned(paths, default_zone, &HashMap::new())
}

/// [`load_set`] where a cluster of a named QingCloud account that gives no zone (neither
/// itself nor `defaults.zone`) takes its account's zone from `account_zones` before
/// `default_zone`.
pub fn load_set_zoned(
    paths: &[PathBuf],
    default_zone: Option<&Zone>,
    account_zones: &HashMap<AccountName, Zone>,
) -> Result<ManifestSet, ManifestErrors> {
    let mut errors = Vec::new();
    let mut loaded = Vec::with_capacity(paths.len());
    for path in paths {
        match read_checked(path, default_zone, account_zones) {
            Ok(l) => loaded.push(l),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ManifestErrors(errors));
    }
    let merged = merge(&loaded)?;
    let selectors = loaded.iter().flat_map(|l| l.file.selectors.iter().cloned()).collect();
    Ok(ManifestSet {
        files: loaded.into_iter().map(|l| l.file).collect(),
        tasks: merged.0,
        warnings: merged.1,
        selectors,
    })
}

fn read_checked(
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

/// Check the files against each other and merge repeated tasks. Returns the merged tasks and
/// the warnings.
fn merge(loaded: &[Loaded]) -> Result<(Vec<Task>, Vec<String>), ManifestErrors> {
    let total: usize = loaded.iter().map(|l| l.file.tasks.len()).sum();
    let mut tasks: Vec<Task> = Vec::with_capacity(total);
    // Where each merged task was first written: (file index, task index in that file).
    let mut first: Vec<(usize, usize)> = Vec::with_capacity(total);
    let mut index: HashMap<TaskKey, usize> = HashMap::with_capacity(total);
    let mut zones: HashMap<&ClusterId, (&Zone, &Option<AccountName>, usize, usize)> = HashMap::new();
    // (later occurrence, earlier occurrence), each as (file, task); located only if any.
    let mut conflicts = Vec::new();
    let mut repeats = Vec::new();
    for (fi, l) in loaded.iter().enumerate() {
        for (ti, task) in l.file.tasks.iter().enumerate() {
            match zones.entry(&task.cluster) {
                Entry::Occupied(o) => {
                    let (zone, account, f0, t0) = *o.get();
                    if zone != &task.zone || account != &task.account {
                        conflicts.push(((fi, ti), (f0, t0)));
                        continue;
                    }
                }
                Entry::Vacant(v) => {
                    v.insert((&task.zone, &task.account, fi, ti));
                }
            }
            match index.entry(task.key()) {
                Entry::Vacant(v) => {
                    v.insert(tasks.len());
                    tasks.push(task.clone());
                    first.push((fi, ti));
                }
                Entry::Occupied(o) => {
                    let kept = &mut tasks[*o.get()];
                    let dates_differ = kept.not_before != task.not_before || kept.due_by != task.due_by;
                    kept.not_before = earliest(kept.not_before, task.not_before);
                    kept.due_by = match (kept.due_by, task.due_by) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    repeats.push(((fi, ti), first[*o.get()], dates_differ));
                }
            }
        }
    }
    if conflicts.is_empty() && repeats.is_empty() {
        return Ok((tasks, Vec::new()));
    }
    let wanted: Vec<(usize, usize)> =
        conflicts.iter().copied().chain(repeats.iter().map(|&(a, b, _)| (a, b))).flat_map(|(a, b)| [a, b]).collect();
    let where_ = locate_tasks(loaded, &wanted);
    // Every wanted task was located; a miss would only lose the position, never the error.
    let at = |k: (usize, usize)| where_.get(&k).cloned().unwrap_or_else(|| (loaded[k.0].file.path.clone(), Pos::START));
    if !conflicts.is_empty() {
        return Err(ManifestErrors(
            conflicts
                .iter()
                .map(|&(later, earlier)| {
                    let t = &loaded[later.0].file.tasks[later.1];
                    let t0 = &loaded[earlier.0].file.tasks[earlier.1];
                    let (file, pos) = at(later);
                    let (f0, p0) = at(earlier);
                    let reason = if t.zone != t0.zone {
                        format!(
                            "cluster {} is in zone {} here but in zone {} at {}:{}:{}; a cluster has one zone",
                            t.cluster,
                            t.zone,
                            t0.zone,
                            f0.display(),
                            p0.line,
                            p0.column
                        )
                    } else {
                        format!(
                            "cluster {} is under account {} here but under account {} at {}:{}:{}; a cluster \
                             belongs to one QingCloud account",
                            t.cluster,
                            t.account_name(),
                            t0.account_name(),
                            f0.display(),
                            p0.line,
                            p0.column
                        )
                    };
                    ManifestError::at(&file, pos, reason)
                })
                .collect(),
        ));
    }
    let warnings = repeats
        .iter()
        .map(|&(later, earlier, dates_differ)| {
            let t = &loaded[later.0].file.tasks[later.1];
            let (file, pos) = at(later);
            let (f0, p0) = at(earlier);
            let dates = if dates_differ { " (keeping the earliest not_before and due_by)" } else { "" };
            format!(
                "{}:{}:{}: {}@{} on {} is also listed at {}:{}:{}; merged into one task{dates}",
                file.display(),
                pos.line,
                pos.column,
                t.user,
                t.host,
                t.cluster,
                f0.display(),
                p0.line,
                p0.column
            )
        })
        .collect();
    Ok((tasks, warnings))
}

/// `None` means "now", the earliest of all.
fn earliest(a: Option<chrono::NaiveDate>, b: Option<chrono::NaiveDate>) -> Option<chrono::NaiveDate> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => None,
    }
}

/// Positions of tasks given as (file, task) indexes, one locator pass per file involved.
fn locate_tasks(loaded: &[Loaded], wanted: &[(usize, usize)]) -> HashMap<(usize, usize), (PathBuf, Pos)> {
    let mut by_file: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(f, t) in wanted {
        by_file.entry(f).or_default().push(t);
    }
    let mut out = HashMap::new();
    for (f, ts) in by_file {
        let l = &loaded[f];
        let paths: Vec<YamlPath> = ts.iter().map(|&t| l.origins[t].path()).collect();
        let refs: Vec<&[Seg]> = paths.iter().map(Vec::as_slice).collect();
        for (t, pos) in ts.iter().zip(locate::locate(&l.text, &refs)) {
            out.insert((f, *t), (l.file.path.clone(), pos));
        }
    }
    out
}
