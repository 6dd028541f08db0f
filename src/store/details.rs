//! The details of the audit records that both backends write, built once so that a run written
//! to SQLite and one written to PostgreSQL carry the same records (`run_started`,
//! `task_created`, `task_state`, `api_call`, `run_finished`, `doctor_finding`), and the hash of a
//! record about to be appended. Pure: no SQL, no clock.
//!
//! It owns what a record says; where it is stored and under which `seq` is the backend's.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::audit::{with_ticket, Entry};
use super::{opt_ts, ts, ApiCallRow, NewFinding, NewRun, NewTask, TaskChange, TaskRow, TaskState};
use crate::audit::chain::Fields;

/// The detail of a run's `run_started` record: who asked, why, against which endpoint and key,
/// with which options, and how many tasks start in each state.
pub(crate) fn run_started(run: &NewRun, tasks: &[NewTask]) -> Value {
    let manifests: Vec<_> = run.manifests.iter().map(|(p, h)| json!({"path": p, "sha256": h})).collect();
    let counts = tasks.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, t| {
        *m.entry(t.state.as_str()).or_default() += 1;
        m
    });
    let mut started = json!({
        "manifests": manifests,
        "ticket": run.ticket,
        "requested_by": run.requested_by,
        "reason": run.reason,
        "due_by": opt_ts(run.due_by),
        "operator": run.operator,
        "host": run.host,
        "endpoint": run.endpoint,
        "access_key_id": run.access_key_id,
        "options": run.options,
        "retry_of": run.retry_of,
        "simulated": run.simulated,
        "tasks": counts,
    });
    if let (Some(d), Some(o)) = (&run.discovered, started.as_object_mut()) {
        o.insert("discovered".to_owned(), d.clone());
    }
    started
}

/// The detail of a task's `task_created` record: the values it was created with.
pub(crate) fn task_created(t: &NewTask, ticket: Option<&str>) -> Value {
    with_ticket(
        json!({
            "cluster": t.cluster,
            "zone": t.zone,
            "user": t.user,
            "host": t.host,
            "state": t.state,
            "not_before": t.not_before,
            "due_by": opt_ts(t.due_by),
        }),
        ticket,
    )
}

/// The detail of an `api_call` record: every column of the row `id`, so the chain proves what a
/// report shows about the call.
pub(crate) fn api_call(id: i64, c: &ApiCallRow, ticket: Option<&str>) -> Value {
    let detail = json!({
        "id": id, "action": c.action, "params": c.params_json, "http_status": c.http_status,
        "ret_code": c.ret_code, "message": c.message, "job_id": c.job_id,
        "started_at": ts(c.started_at), "latency_ms": c.latency_ms,
    });
    with_ticket(detail, ticket)
}

/// The detail of a run's `run_finished` record.
pub(crate) fn run_finished(exit_code: i64, summary: &Value, ticket: Option<&str>) -> Value {
    with_ticket(json!({"exit_code": exit_code, "summary": summary}), ticket)
}

/// The detail of a `doctor_finding` record: the checkup it belongs to and what it found.
pub(crate) fn doctor_finding(
    checkup_id: i64,
    endpoint: &str,
    access_key_id: &str,
    zone: Option<&str>,
    f: &NewFinding,
) -> Value {
    json!({
        "checkup_id": checkup_id,
        "endpoint": endpoint,
        "access_key_id": access_key_id,
        "zone": zone,
        "check": f.name,
        "status": f.status.as_str(),
        "value": f.value,
        "summary": f.summary,
    })
}

/// The `task_state` record of an applied transition: the account, `from` and `to`, and the
/// resulting value of every column the change set, so the log alone answers "when was bob
/// removed from cl-x, and by which job". The caller's detail (`extra`) is merged in; a write
/// under a lease (PostgreSQL) names its owner and epoch.
pub(crate) fn task_state(
    c: &TaskChange,
    extra: &Value,
    row: &TaskRow,
    from: TaskState,
    lease: Option<(&str, i64)>,
    ticket: Option<&str>,
) -> Entry {
    let mut detail = match extra {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => Map::from_iter([("value".to_string(), other.clone())]),
    };
    let mut facts = json!({
        "cluster": row.cluster, "user": row.user, "host": row.host,
        "from": from, "to": row.state,
    });
    if let (Some((owner, epoch)), Some(o)) = (lease, facts.as_object_mut()) {
        o.insert("owner".to_owned(), json!(owner));
        o.insert("epoch".to_owned(), json!(epoch));
    }
    detail.extend(facts.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
    let mut put = |set: bool, key: &str, value: Value| {
        if set {
            detail.insert(key.to_string(), value);
        }
    };
    put(c.attempts.is_some(), "attempts", json!(row.attempts));
    put(c.job_id.is_some(), "job_id", json!(row.job_id));
    put(c.last_ret_code.is_some(), "ret_code", json!(row.last_ret_code));
    put(c.last_message.is_some(), "message", json!(row.last_message));
    put(c.intent_at.is_some(), "intent_at", json!(opt_ts(row.intent_at)));
    put(c.submitted_at.is_some(), "submitted_at", json!(opt_ts(row.submitted_at)));
    put(c.next_attempt_at.is_some(), "next_attempt_at", json!(opt_ts(row.next_attempt_at)));
    put(c.finished_at.is_some(), "finished_at", json!(opt_ts(row.finished_at)));
    put(c.adopted_from.is_some(), "adopted_from", json!(row.adopted_from));
    put(c.unresolved.is_some(), "unresolved", json!(row.unresolved));
    Entry::new(Some(row.run_id), Some(row.id), "task_state", &with_ticket(Value::Object(detail), ticket))
}

impl Entry {
    /// The record's hash as record `seq` written at `at`, after the record whose hash is `prev`.
    pub(crate) fn hash(&self, seq: i64, at: &str, prev: &[u8; 32]) -> [u8; 32] {
        Fields {
            seq,
            at: at.as_bytes(),
            run_id: self.run_id,
            task_id: self.task_id,
            kind: self.kind.as_bytes(),
            detail: self.detail.as_bytes(),
        }
        .hash(prev)
    }
}
