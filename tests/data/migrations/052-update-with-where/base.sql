-- Base schema: what the old app version runs against.

CREATE TABLE products (
    sku    text PRIMARY KEY,
    title  text NOT NULL,
    price  numeric(10,2) NOT NULL
);

INSERT INTO products (sku, title, price)
SELECT 'SKU-' || lpad(g::text, 4, '0'), 'Product ' || g, 5 + g * 0.25
  FROM generate_series(1, 1000) AS g;

ANALYZE;
