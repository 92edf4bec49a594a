-- Price correction for one product (ticket OPS-1234).
UPDATE products SET price = 12.50 WHERE sku = 'SKU-0042';
