-- One task outcome (issue: cluster preflight): `not_ready`, a task whose cluster was not ready
-- when the run checked it with DescribeClusters (stopped, suspended, in transition…). Nothing was
-- sent for it; a later run of the manifest tries the account again.
--
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt as 0003 did, with
-- `api_calls` (the only table that references `tasks`) rebuilt beside it.

CREATE TABLE tasks_rebuilt (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (id),
    cluster         TEXT    NOT NULL,
    zone            TEXT    NOT NULL,
    user            TEXT    NOT NULL,
    host            TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'not_due', 'skipped', 'submitting',
                                                      'submitted', 'retry_wait', 'deleted', 'failed',
                                                      'absent', 'handed_over', 'not_ready')),
    prev_state      TEXT,
    not_before      TEXT,
    due_by          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    job_id          TEXT,
    last_ret_code   INTEGER,
    last_message    TEXT,
    started_at      TEXT,
    intent_at       TEXT,
    submitted_at    TEXT,
    next_attempt_at TEXT,
    finished_at     TEXT,
    updated_at      TEXT    NOT NULL,
    adopted_from    INTEGER REFERENCES tasks_rebuilt (id),
    unresolved      TEXT    CHECK (unresolved IN ('job', 'in_doubt')),
    UNIQUE (run_id, cluster, user, host)
);

INSERT INTO tasks_rebuilt (id, run_id, cluster, zone, user, host, state, prev_state, not_before, due_by,
                           attempts, job_id, last_ret_code, last_message, started_at, intent_at,
                           submitted_at, next_attempt_at, finished_at, updated_at, adopted_from, unresolved)
SELECT id, run_id, cluster, zone, user, host, state, prev_state, not_before, due_by,
       attempts, job_id, last_ret_code, last_message, started_at, intent_at,
       submitted_at, next_attempt_at, finished_at, updated_at, adopted_from, unresolved
FROM tasks;

CREATE TABLE api_calls_rebuilt (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    task_id     INTEGER REFERENCES tasks_rebuilt (id),
    action      TEXT    NOT NULL,
    params      TEXT    NOT NULL,
    http_status INTEGER,
    ret_code    INTEGER,
    message     TEXT,
    job_id      TEXT,
    started_at  TEXT    NOT NULL,
    latency_ms  INTEGER NOT NULL
);

INSERT INTO api_calls_rebuilt (id, run_id, task_id, action, params, http_status, ret_code, message, job_id,
                               started_at, latency_ms)
SELECT id, run_id, task_id, action, params, http_status, ret_code, message, job_id, started_at, latency_ms
FROM api_calls;

DROP TABLE api_calls;
DROP TABLE tasks;
ALTER TABLE tasks_rebuilt RENAME TO tasks;
ALTER TABLE api_calls_rebuilt RENAME TO api_calls;

CREATE INDEX api_calls_by_run ON api_calls (run_id);
CREATE INDEX api_calls_by_task ON api_calls (task_id);

CREATE INDEX tasks_by_run_state ON tasks (run_id, state);
CREATE INDEX tasks_by_state_account ON tasks (state, cluster, user, host);
-- The per-account questions (is this account live or done in any run?) look tasks up by account.
CREATE INDEX tasks_by_account ON tasks (cluster, user, host);
