SET lock_timeout = '3s';
ALTER TABLE orders DROP CONSTRAINT orders_amount_nonnegative;
