SET lock_timeout = '2s';
CREATE OR REPLACE VIEW customer_totals AS
SELECT customer_id, count(*) AS order_count, sum(amount) AS total, max(created_at) AS last_order_at
  FROM orders
 GROUP BY customer_id;
