//! A set of manifests checked against each other: a cluster has one zone and one QingCloud
//! account across all files, and the same (cluster, user, host) listed more than once is
//! merged into one task (earliest `not_before`, earliest `due_by`) with a warning that points
//! at both places.
//!
//! It works on files already read and checked; it reads nothing.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;

use super::error::{ManifestError, ManifestErrors};
use super::file::Loaded;
use super::locate::{self, Pos, Seg, YamlPath};
use super::model::Task;
use crate::domain::{AccountName, ClusterId, TaskKey, Zone};

/// Check the files against each other and merge repeated tasks. Returns the merged tasks and
/// the warnings.
pub(super) fn merge(loaded: &[Loaded]) -> Result<(Vec<Task>, Vec<String>), ManifestErrors> {
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
