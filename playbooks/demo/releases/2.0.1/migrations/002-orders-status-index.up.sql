-- Built without blocking writes (runs outside a transaction).
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_status_idx ON orders (status);
