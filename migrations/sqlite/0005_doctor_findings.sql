-- What `qc-offboard doctor` found out about an endpoint and access key: one row per invocation
-- (a checkup) and one per check. Append-only like the audit log, and every finding is also an
-- audit record (kind `doctor_finding`), so the runner can rely on what it reads here.

CREATE TABLE doctor_checkups (
    id            INTEGER PRIMARY KEY,
    checked_at    TEXT    NOT NULL,
    endpoint      TEXT    NOT NULL,
    access_key_id TEXT    NOT NULL,
    zone          TEXT
);

CREATE INDEX doctor_checkups_target ON doctor_checkups (endpoint, access_key_id, id);

CREATE TABLE doctor_findings (
    checkup_id INTEGER NOT NULL REFERENCES doctor_checkups (id),
    ord        INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('ok', 'warn', 'fail')),
    value      TEXT    NOT NULL,
    summary    TEXT    NOT NULL,
    advice     TEXT,
    detail     TEXT    NOT NULL,
    PRIMARY KEY (checkup_id, ord)
);

CREATE TRIGGER doctor_checkups_no_update BEFORE UPDATE ON doctor_checkups
BEGIN
    SELECT RAISE(ABORT, 'doctor_checkups is append-only: UPDATE refused');
END;

CREATE TRIGGER doctor_checkups_no_delete BEFORE DELETE ON doctor_checkups
BEGIN
    SELECT RAISE(ABORT, 'doctor_checkups is append-only: DELETE refused');
END;

CREATE TRIGGER doctor_findings_no_update BEFORE UPDATE ON doctor_findings
BEGIN
    SELECT RAISE(ABORT, 'doctor_findings is append-only: UPDATE refused');
END;

CREATE TRIGGER doctor_findings_no_delete BEFORE DELETE ON doctor_findings
BEGIN
    SELECT RAISE(ABORT, 'doctor_findings is append-only: DELETE refused');
END;
