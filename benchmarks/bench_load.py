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
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import benchsandbox  # benchmarks/benchsandbox.py: the sandbox life cycle; puts scripts/ and .collections/ on sys.path
import sandbox  # noqa: E402  (scripts/sandbox.py)

REPO_ROOT = benchsandbox.REPO_ROOT

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


SetupError = benchsandbox.SetupError
say = benchsandbox.say
PG = benchsandbox.Postgres("bench_load", superuser=True)
query = PG.query


def bench_config() -> "sandbox.Config":
    base = int(os.environ.get("BENCH_LOAD_PORT_BASE") or DEFAULT_PORT_BASE)
    return benchsandbox.config("BENCH_LOAD_SANDBOX_DIR", DEFAULT_SANDBOX_DIR, benchsandbox.based_ports(base),
                               app_port=base + 5, drop_env_ports=True)


options = benchsandbox.login_options


# -- data ---------------------------------------------------------------------------------------------
def prepare(cfg, rows: int) -> int:
    """orders grown to ``rows`` rows (new rows on the primary, replicated), without amount_cents. Returns max(id)."""
    for node in ("subscriber", "primary"):
        query(cfg, "DROP SCHEMA IF EXISTS stateful_rollback CASCADE; ALTER TABLE orders DROP COLUMN IF EXISTS amount_cents", node=node)
    have = query(cfg, "SELECT count(*) FROM orders")[0][0]
    if have < rows:
        say(f"growing orders from {have:,} to {rows:,} rows")
        query(cfg, benchsandbox.GROW_ORDERS_SQL, {"customers": 1000, "missing": rows - have, "step": "1 minute"})
    query(cfg, "VACUUM ANALYZE orders")
    query(cfg, "CHECKPOINT")
    sandbox.wait_standby_caught_up(cfg, timeout=600)
    sandbox.wait_subscriber_caught_up(cfg, timeout=900)
    return query(cfg, "SELECT max(id) FROM orders")[0][0]


def write_release(directory: str, batch_size: int, rate: float) -> str:
    backfill = {"table": "public.orders", "key": "id", "set": "amount_cents = (amount * 100)::bigint",
                "where": "amount_cents IS NULL", "batch_size": batch_size, "max_replica_lag_bytes": LAG_THRESHOLD}
    if rate:
        backfill["max_rows_per_second"] = rate
    migration = {"id": "001-orders-amount-cents", "up": "sql/up.sql", "down": "sql/down.sql", "backfill": backfill}
    return benchsandbox.write_release(directory, "9.9.0", IMAGE, migration, "ALTER TABLE orders ADD COLUMN IF NOT EXISTS amount_cents bigint;\n",
                                      "ALTER TABLE orders DROP COLUMN IF EXISTS amount_cents;\n")


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
            conn = PG.connect(self.cfg)
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
    parser.add_argument("--rows", type=benchsandbox.counter(), default=None, help=f"orders rows (default $ROWS or {DEFAULT_ROWS})")
    parser.add_argument("--duration", type=int, default=None, help=f"seconds of load per phase (default $DURATION or {DEFAULT_DURATION})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"backfill batch_size (default $BATCH_SIZE or {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--max-rows-per-second", type=float, default=None,
                        help=f"backfill rate limit, 0 = none (default $MAX_ROWS_PER_SECOND or {DEFAULT_MAX_ROWS_PER_SECOND})")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    args = parser.parse_args(argv)
    args.rows = benchsandbox.from_env(parser, args.rows, "ROWS", benchsandbox.counter(1000), DEFAULT_ROWS)
    # 0 for --duration / --batch-size means: $DURATION / $BATCH_SIZE or the default
    args.duration = benchsandbox.from_env(parser, args.duration or None, "DURATION", int, DEFAULT_DURATION)
    args.batch_size = benchsandbox.from_env(parser, args.batch_size or None, "BATCH_SIZE", int, DEFAULT_BATCH_SIZE)
    args.max_rows_per_second = benchsandbox.from_env(parser, args.max_rows_per_second, "MAX_ROWS_PER_SECOND", float,
                                                     float(DEFAULT_MAX_ROWS_PER_SECOND))
    if args.duration < 3 or args.batch_size < 1 or args.max_rows_per_second < 0:
        parser.error("--duration must be at least 3, --batch-size at least 1, --max-rows-per-second not negative")

    benchsandbox.interrupt_on_signals()
    cfg = bench_config()
    box = benchsandbox.BenchSandbox("bench_load", cfg, say)

    def body():
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
        return code, [f"load tps_base={r['tps_base']:.1f} tps_during_backfill={r['tps_during']:.1f} ratio={ratio:.2f} "
                      f"false_diffs={r['false_diffs']}"]

    def describe(exc: Exception) -> str:
        return f"bench_load: error: {type(exc).__name__}: {str(exc).strip()}"

    return box.run(body, keep=args.keep, describe=describe, hint_extra=f" SANDBOX_APP_PORT={cfg.app_port}")


if __name__ == "__main__":
    sys.exit(main())
