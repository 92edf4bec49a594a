SET lock_timeout = '3s';
ALTER TABLE events DROP CONSTRAINT events_pkey;
