//! Holding the replayed rows against the tables: every row of `runs`, `run_manifests`,
//! `tasks` and `api_calls` is read a page at a time as JSON and compared column by column with
//! what the chain proves (clock times against their windows); a row the chain does not know,
//! or a row it records that is gone, is a discrepancy too.
//!
//! It reads the tables and records discrepancies; it never writes and never reads the chain.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sqlx::Row;

use crate::store::StoreError;

use super::model::{ChainRow, Discrepancy, Replay};
use super::records::PAGE;

/// A table's rows as JSON objects (SQLite types map to JSON types), keyed by id.
async fn table_rows(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
) -> Result<BTreeMap<i64, Map<String, Value>>, StoreError> {
    let mut out = BTreeMap::new();
    each_row(conn, sql, |id, row| {
        out.insert(id, row);
    })
    .await?;
    Ok(out)
}

/// Hand each row of `sql` (`SELECT id, json_object(…) FROM t`) to `f` in id order, a page at a
/// time, so a table of millions of rows is never held at once.
async fn each_row(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    mut f: impl FnMut(i64, Map<String, Value>),
) -> Result<(), StoreError> {
    let paged = format!("{sql} WHERE id > ? ORDER BY id LIMIT ?");
    let mut last = i64::MIN;
    loop {
        let rows = sqlx::query(&paged).bind(last).bind(PAGE).fetch_all(&mut *conn).await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in rows {
            let id: i64 = row.try_get(0)?;
            last = id;
            let text: String = row.try_get(1)?;
            let map = match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            };
            f(id, map);
        }
    }
}

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

pub(super) async fn compare(
    conn: &mut sqlx::SqliteConnection,
    r: &mut Replay,
    first_call: Option<i64>,
) -> Result<(), StoreError> {
    let mut out = Vec::new();

    let runs = table_rows(
        conn,
        "SELECT id, json_object('started_at', started_at, 'finished_at', finished_at, 'exit_code', exit_code, \
         'ticket', ticket, 'requested_by', requested_by, 'reason', reason, 'due_by', due_by, 'operator', operator, \
         'host', host, 'endpoint', endpoint, 'access_key_id', access_key_id, 'options', options, \
         'summary', summary, 'retry_of', retry_of, 'simulated', simulated) FROM runs",
    )
    .await?;
    for (id, stored) in &runs {
        match r.runs.get(id).filter(|c| c.started_record_at.is_some()) {
            Some(chain) => {
                compare_row(&mut out, "runs", *id, (Some(*id), None), stored, &chain.row, &["options", "summary"])
            }
            None => out.push(missing_record("runs", *id, Some(*id), None, "run_started")),
        }
    }
    for (id, chain) in &r.runs {
        if chain.started_record_at.is_some() && !runs.contains_key(id) {
            out.push(deleted("runs", *id, Some(*id), None, &chain.row));
        }
    }

    let manifests = sqlx::query("SELECT run_id, path, sha256 FROM run_manifests ORDER BY run_id, ord")
        .fetch_all(&mut *conn)
        .await?;
    let mut stored_manifests: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    for m in manifests {
        let text = |i: usize| m.try_get::<Option<String>, _>(i).map(Option::unwrap_or_default);
        stored_manifests.entry(m.try_get(0)?).or_default().push((text(1)?, text(2)?));
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

    let mut stored_tasks = std::collections::HashSet::new();
    each_row(
        conn,
        "SELECT id, json_object('run_id', run_id, 'cluster', cluster, 'zone', zone, 'user', user, 'host', host, \
         'state', state, 'prev_state', prev_state, 'not_before', not_before, 'due_by', due_by, 'attempts', attempts, \
         'job_id', job_id, 'last_ret_code', last_ret_code, 'last_message', last_message, 'started_at', started_at, \
         'intent_at', intent_at, 'submitted_at', submitted_at, 'next_attempt_at', next_attempt_at, \
         'finished_at', finished_at, 'updated_at', updated_at, 'adopted_from', adopted_from, \
         'unresolved', unresolved) FROM tasks",
        |id, stored| {
            stored_tasks.insert(id);
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
                    compare_row(&mut out, "tasks", id, (chain.run_id, Some(id)), &stored, &chain.row, &[]);
                }
                None => out.push(missing_record("tasks", id, run_id, Some(id), "task_created")),
            }
        },
    )
    .await?;
    for (id, chain) in &r.tasks {
        if chain.row.columns.contains_key("cluster") && !stored_tasks.contains(id) {
            out.push(deleted("tasks", *id, chain.run_id, Some(*id), &chain.row));
        }
    }

    let mut stored_calls = std::collections::HashSet::new();
    let mut unchained = 0;
    each_row(
        conn,
        "SELECT id, json_object('run_id', run_id, 'task_id', task_id, 'action', action, 'params', params, \
         'http_status', http_status, 'ret_code', ret_code, 'message', message, 'job_id', job_id, \
         'started_at', started_at, 'latency_ms', latency_ms) FROM api_calls",
        |id, stored| {
            stored_calls.insert(id);
            let run_id = stored.get("run_id").and_then(Value::as_i64);
            let task_id = stored.get("task_id").and_then(Value::as_i64);
            match r.calls.get(&id) {
                Some(chain) => {
                    let ids = (chain.int("run_id"), chain.int("task_id"));
                    compare_row(&mut out, "api_calls", id, ids, &stored, chain, &[]);
                }
                None if first_call.is_none_or(|first| id < first) => unchained += 1,
                None => out.push(missing_record("api_calls", id, run_id, task_id, "api_call")),
            }
        },
    )
    .await?;
    r.unchained_calls = unchained;
    for (id, chain) in &r.calls {
        if !stored_calls.contains(id) {
            out.push(deleted("api_calls", *id, chain.int("run_id"), chain.int("task_id"), chain));
        }
    }
    r.discrepancies = out;
    Ok(())
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
