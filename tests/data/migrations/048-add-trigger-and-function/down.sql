SET lock_timeout = '2s';
DROP TRIGGER orders_touch ON orders;
ALTER TABLE orders DROP COLUMN updated_at;
DROP FUNCTION orders_touch();
CREATE OR REPLACE FUNCTION order_total(p_customer bigint) RETURNS numeric
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum(amount), 0) FROM orders WHERE customer_id = p_customer $$;
