-- Drop the arbitrary length limit.
SET lock_timeout = '2s';
ALTER TABLE customers ALTER COLUMN email TYPE text;
