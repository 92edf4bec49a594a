SELECT id, status FROM orders WHERE external_ref LIKE $1;
INSERT INTO orders (customer_id, amount, external_ref) VALUES ($1, $2, $3) RETURNING id;
