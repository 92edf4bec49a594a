SELECT id, status FROM orders WHERE id = $1;
UPDATE orders SET status = 'shipped' WHERE id = $1;
SELECT count(*) FROM orders WHERE status = 'shipped';
