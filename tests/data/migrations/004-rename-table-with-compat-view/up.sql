-- Expand step of a table rename: the old name stays usable as a simple
-- (auto-updatable) view until the old app version is gone.
BEGIN;
SET LOCAL lock_timeout = '2s';
ALTER TABLE invoices RENAME TO bills;
CREATE VIEW invoices AS SELECT id, number, total, issued_on FROM bills;
COMMIT;
