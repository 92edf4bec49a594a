INSERT INTO audit_log (actor, action) VALUES ($1, $2);
SELECT actor, action, logged_at FROM audit_log ORDER BY logged_at DESC LIMIT 50;
