SELECT title, price FROM products WHERE sku = $1;
UPDATE products SET price = $2 WHERE sku = $1;
