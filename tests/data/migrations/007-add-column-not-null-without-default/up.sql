SET lock_timeout = '3s';
ALTER TABLE sessions ADD COLUMN device text NOT NULL;
