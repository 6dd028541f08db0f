-- The per-person evidence report looks up API calls and audit records by task.
CREATE INDEX api_calls_by_task ON api_calls (task_id);
CREATE INDEX audit_log_by_task ON audit_log (task_id);
