-- Base schema: what the old app version runs against.

CREATE TABLE events (
    id          bigint,
    kind        text NOT NULL,
    payload     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO events (id, kind, payload, created_at)
SELECT g, (ARRAY['click', 'view', 'buy'])[1 + g % 3], jsonb_build_object('n', g),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '5 seconds'
  FROM generate_series(1, 5000) AS g;

ANALYZE;
