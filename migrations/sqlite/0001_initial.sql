-- The queue and the evidence of qc-offboard (SPEC §7). Append-only migrations: never edit this
-- file once it has landed; add a new one.
--
-- Times are TEXT in one fixed-width RFC 3339 form (`2026-11-28T12:00:00.000000Z`), so text order
-- is time order. JSON columns are TEXT written by serde_json.

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    exit_code     INTEGER,
    ticket        TEXT,
    requested_by  TEXT,
    reason        TEXT,
    due_by        TEXT,
    operator      TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    endpoint      TEXT    NOT NULL,
    access_key_id TEXT    NOT NULL,
    options       TEXT    NOT NULL,
    summary       TEXT,
    retry_of      INTEGER REFERENCES runs (id),
    simulated     INTEGER NOT NULL CHECK (simulated IN (0, 1))
);

CREATE TABLE run_manifests (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    ord    INTEGER NOT NULL,
    path   TEXT    NOT NULL,
    sha256 TEXT    NOT NULL,
    PRIMARY KEY (run_id, ord)
);

CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (id),
    cluster         TEXT    NOT NULL,
    zone            TEXT    NOT NULL,
    user            TEXT    NOT NULL,
    host            TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'not_due', 'skipped', 'submitting',
                                                      'submitted', 'retry_wait', 'deleted', 'failed')),
    -- the state before the latest transition (lets one guarded UPDATE report where it came from)
    prev_state      TEXT,
    not_before      TEXT,
    due_by          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    job_id          TEXT,
    last_ret_code   INTEGER,
    last_message    TEXT,
    -- first submission intent: when work on the task began
    started_at      TEXT,
    intent_at       TEXT,
    submitted_at    TEXT,
    next_attempt_at TEXT,
    finished_at     TEXT,
    updated_at      TEXT    NOT NULL,
    UNIQUE (run_id, cluster, user, host)
);

CREATE INDEX tasks_by_run_state ON tasks (run_id, state);
CREATE INDEX tasks_by_state_account ON tasks (state, cluster, user, host);

CREATE TABLE api_calls (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    task_id     INTEGER REFERENCES tasks (id),
    action      TEXT    NOT NULL,
    params      TEXT    NOT NULL,
    http_status INTEGER,
    ret_code    INTEGER,
    message     TEXT,
    job_id      TEXT,
    started_at  TEXT    NOT NULL,
    latency_ms  INTEGER NOT NULL
);

CREATE INDEX api_calls_by_run ON api_calls (run_id);

-- The tamper-evident log: hash = SHA-256(prev_hash ‖ canonical record), see src/store/audit.rs.
-- No foreign keys: the log is evidence and must stand on its own.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT    NOT NULL,
    run_id    INTEGER,
    task_id   INTEGER,
    kind      TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;

-- One run at a time per database: a single row with a fixed key.
CREATE TABLE run_lock (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    run_id     INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    host       TEXT    NOT NULL,
    started_at TEXT    NOT NULL
);
