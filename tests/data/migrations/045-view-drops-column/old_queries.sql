SELECT id, name, email FROM active_customers ORDER BY name LIMIT 50;
SELECT email FROM active_customers WHERE id = $1;
