-- Base schema: what the old app version runs against.

CREATE TABLE sessions (
    token       text PRIMARY KEY,
    user_id     bigint NOT NULL,
    expires_at  timestamptz NOT NULL
);

INSERT INTO sessions (token, user_id, expires_at)
SELECT md5(g::text), 1 + g % 300, timestamptz '2023-12-01 00:00:00+00' + g * interval '15 minutes'
  FROM generate_series(1, 5000) AS g;

ANALYZE;
