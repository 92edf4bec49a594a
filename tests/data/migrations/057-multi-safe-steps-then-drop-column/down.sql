SET lock_timeout = '2s';
ALTER TABLE orders ADD COLUMN legacy_code text;
DROP INDEX CONCURRENTLY orders_channel_idx;
ALTER TABLE orders DROP COLUMN channel;
