//! Replaying the audit chain into the rows it proves, and comparing them with the tables.
//!
//! Every row a report reads is written in the same transaction as an audit record describing
//! it: `run_started` / `run_finished` carry a run's metadata and end, `task_created` a task's
//! first values, each transition (`task_state` today, and any record about a task whose detail
//! names a `from` and a `to` state) the resulting value of every column it changed, and
//! `api_call` every API call. Replaying those records in `seq` order rebuilds the rows of `runs`,
//! `run_manifests`, `tasks` and `api_calls` as the product wrote them; any difference from the
//! table is an edit made outside the product (or a row deleted or inserted behind its back).
//!
//! The replay is generic: state names and record kinds are carried as text, so a state or a
//! kind this version does not know replays like any other.
//!
//! Times the product takes from the clock just before writing a row (`runs.started_at`,
//! `runs.finished_at`, `tasks.updated_at`) are not copied into the record; the record's own
//! `at` is taken a moment later in the same transaction. Such a time is checked to lie in its
//! window: after the `at` of the records written before that transaction, and no later than
//! the `at` of the record that describes the change.
//!
//! Records that describe no row but are evidence about one are kept as they were written: a
//! task's latest `preflight` record (what `DescribeClusters` said about its cluster before the
//! first `del_user`) and a run's `preflight_unchecked` records (zones whose lookups got no
//! answer). Their integrity is the chain's: the verifier covers them like any record.
//!
//! This module reads; it never writes, and holds no opinion about how a report shows the result.

use std::collections::BTreeMap;

use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::Row;

use super::{Store, StoreError};

/// Records read per page.
const PAGE: i64 = 5_000;

/// A time the chain bounds rather than states: `lower <= t <= upper` (text order is time
/// order). The texts are shared by every record of one append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The `at` of the last record written before the transaction (`None` at the start).
    pub lower: Option<Arc<str>>,
    /// The `at` of the record describing the change.
    pub upper: Arc<str>,
    /// The record describing the change.
    pub seq: i64,
}

impl Window {
    fn holds(&self, t: &str) -> bool {
        self.lower.as_deref().is_none_or(|l| t >= l) && t <= &*self.upper
    }
}

/// A column's value as the chain proves it, and the record that set it last.
#[derive(Debug, Clone, PartialEq)]
pub struct Proven {
    pub value: Value,
    pub seq: i64,
}

/// One failed or retried attempt of a task, as its transition record tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub seq: i64,
    pub at: String,
    pub from: String,
    pub to: String,
    pub attempts: Option<i64>,
    pub job_id: Option<String>,
    pub ret_code: Option<i64>,
    pub message: Option<String>,
}

/// A row rebuilt from the chain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainRow {
    /// Column name → proven value.
    pub columns: BTreeMap<&'static str, Proven>,
    /// Columns the chain bounds by a window.
    pub windows: BTreeMap<&'static str, Window>,
    /// First and last record naming the row, and how many.
    pub first_seq: i64,
    pub last_seq: i64,
    pub records: i64,
}

impl ChainRow {
    fn set(&mut self, column: &'static str, value: Value, seq: i64) {
        self.columns.insert(column, Proven { value, seq });
    }

    fn touch(&mut self, seq: i64) {
        if self.records == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        self.records += 1;
    }

    /// The proven text of a column (`None` when absent or not text).
    pub fn text(&self, column: &str) -> Option<&str> {
        self.columns.get(column).and_then(|p| p.value.as_str())
    }

    /// The proven integer of a column.
    pub fn int(&self, column: &str) -> Option<i64> {
        self.columns.get(column).and_then(|p| p.value.as_i64())
    }
}

/// An audit record kept as evidence: its `seq` and its detail as written.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRecord {
    pub seq: i64,
    pub detail: Map<String, Value>,
}

/// A task rebuilt from the chain, with the story of its transitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainTask {
    pub run_id: Option<i64>,
    pub row: ChainRow,
    /// Every transition that carries an API answer other than success (a message, or a
    /// ret_code other than 0), oldest first: the attempts that did not delete the account.
    pub transitions: Vec<AttemptRecord>,
    /// The task's latest `preflight` record: what preflight saw of its cluster.
    pub preflight: Option<EvidenceRecord>,
}

/// A run rebuilt from the chain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainRun {
    pub row: ChainRow,
    /// (path, sha256) of its manifests, in order.
    pub manifests: Vec<(String, String)>,
    /// The `at` of its `run_started` record.
    pub started_record_at: Option<String>,
    /// Its `preflight_unchecked` records (`zone`, `clusters`), oldest first.
    pub preflight_unchecked: Vec<EvidenceRecord>,
}

/// A row that disagrees with the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub table: &'static str,
    pub row: i64,
    /// The column, or `None` when the whole row is missing or unknown to the chain.
    pub field: Option<String>,
    /// The run the row belongs to, when known.
    pub run_id: Option<i64>,
    /// The task the row belongs to (a `tasks` row, or an API call made for a task).
    pub task_id: Option<i64>,
    pub what: String,
}

impl std::fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} row {}, {field}: {}", self.table, self.row, self.what),
            None => write!(f, "{} row {}: {}", self.table, self.row, self.what),
        }
    }
}

/// The chain replayed, and where the tables disagree with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub runs: BTreeMap<i64, ChainRun>,
    pub tasks: BTreeMap<i64, ChainTask>,
    pub calls: BTreeMap<i64, ChainRow>,
    pub discrepancies: Vec<Discrepancy>,
    /// `api_calls` rows older than the first chained call: recorded by a version that did not
    /// chain API calls, so nothing proves them.
    pub unchained_calls: i64,
    /// Records read.
    pub records: i64,
}

impl Replay {
    /// Discrepancies of one task: its row and the API calls made for it.
    pub fn task_discrepancies(&self, task_id: i64) -> impl Iterator<Item = &Discrepancy> {
        self.discrepancies.iter().filter(move |d| d.task_id == Some(task_id))
    }

    /// Discrepancies of a run's own rows (`runs`, `run_manifests`).
    pub fn run_discrepancies(&self, run_id: i64) -> impl Iterator<Item = &Discrepancy> {
        self.discrepancies.iter().filter(move |d| d.run_id == Some(run_id) && d.task_id.is_none())
    }
}

/// Task columns a transition record sets: (key in the record, column).
const TRANSITION_FIELDS: [(&str, &str); 10] = [
    ("attempts", "attempts"),
    ("job_id", "job_id"),
    ("ret_code", "last_ret_code"),
    ("message", "last_message"),
    ("intent_at", "intent_at"),
    ("submitted_at", "submitted_at"),
    ("next_attempt_at", "next_attempt_at"),
    ("finished_at", "finished_at"),
    ("adopted_from", "adopted_from"),
    ("unresolved", "unresolved"),
];

/// Run columns `run_started` states.
const RUN_FIELDS: [&str; 11] = [
    "ticket",
    "requested_by",
    "reason",
    "due_by",
    "operator",
    "host",
    "endpoint",
    "access_key_id",
    "options",
    "retry_of",
    "simulated",
];

/// API call columns an `api_call` record states.
const CALL_FIELDS: [&str; 8] =
    ["action", "params", "http_status", "ret_code", "message", "job_id", "started_at", "latency_ms"];

impl Store {
    /// Replay the whole chain and compare every row of `runs`, `run_manifests`, `tasks` and
    /// `api_calls` with it, in one read snapshot.
    pub async fn replay(&self) -> Result<Replay, StoreError> {
        let mut tx = self.reader.begin().await?;
        let mut r = Replay::default();
        let mut last_seq = 0i64;
        // `at` of the current group of records sharing one `at` (one append), and of the
        // record before that group.
        let mut group_at: Option<Arc<str>> = None;
        let mut before_group: Option<Arc<str>> = None;
        let mut first_call: Option<i64> = None;
        loop {
            let rows = sqlx::query(
                "SELECT seq, CAST(at AS BLOB) AS at, \
                 CASE typeof(run_id) WHEN 'integer' THEN run_id END AS run_id, \
                 CASE typeof(task_id) WHEN 'integer' THEN task_id END AS task_id, \
                 CAST(kind AS BLOB) AS kind, CAST(detail AS BLOB) AS detail \
                 FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(last_seq)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                last_seq = seq;
                r.records += 1;
                // Read as bytes: an edited record may hold anything (the chain names it).
                let text = |col: &str| -> Result<String, StoreError> {
                    let bytes: Option<Vec<u8>> = row.try_get(col)?;
                    Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
                };
                let at = text("at")?;
                if group_at.as_deref() != Some(at.as_str()) {
                    before_group = group_at.replace(Arc::from(at.as_str()));
                }
                let upper = group_at.clone().unwrap_or_else(|| Arc::from(at.as_str()));
                let window = Window { lower: before_group.clone(), upper, seq };
                let run_id: Option<i64> = row.try_get("run_id")?;
                let task_id: Option<i64> = row.try_get("task_id")?;
                let kind = text("kind")?;
                let detail: Option<Vec<u8>> = row.try_get("detail")?;
                let detail = match detail.as_deref().map(serde_json::from_slice::<Value>) {
                    Some(Ok(Value::Object(map))) => map,
                    _ => Map::new(),
                };
                if let Some(id) = run_id {
                    r.runs.entry(id).or_default().row.touch(seq);
                }
                if let Some(id) = task_id {
                    let task = r.tasks.entry(id).or_default();
                    task.row.touch(seq);
                    task.run_id = task.run_id.or(run_id);
                }
                match kind.as_str() {
                    "run_started" => {
                        if let Some(id) = run_id {
                            started(r.runs.entry(id).or_default(), &detail, window.clone(), seq);
                        }
                    }
                    "run_finished" => {
                        if let Some(id) = run_id {
                            let run = r.runs.entry(id).or_default();
                            run.row.set("exit_code", field(&detail, "exit_code"), seq);
                            run.row.set("summary", field(&detail, "summary"), seq);
                            run.row.windows.insert("finished_at", window.clone());
                        }
                    }
                    "task_created" => {
                        if let Some(id) = task_id {
                            created(r.tasks.entry(id).or_default(), &detail, window.clone(), seq);
                        }
                    }
                    // Written by the runner's preflight (`runner::preflight`); a later check of
                    // the same task (a resumed run) supersedes an earlier one.
                    "preflight" => {
                        if let Some(id) = task_id {
                            r.tasks.entry(id).or_default().preflight =
                                Some(EvidenceRecord { seq, detail: detail.clone() });
                        }
                    }
                    "preflight_unchecked" => {
                        if let Some(id) = run_id {
                            let record = EvidenceRecord { seq, detail: detail.clone() };
                            r.runs.entry(id).or_default().preflight_unchecked.push(record);
                        }
                    }
                    "api_call" => {
                        if let Some(id) = detail.get("id").and_then(Value::as_i64) {
                            first_call = Some(first_call.map_or(id, |f| f.min(id)));
                            let call = r.calls.entry(id).or_default();
                            call.touch(seq);
                            call.set("run_id", run_id.map_or(Value::Null, Value::from), seq);
                            call.set("task_id", task_id.map_or(Value::Null, Value::from), seq);
                            for f in CALL_FIELDS {
                                call.set(f, field(&detail, f), seq);
                            }
                        }
                    }
                    _ => {}
                }
                if let (Some(id), Some(from), Some(to)) =
                    (task_id, detail.get("from").and_then(Value::as_str), detail.get("to").and_then(Value::as_str))
                {
                    if kind != "task_created" {
                        transition(r.tasks.entry(id).or_default(), &detail, from, to, window, seq, &at);
                    }
                }
            }
        }
        compare(&mut tx, &mut r, first_call).await?;
        tx.rollback().await?;
        Ok(r)
    }
}

fn field(detail: &Map<String, Value>, key: &'static str) -> Value {
    detail.get(key).cloned().unwrap_or(Value::Null)
}

fn started(run: &mut ChainRun, detail: &Map<String, Value>, window: Window, seq: i64) {
    for f in RUN_FIELDS {
        run.row.set(f, field(detail, f), seq);
    }
    // Not finished until a run_finished record says so.
    run.row.set("exit_code", Value::Null, seq);
    run.row.set("summary", Value::Null, seq);
    run.started_record_at = Some(window.upper.to_string());
    run.row.windows.insert("started_at", window);
    run.manifests = detail
        .get("manifests")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|m| {
                    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    (s("path"), s("sha256"))
                })
                .collect()
        })
        .unwrap_or_default();
}

fn created(task: &mut ChainTask, detail: &Map<String, Value>, window: Window, seq: i64) {
    let row = &mut task.row;
    for f in ["cluster", "zone", "user", "host", "state", "not_before", "due_by"] {
        row.set(f, field(detail, f), seq);
    }
    row.set("attempts", Value::from(0), seq);
    for f in [
        "prev_state",
        "job_id",
        "last_ret_code",
        "last_message",
        "started_at",
        "intent_at",
        "submitted_at",
        "next_attempt_at",
        "finished_at",
        "adopted_from",
        "unresolved",
    ] {
        row.set(f, Value::Null, seq);
    }
    row.windows.insert("updated_at", window);
}

fn transition(
    task: &mut ChainTask,
    detail: &Map<String, Value>,
    from: &str,
    to: &str,
    window: Window,
    seq: i64,
    at: &str,
) {
    let row = &mut task.row;
    row.set("prev_state", Value::from(from), seq);
    row.set("state", Value::from(to), seq);
    for (key, column) in TRANSITION_FIELDS {
        if let Some(v) = detail.get(key) {
            row.set(column, v.clone(), seq);
        }
    }
    // The first intent is when work on the task began.
    if let Some(intent) = detail.get("intent_at") {
        if row.columns.get("started_at").is_none_or(|p| p.value.is_null()) {
            row.set("started_at", intent.clone(), seq);
        }
    }
    row.windows.insert("updated_at", window);
    let ret_code = detail.get("ret_code").and_then(Value::as_i64);
    let message = detail.get("message").and_then(Value::as_str).filter(|m| !m.is_empty());
    if message.is_none() && ret_code.is_none_or(|c| c == 0) {
        return;
    }
    task.transitions.push(AttemptRecord {
        seq,
        at: at.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        attempts: detail.get("attempts").and_then(Value::as_i64),
        job_id: detail.get("job_id").and_then(Value::as_str).map(str::to_owned),
        ret_code,
        message: message.map(str::to_owned),
    });
}

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

async fn compare(conn: &mut sqlx::SqliteConnection, r: &mut Replay, first_call: Option<i64>) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_bound_times_on_both_sides() {
        let w = Window {
            lower: Some("2026-01-01T00:00:00.000000Z".into()),
            upper: "2026-01-01T00:00:01.000000Z".into(),
            seq: 3,
        };
        assert!(w.holds("2026-01-01T00:00:00.500000Z"));
        assert!(w.holds("2026-01-01T00:00:01.000000Z"));
        assert!(!w.holds("2026-01-01T00:00:01.000001Z"));
        assert!(!w.holds("2025-12-31T23:59:59.999999Z"));
        let open = Window { lower: None, ..w };
        assert!(open.holds("2000-01-01T00:00:00.000000Z"));
    }

    #[test]
    fn a_transition_sets_only_what_it_names_and_starts_the_task_once() {
        let mut t = ChainTask::default();
        let w = Window { lower: None, upper: "t1".into(), seq: 1 };
        let detail = |v: Value| v.as_object().cloned().unwrap();
        created(&mut t, &detail(serde_json::json!({"cluster": "cl-a", "state": "pending"})), w.clone(), 1);
        transition(&mut t, &detail(serde_json::json!({"intent_at": "i1"})), "pending", "submitting", w.clone(), 2, "t");
        let failed = serde_json::json!({"ret_code": 5000, "message": "busy", "next_attempt_at": "n1"});
        transition(&mut t, &detail(failed), "submitting", "retry_wait", w.clone(), 3, "t");
        transition(&mut t, &detail(serde_json::json!({"intent_at": "i2"})), "retry_wait", "submitting", w, 4, "t");
        assert_eq!(t.row.text("state"), Some("submitting"));
        assert_eq!(t.row.text("started_at"), Some("i1"));
        assert_eq!(t.row.text("intent_at"), Some("i2"));
        assert_eq!(t.row.int("attempts"), Some(0));
        assert_eq!(t.row.int("last_ret_code"), Some(5000));
        // Only the attempt that did not succeed is kept as a story.
        assert_eq!(t.transitions.len(), 1);
        assert_eq!(t.transitions[0].message.as_deref(), Some("busy"));
        // A state this version has never heard of replays like any other.
        let w = Window { lower: None, upper: "t2".into(), seq: 5 };
        transition(&mut t, &Map::new(), "submitting", "handed_over", w, 5, "t");
        assert_eq!(t.row.text("state"), Some("handed_over"));
    }
}
