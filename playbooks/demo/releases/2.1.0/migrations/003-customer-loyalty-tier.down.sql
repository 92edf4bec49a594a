ALTER TABLE customers DROP COLUMN loyalty_tier;
