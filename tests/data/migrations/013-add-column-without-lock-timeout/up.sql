ALTER TABLE orders ADD COLUMN coupon_code text;
