-- Expand: a nullable column the 2.x app reads; filled by the backfill.
ALTER TABLE customers ADD COLUMN full_name text;
