SET lock_timeout = '3s';
ALTER TABLE orders ADD COLUMN priority integer NOT NULL DEFAULT 0;
