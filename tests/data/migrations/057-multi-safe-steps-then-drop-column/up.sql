SET lock_timeout = '2s';

-- 1. new column for v2
ALTER TABLE orders ADD COLUMN channel text;

-- 2. index for v2's lookups
CREATE INDEX CONCURRENTLY orders_channel_idx ON orders (channel);

-- 3. clean-up: v1 stopped using legacy_code two releases ago
ALTER TABLE orders DROP COLUMN legacy_code;
