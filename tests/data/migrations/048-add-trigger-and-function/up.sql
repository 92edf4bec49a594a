CREATE FUNCTION orders_touch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

SET lock_timeout = '2s';
ALTER TABLE orders ADD COLUMN updated_at timestamptz;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_touch();
-- A replacement with the same signature and result type is compatible.
CREATE OR REPLACE FUNCTION order_total(p_customer bigint) RETURNS numeric
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum(amount), 0) FROM orders WHERE customer_id = p_customer AND status <> 'cancelled' $$;
