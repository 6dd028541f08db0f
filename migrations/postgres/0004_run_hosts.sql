-- Per-host leases of a live run (PostgreSQL only; the SQLite store keeps its single run lock).
-- Every runner process working on a run holds one row here, which it extends while it works and
-- deletes when it leaves: a run is live while one of its rows has `lease_until` ahead of the
-- database's clock. `run` refuses to start a run while another run is live (as the run lock
-- does), and `resume RUN_ID` on another host joins a live run instead of refusing.
CREATE TABLE run_hosts (
    owner       TEXT        PRIMARY KEY,
    run_id      BIGINT      NOT NULL REFERENCES runs (id),
    host        TEXT        NOT NULL,
    pid         BIGINT      NOT NULL,
    joined_at   TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);

CREATE INDEX run_hosts_by_run ON run_hosts (run_id);
