SET lock_timeout = '3s';
-- now() is stable: one value for the whole statement, no rewrite.
ALTER TABLE customers ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
