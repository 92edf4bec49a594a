SELECT order_total($1);
UPDATE orders SET status = $2 WHERE id = $1;
INSERT INTO orders (customer_id, amount) VALUES ($1, $2) RETURNING id;
