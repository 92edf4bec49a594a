-- Wrong on purpose: existing orders are below the new floor, so validation fails.
ALTER TABLE orders ADD CONSTRAINT orders_amount_floor CHECK (amount >= 100);
