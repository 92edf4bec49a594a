BEGIN;
SET LOCAL lock_timeout = '2s';
ALTER TYPE order_status ADD VALUE 'refunded';
COMMIT;
