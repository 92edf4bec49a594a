#!/usr/bin/env python
"""Parity benchmark: our replication_parity mode vs reladiff vs the floor.

Builds its own PostgreSQL sandbox (primary + physical standby + logical
subscriber, scripts/sandbox.py) in ``<repo>/.sandbox/bench`` on ports
26530/26531/26532, loads ``bench_wide`` (7 columns, ROWS rows, default 2M) on
the primary, lets logical replication carry it to the subscriber, plants
differences on the subscriber only, then measures in rounds (best of
``--repeat``, the three measurements interleaved and rotated every round):

``ours``      parity_runner.run(mode=parity) against the subscriber;
``reladiff``  reladiff.diff_tables() (HashDiffer) on the same pair;
``floor``     one server-side hash scan of the whole table on both nodes at
              once (two threads, two connections): no algorithm can read
              both tables in less.

The last line printed is::

    parity rows=N ours_s=… reladiff_s=… floor_s=… vs_reladiff=X.XX over_floor=Y.YY found=K/K

Targets: vs_reladiff >= 2.0, over_floor <= 1.3, every planted difference
found. Exit status: 0 when ours reports exactly the planted differences
(targets missed is a note, not a failure), 1 when it misses one or reports
one that was not planted, 2 on a setup error, 130 when interrupted.

Usage::

    .venv/bin/python benchmarks/bench_parity.py [--rows N] [--repeat N] [--keep]
    make bench-parity                 # ROWS=200000 make bench-parity

Environment: ``ROWS`` (like --rows), ``BENCH_SANDBOX_DIR``,
``BENCH_PRIMARY_PORT``, ``BENCH_STANDBY_PORT``, ``BENCH_SUBSCRIBER_PORT``.
The demo sandbox's ``SANDBOX_DIR`` / ``SANDBOX_*_PORT`` are deliberately
ignored so that ``eval "$(scripts/sandbox env)"`` cannot point the benchmark
at the demo sandbox; the other ``SANDBOX_*`` settings (passwords,
``SANDBOX_PG_BINDIR``, ``SANDBOX_TIMEOUT``) apply.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Set, Tuple

import benchsandbox  # benchmarks/benchsandbox.py: the sandbox life cycle; puts scripts/ and .collections/ on sys.path
import sandbox  # noqa: E402  (scripts/sandbox.py)

REPO_ROOT = benchsandbox.REPO_ROOT

TABLE = "bench_wide"
COLUMNS = ("id", "account", "amount", "created_at", "score", "active", "note")
DDL = (
    f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, account text, amount numeric(12,2), "
    "created_at timestamptz, score float8, active boolean, note text)"
)
# Deterministic rows. Keys are the odd numbers 1, 3, ..., 2*ROWS-1 so that a
# row can be planted on the subscriber at an even key in the middle of the key
# space. Some NULLs, varied widths; about 100 bytes per row.
LOAD_SQL = f"""
INSERT INTO {TABLE} (id, account, amount, created_at, score, active, note)
SELECT 2 * g - 1,
       'acct-' || lpad((g % 50021)::text, 6, '0'),
       round(((g * 7919) % 10000000) / 100.0, 2),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 seconds',
       CASE WHEN g % 97 = 0 THEN NULL ELSE ((g * 2654435761) % 1000003)::float8 / 7 END,
       g % 3 <> 0,
       CASE WHEN g % 11 = 0 THEN NULL ELSE repeat(md5(g::text), 1 + (g % 2)::int) END
  FROM generate_series(1::bigint, {{rows}}::bigint) AS g
"""
FLOOR_SQL = (
    f"SELECT count(*), sum(hashtextextended(ROW({', '.join(COLUMNS)})::text, 0)) FROM {TABLE}"
)

DEFAULT_ROWS = 2_000_000
MIN_ROWS = 1000
DEFAULT_PORTS = {"primary": 26530, "standby": 26531, "subscriber": 26532}
DEFAULT_SANDBOX_DIR = os.path.join(REPO_ROOT, ".sandbox", "bench")
LOAD_TIMEOUT = 900.0  # seconds for the subscriber to apply the load
TARGET_VS_RELADIFF = 2.0
TARGET_OVER_FLOOR = 1.3
# reladiff's own command line uses max_threadpool_size = 2 * --threads, with
# --threads defaulting to 1. The library's diff_tables() default (1) runs the
# two nodes' queries one after the other, which is not a fair baseline.
DEFAULT_RELADIFF_POOL = 2

KINDS = ("missing_on_replica", "extra_on_replica", "different")


SetupError = benchsandbox.SetupError
# canonical session settings, like ours
PG = benchsandbox.Postgres("bench_parity", canonical=True)
parse_rows = benchsandbox.counter(MIN_ROWS, "ROWS", noun="a row count")  # bench_live uses it too


# --------------------------------------------------------------------------
# output: rich when installed, plain prints otherwise
# --------------------------------------------------------------------------


class Out:
    def __init__(self) -> None:
        try:
            from rich.console import Console

            self.console = Console(highlight=False)
        except ImportError:  # pragma: no cover - rich comes with ansible-lint
            self.console = None

    def say(self, message: str, style: Optional[str] = None) -> None:
        if self.console is not None:
            self.console.print(message, style=style, markup=False, soft_wrap=True)
        else:
            print(message, flush=True)

    def status(self, message: str):
        """Context manager showing a spinner (rich) or printing the message once."""
        if self.console is not None and self.console.is_terminal:
            return self.console.status(message)
        self.say(message)
        return _Null()

    def table(self, title: str, header: List[str], rows: List[List[str]]) -> None:
        if self.console is not None:
            from rich.table import Table

            t = Table(title=title, title_justify="left")
            for i, h in enumerate(header):
                t.add_column(h, justify="left" if i == 0 else "right")
            for r in rows:
                t.add_row(*r)
            self.console.print(t)
        else:
            print(title)
            widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
            for r in [header] + rows:
                print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
            sys.stdout.flush()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


OUT = Out()


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


def bench_config() -> "sandbox.Config":
    """The benchmark's own sandbox: own dir and ports, never the demo's or the tests'."""
    return benchsandbox.config("BENCH_SANDBOX_DIR", DEFAULT_SANDBOX_DIR, DEFAULT_PORTS, port_env=lambda node: f"BENCH_{node.upper()}_PORT")


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def _lsn(value: str) -> int:
    hi, lo = value.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def load(cfg, rows: int) -> None:
    """(Re)create bench_wide on primary + subscriber and load it through replication."""
    if PG.scalar(cfg, "SELECT to_regclass(%s) IS NOT NULL", (TABLE,)):
        OUT.say(f"dropping the previous {TABLE}")
        sandbox.drop_table(cfg, TABLE, timeout=300)
    sandbox.sync_table(cfg, DDL, timeout=120)

    started = time.monotonic()
    with OUT.status(f"loading {rows:,} rows into {TABLE} on the primary"):
        conn = PG.connect(cfg)
        try:
            with conn.cursor() as cur:
                cur.execute(LOAD_SQL.format(rows=int(rows)))
                cur.execute("SELECT pg_current_wal_lsn()::text")
                target = cur.fetchone()[0]
        finally:
            conn.close()
    OUT.say(f"loaded {rows:,} rows on the primary in {time.monotonic() - started:.1f}s; "
            f"waiting for the subscriber to apply them (up to {LOAD_TIMEOUT:.0f}s)")
    wait_applied(cfg, target, started)
    counts = {n: PG.scalar(cfg, f"SELECT count(*) FROM {TABLE}", node=n) for n in ("primary", "subscriber")}
    if counts["primary"] != rows or counts["subscriber"] != rows:
        raise SetupError(f"row counts after the load: {counts}, expected {rows} on both")
    OUT.say(f"subscriber has all {rows:,} rows ({time.monotonic() - started:.1f}s after the load started)")


def wait_applied(cfg, target: str, started: float) -> None:
    """Wait for the subscriber (and the standby) to apply ``target``, printing progress."""
    deadline = started + LOAD_TIMEOUT
    slot_sql = ("SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots "
                "WHERE slot_name = %s")
    last_print = 0.0
    first_lag = None
    while True:
        row = PG.query(cfg, slot_sql, (sandbox.SUBSCRIPTION,), superuser=True)
        confirmed = row[0][0] if row else None
        lag = _lsn(target) - _lsn(confirmed) if confirmed else None
        if lag is not None and lag <= 0:
            break
        now = time.monotonic()
        if now >= deadline:
            raise SetupError(f"the subscriber did not apply the load within {LOAD_TIMEOUT:.0f}s "
                             f"(confirmed {confirmed or '-'}, target {target})")
        if now - last_print >= 5:
            if lag is not None and first_lag is None:
                first_lag = lag
            done = "" if not first_lag or lag is None else f" ({100.0 * (1 - lag / first_lag):.0f}% of the WAL)"
            lag_text = "?" if lag is None else f"{lag / 1048576:.1f} MiB"
            OUT.say(f"  {now - started:6.1f}s  subscriber behind by {lag_text}{done}")
            last_print = now
        time.sleep(0.5)
    remaining = max(30.0, deadline - time.monotonic())
    sandbox.wait_subscriber_caught_up(cfg, timeout=remaining, target_lsn=target)
    sandbox.wait_standby_caught_up(cfg, timeout=remaining, target_lsn=target)


def plant(cfg, rows: int) -> Dict[int, str]:
    """Plant differences on the subscriber only; returns {id: kind}."""
    def odd_key(fraction: float) -> int:
        g = min(max(int(rows * fraction), 1), rows)
        return 2 * g - 1

    planted: Dict[int, str] = {}
    deleted = [odd_key(0.13), odd_key(0.71)]
    changed = [odd_key(0.29), odd_key(0.88)]
    extra = odd_key(0.47) + 1  # even: between two primary keys
    for key in deleted:
        planted[key] = "missing_on_replica"
    for key in changed:
        planted[key] = "different"
    planted[extra] = "extra_on_replica"
    if len(planted) != 5:
        raise SetupError(f"planted keys collide for ROWS={rows}: {planted}")
    statements = [  # (SQL, parameters, rows it must change)
        (f"DELETE FROM {TABLE} WHERE id = ANY(%s)", (deleted,), len(deleted)),
        # a one-cent change
        (f"UPDATE {TABLE} SET amount = amount + 0.01 WHERE id = %s", (changed[0],), 1),
        # a NULL where there was a value (or the reverse) and a flipped boolean
        (f"UPDATE {TABLE} SET active = NOT active, "
         "note = CASE WHEN note IS NULL THEN 'planted' ELSE NULL END WHERE id = %s", (changed[1],), 1),
        (f"INSERT INTO {TABLE} (id, account, amount, created_at, score, active, note) "
         "VALUES (%s, 'acct-planted', 1.00, '2024-06-01 00:00:00+00', 0.5, true, 'extra row')", (extra,), 1),
    ]
    conn = PG.connect(cfg, "subscriber", superuser=True)
    try:
        with conn.cursor() as cur:
            for query, params, expected in statements:
                cur.execute(query, params)
                if cur.rowcount != expected:
                    raise SetupError(f"planting on the subscriber changed {cur.rowcount} rows, not {expected}: {query}")
    finally:
        conn.close()
    return planted


def vacuum_analyze(cfg) -> None:
    def one(node):
        conn = PG.connect(cfg, node, superuser=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
                cur.execute("CHECKPOINT")
        finally:
            conn.close()

    with OUT.status("VACUUM (FREEZE, ANALYZE) + CHECKPOINT on primary and subscriber"):
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, ("primary", "subscriber")))
    sandbox.wait_standby_caught_up(cfg, timeout=120)


# --------------------------------------------------------------------------
# the three measurements; each returns (seconds, {(id, kind)}, detail)
# --------------------------------------------------------------------------


def measure_ours(cfg) -> Tuple[float, Set[Tuple[int, str]], str]:
    from ansible_collections.stateful.rollback.plugins.module_utils.parity_runner import ParityFailure, run

    s = cfg.params("subscriber")
    params = dict(
        # run() takes the module's validated parameters: canonical names, no aliases (port -> login_port)
        benchsandbox.login_options(cfg), mode="parity", tables=[TABLE],
        replicas=[dict(name="subscriber", login_host=s["host"], login_port=int(s["port"]))],
        fail_on_difference=False, max_differences=100,
    )
    started = time.monotonic()
    try:
        result = run(params)
    except ParityFailure as exc:
        raise SetupError(f"parity run failed: {exc.msg}") from None
    elapsed = time.monotonic() - started
    table = result["replicas"][0]["tables"][0]
    found = set()
    for kind in KINDS:
        for key in (table.get("differences") or {}).get(kind) or []:
            found.add((int(key["id"]), kind))
    detail = (f"in_sync={result.get('in_sync')} differences={result.get('difference_count')} "
              f"chunks={table.get('chunks')} differing={table.get('chunks_differing')} "
              f"queries={table.get('queries')}")
    return elapsed, found, detail


def measure_reladiff(cfg, pool_size: int) -> Tuple[float, Set[Tuple[int, str]], str]:
    import reladiff

    started = time.monotonic()
    t1 = reladiff.connect_to_table(cfg.dsn("primary"), TABLE, "id", extra_columns=COLUMNS[1:])
    t2 = reladiff.connect_to_table(cfg.dsn("subscriber"), TABLE, "id", extra_columns=COLUMNS[1:])
    try:
        with reladiff.diff_tables(t1, t2, threaded=True, max_threadpool_size=pool_size) as diff:
            rows = list(diff)
    finally:
        for t in (t1, t2):
            try:
                t.database.close()
            except Exception:  # pylint: disable=broad-except
                pass
    elapsed = time.monotonic() - started
    signs: Dict[int, Set[str]] = {}
    for sign, row in rows:
        signs.setdefault(int(row[0]), set()).add(sign)
    found = set()
    for key, seen in signs.items():
        if seen == {"-"}:
            found.add((key, "missing_on_replica"))
        elif seen == {"+"}:
            found.add((key, "extra_on_replica"))
        else:
            found.add((key, "different"))
    return elapsed, found, f"{len(rows)} diff rows (+/-)"


def measure_floor(cfg) -> Tuple[float, Set[Tuple[int, str]], str]:
    def scan(node):
        conn = PG.connect(cfg, node)
        try:
            with conn.cursor() as cur:
                cur.execute(FLOOR_SQL)
                return cur.fetchone()
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        started = time.monotonic()
        futures = [pool.submit(scan, n) for n in ("primary", "subscriber")]
        (pc, ph), (sc, sh) = [f.result() for f in futures]
        elapsed = time.monotonic() - started
    same = "same" if (pc, ph) == (sc, sh) else "differ"
    return elapsed, set(), f"rows {pc} / {sc}, table hashes {same}"


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def describe_found(found: Set[Tuple[int, str]], planted: Dict[int, str]) -> Tuple[int, List[str], List[str]]:
    """(planted found, planted missed, reported but not planted) as text."""
    want = set((k, v) for k, v in planted.items())
    hit = want & found
    missed = [f"{kind} id={key}" for key, kind in sorted(want - found)]
    bogus = [f"{kind} id={key}" for key, kind in sorted(found - want)]
    return len(hit), missed, bogus


def run_rounds(cfg, args, planted: Dict[int, str]) -> Dict[str, dict]:
    measures: Dict[str, Callable[[], Tuple[float, Set[Tuple[int, str]], str]]] = {
        "ours": lambda: measure_ours(cfg),
        "reladiff": lambda: measure_reladiff(cfg, args.reladiff_pool),
        "floor": lambda: measure_floor(cfg),
    }
    names = list(measures)
    results = {n: {"times": [], "found": None, "missed": [], "bogus": []} for n in names}
    with OUT.status("warm-up: one untimed hash scan on both nodes"):
        measure_floor(cfg)
    for rnd in range(args.repeat):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        line = []
        for name in order:
            with OUT.status(f"round {rnd + 1}/{args.repeat}: {name}"):
                elapsed, found, detail = measures[name]()
            res = results[name]
            res["times"].append(elapsed)
            text = f"round {rnd + 1}/{args.repeat}  {name:<8} {elapsed:8.3f}s  {detail}"
            if name != "floor":
                hit, missed, bogus = describe_found(found, planted)
                # the worst round counts: fewest found, every miss and false report of any round
                res["found"] = hit if res["found"] is None else min(res["found"], hit)
                res["missed"] = sorted(set(res["missed"]) | set(missed))
                res["bogus"] = sorted(set(res["bogus"]) | set(bogus))
                text += f"  found {hit}/{len(planted)}"
                if missed:
                    text += f"  MISSED: {', '.join(missed)}"
                if bogus:
                    text += f"  NOT PLANTED: {', '.join(bogus)}"
                if rnd == 0 and name == "reladiff":
                    shown = ", ".join(f"{kind} id={key}" for key, kind in sorted(found)) or "nothing"
                    text += f"\n      reladiff reported: {shown}"
            OUT.say(text)
            line.append(f"{name}={elapsed:.3f}s")
        OUT.say(f"round {rnd + 1}/{args.repeat} done: " + "  ".join(line), style="bold")
    return results


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_parity", description=__doc__.split("\n\n", maxsplit=1)[0],
        epilog="Environment: ROWS, BENCH_SANDBOX_DIR, BENCH_PRIMARY_PORT, BENCH_STANDBY_PORT, BENCH_SUBSCRIBER_PORT.")
    parser.add_argument("--rows", type=parse_rows, default=None,
                        help=f"rows in {TABLE} (default: $ROWS or {DEFAULT_ROWS}; 200k / 2M accepted)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best (minimum) of each measurement counts (default 3)")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    parser.add_argument("--reladiff-pool", type=int, default=DEFAULT_RELADIFF_POOL,
                        help=f"reladiff max_threadpool_size (default {DEFAULT_RELADIFF_POOL}, as its CLI uses; "
                             "1 is diff_tables()'s library default)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    args.rows = benchsandbox.from_env(parser, args.rows, "ROWS", parse_rows, DEFAULT_ROWS)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.reladiff_pool < 1:
        parser.error("--reladiff-pool must be at least 1")
    # reladiff logs per-run warnings (UUID detection, "no compatibility handling"
    # for text columns) that would drown the timings.
    logging.disable(logging.WARNING)
    try:
        import reladiff  # noqa: F401
    except ImportError:
        print("bench_parity: reladiff is not installed in this interpreter; run scripts/bootstrap "
              "(requirements-dev.txt lists it)", file=sys.stderr)
        return 2

    benchsandbox.interrupt_on_signals()  # SIGTERM / SIGHUP tear the sandbox down like Ctrl-C does

    cfg = bench_config()
    # One benchmark per sandbox dir (a second one would tear the sandbox down under the first); further Ctrl-C is
    # ignored while tearing down, and pg_ctl runs with the same disposition.
    box = benchsandbox.BenchSandbox("bench_parity", cfg, OUT.say, OUT.status, alarm=functools.partial(OUT.say, style="bold red"))

    def body():
        OUT.say(f"bench_parity: ROWS={args.rows:,} repeat={args.repeat} sandbox={cfg.sandbox_dir} "
                f"ports {cfg.primary_port}/{cfg.standby_port}/{cfg.subscriber_port}", style="bold")
        box.start()
        load(cfg, args.rows)
        planted = plant(cfg, args.rows)
        OUT.say("planted on the subscriber: " + ", ".join(f"{kind} id={key}" for key, kind in sorted(planted.items())))
        vacuum_analyze(cfg)

        results = run_rounds(cfg, args, planted)
        best = {n: min(r["times"]) for n, r in results.items()}
        vs_reladiff = best["reladiff"] / best["ours"]
        over_floor = best["ours"] / best["floor"]
        ours = results["ours"]
        OUT.table(
            f"best of {args.repeat} (seconds)",
            ["measure", "best", "all rounds", "found"],
            [[n, f"{best[n]:.3f}", " ".join(f"{t:.3f}" for t in r["times"]),
              "-" if n == "floor" else f"{r['found']}/{len(planted)}"] for n, r in results.items()],
        )
        code = 0
        if ours["missed"]:
            OUT.say("FAILED: our parity mode missed planted differences: " + ", ".join(ours["missed"]), style="bold red")
            code = 1
        if ours["bogus"]:
            OUT.say("FAILED: our parity mode reported differences that were not planted: " + ", ".join(ours["bogus"]),
                    style="bold red")
            code = 1
        if results["reladiff"]["missed"] or results["reladiff"]["bogus"]:
            OUT.say(f"note: reladiff found {results['reladiff']['found']}/{len(planted)} "
                    f"(missed: {', '.join(results['reladiff']['missed']) or '-'}; "
                    f"not planted: {', '.join(results['reladiff']['bogus']) or '-'})")
        notes = []
        if vs_reladiff < TARGET_VS_RELADIFF:
            notes.append(f"vs_reladiff={vs_reladiff:.2f} is below the target {TARGET_VS_RELADIFF:.1f}")
        if over_floor > TARGET_OVER_FLOOR:
            notes.append(f"over_floor={over_floor:.2f} is above the target {TARGET_OVER_FLOOR:.1f}")
        OUT.say("note: target not met: " + "; ".join(notes) if notes else
                f"targets met (vs_reladiff >= {TARGET_VS_RELADIFF:.1f}, over_floor <= {TARGET_OVER_FLOOR:.1f})")
        summary = (f"parity rows={args.rows} ours_s={best['ours']:.3f} reladiff_s={best['reladiff']:.3f} "
                   f"floor_s={best['floor']:.3f} vs_reladiff={vs_reladiff:.2f} over_floor={over_floor:.2f} "
                   f"found={ours['found']}/{len(planted)}")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"rows": args.rows, "repeat": args.repeat, "reladiff_pool": args.reladiff_pool,
                           "planted": {str(k): v for k, v in planted.items()}, "best": best,
                           "vs_reladiff": vs_reladiff, "over_floor": over_floor,
                           "results": results, "summary": summary}, fh, indent=2, default=list)
                fh.write("\n")
        return code, [summary]

    return box.run(body, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
