SELECT id, customer_id, status, amount, note, created_at FROM orders WHERE id = $1;
SELECT id, status, amount FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20;
INSERT INTO orders (customer_id, amount, note) VALUES ($1, $2, $3) RETURNING id;
UPDATE orders SET status = $2 WHERE id = $1;
