#!/usr/bin/env python
"""Load benchmark: what a running backfill (and a parity check beside it) costs the application's writes.

Builds its own sandbox (scripts/sandbox.py: kubesim, primary, streaming standby, logical subscriber) in
``<repo>/.sandbox/bench-load`` on ports 28760/28761/28762 (``BENCH_LOAD_SANDBOX_DIR``,
``BENCH_LOAD_PORT_BASE``), grows the demo ``orders`` table to ROWS rows (default 300,000), then drives write
load on the primary with pgbench (the PostgreSQL server package's own, on 127.0.0.1 only) for DURATION
seconds (default 20) twice:

``base``      the load alone;
``backfill``  the same load while ``migrate`` (``migrate_runner.run``, as the module runs it) applies a release
              whose migration adds ``orders.amount_cents`` (on the subscriber first, schema only, as the migrate
              role does) and backfills it in batches (``BATCH_SIZE``, ``MAX_ROWS_PER_SECOND``, gated on
              ``max_replica_lag_bytes``), and ``replication_parity mode=parity`` checks the primary against the
              standby and the subscriber.

The load is the shop's write path, one transaction per pgbench transaction: a new order, and a status change
of a random existing order (rows the backfill also updates, so the row locks of its batches are felt).

tps during the backfill counts only the seconds in which the backfill ran (pgbench's per-second progress), so
a backfill that ends early does not flatter the ratio. Also reported: the largest replica lag (bytes) seen
every 0.2 s beside the backfill's gating threshold, and the differences the parity check reported (all false:
nothing diverges; a parity check that could not settle under the load is reported too). Last line::

    load tps_base=… tps_during_backfill=… ratio=… false_diffs=0

ratio = tps_during_backfill / tps_base (target: at least 0.70).

Usage::

    make bench-load                        # ROWS=300000 DURATION=20 BATCH_SIZE=500 (MAX_ROWS_PER_SECOND=5000)
    .venv/bin/python benchmarks/bench_load.py --rows 100k --duration 10 --keep

Exit status 0 when the backfill and the parity check were right (a missed ratio target is a note), 1 when the
parity check reported differences or the backfill left rows unfilled, 2 on a setup error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(REPO_ROOT, "scripts"), os.path.join(REPO_ROOT, ".collections")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import benchsandbox  # noqa: E402  (benchmarks/benchsandbox.py: the sandbox life cycle)
import sandbox  # noqa: E402  (scripts/sandbox.py)

DEFAULT_ROWS = 300_000
DEFAULT_DURATION = 20
DEFAULT_PORT_BASE = 28760
DEFAULT_SANDBOX_DIR = os.path.join(REPO_ROOT, ".sandbox", "bench-load")
DEFAULT_BATCH_SIZE = 500
DEFAULT_MAX_ROWS_PER_SECOND = 5000
LAG_THRESHOLD = 16 * 1024 * 1024
CLIENTS = 4
TARGET_RATIO = 0.70
IMAGE = "registry.example/shop@sha256:" + hashlib.sha256(b"bench_load").hexdigest()

LOAD_SCRIPT = """\\set cid random(1, 1000)
\\set oid random(1, {max_id})
BEGIN;
INSERT INTO orders (customer_id, amount, status) VALUES (:cid, 19.90, 'new');
UPDATE orders SET status = 'paid' WHERE id = :oid;
END;
"""


class SetupError(Exception):
    """The benchmark could not prepare its data (message for humans)."""


def say(message: str) -> None:
    print(message, flush=True)


def bench_config() -> "sandbox.Config":
    base = int(os.environ.get("BENCH_LOAD_PORT_BASE") or DEFAULT_PORT_BASE)
    return benchsandbox.config("BENCH_LOAD_SANDBOX_DIR", DEFAULT_SANDBOX_DIR, benchsandbox.based_ports(base),
                               app_port=base + 5, drop_env_ports=True)


def parse_count(text: str, minimum: int = 1) -> int:
    raw = str(text).strip().lower().replace("_", "")
    factor = {"k": 1000, "m": 1000000}.get(raw[-1:], 1)
    try:
        value = int(float(raw[:-1] if factor > 1 else raw) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum} (got {value})")
    return value


def connect(cfg, node: str = "primary", superuser: bool = True):
    import psycopg2

    conn = psycopg2.connect(connect_timeout=10, application_name="bench_load", **cfg.params(node, superuser=superuser))
    conn.autocommit = True
    return conn


def query(cfg, sql: str, node: str = "primary", params=None):
    conn = connect(cfg, node)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def options(cfg, node: str = "primary") -> dict:
    p = cfg.params(node)
    return dict(login_host=p["host"], login_port=int(p["port"]), login_user=p["user"], login_password=p["password"],
                login_db=p["dbname"])


# -- data ---------------------------------------------------------------------------------------------
def prepare(cfg, rows: int) -> int:
    """orders grown to ``rows`` rows (new rows on the primary, replicated), without amount_cents. Returns max(id)."""
    for node in ("subscriber", "primary"):
        query(cfg, "DROP SCHEMA IF EXISTS stateful_rollback CASCADE; ALTER TABLE orders DROP COLUMN IF EXISTS amount_cents", node)
    have = query(cfg, "SELECT count(*) FROM orders")[0][0]
    if have < rows:
        say(f"growing orders from {have:,} to {rows:,} rows")
        query(cfg, "INSERT INTO orders (customer_id, amount, status, placed_at) "
                   "SELECT 1 + (g * 7919) %% 1000, round((5 + (g * 37) %% 99500 / 100.0)::numeric, 2), "
                   "(ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g %% 4], "
                   "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' "
                   "FROM generate_series(1::bigint, %s::bigint) g", params=(rows - have,))
    query(cfg, "VACUUM ANALYZE orders")
    query(cfg, "CHECKPOINT")
    sandbox.wait_standby_caught_up(cfg, timeout=600)
    sandbox.wait_subscriber_caught_up(cfg, timeout=900)
    return query(cfg, "SELECT max(id) FROM orders")[0][0]


def write_release(directory: str, batch_size: int, rate: float) -> str:
    os.makedirs(os.path.join(directory, "sql"), exist_ok=True)
    with open(os.path.join(directory, "sql", "up.sql"), "w", encoding="utf-8") as fh:
        fh.write("ALTER TABLE orders ADD COLUMN IF NOT EXISTS amount_cents bigint;\n")
    with open(os.path.join(directory, "sql", "down.sql"), "w", encoding="utf-8") as fh:
        fh.write("ALTER TABLE orders DROP COLUMN IF EXISTS amount_cents;\n")
    backfill = {"table": "public.orders", "key": "id", "set": "amount_cents = (amount * 100)::bigint",
                "where": "amount_cents IS NULL", "batch_size": batch_size, "max_replica_lag_bytes": LAG_THRESHOLD}
    if rate:
        backfill["max_rows_per_second"] = rate
    manifest = {"version": "9.9.0", "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": IMAGE}}]},
                "migrations": [{"id": "001-orders-amount-cents", "up": "sql/up.sql", "down": "sql/down.sql", "backfill": backfill}]}
    path = os.path.join(directory, "release.yml")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    return path


# -- load ---------------------------------------------------------------------------------------------
def pgbench(cfg, script: str, duration: int) -> subprocess.Popen:
    binary = os.path.join(sandbox.find_bindir(cfg), "pgbench")
    p = cfg.params("primary")
    env = dict(os.environ, PGPASSWORD=p["password"], PGAPPNAME="bench_load")
    cmd = [binary, "-n", "-h", p["host"], "-p", str(p["port"]), "-U", p["user"], "-c", str(CLIENTS), "-j", "2",
           "-T", str(duration), "-P", "1", "-f", script, p["dbname"]]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_pgbench(proc: subprocess.Popen, started: float):
    """(overall tps, [(second end, tps)]) from pgbench's summary and its per-second progress lines."""
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SetupError(f"pgbench failed ({proc.returncode}): {(err or out).strip()[-2000:]}")
    overall = re.search(r"^tps = ([0-9.]+)", out, re.M)
    if not overall:
        raise SetupError(f"pgbench printed no tps: {out[-2000:]}")
    seconds = [(started + float(m.group(1)), float(m.group(2)))
               for m in re.finditer(r"^progress: ([0-9.]+) s, ([0-9.]+) tps", err, re.M)]
    return float(overall.group(1)), seconds


class LagSampler(threading.Thread):
    """The largest replay lag (bytes) of the primary's replicas, every 0.2 s."""

    def __init__(self, cfg):
        super().__init__(daemon=True)
        self.cfg = cfg
        self.max_lag = 0
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = connect(self.cfg)
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    cur.execute("SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(replay_lsn, flush_lsn))) "
                                "FROM pg_stat_replication")
                    self.max_lag = max(self.max_lag, int(cur.fetchone()[0] or 0))
                    cur.execute("SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) "
                                "FROM pg_replication_slots WHERE slot_type = 'logical'")
                    self.max_lag = max(self.max_lag, int(cur.fetchone()[0] or 0))
                    self.stop.wait(0.2)
            conn.close()
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc


def run_backfill(cfg, manifest: str, box: dict) -> None:
    from ansible_collections.stateful.rollback.plugins.module_utils.migrate_runner import MigrateFailure, run

    try:
        run(dict(options(cfg, "subscriber"), manifest=manifest, backfill=False))  # the schema step, as the role does
        box["started"] = time.monotonic()
        result = run(dict(options(cfg), manifest=manifest))
        box["ended"] = time.monotonic()
        box["step"] = [s for s in result["steps"] if s.get("phase") == "backfill"][0]
    except MigrateFailure as exc:
        box["error"] = exc.args[0]
    except Exception as exc:  # pylint: disable=broad-except
        box["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        box.setdefault("ended", time.monotonic())


def run_parity(cfg, box: dict) -> None:
    from ansible_collections.stateful.rollback.plugins.module_utils import parity_runner

    replicas = [dict(name=n, login_host=cfg.params(n)["host"], login_port=int(cfg.params(n)["port"])) for n in ("standby", "subscriber")]
    started = time.monotonic()
    try:
        result = parity_runner.run(dict(options(cfg), mode="parity", replicas=replicas, tables=["public.orders", "public.customers"],
                                        settle_timeout=60, fail_on_difference=False))
    except parity_runner.ParityFailure as exc:
        result = dict(exc.result, error=exc.msg)
    box["seconds"] = time.monotonic() - started
    box["result"] = result


# -- main ---------------------------------------------------------------------------------------------
def measure(cfg, args) -> dict:
    max_id = prepare(cfg, args.rows)
    work = tempfile.mkdtemp(prefix="bench_load-")
    script = os.path.join(work, "load.sql")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(LOAD_SCRIPT.format(max_id=max_id))
    manifest = write_release(os.path.join(work, "release"), args.batch_size, args.max_rows_per_second)

    say(f"base: pgbench -c {CLIENTS} for {args.duration}s (new order + status change of a random order)")
    started = time.monotonic()
    tps_base = finish_pgbench(pgbench(cfg, script, args.duration), started)[0]
    say(f"base: {tps_base:.1f} tps")
    sandbox.wait_standby_caught_up(cfg, timeout=300)
    sandbox.wait_subscriber_caught_up(cfg, timeout=300)

    say(f"backfill: the same load while migrate backfills orders.amount_cents (batch_size={args.batch_size}, "
        f"max_rows_per_second={args.max_rows_per_second or 'none'}, max_replica_lag_bytes={LAG_THRESHOLD}) "
        f"and replication_parity checks the replicas")
    lag = LagSampler(cfg)
    lag.start()
    backfill, parity = {}, {}
    threads = [threading.Thread(target=run_backfill, args=(cfg, manifest, backfill), daemon=True)]
    threads[0].start()
    # The load starts with the backfill itself (after the subscriber's schema step), the parity check a second later.
    while "started" not in backfill and "error" not in backfill:
        time.sleep(0.05)
    started = time.monotonic()
    load = pgbench(cfg, script, args.duration)
    time.sleep(1.0)
    threads.append(threading.Thread(target=run_parity, args=(cfg, parity), daemon=True))
    threads[1].start()
    tps_all, seconds = finish_pgbench(load, started)
    for thread in threads:
        thread.join(timeout=1800)
    lag.stop.set()
    lag.join(timeout=10)
    if "error" in backfill:
        raise SetupError(f"the backfill failed: {backfill['error']}")
    sandbox.wait_standby_caught_up(cfg, timeout=300)
    sandbox.wait_subscriber_caught_up(cfg, timeout=300)
    # The base again, after the backfill: the machine's own load drifts; the mean of both is the base.
    started = time.monotonic()
    tps_after = finish_pgbench(pgbench(cfg, script, args.duration), started)[0]
    say(f"base again after the backfill: {tps_after:.1f} tps")
    tps_before = tps_base
    tps_base = (tps_before + tps_after) / 2
    window = [tps for end, tps in seconds if backfill["started"] < end <= backfill["ended"] + 1.0]
    tps_during = sum(window) / len(window) if window else tps_all
    step = backfill["step"]
    unfilled = query(cfg, "SELECT count(*) FROM orders WHERE amount_cents IS NULL AND id <= %s", params=(max_id,))[0][0]
    presult = parity.get("result") or {}
    false_diffs = int(presult.get("difference_count") or 0)
    return {
        "rows": args.rows, "duration": args.duration, "tps_base": tps_base, "tps_before": tps_before, "tps_after": tps_after,
        "tps_during": tps_during,
        "tps_whole_run": tps_all, "seconds_counted": len(window), "backfill_seconds": backfill["ended"] - backfill["started"],
        "backfill_rows": step["rows_processed"], "batches": step["batches"], "max_batch_ms": step["max_batch_ms"],
        "lag_wait_seconds": step.get("lag_wait_seconds"), "max_lag": lag.max_lag, "lag_error": lag.error,
        "parity_in_sync": presult.get("in_sync"), "parity_error": presult.get("error"), "parity_seconds": parity.get("seconds"),
        "false_diffs": false_diffs, "unfilled": unfilled,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_load", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rows", type=parse_count, default=None, help=f"orders rows (default $ROWS or {DEFAULT_ROWS})")
    parser.add_argument("--duration", type=int, default=None, help=f"seconds of load per phase (default $DURATION or {DEFAULT_DURATION})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"backfill batch_size (default $BATCH_SIZE or {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--max-rows-per-second", type=float, default=None,
                        help=f"backfill rate limit, 0 = none (default $MAX_ROWS_PER_SECOND or {DEFAULT_MAX_ROWS_PER_SECOND})")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    args = parser.parse_args(argv)
    try:
        args.rows = args.rows or parse_count(os.environ.get("ROWS") or DEFAULT_ROWS, 1000)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"ROWS: {exc}")
    args.duration = args.duration or int(os.environ.get("DURATION") or DEFAULT_DURATION)
    args.batch_size = args.batch_size or int(os.environ.get("BATCH_SIZE") or DEFAULT_BATCH_SIZE)
    if args.max_rows_per_second is None:
        args.max_rows_per_second = float(os.environ.get("MAX_ROWS_PER_SECOND") or DEFAULT_MAX_ROWS_PER_SECOND)
    if args.duration < 3 or args.batch_size < 1 or args.max_rows_per_second < 0:
        parser.error("--duration must be at least 3, --batch-size at least 1, --max-rows-per-second not negative")

    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    cfg = bench_config()
    box = benchsandbox.BenchSandbox("bench_load", cfg, say)
    if not box.lock():
        return 2
    code = 2
    summary = None
    try:
        say(f"bench_load: ROWS={args.rows:,} DURATION={args.duration}s sandbox={cfg.sandbox_dir} "
            f"ports {cfg.primary_port}/{cfg.standby_port}/{cfg.subscriber_port}")
        say("starting the sandbox (kubesim, primary on its PVC, standby, subscriber)")
        box.start(what="kubesim, primary on its PVC, standby, subscriber")
        r = measure(cfg, args)
        ratio = r["tps_during"] / r["tps_base"] if r["tps_base"] else 0.0
        say(f"base: {r['tps_base']:.1f} tps (mean of {r['tps_before']:.1f} before and {r['tps_after']:.1f} after the backfill)")
        say(f"backfill: {r['backfill_rows']:,} rows in {r['backfill_seconds']:.1f}s ({r['batches']} batches, longest "
            f"{r['max_batch_ms']:.0f} ms, waited {r['lag_wait_seconds'] or 0:.1f}s for replica lag); "
            f"{r['tps_during']:.1f} tps over the {r['seconds_counted']} s it ran ({r['tps_whole_run']:.1f} over the whole phase)")
        say(f"replica lag: max {r['max_lag']:,} bytes vs the gating threshold {LAG_THRESHOLD:,} "
            f"({'under' if r['max_lag'] <= LAG_THRESHOLD else 'OVER'})" + (f"; sampler error: {r['lag_error']}" if r["lag_error"] else ""))
        say(f"parity during the backfill: in_sync={r['parity_in_sync']} differences={r['false_diffs']} in "
            f"{r['parity_seconds'] or 0:.1f}s" + (f" ({r['parity_error']})" if r["parity_error"] else ""))
        code = 0
        if r["false_diffs"]:
            say(f"FAILED: the parity check reported {r['false_diffs']} differences; nothing diverged")
            code = 1
        if r["unfilled"]:
            say(f"FAILED: {r['unfilled']} rows left unfilled by the backfill")
            code = 1
        say(f"note: target {'met' if ratio >= TARGET_RATIO else 'NOT met'} (ratio {ratio:.2f}, target >= {TARGET_RATIO})")
        summary = f"load tps_base={r['tps_base']:.1f} tps_during_backfill={r['tps_during']:.1f} ratio={ratio:.2f} false_diffs={r['false_diffs']}"
    except KeyboardInterrupt:
        say("bench_load: interrupted")
        code = 130
    except (SetupError, sandbox.SandboxError) as exc:
        say(f"bench_load: error: {exc}")
        code = 2
    except Exception as exc:  # pylint: disable=broad-except
        say(f"bench_load: error: {type(exc).__name__}: {str(exc).strip()}")
        code = 2
    finally:
        failed = box.finish(keep=args.keep, hint_extra=f" SANDBOX_APP_PORT={cfg.app_port}")
        code = code or failed  # the teardown runs whatever the outcome
    if summary:
        print(summary, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
