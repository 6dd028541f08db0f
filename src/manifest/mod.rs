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
//! Reading one file safely and running it through those steps is `file`'s (with
//! [`ManifestFile`]); the errors are `error`'s.
//!
//! [`load_set`] then checks the files against each other (one zone per cluster) and merges the
//! same (cluster, user, host) listed more than once into one task with a warning. The merged
//! task keeps the earliest `not_before` (an entry without one asks for removal now, which wins)
//! and the earliest `due_by` (the strictest deadline asked for). That is `merge`'s.
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
mod error;
mod file;
mod locate;
mod merge;
pub mod model;
mod raw;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use check::{parse_date, parse_instant, DEFAULT_HOST, VERSION};
pub use error::{ManifestError, ManifestErrors};
pub use file::{ManifestFile, Summary, MAX_MANIFEST_BYTES, STDIN};
pub use raw::{json_schema, MAX_ENTRIES, MAX_FLOW_DEPTH};

pub use crate::domain::{Account, AccountName, ClusterId, HostSpec, TaskKey, UserName, Zone};
pub use model::{Selector, SelectorUser, Task};

use file::read_checked;
use merge::merge;

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
