//! The replay's reads on the SQLite store: the chain a page at a time for [`Reader`], and the
//! rows of `runs`, `run_manifests`, `tasks` and `api_calls` as JSON objects for [`Tables`], all
//! in the caller's one read snapshot. It reads; what the records and rows mean is `records`'s
//! and `compare`'s.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sqlx::{Row, SqliteConnection};

use super::compare::Tables;
use super::records::{RawRecord, Reader, PAGE};
use super::Replay;
use crate::store::StoreError;

/// Replay every record of the chain; also the id of the first chained API call.
pub(super) async fn read(conn: &mut SqliteConnection) -> Result<(Replay, Option<i64>), StoreError> {
    let mut reader = Reader::default();
    loop {
        let rows = sqlx::query(
            "SELECT seq, CAST(at AS BLOB) AS at, \
             CASE typeof(run_id) WHEN 'integer' THEN run_id END AS run_id, \
             CASE typeof(task_id) WHEN 'integer' THEN task_id END AS task_id, \
             CAST(kind AS BLOB) AS kind, CAST(detail AS BLOB) AS detail \
             FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(reader.last_seq())
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            // Read as bytes: an edited record may hold anything (the chain names it).
            let at: Option<Vec<u8>> = row.try_get("at")?;
            let kind: Option<Vec<u8>> = row.try_get("kind")?;
            let detail: Option<Vec<u8>> = row.try_get("detail")?;
            reader.feed(RawRecord {
                seq: row.try_get("seq")?,
                at: at.as_deref().unwrap_or_default(),
                run_id: row.try_get("run_id")?,
                task_id: row.try_get("task_id")?,
                kind: kind.as_deref().unwrap_or_default(),
                detail: detail.as_deref(),
            });
        }
    }
    Ok(reader.finish())
}

/// Hand each row of `sql` (`SELECT id, json_object(…) FROM t`) to `f` in id order, a page at a
/// time, so a table of millions of rows is never held at once.
async fn each_row(
    conn: &mut SqliteConnection,
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

/// Compare every row of the four tables with the replay `r`.
pub(super) async fn compare(
    conn: &mut SqliteConnection,
    r: &mut Replay,
    first_call: Option<i64>,
) -> Result<(), StoreError> {
    let mut tables = Tables::new(r, first_call);
    let mut runs = BTreeMap::new();
    each_row(
        conn,
        "SELECT id, json_object('started_at', started_at, 'finished_at', finished_at, 'exit_code', exit_code, \
         'ticket', ticket, 'requested_by', requested_by, 'reason', reason, 'due_by', due_by, 'operator', operator, \
         'host', host, 'endpoint', endpoint, 'access_key_id', access_key_id, 'options', options, \
         'summary', summary, 'retry_of', retry_of, 'simulated', simulated) FROM runs",
        |id, row| {
            runs.insert(id, row);
        },
    )
    .await?;
    tables.runs(&runs);

    let manifests = sqlx::query("SELECT run_id, path, sha256 FROM run_manifests ORDER BY run_id, ord")
        .fetch_all(&mut *conn)
        .await?;
    let mut rows = Vec::with_capacity(manifests.len());
    for m in manifests {
        let text = |i: usize| m.try_get::<Option<String>, _>(i).map(Option::unwrap_or_default);
        rows.push((m.try_get(0)?, text(1)?, text(2)?));
    }
    tables.manifests(rows);

    each_row(
        conn,
        "SELECT id, json_object('run_id', run_id, 'cluster', cluster, 'zone', zone, 'user', user, 'host', host, \
         'state', state, 'prev_state', prev_state, 'not_before', not_before, 'due_by', due_by, 'attempts', attempts, \
         'job_id', job_id, 'last_ret_code', last_ret_code, 'last_message', last_message, 'started_at', started_at, \
         'intent_at', intent_at, 'submitted_at', submitted_at, 'next_attempt_at', next_attempt_at, \
         'finished_at', finished_at, 'updated_at', updated_at, 'adopted_from', adopted_from, \
         'unresolved', unresolved) FROM tasks",
        |id, stored| tables.task(id, &stored),
    )
    .await?;
    tables.tasks_done();

    each_row(
        conn,
        "SELECT id, json_object('run_id', run_id, 'task_id', task_id, 'action', action, 'params', params, \
         'http_status', http_status, 'ret_code', ret_code, 'message', message, 'job_id', job_id, \
         'started_at', started_at, 'latency_ms', latency_ms) FROM api_calls",
        |id, stored| tables.call(id, &stored),
    )
    .await?;
    tables.finish();
    Ok(())
}
