SET lock_timeout = '3s';
ALTER TABLE sessions DROP COLUMN device;
