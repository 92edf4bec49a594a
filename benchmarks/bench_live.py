#!/usr/bin/env python
"""Live-mode benchmark: schema_compat_check's live analysis time vs the target's row count.

schema_compat_check's live mode (compat_live, default ``scratch="always"``)
measures a migration in a scratch database made from the target's schema
(``pg_dump --schema-only``): it never touches the target's rows, so its time
must not grow with the size of the tables the migration touches. This shows
it, side by side in one run.

Builds its own PostgreSQL sandbox (scripts/sandbox.py) in
``<repo>/.sandbox/bench-live`` on ports 26830/26831/26832 and two databases
on the primary with the same schema (``customers``, ``products``,
``orders``): ``live_small`` with 1,000 orders and ``live_large`` with ROWS
orders (default 2,000,000). Then, for each of eight migrations on
``orders`` (each with a rollback), it times ``compat_runner.run()`` in live
mode (superuser connection, ``fail_on: []``) on both databases, ``--repeat``
rounds, interleaved, best of each; and compares the findings of the two
(they must agree except for size-dependent severities). For contrast it
then runs every migration once with ``scratch="auto"`` on ``live_large``
(in a rolled-back transaction on the target: that does read, index and
rewrite the rows).

The last lines printed are::

    auto_large_ms=…
    live migrations=N rows_small=1000 rows_large=N small_ms=… large_ms=… ratio=X.XX

small_ms / large_ms are the sums over the migrations of the best times and
ratio = large_ms / small_ms. Target: ratio <= 1.25 (a miss prints a note).
Exit status: 0 when every run worked (a missed target or a difference in the
findings is a note, not a failure), 1 when a migration or its rollback failed
on the server, 2 on a setup error or a failed analysis, 130 when interrupted.

Usage::

    .venv/bin/python benchmarks/bench_live.py [--rows N] [--repeat N] [--keep] [--json PATH]
    make bench-live                   # make bench-live ROWS=200000

Environment: ``ROWS`` (like --rows), ``BENCH_LIVE_SANDBOX_DIR``,
``BENCH_LIVE_PRIMARY_PORT``, ``BENCH_LIVE_STANDBY_PORT``,
``BENCH_LIVE_SUBSCRIBER_PORT``. The demo sandbox's ``SANDBOX_DIR`` /
``SANDBOX_*_PORT`` are ignored on purpose; the other ``SANDBOX_*`` settings
(passwords, ``SANDBOX_PG_BINDIR``, ``SANDBOX_TIMEOUT``) apply.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback
from typing import Dict, List, Optional, Tuple

import benchsandbox  # benchmarks/benchsandbox.py: the sandbox life cycle; puts scripts/ and .collections/ on sys.path
import sandbox  # noqa: E402  (scripts/sandbox.py)
# Shared with the parity benchmark: rich-or-plain output, ROWS parsing (200k, 2M).
from bench_parity import OUT, parse_rows  # noqa: E402

REPO_ROOT = benchsandbox.REPO_ROOT

DEFAULT_ROWS = 2_000_000
ROWS_SMALL = 1000
PRODUCTS = 100
DEFAULT_PORTS = {"primary": 26830, "standby": 26831, "subscriber": 26832}
DEFAULT_SANDBOX_DIR = os.path.join(REPO_ROOT, ".sandbox", "bench-live")
SMALL_DB, LARGE_DB = "live_small", "live_large"
TARGET_RATIO = 1.25
ANALYSIS_TIMEOUT = 900  # the module's `timeout`: statements in scratch="auto" do the real work

SCHEMA_SQL = (
    "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text)",
    "CREATE TABLE products (id bigint PRIMARY KEY, title text NOT NULL)",
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, product_id bigint, "
    "quantity integer NOT NULL DEFAULT 1, amount numeric(12,2), status text DEFAULT 'new', note varchar(50), "
    "placed_at timestamptz DEFAULT now())",
)
# Deterministic rows, loaded before the foreign key and the secondary indexes
# are added (much faster than checking them row by row).
LOAD_SQL = (
    "INSERT INTO customers (id, email, name) SELECT g, 'user' || g || '@example.com', 'Customer ' || g "
    "FROM generate_series(1::bigint, {customers}::bigint) AS g",
    f"INSERT INTO products (id, title) SELECT g, 'Product ' || g FROM generate_series(1, {PRODUCTS}) AS g",
    "INSERT INTO orders (id, customer_id, product_id, quantity, amount, status, note, placed_at) "
    "SELECT g, 1 + g % {customers}, 1 + g % " + str(PRODUCTS) + ", 1 + (g % 5)::int, "
    "round(((g * 7919) % 1000000) / 100.0, 2), (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + (g % 4)::int], "
    "CASE WHEN g % 7 = 0 THEN NULL ELSE 'note ' || g END, "
    "timestamptz '2024-01-01 00:00:00+00' + g * interval '13 seconds' "
    "FROM generate_series(1::bigint, {rows}::bigint) AS g",
    "ALTER TABLE orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id)",
    "CREATE INDEX orders_customer_id_idx ON orders (customer_id)",
    "CREATE INDEX orders_status_placed_at_idx ON orders (status, placed_at)",
)

# (name, migration, rollback): all on the big table `orders`.
MIGRATIONS: Tuple[Tuple[str, str, str], ...] = (
    ("create_index",
     "CREATE INDEX orders_amount_idx ON orders (amount);",
     "DROP INDEX orders_amount_idx;"),
    ("create_index_concurrently",
     "CREATE INDEX CONCURRENTLY orders_placed_at_idx ON orders (placed_at);",
     "DROP INDEX CONCURRENTLY orders_placed_at_idx;"),
    ("alter_type_int_bigint",
     "ALTER TABLE orders ALTER COLUMN quantity TYPE bigint;",
     "ALTER TABLE orders ALTER COLUMN quantity TYPE integer;"),
    ("add_foreign_key",
     "ALTER TABLE orders ADD CONSTRAINT orders_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (id);",
     "ALTER TABLE orders DROP CONSTRAINT orders_product_id_fkey;"),
    ("set_not_null",
     "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;",
     "ALTER TABLE orders ALTER COLUMN status DROP NOT NULL;"),
    ("add_column_volatile_default",
     "ALTER TABLE orders ADD COLUMN public_id uuid DEFAULT gen_random_uuid();",
     "ALTER TABLE orders DROP COLUMN public_id;"),
    ("update_backfill",
     "ALTER TABLE orders ADD COLUMN status_code smallint;\n"
     "UPDATE orders SET status_code = CASE status WHEN 'new' THEN 0 WHEN 'paid' THEN 1 ELSE 2 END;",
     "ALTER TABLE orders DROP COLUMN status_code;"),
    ("add_column_nullable (safe)",
     "ALTER TABLE orders ADD COLUMN coupon_code text;",
     "ALTER TABLE orders DROP COLUMN coupon_code;"),
)
# The scratch="auto" contrast runs the backfill last: its rolled-back UPDATE
# leaves a dead version of every row, which would slow the runs after it.
AUTO_LAST = "update_backfill"


SetupError = benchsandbox.SetupError
# autocommit superuser connections on the primary, canonical session settings
PG = benchsandbox.Postgres("bench_live", superuser=True, canonical=True)


class AnalysisError(Exception):
    """compat_runner.run() raised CompatFailure."""


# --------------------------------------------------------------------------
# configuration and connections
# --------------------------------------------------------------------------


def drop_and_say(cfg) -> str:
    """In a sandbox that ran before this benchmark, drop only the benchmark's databases."""
    try:
        drop_databases(cfg)
    except Exception as exc:  # pylint: disable=broad-except
        OUT.say(f"bench_live: could not drop {SMALL_DB} / {LARGE_DB}: {exc}", style="bold red")
    return f"dropped {SMALL_DB} and {LARGE_DB}, left the sandbox running"


def bench_config() -> "sandbox.Config":
    """The benchmark's own sandbox: own dir and ports, never the demo's, the tests' or bench_parity's."""
    return benchsandbox.config("BENCH_LIVE_SANDBOX_DIR", DEFAULT_SANDBOX_DIR, DEFAULT_PORTS,
                               port_env=lambda node: f"BENCH_LIVE_{node.upper()}_PORT")


def execute(cfg, dbname: str, statements, fetch: bool = False):
    conn = PG.connect(cfg, dbname=dbname)
    try:
        with conn.cursor() as cur:
            out = None
            for statement in statements:
                cur.execute(statement)
                out = cur.fetchall() if fetch and cur.description is not None else out
            return out
    finally:
        conn.close()


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def build_database(cfg, dbname: str, rows: int) -> None:
    """(Re)create ``dbname`` with the schema and ``rows`` orders, VACUUM (FREEZE, ANALYZE)d."""
    customers = max(100, rows // 20)
    started = time.monotonic()
    with OUT.status(f"creating {dbname}: {rows:,} orders, {customers:,} customers"):
        execute(cfg, "postgres", [f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)', f'CREATE DATABASE "{dbname}"'])
        execute(cfg, dbname, list(SCHEMA_SQL) + [s.format(rows=int(rows), customers=customers) for s in LOAD_SQL])
        execute(cfg, dbname, ["VACUUM (FREEZE, ANALYZE)"])
    count, reltuples, size = execute(cfg, dbname, [
        "SELECT count(*), (SELECT reltuples::bigint FROM pg_class WHERE oid = 'orders'::regclass), "
        "pg_size_pretty(pg_total_relation_size('orders')) FROM orders"], fetch=True)[0]
    if count != rows:
        raise SetupError(f"{dbname}.orders has {count} rows after the load, expected {rows}")
    OUT.say(f"{dbname}: {count:,} orders (reltuples {reltuples:,}, {size} with indexes), "
            f"{customers:,} customers, {PRODUCTS} products, built in {time.monotonic() - started:.1f}s")


def drop_databases(cfg) -> None:
    execute(cfg, "postgres", [f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)' for db in (SMALL_DB, LARGE_DB)])


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------


def analyze(cfg, dbname: str, up: str, down: str, scratch: str) -> Tuple[float, dict]:
    """(wall seconds, result) of one compat_runner.run() in live mode."""
    from ansible_collections.stateful.rollback.plugins.module_utils.compat_runner import CompatFailure, run

    params = dict(benchsandbox.login_options(cfg, superuser=True, dbname=dbname), migration_sql=up, rollback_sql=down,
                  mode="live", scratch=scratch, fail_on=[], timeout=ANALYSIS_TIMEOUT)
    started = time.perf_counter()
    try:
        result = run(params)
    except CompatFailure as exc:
        raise AnalysisError(f"{dbname}, scratch={scratch}: {exc.msg}") from None
    return time.perf_counter() - started, result


def statement_errors(result: dict) -> List[str]:
    """Migration or rollback statements the server refused (the benchmark's migrations must all apply)."""
    out = []
    for stmt in result.get("statements") or []:
        if stmt.get("error"):
            out.append(f"line {stmt.get('line')}: {stmt['error']}")
    for finding in result.get("findings") or []:
        if finding["rule"] in ("live-statement-error", "live-rollback-statement-error"):
            out.append(f"{finding['rule']} line {finding.get('line')}: {finding['message']}")
    return sorted(set(out))


def finding_key(finding: dict) -> Tuple:
    return (finding.get("script") or "migration", finding.get("statement_index"), finding["rule"],
            finding["category"], finding.get("table"))


def finding_text(key: Tuple) -> str:
    script, index, rule, category, table = key
    return f"{script}#{index} {rule} [{category}]" + (f" on {table}" if table else "")


def compare(small: dict, large: dict) -> Tuple[List[str], List[str]]:
    """(severity changes, differences) between the findings on live_small and live_large.

    The same findings are expected on both; only their severity may depend on
    the table's size (e.g. a rewrite is an error on a large table, a warning
    on a small one). Anything else is a difference.
    """
    sev_small = {finding_key(f): f["severity"] for f in small.get("findings") or []}
    sev_large = {finding_key(f): f["severity"] for f in large.get("findings") or []}
    severity, differences = [], []
    for key in sorted(set(sev_small) | set(sev_large), key=str):
        if key not in sev_large:
            differences.append(f"only on {SMALL_DB}: {finding_text(key)} ({sev_small[key]})")
        elif key not in sev_small:
            differences.append(f"only on {LARGE_DB}: {finding_text(key)} ({sev_large[key]})")
        elif sev_small[key] != sev_large[key]:
            severity.append(f"{finding_text(key)}: {sev_small[key]} -> {sev_large[key]}")
    for field in ("live_mode", "reversible", "schema_diff"):
        if small.get(field) != large.get(field):
            differences.append(f"{field}: {small.get(field)!r} on {SMALL_DB}, {large.get(field)!r} on {LARGE_DB}")
    return severity, differences


def severity_counts(result: dict) -> str:
    counts = {"error": 0, "warning": 0, "info": 0}
    for finding in result.get("findings") or []:
        counts[finding["severity"]] += 1
    return f"E{counts['error']} W{counts['warning']} I{counts['info']}"


def measure(cfg, args) -> Dict[str, dict]:
    results = {name: {"small": [], "large": [], "small_result": None, "large_result": None, "errors": []}
               for name, _up, _down in MIGRATIONS}
    with OUT.status("warm-up: one untimed run on each database"):
        for dbname in (SMALL_DB, LARGE_DB):
            analyze(cfg, dbname, MIGRATIONS[0][1], MIGRATIONS[0][2], "always")
    for rnd in range(args.repeat):
        round_small = round_large = 0.0
        for i, (name, up, down) in enumerate(MIGRATIONS):
            order = ("small", "large") if (rnd + i) % 2 == 0 else ("large", "small")
            res = results[name]
            times = {}
            for size in order:
                dbname = SMALL_DB if size == "small" else LARGE_DB
                with OUT.status(f"round {rnd + 1}/{args.repeat}: {name} on {dbname}"):
                    elapsed, result = analyze(cfg, dbname, up, down, "always")
                res[size].append(elapsed)
                times[size] = elapsed
                if res[f"{size}_result"] is None:
                    res[f"{size}_result"] = result
                for error in statement_errors(result):
                    res["errors"].append(f"{dbname}: {error}")
            round_small += times["small"]
            round_large += times["large"]
            OUT.say(f"round {rnd + 1}/{args.repeat}  {name:<28} small {1000 * times['small']:8.1f} ms  "
                    f"large {1000 * times['large']:8.1f} ms  ({' then '.join(order)}; "
                    f"mode {res['large_result'].get('live_mode')}, findings {severity_counts(res['large_result'])})")
        OUT.say(f"round {rnd + 1}/{args.repeat} done: small {1000 * round_small:.1f} ms  large {1000 * round_large:.1f} ms  "
                f"ratio {round_large / round_small:.2f}", style="bold")
    return results


def measure_auto(cfg, results: Dict[str, dict]) -> None:
    """One scratch="auto" run of each migration on live_large (transaction mode where possible)."""
    ordered = [m for m in MIGRATIONS if m[0] != AUTO_LAST] + [m for m in MIGRATIONS if m[0] == AUTO_LAST]
    for name, up, down in ordered:
        with OUT.status(f"contrast: {name} with scratch=auto on {LARGE_DB}"):
            elapsed, result = analyze(cfg, LARGE_DB, up, down, "auto")
        res = results[name]
        res["auto"] = elapsed
        res["auto_mode"] = result.get("live_mode")
        for error in statement_errors(result):
            res["errors"].append(f"{LARGE_DB} (scratch=auto): {error}")
        OUT.say(f"auto     {name:<28} large {1000 * elapsed:9.1f} ms  (mode {result.get('live_mode')}, "
                f"findings {severity_counts(result)})")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def report(args, results: Dict[str, dict]) -> Tuple[int, str, str, dict]:
    """Print the table and the notes; (exit code, auto line, last line, summary dict)."""
    rows_out = []
    small_ms = large_ms = auto_ms = 0.0
    errors, differences, severity_changes = [], [], []
    for name, _up, _down in MIGRATIONS:
        res = results[name]
        best_small, best_large = 1000 * min(res["small"]), 1000 * min(res["large"])
        small_ms += best_small
        large_ms += best_large
        auto_ms += 1000 * res["auto"]
        sev, diff = compare(res["small_result"], res["large_result"])
        severity_changes.extend(f"{name}: {text}" for text in sev)
        differences.extend(f"{name}: {text}" for text in diff)
        errors.extend(f"{name}: {text}" for text in sorted(set(res["errors"])))
        rows_out.append([name, f"{best_small:.1f}", f"{best_large:.1f}", f"{best_large / best_small:.2f}",
                         f"{1000 * res['auto']:.1f}", str(res.get("auto_mode")),
                         severity_counts(res["small_result"]), severity_counts(res["large_result"])])
    ratio = large_ms / small_ms
    rows_out.append(["total", f"{small_ms:.1f}", f"{large_ms:.1f}", f"{ratio:.2f}", f"{auto_ms:.1f}", "", "", ""])
    OUT.table(
        f"best of {args.repeat} (ms; scratch=always unless noted; auto = one run with scratch=auto on {LARGE_DB})",
        ["migration", "small_ms", "large_ms", "ratio", "auto_large_ms", "auto mode", "findings small", "findings large"],
        rows_out,
    )
    if severity_changes:
        OUT.say(f"size-dependent severities ({SMALL_DB} -> {LARGE_DB}), expected:")
        for text in severity_changes:
            OUT.say(f"  {text}")
    if differences:
        OUT.say(f"note: findings differ between {SMALL_DB} and {LARGE_DB} beyond severity:", style="bold yellow")
        for text in differences:
            OUT.say(f"  {text}")
    else:
        OUT.say(f"findings agree between {SMALL_DB} and {LARGE_DB} (apart from the severities above)")
    code = 0
    if errors:
        OUT.say("FAILED: statements the server refused (the benchmark's migrations must apply):", style="bold red")
        for text in errors:
            OUT.say(f"  {text}")
        code = 1
    if ratio > TARGET_RATIO:
        OUT.say(f"note: target not met: ratio={ratio:.2f} is above {TARGET_RATIO:.2f} (live time grows with the rows)")
    else:
        OUT.say(f"target met: ratio={ratio:.2f} <= {TARGET_RATIO:.2f} (live time does not grow with the rows); "
                f"scratch=auto on {LARGE_DB} took {auto_ms / large_ms:.1f}x as long as scratch=always")
    auto_line = f"auto_large_ms={auto_ms:.1f}"
    last = (f"live migrations={len(MIGRATIONS)} rows_small={ROWS_SMALL} rows_large={args.rows} "
            f"small_ms={small_ms:.1f} large_ms={large_ms:.1f} ratio={ratio:.2f}")
    summary = {
        "rows_small": ROWS_SMALL, "rows_large": args.rows, "repeat": args.repeat,
        "small_ms": small_ms, "large_ms": large_ms, "ratio": ratio, "auto_large_ms": auto_ms,
        "migrations": {name: {"small_s": results[name]["small"], "large_s": results[name]["large"],
                              "auto_s": results[name]["auto"], "auto_mode": results[name].get("auto_mode")}
                       for name, _up, _down in MIGRATIONS},
        "severity_changes": severity_changes, "differences": differences, "errors": errors,
        "summary": last,
    }
    return code, auto_line, last, summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_live", description=__doc__.split("\n\n", maxsplit=1)[0],
        epilog="Environment: ROWS, BENCH_LIVE_SANDBOX_DIR, BENCH_LIVE_PRIMARY_PORT, BENCH_LIVE_STANDBY_PORT, "
               "BENCH_LIVE_SUBSCRIBER_PORT.")
    parser.add_argument("--rows", type=parse_rows, default=None,
                        help=f"orders in {LARGE_DB} (default: $ROWS or {DEFAULT_ROWS}; 200k / 2M accepted)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best (minimum) time of each run counts (default 3)")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox (and the two databases) running at the end")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    args.rows = benchsandbox.from_env(parser, args.rows, "ROWS", parse_rows, DEFAULT_ROWS)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    if OUT.console is not None and not OUT.console.is_terminal and not os.environ.get("COLUMNS"):
        OUT.console.width = max(OUT.console.width, 132)  # the table is wider than rich's default 80 for a pipe

    benchsandbox.interrupt_on_signals()  # SIGTERM / SIGHUP tear the sandbox down like Ctrl-C does

    try:
        cfg = bench_config()
    except sandbox.SandboxError as exc:
        print(f"bench_live: {exc}", file=sys.stderr)
        return 2
    # One benchmark per sandbox dir (a second one would tear the sandbox down under the first); further Ctrl-C is
    # ignored while tearing down, and pg_ctl runs with the same disposition.
    box = benchsandbox.BenchSandbox("bench_live", cfg, OUT.say, OUT.status, alarm=functools.partial(OUT.say, style="bold red"))

    def body():
        OUT.say(f"bench_live: rows_small={ROWS_SMALL:,} rows_large={args.rows:,} repeat={args.repeat} "
                f"sandbox={cfg.sandbox_dir} ports {cfg.primary_port}/{cfg.standby_port}/{cfg.subscriber_port}",
                style="bold")
        box.start()
        build_database(cfg, SMALL_DB, ROWS_SMALL)
        build_database(cfg, LARGE_DB, args.rows)
        with OUT.status("CHECKPOINT"):
            execute(cfg, "postgres", ["CHECKPOINT"])
        results = measure(cfg, args)
        measure_auto(cfg, results)
        code, auto_line, last, summary = report(args, results)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(summary, fh, indent=2)
                fh.write("\n")
        return code, [auto_line, last]

    def describe(exc: Exception) -> str:
        if isinstance(exc, AnalysisError):
            return f"bench_live: the live analysis failed: {exc}"
        # psycopg2.Error / PostgresError while loading, or a bug (with its traceback)
        OUT.say(f"bench_live: error: {type(exc).__name__}: {exc}", style="bold red")
        traceback.print_exc()
        return ""

    return box.run(body, keep=args.keep, describe=describe, keep_note=f" ({SMALL_DB}, {LARGE_DB} on port {cfg.primary_port})",
                   if_was_running=lambda: drop_and_say(cfg))


if __name__ == "__main__":
    sys.exit(main())
