SET lock_timeout = '2s';
DROP INDEX customers_email_lower_idx;
ALTER TABLE customers DROP COLUMN email_lower;
