SET lock_timeout = '3s';
ALTER TABLE orders ALTER COLUMN customer_id SET NOT NULL;
