-- Contract: 3.x reads full_name only. The column and its data are gone for good.
ALTER TABLE customers DROP COLUMN name;
