SET lock_timeout = '2s';
DROP INDEX CONCURRENTLY IF EXISTS orders_created_at_idx;
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_discount_range;
ALTER TABLE orders DROP COLUMN IF EXISTS discount;
DROP TABLE IF EXISTS order_tags;
