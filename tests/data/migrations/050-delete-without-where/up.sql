-- Start the new audit format from scratch.
DELETE FROM audit_log;
