BEGIN;
SET LOCAL lock_timeout = '2s';
DROP VIEW active_customers;
CREATE VIEW active_customers AS
SELECT id, name, email FROM customers WHERE active;
COMMIT;
