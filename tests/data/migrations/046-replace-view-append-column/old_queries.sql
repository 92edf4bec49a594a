SELECT order_count, total FROM customer_totals WHERE customer_id = $1;
SELECT * FROM customer_totals ORDER BY total DESC LIMIT 10;
