DELETE FROM customers WHERE email LIKE 'partner%@example.org' AND NOT active;
