INSERT INTO events (id, kind, payload) VALUES ($1, $2, $3);
SELECT id, kind, payload FROM events WHERE id = $1;
