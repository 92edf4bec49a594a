SET lock_timeout = '3s';
ALTER TABLE customers ALTER COLUMN email TYPE varchar(32);
