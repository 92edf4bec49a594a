SELECT order_total($1);
SELECT id, amount FROM orders WHERE customer_id = $1;
