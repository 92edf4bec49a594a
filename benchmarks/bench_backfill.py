#!/usr/bin/env python
"""Backfill benchmark: the migrate module's batched backfill vs one UPDATE of the whole table.

Builds its own PostgreSQL sandbox (primary + physical standby + logical
subscriber, scripts/sandbox.py) in ``<repo>/.sandbox/bench-backfill`` on ports
27630/27631/27632, and in a schema of its own (``bench_backfill``, not
published to the subscriber; the standby replays everything) two identical
fresh tables of ROWS rows (default 2M)::

    CREATE TABLE bench_backfill.<t> (id bigint PRIMARY KEY, first_name text, last_name text,
                                     email text, created_at timestamptz, note text)

Then, on each table once (autovacuum off on both so it cannot favour the
second; CHECKPOINT before each measurement):

``single_update``  ALTER TABLE ... ADD COLUMN full_name text;
                   UPDATE ... SET full_name = first_name || ' ' || last_name   -- one transaction
``batched``        migrate_runner.run(state=applied) of a release whose one
                   migration adds the column and backfills it
                   (key id, batch_size BATCH_SIZE, default the manifest's 5000,
                   no max_rows_per_second), journal and runner lock included.

Both end with the same data (checked). The last line printed is::

    backfill rows=N batched_s=… single_update_s=… ratio=… max_lock_ms=…

ratio = batched_s / single_update_s (target: at most 1.5); max_lock_ms is the
longest batch transaction, i.e. the longest time a row lock was held (the
single UPDATE holds every row's lock for single_update_s).

Usage::

    .venv/bin/python benchmarks/bench_backfill.py [--rows N] [--batch-size N] [--keep]
    make bench-backfill                          # ROWS=200000 make bench-backfill

Environment: ``ROWS``, ``BATCH_SIZE``, ``BENCH_BACKFILL_SANDBOX_DIR``,
``BENCH_BACKFILL_PORT_BASE`` (primary; standby +1, subscriber +2, demo app +3). Exit
status 0 when both tables end equal (a missed target is a note), 1 when they
differ, 2 on a setup error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

import benchsandbox  # benchmarks/benchsandbox.py: the sandbox life cycle; puts scripts/ and .collections/ on sys.path
import sandbox  # noqa: E402  (scripts/sandbox.py)

REPO_ROOT = benchsandbox.REPO_ROOT

SCHEMA = "bench_backfill"
DEFAULT_ROWS = 2_000_000
MIN_ROWS = 1000
DEFAULT_PORT_BASE = 27630
DEFAULT_SANDBOX_DIR = os.path.join(REPO_ROOT, ".sandbox", "bench-backfill")
TARGET_RATIO = 1.5
SET = "full_name = first_name || ' ' || last_name"
IMAGE = "registry.example/bench@sha256:" + hashlib.sha256(b"bench_backfill").hexdigest()

DDL = """
CREATE TABLE {schema}.{table} (id bigint PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
                               email text, created_at timestamptz, note text)
WITH (autovacuum_enabled = false);
INSERT INTO {schema}.{table}
SELECT g, 'first' || (g % 5003), 'last' || (g % 997), 'user' || g || '@example.com',
       timestamptz '2024-01-01 00:00:00+00' + g * interval '13 seconds',
       CASE WHEN g % 7 = 0 THEN NULL ELSE md5(g::text) END
  FROM generate_series(1::bigint, {rows}::bigint) AS g;
"""


SetupError = benchsandbox.SetupError
say = benchsandbox.say
PG = benchsandbox.Postgres("bench_backfill")
parse_rows = benchsandbox.counter(MIN_ROWS, "ROWS", noun="a row count")


def bench_config() -> "sandbox.Config":
    base = int(os.environ.get("BENCH_BACKFILL_PORT_BASE") or DEFAULT_PORT_BASE)
    return benchsandbox.config("BENCH_BACKFILL_SANDBOX_DIR", DEFAULT_SANDBOX_DIR, benchsandbox.based_ports(base),
                               app_port=base + len(sandbox.NODES))


def prepare(cfg, rows: int) -> None:
    PG.query(cfg, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; DROP SCHEMA IF EXISTS {SCHEMA}_journal CASCADE; CREATE SCHEMA {SCHEMA}")
    for table in ("single", "batched"):
        started = time.monotonic()
        PG.query(cfg, DDL.format(schema=SCHEMA, table=table, rows=int(rows)))
        say(f"loaded {rows:,} rows into {SCHEMA}.{table} in {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    # As a production table is: vacuumed (visibility map set), analyzed, on disk.
    PG.query(cfg, f"VACUUM (FREEZE, ANALYZE) {SCHEMA}.single, {SCHEMA}.batched", superuser=True)
    say(f"VACUUM (FREEZE, ANALYZE) in {time.monotonic() - started:.1f}s")


def checkpoint(cfg) -> None:
    PG.query(cfg, "CHECKPOINT", superuser=True)
    sandbox.wait_standby_caught_up(cfg, timeout=600)


def measure_single(cfg) -> float:
    conn = PG.connect(cfg)
    try:
        with conn.cursor() as cur:
            started = time.monotonic()
            cur.execute("BEGIN")
            cur.execute(f"ALTER TABLE {SCHEMA}.single ADD COLUMN full_name text")
            cur.execute(f"UPDATE {SCHEMA}.single SET {SET}")
            cur.execute("COMMIT")
            return time.monotonic() - started
    finally:
        conn.close()


def write_release(directory: str, batch_size) -> str:
    backfill = {"table": f"{SCHEMA}.batched", "key": "id", "set": SET}
    if batch_size:
        backfill["batch_size"] = int(batch_size)
    migration = {"id": "001_full_name", "up": "sql/001_up.sql", "down": "sql/001_down.sql", "backfill": backfill}
    return benchsandbox.write_release(directory, "bench", IMAGE, migration, f"ALTER TABLE {SCHEMA}.batched ADD COLUMN full_name text;\n",
                                      f"ALTER TABLE {SCHEMA}.batched DROP COLUMN full_name;\n")


def measure_batched(cfg, batch_size) -> tuple:
    from ansible_collections.stateful.rollback.plugins.module_utils.migrate_runner import MigrateFailure, run

    with tempfile.TemporaryDirectory(prefix="bench_backfill-") as directory:
        params = dict(benchsandbox.login_options(cfg), manifest=write_release(directory, batch_size), journal_schema=f"{SCHEMA}_journal")
        started = time.monotonic()
        try:
            result = run(params)
        except MigrateFailure as exc:
            raise SetupError(f"the batched backfill failed: {exc.msg}") from None
        elapsed = time.monotonic() - started
    step = [s for s in result["steps"] if s["phase"] == "backfill"][0]
    return elapsed, result["max_batch_ms"], step


def same_data(cfg) -> bool:
    query = "SELECT count(*), sum(hashtextextended(id::text || ':' || coalesce(full_name, '<null>'), 0)) FROM {}.{}"
    return PG.query(cfg, query.format(SCHEMA, "single")) == PG.query(cfg, query.format(SCHEMA, "batched"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_backfill", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rows", type=parse_rows, default=None, help=f"rows per table (default $ROWS or {DEFAULT_ROWS})")
    parser.add_argument("--batch-size", type=int, default=None, help="backfill batch_size (default $BATCH_SIZE or the manifest's)")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    args = parser.parse_args(argv)
    args.rows = benchsandbox.from_env(parser, args.rows, "ROWS", parse_rows, DEFAULT_ROWS)
    args.batch_size = benchsandbox.from_env(parser, args.batch_size, "BATCH_SIZE", int, None)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")

    benchsandbox.interrupt_on_signals()
    cfg = bench_config()
    box = benchsandbox.BenchSandbox("bench_backfill", cfg, say)

    def body():
        say(f"bench_backfill: ROWS={args.rows:,} batch_size={args.batch_size or 'manifest default'} sandbox={cfg.sandbox_dir} "
            f"ports {cfg.primary_port}/{cfg.standby_port}/{cfg.subscriber_port}")
        say("starting the sandbox (primary, standby, subscriber)")
        box.start()
        prepare(cfg, args.rows)
        checkpoint(cfg)
        single = measure_single(cfg)
        say(f"single UPDATE:      {single:8.3f}s (every row locked for all of it)")
        checkpoint(cfg)
        batched, max_lock_ms, step = measure_batched(cfg, args.batch_size)
        say(f"batched backfill:   {batched:8.3f}s ({step['batches']} batches of {step['batch_size']}, "
            f"{step['rows_processed']:,} rows, longest batch {max_lock_ms:.1f} ms)")
        if step["rows_processed"] != args.rows:
            raise SetupError(f"the backfill updated {step['rows_processed']} rows, not {args.rows}")
        code = 0
        if not same_data(cfg):
            say("FAILED: the two tables differ after the backfill")
            code = 1
        ratio = batched / single
        say(f"note: target {'met' if ratio <= TARGET_RATIO else 'NOT met'} (ratio {ratio:.2f}, target <= {TARGET_RATIO})")
        return code, [f"backfill rows={args.rows} batched_s={batched:.3f} single_update_s={single:.3f} "
                      f"ratio={ratio:.2f} max_lock_ms={max_lock_ms:.1f}"]

    return box.run(body, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
