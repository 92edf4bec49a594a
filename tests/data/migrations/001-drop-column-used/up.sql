-- v2 no longer shows order notes.
SET lock_timeout = '2s';
ALTER TABLE orders DROP COLUMN note;
