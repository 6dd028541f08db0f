-- The doctor's tables are append-only like the audit log: TRUNCATE is refused too (a
-- TRUNCATE ... CASCADE would otherwise empty both at once, past the row triggers).
CREATE TRIGGER doctor_checkups_no_truncate BEFORE TRUNCATE ON doctor_checkups EXECUTE FUNCTION refuse_change();
CREATE TRIGGER doctor_findings_no_truncate BEFORE TRUNCATE ON doctor_findings EXECUTE FUNCTION refuse_change();

-- Records count from 1: a row numbered 0 or below would sit outside every walk of the chain.
ALTER TABLE audit_log ADD CONSTRAINT audit_log_seq_from_one CHECK (seq >= 1);
