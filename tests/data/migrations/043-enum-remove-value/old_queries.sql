SELECT id, status FROM orders WHERE id = $1;
UPDATE orders SET status = 'cancelled' WHERE id = $1;
