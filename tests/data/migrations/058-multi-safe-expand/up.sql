SET lock_timeout = '2s';
SET statement_timeout = '5min';

CREATE TABLE order_tags (
    order_id  bigint NOT NULL,
    tag       text NOT NULL,
    PRIMARY KEY (order_id, tag)
);
CREATE INDEX order_tags_tag_idx ON order_tags (tag);

ALTER TABLE orders ADD COLUMN discount numeric(12,2);
ALTER TABLE orders ADD CONSTRAINT orders_discount_range
    CHECK (discount IS NULL OR discount BETWEEN 0 AND amount) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_discount_range;

CREATE INDEX CONCURRENTLY orders_created_at_idx ON orders (created_at);
