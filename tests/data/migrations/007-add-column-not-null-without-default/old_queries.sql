INSERT INTO sessions (token, user_id, expires_at) VALUES ($1, $2, $3);
SELECT user_id, expires_at FROM sessions WHERE token = $1;
DELETE FROM sessions WHERE token = $1;
