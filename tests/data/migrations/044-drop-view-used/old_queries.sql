SELECT order_count, total FROM customer_totals WHERE customer_id = $1;
INSERT INTO orders (customer_id, amount) VALUES ($1, $2) RETURNING id;
