SELECT user_id, expires_at FROM sessions WHERE token = $1;
INSERT INTO sessions (token, user_id, expires_at) VALUES ($1, $2, $3);
