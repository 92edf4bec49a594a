CREATE TABLE customers_import (name text NOT NULL, email varchar(64) NOT NULL);
INSERT INTO customers_import (name, email)
SELECT 'Partner ' || g, 'partner' || g || '@example.org'
  FROM generate_series(1, 20) AS g;
INSERT INTO customers (name, email, active)
SELECT name, email, false FROM customers_import;
DROP TABLE customers_import;
