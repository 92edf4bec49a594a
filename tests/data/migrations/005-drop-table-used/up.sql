-- Auditing moves to the event stream in v2.
DROP TABLE audit_log;
