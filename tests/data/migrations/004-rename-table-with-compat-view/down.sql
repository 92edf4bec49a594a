BEGIN;
SET LOCAL lock_timeout = '2s';
DROP VIEW invoices;
ALTER TABLE bills RENAME TO invoices;
COMMIT;
