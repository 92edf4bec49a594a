SET lock_timeout = '2s';
ALTER TABLE customers ADD COLUMN email_lower text;
UPDATE customers SET email_lower = lower(email);
CREATE INDEX customers_email_lower_idx ON customers (email_lower);
