UPDATE products SET price = 15.50 WHERE sku = 'SKU-0042';
