DELETE FROM sessions WHERE expires_at < timestamptz '2024-01-01 00:00:00+00';
