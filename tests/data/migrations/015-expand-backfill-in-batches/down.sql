DROP INDEX CONCURRENTLY IF EXISTS customers_email_lower_idx;
SET lock_timeout = '2s';
ALTER TABLE customers DROP COLUMN email_lower;
