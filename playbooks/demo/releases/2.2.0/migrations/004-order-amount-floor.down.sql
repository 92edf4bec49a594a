ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_amount_floor;
