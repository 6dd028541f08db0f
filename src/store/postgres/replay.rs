//! The replay on PostgreSQL (`audit verify`'s table-against-chain check): the chain a page at a
//! time fed to `store::replay`'s reader, and the rows of `runs`, `run_manifests`, `tasks` and
//! `api_calls` as JSON objects in the SQLite store's text forms (times as
//! `2026-11-28T12:00:00.000000Z`, dates as `2026-11-28`, flags 0 or 1), fed to its comparer, all
//! in one snapshot. The replay's rules are shared with SQLite; this module holds the SQL only
//! and never writes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sqlx::{PgConnection, Row};

use super::PgStore;
use crate::store::replay::compare::Tables;
use crate::store::replay::records::{RawRecord, Reader, PAGE};
use crate::store::{Replay, StoreError};

/// A TIMESTAMPTZ column in the SQLite store's one text form.
fn t(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

impl PgStore {
    /// Replay the whole chain and compare every row of `runs`, `run_manifests`, `tasks` and
    /// `api_calls` with it, in one snapshot.
    pub async fn replay(&self) -> Result<Replay, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        let mut reader = Reader::default();
        loop {
            let rows = sqlx::query(
                "SELECT seq, at, run_id, task_id, kind, detail FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(reader.last_seq())
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let (at, kind, detail): (String, String, String) =
                    (row.try_get("at")?, row.try_get("kind")?, row.try_get("detail")?);
                reader.feed(RawRecord {
                    seq: row.try_get("seq")?,
                    at: at.as_bytes(),
                    run_id: row.try_get("run_id")?,
                    task_id: row.try_get("task_id")?,
                    kind: kind.as_bytes(),
                    detail: Some(detail.as_bytes()),
                });
            }
        }
        let (mut r, first_call) = reader.finish();
        compare(&mut tx, &mut r, first_call).await?;
        tx.rollback().await?;
        Ok(r)
    }
}

/// Hand each row of `sql` (`SELECT id, json_build_object(…)::text FROM t`) to `f` in id order, a
/// page at a time.
async fn each_row(
    conn: &mut PgConnection,
    sql: &str,
    mut f: impl FnMut(i64, Map<String, Value>),
) -> Result<(), StoreError> {
    let paged = format!("{sql} WHERE id > $1 ORDER BY id LIMIT $2");
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

async fn compare(conn: &mut PgConnection, r: &mut Replay, first_call: Option<i64>) -> Result<(), StoreError> {
    let mut tables = Tables::new(r, first_call);
    let mut runs = BTreeMap::new();
    let sql = format!(
        "SELECT id, json_build_object('started_at', {}, 'finished_at', {}, 'exit_code', exit_code, \
         'ticket', ticket, 'requested_by', requested_by, 'reason', reason, 'due_by', {}, 'operator', operator, \
         'host', host, 'endpoint', endpoint, 'access_key_id', access_key_id, 'options', options, \
         'summary', summary, 'retry_of', retry_of, 'simulated', simulated::int)::text FROM runs",
        t("started_at"),
        t("finished_at"),
        t("due_by")
    );
    each_row(conn, &sql, |id, row| {
        runs.insert(id, row);
    })
    .await?;
    tables.runs(&runs);

    let manifests: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT run_id, path, sha256 FROM run_manifests ORDER BY run_id, ord")
            .fetch_all(&mut *conn)
            .await?;
    tables.manifests(manifests);

    let sql = format!(
        "SELECT id, json_build_object('run_id', run_id, 'cluster', cluster, 'zone', zone, 'user', \"user\", \
         'host', host, 'state', state, 'prev_state', prev_state, 'not_before', to_char(not_before, 'YYYY-MM-DD'), \
         'due_by', {}, 'attempts', attempts, 'job_id', job_id, 'last_ret_code', last_ret_code, \
         'last_message', last_message, 'started_at', {}, 'intent_at', {}, 'submitted_at', {}, \
         'next_attempt_at', {}, 'finished_at', {}, 'updated_at', {}, 'adopted_from', adopted_from, \
         'unresolved', unresolved)::text FROM tasks",
        t("due_by"),
        t("started_at"),
        t("intent_at"),
        t("submitted_at"),
        t("next_attempt_at"),
        t("finished_at"),
        t("updated_at")
    );
    each_row(conn, &sql, |id, stored| tables.task(id, &stored)).await?;
    tables.tasks_done();

    let sql = format!(
        "SELECT id, json_build_object('run_id', run_id, 'task_id', task_id, 'action', action, 'params', params, \
         'http_status', http_status, 'ret_code', ret_code, 'message', message, 'job_id', job_id, \
         'started_at', {}, 'latency_ms', latency_ms)::text FROM api_calls",
        t("started_at")
    );
    each_row(conn, &sql, |id, stored| tables.call(id, &stored)).await?;
    tables.finish();
    Ok(())
}
