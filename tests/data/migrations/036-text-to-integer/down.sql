SET lock_timeout = '3s';
ALTER TABLE orders ALTER COLUMN external_ref TYPE text;
