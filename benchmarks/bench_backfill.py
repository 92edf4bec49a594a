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
import json
import os
import signal
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(REPO_ROOT, "scripts"), os.path.join(REPO_ROOT, ".collections")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import benchsandbox  # noqa: E402  (benchmarks/benchsandbox.py: the sandbox life cycle)
import sandbox  # noqa: E402  (scripts/sandbox.py)

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


class SetupError(Exception):
    """The benchmark could not prepare its data (message for humans)."""


def say(message: str) -> None:
    print(message, flush=True)


def bench_config() -> "sandbox.Config":
    base = int(os.environ.get("BENCH_BACKFILL_PORT_BASE") or DEFAULT_PORT_BASE)
    return benchsandbox.config("BENCH_BACKFILL_SANDBOX_DIR", DEFAULT_SANDBOX_DIR, benchsandbox.based_ports(base),
                               app_port=base + len(sandbox.NODES))


def parse_rows(text: str) -> int:
    raw = str(text).strip().lower().replace("_", "")
    factor = 1
    if raw.endswith("k"):
        factor, raw = 1000, raw[:-1]
    elif raw.endswith("m"):
        factor, raw = 1000000, raw[:-1]
    try:
        value = int(float(raw) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r}") from None
    if value < MIN_ROWS:
        raise argparse.ArgumentTypeError(f"ROWS must be at least {MIN_ROWS} (got {value})")
    return value


def connect(cfg, superuser: bool = False):
    import psycopg2

    conn = psycopg2.connect(connect_timeout=10, application_name="bench_backfill", **cfg.params("primary", superuser=superuser))
    conn.autocommit = True
    return conn


def execute(cfg, query: str, superuser: bool = False):
    conn = connect(cfg, superuser)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def prepare(cfg, rows: int) -> None:
    execute(cfg, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; DROP SCHEMA IF EXISTS {SCHEMA}_journal CASCADE; CREATE SCHEMA {SCHEMA}")
    for table in ("single", "batched"):
        started = time.monotonic()
        execute(cfg, DDL.format(schema=SCHEMA, table=table, rows=int(rows)))
        say(f"loaded {rows:,} rows into {SCHEMA}.{table} in {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    # As a production table is: vacuumed (visibility map set), analyzed, on disk.
    execute(cfg, f"VACUUM (FREEZE, ANALYZE) {SCHEMA}.single, {SCHEMA}.batched", superuser=True)
    say(f"VACUUM (FREEZE, ANALYZE) in {time.monotonic() - started:.1f}s")


def checkpoint(cfg) -> None:
    execute(cfg, "CHECKPOINT", superuser=True)
    sandbox.wait_standby_caught_up(cfg, timeout=600)


def measure_single(cfg) -> float:
    conn = connect(cfg)
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
    os.makedirs(os.path.join(directory, "sql"), exist_ok=True)
    with open(os.path.join(directory, "sql", "001_up.sql"), "w") as fh:
        fh.write(f"ALTER TABLE {SCHEMA}.batched ADD COLUMN full_name text;\n")
    with open(os.path.join(directory, "sql", "001_down.sql"), "w") as fh:
        fh.write(f"ALTER TABLE {SCHEMA}.batched DROP COLUMN full_name;\n")
    backfill = {"table": f"{SCHEMA}.batched", "key": "id", "set": SET}
    if batch_size:
        backfill["batch_size"] = int(batch_size)
    manifest = {
        "version": "bench",
        "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": IMAGE}}]},
        "migrations": [{"id": "001_full_name", "up": "sql/001_up.sql", "down": "sql/001_down.sql", "backfill": backfill}],
    }
    path = os.path.join(directory, "release.yml")
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=2)
    return path


def measure_batched(cfg, batch_size) -> tuple:
    from ansible_collections.stateful.rollback.plugins.module_utils.migrate_runner import MigrateFailure, run

    p = cfg.params("primary")
    with tempfile.TemporaryDirectory(prefix="bench_backfill-") as directory:
        params = dict(login_host=p["host"], login_port=int(p["port"]), login_user=p["user"], login_password=p["password"],
                      login_db=p["dbname"], manifest=write_release(directory, batch_size), journal_schema=f"{SCHEMA}_journal")
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
    return execute(cfg, query.format(SCHEMA, "single")) == execute(cfg, query.format(SCHEMA, "batched"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_backfill", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rows", type=parse_rows, default=None, help=f"rows per table (default $ROWS or {DEFAULT_ROWS})")
    parser.add_argument("--batch-size", type=int, default=None, help="backfill batch_size (default $BATCH_SIZE or the manifest's)")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    args = parser.parse_args(argv)
    if args.rows is None:
        try:
            args.rows = parse_rows(os.environ["ROWS"]) if os.environ.get("ROWS") else DEFAULT_ROWS
        except argparse.ArgumentTypeError as exc:
            parser.error(f"ROWS: {exc}")
    if args.batch_size is None and os.environ.get("BATCH_SIZE"):
        args.batch_size = int(os.environ["BATCH_SIZE"])
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")

    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    cfg = bench_config()
    box = benchsandbox.BenchSandbox("bench_backfill", cfg, say)
    if not box.lock():
        return 2
    code = 2
    summary = None
    try:
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
        summary = (f"backfill rows={args.rows} batched_s={batched:.3f} single_update_s={single:.3f} "
                   f"ratio={ratio:.2f} max_lock_ms={max_lock_ms:.1f}")
    except KeyboardInterrupt:
        say("bench_backfill: interrupted")
        code = 130
    except (SetupError, sandbox.SandboxError) as exc:
        say(f"bench_backfill: error: {exc}")
        code = 2
    finally:
        failed = box.finish(keep=args.keep)
        code = code or failed  # the teardown runs whatever the outcome
    if summary:
        print(summary, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
