SELECT id, number, total, issued_on FROM invoices WHERE number = $1;
INSERT INTO invoices (number, total, issued_on) VALUES ($1, $2, $3) RETURNING id;
UPDATE invoices SET total = $2 WHERE id = $1;
