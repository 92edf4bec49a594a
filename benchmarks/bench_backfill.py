#!/usr/bin/env python
"""Backfill benchmark: the migrate module's batched backfill vs one UPDATE of the whole table.

Builds its own PostgreSQL sandbox (primary + physical standby + logical
subscriber, scripts/sandbox.py) in ``<repo>/.sandbox/bench-backfill`` on ports
56630/56631/56632, and in a schema of its own (``bench_backfill``, not
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
import fcntl
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

import sandbox  # noqa: E402  (scripts/sandbox.py)

SCHEMA = "bench_backfill"
DEFAULT_ROWS = 2_000_000
MIN_ROWS = 1000
DEFAULT_PORT_BASE = 56630
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
    environ = {k: v for k, v in os.environ.items() if k.startswith("SANDBOX_")}
    environ["SANDBOX_DIR"] = os.environ.get("BENCH_BACKFILL_SANDBOX_DIR") or DEFAULT_SANDBOX_DIR
    base = int(os.environ.get("BENCH_BACKFILL_PORT_BASE") or DEFAULT_PORT_BASE)
    for offset, node in enumerate(sandbox.NODES):
        environ[sandbox.Config.ENV_VARS[f"{node}_port"]] = str(base + offset)
    environ[sandbox.Config.ENV_VARS["app_port"]] = str(base + len(sandbox.NODES))
    return sandbox.Config.from_env(environ)


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


def start_sandbox(cfg, wait: float = 70.0) -> None:
    """sandbox.up(), retried while a port is briefly busy (TIME_WAIT in the ephemeral range)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            say("starting the sandbox (primary, standby, subscriber)")
            sandbox.up(cfg)
            return
        except sandbox.SandboxConflict as exc:
            if time.monotonic() >= deadline:
                raise
            say(f"{exc} -- retrying in 5s")
            time.sleep(5)


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
    lock_path = os.path.join(tempfile.gettempdir(), "bench_backfill-%s.lock" % hashlib.sha1(cfg.sandbox_dir.encode()).hexdigest()[:12])
    lock = open(lock_path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"bench_backfill: another run is using {cfg.sandbox_dir} (lock {lock_path})", file=sys.stderr)
        return 2
    was_running = sandbox.status(cfg)["all_running"]
    code = 2
    summary = None
    try:
        say(f"bench_backfill: ROWS={args.rows:,} batch_size={args.batch_size or 'manifest default'} sandbox={cfg.sandbox_dir} "
            f"ports {cfg.primary_port}/{cfg.standby_port}/{cfg.subscriber_port}")
        start_sandbox(cfg)
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
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if args.keep:
            say(f"--keep: sandbox left running; stop it with: SANDBOX_DIR={cfg.sandbox_dir} "
                f"SANDBOX_PRIMARY_PORT={cfg.primary_port} SANDBOX_STANDBY_PORT={cfg.standby_port} "
                f"SANDBOX_SUBSCRIBER_PORT={cfg.subscriber_port} scripts/sandbox down")
        elif was_running:
            say(f"the sandbox in {cfg.sandbox_dir} was already running before this run; left it running")
        else:
            try:
                sandbox.down(cfg)
                say(f"sandbox {cfg.sandbox_dir} stopped and removed")
            except sandbox.SandboxError as exc:
                say(f"bench_backfill: could not tear the sandbox down: {exc}")
                code = code or 2
    if summary:
        print(summary, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
