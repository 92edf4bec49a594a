SET lock_timeout = '2s';
DROP VIEW customer_totals;
CREATE VIEW customer_totals AS
SELECT customer_id, count(*) AS order_count, sum(amount) AS total
  FROM orders
 GROUP BY customer_id;
