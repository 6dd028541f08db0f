//! Reading the audit chain in `seq` order, a page at a time, into the rows it proves: each
//! record kind sets the columns it states (`run_started`, `run_finished`, `task_created`,
//! `api_call`), any record naming a `from` and a `to` state is a transition, and `preflight`
//! records are kept as evidence. Kinds and states are carried as text, so ones this version
//! does not know replay like any other.
//!
//! It replays records a backend has read and fed it ([`Reader`]); it runs no SQL, and comparing
//! with the tables is `compare`'s.

use std::sync::Arc;

use super::model::{AttemptRecord, ChainRun, ChainTask, EvidenceRecord, Replay, Window};
use serde_json::{Map, Value};

/// Records (and rows compared) read per page.
pub(crate) const PAGE: i64 = 5_000;

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

/// One audit record as read, whatever the backend: `at`, `kind` and `detail` as the bytes
/// stored (an edited record may hold anything; the chain names it), ids `None` when NULL or not
/// integers.
pub(crate) struct RawRecord<'a> {
    pub seq: i64,
    pub at: &'a [u8],
    pub run_id: Option<i64>,
    pub task_id: Option<i64>,
    pub kind: &'a [u8],
    pub detail: Option<&'a [u8]>,
}

/// The replay of the chain as records are fed to it in `seq` order; a backend reads the pages
/// (the records after [`Reader::last_seq`]) and feeds them.
#[derive(Default)]
pub(crate) struct Reader {
    r: Replay,
    last_seq: i64,
    // `at` of the current group of records sharing one `at` (one append), and of the
    // record before that group.
    group_at: Option<Arc<str>>,
    before_group: Option<Arc<str>>,
    first_call: Option<i64>,
}

impl Reader {
    /// The `seq` of the last record fed (0 before any): the next page starts after it.
    pub(crate) fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The replay, and the id of the first chained API call (older `api_calls` rows were
    /// written by a version that did not chain them).
    pub(crate) fn finish(self) -> (Replay, Option<i64>) {
        (self.r, self.first_call)
    }

    /// Replay one record.
    pub(crate) fn feed(&mut self, rec: RawRecord<'_>) {
        let r = &mut self.r;
        let seq = rec.seq;
        self.last_seq = seq;
        r.records += 1;
        let at = String::from_utf8_lossy(rec.at).into_owned();
        if self.group_at.as_deref() != Some(at.as_str()) {
            self.before_group = self.group_at.replace(Arc::from(at.as_str()));
        }
        let upper = self.group_at.clone().unwrap_or_else(|| Arc::from(at.as_str()));
        let window = Window { lower: self.before_group.clone(), upper, seq };
        let (run_id, task_id) = (rec.run_id, rec.task_id);
        let kind = String::from_utf8_lossy(rec.kind);
        let detail = match rec.detail.map(serde_json::from_slice::<Value>) {
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
        match &*kind {
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
                    r.tasks.entry(id).or_default().preflight = Some(EvidenceRecord { seq, detail: detail.clone() });
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
                    self.first_call = Some(self.first_call.map_or(id, |f| f.min(id)));
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

#[cfg(test)]
mod tests {
    use super::*;

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
