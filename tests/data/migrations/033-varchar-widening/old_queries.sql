SELECT id, name, email, active FROM customers WHERE id = $1;
INSERT INTO customers (name, email) VALUES ($1, $2) RETURNING id;
UPDATE customers SET email = $2 WHERE id = $1;
