#!/usr/bin/env python
"""RTO/RPO benchmark: the rollback drill (playbooks/drill.yml), run several times on a grown database.

Builds its own sandbox (scripts/sandbox.py: kubesim, the primary as StatefulSet
sandbox/db on PVC data-db-0, a streaming standby, a logical subscriber) in
``<repo>/.sandbox/bench-rto`` on ports 28330/28331/28332 (demo app 28335),
installs the demo Deployment (playbooks/demo/web.yml.j2, image 1.0.0), grows
``orders`` to ROWS rows (default 1,000,000; INSERT ... generate_series, then
waits until the subscriber has them), and runs the drill RUNS times (default 5)
with ``ansible-playbook -i inventories/sandbox playbooks/drill.yml``. Each drill
first deploys and promotes release 1.0.0 (the known starting point), then
deploys the faulty release, lets the automatic rollback undo it and writes its
report; this benchmark reads each report (``<sandbox>/state/drills/latest.json``) and
keeps it with the drill's log in ``benchmarks/results/rto-<UTC time>/``.

Faults (``--fault``): ``corruption`` (default: release 3.0.0 deploys, the drill
negates order amounts, the rollback restores the pre-release snapshot - the
restore path, the slow one), ``health_check``, ``migration`` (the revert
path), or ``alternate`` (corruption, health_check, migration, corruption, ...).

Definitions (those of the drill report):

RTO       seconds from the start of the deploy's rescue (the fault detected) to
          the end of the rollback's verification (the application verified
          healthy on 1.0.0 against the baseline, replicas in parity).
RPO rows  probe rows written after the pre-release snapshot that the rollback
          lost (the restore path loses them by design: printed separately).
rpo_rows  in the last line: probe rows written BEFORE the snapshot that were
          lost, summed over the runs. Target 0; anything else is data loss.

The last line printed is::

    rto runs=5 median_s=… max_s=… rpo_rows=…

Target: median RTO under 30 s. Exit status: 0 when every drill passed and no
row from before a snapshot was lost (a missed RTO target is a note), 1 when a
drill failed or lost such a row, 2 on a setup error, 130 when interrupted.

Usage::

    .venv/bin/python benchmarks/bench_rto.py [--rows N] [--runs N] [--fault F] [--keep]
    make bench-rto                                   # ROWS=200000 RUNS=3 make bench-rto

Environment: ``ROWS``, ``RUNS``, ``FAULT``, ``BENCH_RTO_SANDBOX_DIR``,
``BENCH_RTO_PORT_BASE`` (primary; standby +1, subscriber +2, demo app +5).
The demo sandbox's ``SANDBOX_DIR`` / ``SANDBOX_*_PORT`` are ignored, so the
benchmark never touches another sandbox; the other ``SANDBOX_*`` settings
(passwords, ``SANDBOX_PG_BINDIR``, ``SANDBOX_TIMEOUT``) apply.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import benchsandbox  # benchmarks/benchsandbox.py: the sandbox life cycle; puts scripts/ and .collections/ on sys.path
import sandbox  # noqa: E402  (scripts/sandbox.py)

REPO_ROOT = benchsandbox.REPO_ROOT

DEFAULT_ROWS = 1_000_000
DEFAULT_RUNS = 5
MIN_ROWS = 5000  # the sandbox's seed already has 5000 orders
DEFAULT_PORT_BASE = 28330
APP_PORT_OFFSET = 5
DEFAULT_SANDBOX_DIR = os.path.join(REPO_ROOT, ".sandbox", "bench-rto")
FAULTS = ("corruption", "health_check", "migration")
ALTERNATE = ("corruption", "health_check", "migration")
TARGET_MEDIAN_RTO = 30.0
LOAD_TIMEOUT = 1800.0  # seconds for the subscriber to apply the grown table
DRILL_TIMEOUT = 1800.0  # seconds for one drill playbook
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")  # git-ignored
VENV_BIN = os.path.join(REPO_ROOT, ".venv", "bin")

SetupError = benchsandbox.SetupError
say = benchsandbox.say
PG = benchsandbox.Postgres("bench_rto")


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


def bench_config() -> "sandbox.Config":
    """The benchmark's own sandbox: own dir and ports, never the demo's or the tests'."""
    base = int(os.environ.get("BENCH_RTO_PORT_BASE") or DEFAULT_PORT_BASE)
    return benchsandbox.config("BENCH_RTO_SANDBOX_DIR", DEFAULT_SANDBOX_DIR, benchsandbox.based_ports(base),
                               app_port=base + APP_PORT_OFFSET, drop_env_ports=True)


def sandbox_environ(cfg) -> Dict[str, str]:
    """Environment for scripts/sandbox and ansible-playbook pointing at the benchmark's sandbox only."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_") and not k.startswith("K8S_AUTH_")}
    environ.pop("KUBECONFIG", None)
    for field, var in sandbox.Config.ENV_VARS.items():
        value = getattr(cfg, field)
        if value is not None and not (field == "kube_port" and not value):
            environ[var] = str(value)
    environ["ANSIBLE_CONFIG"] = os.path.join(REPO_ROOT, "ansible.cfg")
    environ.setdefault("ANSIBLE_NOCOLOR", "1")
    return environ


# --------------------------------------------------------------------------
# the sandbox and its data
# --------------------------------------------------------------------------


def remove_state(cfg, gone: dict) -> None:
    """The drills' state (audit log, run records, baselines, reports) lived in the sandbox; the reports were
    copied to the log directory."""
    state_dir = os.path.join(cfg.sandbox_dir, "state")
    if os.path.isdir(state_dir):
        shutil.rmtree(state_dir)
    if os.path.isdir(cfg.sandbox_dir) and not os.listdir(cfg.sandbox_dir):
        os.rmdir(cfg.sandbox_dir)
        gone["removed"] = True


def install_demo_app(cfg) -> None:
    """The demo shop (playbooks/demo/web.yml.j2: its Secret and Deployment) on image 1.0.0, unless it exists."""
    import sandbox_kube

    try:
        sandbox_kube.install_shop(cfg, "1.0.0", timeout=60)
    except sandbox.SandboxError as exc:
        raise SetupError(f"{exc}; see {os.path.join(cfg.sandbox_dir, 'apps')}") from None
    say(f"demo Deployment sandbox/web ready (http://{cfg.host}:{cfg.app_port}/healthz)")


def grow_orders(cfg, rows: int) -> None:
    """orders up to ``rows`` rows on the primary, then wait until the subscriber applied them."""
    have = int(PG.scalar(cfg, "SELECT count(*) FROM orders"))
    if have >= rows:
        say(f"orders has {have:,} rows (>= {rows:,})")
        return
    customers = int(PG.scalar(cfg, "SELECT count(*) FROM customers"))
    started = time.monotonic()
    conn = PG.connect(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute(benchsandbox.GROW_ORDERS_SQL, {"customers": customers, "missing": rows - have, "step": "17 seconds"})
            cur.execute("ANALYZE orders")
    finally:
        conn.close()
    say(f"grew orders from {have:,} to {rows:,} rows in {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    sandbox.wait_standby_caught_up(cfg, timeout=LOAD_TIMEOUT)
    sandbox.wait_subscriber_caught_up(cfg, timeout=LOAD_TIMEOUT)
    say(f"standby and subscriber caught up in {time.monotonic() - started:.1f}s")


# --------------------------------------------------------------------------
# the drills
# --------------------------------------------------------------------------


def run_drill(cfg, fault: str, index: int, log_dir: str) -> dict:
    """One playbooks/drill.yml run; returns its report (plus the playbook's exit status and wall time)."""
    log_path = os.path.join(log_dir, f"drill-{index:02d}-{fault}.log")
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", os.path.join(REPO_ROOT, "inventories", "sandbox"),
           os.path.join(REPO_ROOT, "playbooks", "drill.yml"), "-e", f"drill_fault={fault}"]
    started_wall = time.time()
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=sandbox_environ(cfg), stdout=log, stderr=subprocess.STDOUT,
                              timeout=DRILL_TIMEOUT, check=False)
    elapsed = time.monotonic() - started
    latest = os.path.join(cfg.sandbox_dir, "state", "drills", "latest.json")
    try:
        with open(latest, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        report = None
    if report is None or os.path.getmtime(latest) < started_wall:
        raise SetupError(f"drill {index} ({fault}) wrote no report (exit status {proc.returncode}); see {log_path}")
    with open(os.path.join(log_dir, f"drill-{index:02d}-{fault}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    report["_exit_status"] = proc.returncode
    report["_wall_seconds"] = round(elapsed, 1)
    report["_log"] = log_path
    return report


def restore_seconds(report: dict) -> Optional[float]:
    for step in (report.get("rollback") or {}).get("steps") or []:
        if step.get("step") == "restore":
            return step.get("seconds")
    return None


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_rto", description=__doc__.split("\n\n", maxsplit=1)[0],
        epilog="Environment: ROWS, RUNS, FAULT, BENCH_RTO_SANDBOX_DIR, BENCH_RTO_PORT_BASE.")
    parser.add_argument("--rows", type=benchsandbox.counter(MIN_ROWS, "ROWS"), default=None,
                        help=f"rows in orders before the first drill (default: $ROWS or {DEFAULT_ROWS:,}; 200k / 1M accepted)")
    parser.add_argument("--runs", type=benchsandbox.counter(1, "RUNS"), default=None,
                        help=f"drills to run (default: $RUNS or {DEFAULT_RUNS})")
    parser.add_argument("--fault", choices=FAULTS + ("alternate",), default=None,
                        help="the fault of every drill, or alternate (default: $FAULT or corruption, the restore path)")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    parser.add_argument("--json", metavar="PATH", help="also write every report and the summary as JSON to PATH")
    args = parser.parse_args(argv)
    args.rows = benchsandbox.from_env(parser, args.rows, "ROWS", benchsandbox.counter(MIN_ROWS, "ROWS"), DEFAULT_ROWS, prefix="")
    args.runs = benchsandbox.from_env(parser, args.runs, "RUNS", benchsandbox.counter(1, "RUNS"), DEFAULT_RUNS, prefix="")
    if args.fault is None:
        args.fault = os.environ.get("FAULT") or "corruption"
        if args.fault not in FAULTS + ("alternate",):
            parser.error(f"FAULT must be one of {', '.join(FAULTS + ('alternate',))}")
    faults = [ALTERNATE[i % len(ALTERNATE)] if args.fault == "alternate" else args.fault for i in range(args.runs)]

    benchsandbox.interrupt_on_signals()

    cfg = bench_config()
    box = benchsandbox.BenchSandbox("bench_rto", cfg, say)

    def body():
        reports: List[dict] = []
        say(f"bench_rto: ROWS={args.rows:,} RUNS={args.runs} faults={','.join(faults)} sandbox={cfg.sandbox_dir} "
            f"ports {cfg.primary_port}/{cfg.standby_port}/{cfg.subscriber_port} app {cfg.app_port}")
        box.start(what="kubesim, primary on its PVC, standby, subscriber")
        install_demo_app(cfg)
        grow_orders(cfg, args.rows)
        log_dir = os.path.join(RESULTS_DIR, "rto-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        os.makedirs(log_dir, exist_ok=True)
        say(f"drill logs and reports: {log_dir}")
        for index, fault in enumerate(faults, start=1):
            say(f"drill {index}/{args.runs}: {fault} ...")
            report = run_drill(cfg, fault, index, log_dir)
            reports.append(report)
            rpo = report.get("rpo") or {}
            say(f"drill {index}/{args.runs}: {fault} {report['outcome'].upper()} rto_s={fmt(report.get('rto_seconds'), 3)} "
                f"path={(report.get('rollback') or {}).get('path')} restore_s={fmt(restore_seconds(report), 1)} "
                f"rows_lost_after_snapshot={report.get('rpo_rows')} rows_lost_before_snapshot={rpo.get('rows_lost_before_snapshot')} "
                f"rpo_bytes={report.get('rpo_bytes')} wall_s={report['_wall_seconds']}"
                + ("" if report["outcome"] == "passed" else f"  failed checks: {', '.join(report.get('failed_checks') or [])} "
                   f"(log {report['_log']})"))

        rtos = [r["rto_seconds"] for r in reports if r.get("rto_seconds") is not None]
        lost_before = sum(int((r.get("rpo") or {}).get("rows_lost_before_snapshot") or 0) for r in reports)
        lost_after = [int(r.get("rpo_rows") or 0) for r in reports]
        failed = [i for i, r in enumerate(reports, start=1) if r["outcome"] != "passed"]
        say("")
        say(f"{'run':>3}  {'fault':<12} {'outcome':<7} {'rto_s':>7} {'path':<7} {'restore_s':>9} {'lost_after':>10} "
            f"{'lost_before':>11} {'rpo_bytes':>10} {'wall_s':>7}")
        for i, r in enumerate(reports, start=1):
            say(f"{i:>3}  {r['fault']:<12} {r['outcome']:<7} {fmt(r.get('rto_seconds'), 3):>7} "
                f"{str((r.get('rollback') or {}).get('path')):<7} {fmt(restore_seconds(r)):>9} {r.get('rpo_rows')!s:>10} "
                f"{(r.get('rpo') or {}).get('rows_lost_before_snapshot')!s:>11} {r.get('rpo_bytes')!s:>10} {r['_wall_seconds']:>7}")
        median = statistics.median(rtos) if rtos else None
        worst = max(rtos) if rtos else None
        say(f"rows written after the snapshot and lost (RPO of the restore path, by design): "
            f"{' '.join(str(n) for n in lost_after)} (total {sum(lost_after)})")
        code = 0
        if failed:
            say(f"FAILED: drills {', '.join(map(str, failed))} did not pass (see their logs and reports)")
            code = 1
        if lost_before:
            say(f"FAILED: {lost_before} probe rows written before a snapshot were lost")
            code = 1
        if len(rtos) < len(reports):
            say("FAILED: some drills measured no RTO (the rollback did not verify)")
            code = 1
        if median is not None:
            say(f"note: median RTO {median:.1f}s {'meets' if median < TARGET_MEDIAN_RTO else 'misses'} "
                f"the target (< {TARGET_MEDIAN_RTO:.0f}s) with {args.rows:,} orders, faults {args.fault}")
        summary = (f"rto runs={len(reports)} median_s={fmt(median, 3)} max_s={fmt(worst, 3)} rpo_rows={lost_before}")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"rows": args.rows, "runs": args.runs, "fault": args.fault, "reports": reports,
                           "median_s": median, "max_s": worst, "rows_lost_before_snapshot": lost_before,
                           "rows_lost_after_snapshot": lost_after, "summary": summary}, fh, indent=2)
                fh.write("\n")
        return code, [summary]

    def describe(exc: Exception) -> Optional[str]:
        return f"bench_rto: a drill ran longer than {exc.timeout:.0f}s" if isinstance(exc, subprocess.TimeoutExpired) else None

    return box.run(body, keep=args.keep, describe=describe, hint_extra=f" SANDBOX_APP_PORT={cfg.app_port}",
                   after_down=lambda gone: remove_state(cfg, gone))


if __name__ == "__main__":
    sys.exit(main())
