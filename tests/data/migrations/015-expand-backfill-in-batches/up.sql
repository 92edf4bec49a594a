-- Expand: add the column, backfill it in batches, index it without blocking writes.
SET lock_timeout = '2s';
ALTER TABLE customers ADD COLUMN email_lower text;

UPDATE customers SET email_lower = lower(email) WHERE id BETWEEN 1 AND 1000 AND email_lower IS NULL;
UPDATE customers SET email_lower = lower(email) WHERE id BETWEEN 1001 AND 2000 AND email_lower IS NULL;
UPDATE customers SET email_lower = lower(email) WHERE id BETWEEN 2001 AND 3000 AND email_lower IS NULL;

CREATE INDEX CONCURRENTLY customers_email_lower_idx ON customers (email_lower);
