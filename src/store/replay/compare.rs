//! Holding the replayed rows against the tables: every row of `runs`, `run_manifests`,
//! `tasks` and `api_calls`, as a backend reads it (a page at a time, as JSON), is compared
//! column by column with what the chain proves (clock times against their windows); a row the
//! chain does not know, or a row it records that is gone, is a discrepancy too.
//!
//! It records discrepancies; it runs no SQL (each backend reads its own tables and feeds
//! [`Tables`]) and never reads the chain.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::model::{ChainRow, Discrepancy, Replay};

/// A JSON column stored as text, compared as the JSON it holds.
fn parsed(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "empty".into(),
        other => other.to_string(),
    }
}

/// Compare one row with its replay; push a discrepancy per differing column.
fn compare_row(
    out: &mut Vec<Discrepancy>,
    table: &'static str,
    id: i64,
    ids: (Option<i64>, Option<i64>),
    stored: &Map<String, Value>,
    chain: &ChainRow,
    json_columns: &[&str],
) {
    let mut push = |field: &str, what: String| {
        out.push(Discrepancy { table, row: id, field: Some(field.to_string()), run_id: ids.0, task_id: ids.1, what })
    };
    for (column, proven) in &chain.columns {
        let Some(value) = stored.get(*column) else { continue };
        let (value, want) = if json_columns.contains(column) {
            (parsed(value), parsed(&proven.value))
        } else if *column == "simulated" {
            (Value::Bool(value.as_i64() == Some(1)), proven.value.clone())
        } else {
            (value.clone(), proven.value.clone())
        };
        if value != want {
            push(
                column,
                format!(
                    "the database says {}, the audit chain says {} (record {})",
                    show(&value),
                    show(&want),
                    proven.seq
                ),
            );
        }
    }
    for (column, window) in &chain.windows {
        match stored.get(*column) {
            Some(Value::String(t)) if window.holds(t) => {}
            Some(v) => push(
                column,
                format!(
                    "the database says {}, but record {} puts it between {} and {}",
                    show(v),
                    window.seq,
                    window.lower.as_deref().unwrap_or("the start of the log"),
                    window.upper
                ),
            ),
            None => {}
        }
    }
    if table == "runs" && !chain.windows.contains_key("finished_at") {
        if let Some(v) = stored.get("finished_at").filter(|v| !v.is_null()) {
            push("finished_at", format!("the database says {}, the audit chain has no run_finished record", show(v)));
        }
    }
}

/// The tables held against a replay, fed by a backend in this order: [`Tables::runs`],
/// [`Tables::manifests`], every task ([`Tables::task`], then [`Tables::tasks_done`]), every API
/// call ([`Tables::call`]), then [`Tables::finish`]. A row is a JSON object of its columns as the
/// SQLite store writes them: times in its one text form, flags 0 or 1, JSON columns as text.
pub(crate) struct Tables<'r> {
    r: &'r mut Replay,
    first_call: Option<i64>,
    out: Vec<Discrepancy>,
    stored_tasks: HashSet<i64>,
    stored_calls: HashSet<i64>,
    unchained: i64,
}

impl<'r> Tables<'r> {
    pub(crate) fn new(r: &'r mut Replay, first_call: Option<i64>) -> Self {
        Tables {
            r,
            first_call,
            out: Vec::new(),
            stored_tasks: HashSet::new(),
            stored_calls: HashSet::new(),
            unchained: 0,
        }
    }

    /// Every row of `runs`, by id.
    pub(crate) fn runs(&mut self, runs: &BTreeMap<i64, Map<String, Value>>) {
        let (r, out) = (&*self.r, &mut self.out);
        for (id, stored) in runs {
            match r.runs.get(id).filter(|c| c.started_record_at.is_some()) {
                Some(chain) => {
                    compare_row(out, "runs", *id, (Some(*id), None), stored, &chain.row, &["options", "summary"])
                }
                None => out.push(missing_record("runs", *id, Some(*id), None, "run_started")),
            }
        }
        for (id, chain) in &r.runs {
            if chain.started_record_at.is_some() && !runs.contains_key(id) {
                out.push(deleted("runs", *id, Some(*id), None, &chain.row));
            }
        }
    }

    /// Every row of `run_manifests` as (run, path, sha256), in run and `ord` order.
    pub(crate) fn manifests(&mut self, rows: impl IntoIterator<Item = (i64, String, String)>) {
        let (r, out) = (&*self.r, &mut self.out);
        let mut stored_manifests: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
        for (run_id, path, sha256) in rows {
            stored_manifests.entry(run_id).or_default().push((path, sha256));
        }
        for (id, chain) in r.runs.iter().filter(|(_, c)| c.started_record_at.is_some()) {
            let stored = stored_manifests.remove(id).unwrap_or_default();
            if stored != chain.manifests {
                let list =
                    |m: &[(String, String)]| m.iter().map(|(p, h)| format!("{p} ({h})")).collect::<Vec<_>>().join(", ");
                out.push(Discrepancy {
                    table: "run_manifests",
                    row: *id,
                    field: Some("path, sha256".into()),
                    run_id: Some(*id),
                    task_id: None,
                    what: format!(
                        "the database lists [{}], the audit chain lists [{}] (record {})",
                        list(&stored),
                        list(&chain.manifests),
                        chain.row.first_seq
                    ),
                });
            }
        }
        for id in stored_manifests.keys() {
            out.push(missing_record("run_manifests", *id, Some(*id), None, "run_started"));
        }
    }

    /// One row of `tasks`.
    pub(crate) fn task(&mut self, id: i64, stored: &Map<String, Value>) {
        let (r, out) = (&*self.r, &mut self.out);
        self.stored_tasks.insert(id);
        let run_id = stored.get("run_id").and_then(Value::as_i64);
        match r.tasks.get(&id).filter(|t| t.row.columns.contains_key("cluster")) {
            Some(chain) => {
                if chain.run_id != run_id {
                    out.push(Discrepancy {
                        table: "tasks",
                        row: id,
                        field: Some("run_id".into()),
                        run_id: chain.run_id,
                        task_id: Some(id),
                        what: format!(
                            "the database says {}, the audit chain says {} (record {})",
                            show(&run_id.map_or(Value::Null, Value::from)),
                            show(&chain.run_id.map_or(Value::Null, Value::from)),
                            chain.row.first_seq
                        ),
                    });
                }
                compare_row(out, "tasks", id, (chain.run_id, Some(id)), stored, &chain.row, &[]);
            }
            None => out.push(missing_record("tasks", id, run_id, Some(id), "task_created")),
        }
    }

    /// After the last task: the tasks the chain records that are gone.
    pub(crate) fn tasks_done(&mut self) {
        for (id, chain) in &self.r.tasks {
            if chain.row.columns.contains_key("cluster") && !self.stored_tasks.contains(id) {
                self.out.push(deleted("tasks", *id, chain.run_id, Some(*id), &chain.row));
            }
        }
    }

    /// One row of `api_calls`.
    pub(crate) fn call(&mut self, id: i64, stored: &Map<String, Value>) {
        let (r, out) = (&*self.r, &mut self.out);
        self.stored_calls.insert(id);
        let run_id = stored.get("run_id").and_then(Value::as_i64);
        let task_id = stored.get("task_id").and_then(Value::as_i64);
        match r.calls.get(&id) {
            Some(chain) => {
                let ids = (chain.int("run_id"), chain.int("task_id"));
                compare_row(out, "api_calls", id, ids, stored, chain, &[]);
            }
            None if self.first_call.is_none_or(|first| id < first) => self.unchained += 1,
            None => out.push(missing_record("api_calls", id, run_id, task_id, "api_call")),
        }
    }

    /// After the last API call: the calls the chain records that are gone; the discrepancies
    /// go into the replay.
    pub(crate) fn finish(mut self) {
        for (id, chain) in &self.r.calls {
            if !self.stored_calls.contains(id) {
                self.out.push(deleted("api_calls", *id, chain.int("run_id"), chain.int("task_id"), chain));
            }
        }
        self.r.unchained_calls = self.unchained;
        self.r.discrepancies = self.out;
    }
}

fn missing_record(table: &'static str, id: i64, run_id: Option<i64>, task_id: Option<i64>, kind: &str) -> Discrepancy {
    Discrepancy {
        table,
        row: id,
        field: None,
        run_id,
        task_id,
        what: format!("not in the audit chain (no {kind} record): added outside the product"),
    }
}

fn deleted(table: &'static str, id: i64, run_id: Option<i64>, task_id: Option<i64>, chain: &ChainRow) -> Discrepancy {
    Discrepancy {
        table,
        row: id,
        field: None,
        run_id,
        task_id,
        what: format!(
            "missing from the database; the audit chain records it (records {}..{})",
            chain.first_seq, chain.last_seq
        ),
    }
}
