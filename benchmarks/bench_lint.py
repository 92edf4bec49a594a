#!/usr/bin/env python
"""Lint benchmark: schema_compat_check's static mode vs squawk on the labeled corpus.

Runs over every case of ``tests/data/migrations/`` (see its README.md): the
case's ``up.sql`` goes through

``ours``    ``compat_static.analyze_static()`` (parse + analyze, no database),
            with the case's ``server_version`` (default 150000),
            ``static_table_rows`` as ``table_rows`` (else unknown) and its
            ``old_queries.sql`` as ``old_queries``;
``squawk``  the ``squawk`` binary (PyPI ``squawk-cli``, in the venv) with its
            default rule set, ``--reporter json`` and ``--pg-version`` set to
            the case's server version; one process per server version.

Scores, against each case's ``expected.yml``:

``recall``     unsafe cases (``unsafe: true``) where ours reports at least one
               finding of severity error or warning in one of the case's
               expected ``categories``;
``false_pos``  safe cases where ours reports at least one finding of
               severity error or warning in breaks_old_app, blocking_lock,
               table_rewrite or data_loss (non_transactional findings, e.g.
               on CREATE INDEX CONCURRENTLY, are facts, not false alarms);
``squawk_recall`` / ``squawk_false_pos``
               the same with "squawk reports any violation" (any rule, any
               level; squawk's rules do not map 1:1 onto our categories). A
               ``syntax-error`` from squawk is not counted as a finding.
``ms_per_file`` our mean time per file: each ``up.sql`` analyzed ``--repeat``
               times, timed with time.perf_counter() around
               analyze_static() (parse + analyze); mean over all runs.

Also printed, for information: squawk restricted to its safety rules (style
rules such as prefer-robust-stmts and require-statement-timeout left out),
squawk with its rules mapped onto our categories (``SQUAWK_RULES``), the
share of unsafe cases where ours reports *every* expected category, and how
often our "compatible" verdict (no error in the four categories) agrees with
the label.

The last line printed is::

    lint cases=N recall=… false_pos=… squawk_recall=… squawk_false_pos=… ms_per_file=…

Targets: recall >= 0.95 and >= squawk_recall, false_pos <= 0.05,
ms_per_file < 20. Missing one prints a ``note:`` line; it is not a failure.
Exit status: 0 when both tools ran on every case, 1 when one of them crashed
on a case (the case then counts as "nothing reported"), 2 on a setup error
(corpus missing or mislabelled, analyzer not importable, squawk missing).

Usage::

    .venv/bin/python benchmarks/bench_lint.py [--repeat N] [--corpus DIR] [--json PATH]
    make bench-lint                    # REPEAT=50 make bench-lint
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(REPO_ROOT, ".collections"),):
    if _path not in sys.path:
        sys.path.insert(0, _path)

DEFAULT_CORPUS = os.path.join(REPO_ROOT, "tests", "data", "migrations")
DEFAULT_REPEAT = 10
DEFAULT_SERVER_VERSION = 150000

CATEGORIES = ("breaks_old_app", "blocking_lock", "table_rewrite", "data_loss", "non_transactional")
# The categories that decide `compatible` (and count as false positives on a safe case).
COMPAT_CATEGORIES = CATEGORIES[:4]
ALARM = ("error", "warning")
SHORT = {"breaks_old_app": "breaks", "blocking_lock": "lock", "table_rewrite": "rewrite",
         "data_loss": "loss", "non_transactional": "non_tx"}

TARGET_RECALL = 0.95
TARGET_FALSE_POS = 0.05
TARGET_MS_PER_FILE = 20.0

# squawk (2.x) rules and the category of ours each corresponds to; None = a
# style / robustness rule that says nothing about running online (left out of
# the "safety rules" variant). Rules not listed count as safety rules without
# a category.
SQUAWK_RULES: Dict[str, Optional[str]] = {
    # the old app breaks
    "renaming-column": "breaks_old_app",
    "renaming-table": "breaks_old_app",
    "renaming-object": "breaks_old_app",
    "adding-required-field": "breaks_old_app",
    "ban-drop-view": "breaks_old_app",
    "ban-drop-function": "breaks_old_app",
    "ban-drop-type": "breaks_old_app",
    "ban-drop-default": "breaks_old_app",
    "ban-drop-not-null": "breaks_old_app",
    "ban-drop-constraint": "breaks_old_app",
    "ban-drop-schema": "breaks_old_app",
    "ban-drop-sequence": "breaks_old_app",
    "ban-drop-trigger": "breaks_old_app",
    # data is destroyed
    "ban-drop-column": "data_loss",
    "ban-drop-table": "data_loss",
    "ban-drop-database": "data_loss",
    "ban-truncate-cascade": "data_loss",
    # locks held for longer than a catalog update
    "require-concurrent-index-creation": "blocking_lock",
    "require-concurrent-index-deletion": "blocking_lock",
    "require-concurrent-reindex": "blocking_lock",
    "require-concurrent-partition-detach": "blocking_lock",
    "constraint-missing-not-valid": "blocking_lock",
    "adding-foreign-key-constraint": "blocking_lock",
    "adding-not-nullable-field": "blocking_lock",
    "adding-serial-primary-key-field": "blocking_lock",
    "disallowed-unique-constraint": "blocking_lock",
    "ban-alter-domain-with-add-constraint": "blocking_lock",
    "require-lock-timeout": "blocking_lock",
    "require-timeout-settings": "blocking_lock",
    # rewrites
    "adding-field-with-default": "table_rewrite",
    "changing-column-type": "table_rewrite",
    # transaction handling
    "ban-concurrent-index-creation-in-transaction": "non_transactional",
    "ban-uncommitted-transaction": "non_transactional",
    "transaction-nesting": "non_transactional",
    # style / robustness
    "prefer-robust-stmts": None,
    "prefer-bigint-over-int": None,
    "prefer-bigint-over-smallint": None,
    "prefer-big-int": None,
    "prefer-identity": None,
    "prefer-text-field": None,
    "prefer-timestamp-tz": None,
    "prefer-timestamptz": None,
    "ban-char-field": None,
    "require-statement-timeout": None,
    "require-enum-value-ordering": None,
    "require-table-schema": None,
    "identifier-too-long": None,
    "unused-ignore": None,
}
SQUAWK_SYNTAX_ERROR = "syntax-error"


class SetupError(Exception):
    """The benchmark cannot run (message for humans)."""


# --------------------------------------------------------------------------
# output: rich when installed, plain prints otherwise
# --------------------------------------------------------------------------


class Out:
    def __init__(self) -> None:
        try:
            from rich.console import Console

            self.console = Console(highlight=False)
            if not self.console.is_terminal and not os.environ.get("COLUMNS"):
                self.console.width = 160  # piped / logged: do not fold the table to 80 columns
        except ImportError:  # pragma: no cover - rich comes with ansible-lint
            self.console = None

    def say(self, message: str, style: Optional[str] = None) -> None:
        if self.console is not None:
            self.console.print(message, style=style, markup=False, soft_wrap=True)
        else:
            print(message, flush=True)

    def table(self, title: str, header: List[str], rows: List[List[Tuple[str, Optional[str]]]]) -> None:
        """rows: cells as (text, rich style or None)."""
        if self.console is not None:
            from rich.table import Table
            from rich.text import Text

            t = Table(title=title, title_justify="left")
            for h in header:
                t.add_column(h, justify="left", overflow="fold")
            for r in rows:
                t.add_row(*(Text(text, style=style or "") for text, style in r))
            self.console.print(t)
        else:
            print(title)
            widths = [max(len(h), *(len(r[i][0]) for r in rows)) for i, h in enumerate(header)]
            for r in [[(h, None) for h in header]] + rows:
                print("  ".join(cell[0].ljust(w) for cell, w in zip(r, widths)))
            sys.stdout.flush()


OUT = Out()


# --------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------


def split_statements(text: str) -> List[str]:
    """old_queries.sql: statements separated by ';', '--' comment lines dropped."""
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def load_corpus(corpus: str) -> List[dict]:
    if not os.path.isdir(corpus):
        raise SetupError(f"corpus directory {corpus} does not exist")
    cases = []
    for name in sorted(os.listdir(corpus)):
        cdir = os.path.join(corpus, name)
        label_path = os.path.join(cdir, "expected.yml")
        if not os.path.isdir(cdir) or not os.path.isfile(label_path):
            continue
        up_path = os.path.join(cdir, "up.sql")
        if not os.path.isfile(up_path):
            raise SetupError(f"{name}: up.sql is missing")
        with open(label_path, encoding="utf-8") as fh:
            label = yaml.safe_load(fh)
        if not isinstance(label, dict) or not isinstance(label.get("unsafe"), bool):
            raise SetupError(f"{name}: expected.yml needs `unsafe: true|false`")
        categories = label.get("categories") or []
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise SetupError(f"{name}: unknown categories {unknown}")
        if bool(categories) != label["unsafe"]:
            raise SetupError(f"{name}: an unsafe case needs categories, a safe case none")
        with open(up_path, encoding="utf-8") as fh:
            up_sql = fh.read()
        old_queries = None
        old_path = os.path.join(cdir, "old_queries.sql")
        if os.path.isfile(old_path):
            with open(old_path, encoding="utf-8") as fh:
                old_queries = split_statements(fh.read())
        with open(os.path.join(cdir, "base.sql"), encoding="utf-8") as fh:
            base_sql = fh.read()
        cases.append({
            "name": name, "up_path": up_path, "up_sql": up_sql, "old_queries": old_queries, "base_sql": base_sql,
            "unsafe": label["unsafe"], "categories": list(categories),
            "compatible": label.get("compatible"),
            "server_version": int(label.get("server_version") or DEFAULT_SERVER_VERSION),
            "table_rows": label.get("static_table_rows") or None,
        })
    if not cases:
        raise SetupError(f"no cases (NNN-name/expected.yml) in {corpus}")
    return cases


# --------------------------------------------------------------------------
# ours
# --------------------------------------------------------------------------


def import_analyzer():
    try:
        from ansible_collections.stateful.rollback.plugins.module_utils import compat_static
    except ImportError as exc:
        raise SetupError(f"cannot import compat_static ({exc}); run scripts/bootstrap "
                         "(it links the collection into .collections)") from exc
    return compat_static


def run_ours(analyzer, cases: List[dict], repeat: int) -> float:
    """Fills case["ours"] (findings) / case["ours_error"]; returns the mean ms per file."""

    def analyze(case):
        # As a pre-merge pipeline runs it: with the current schema (schema_compat_check's
        # `schema` option), whose column types make type changes exact; its parsing is timed too.
        return analyzer.analyze_static(case["up_sql"], server_version=case["server_version"],
                                       table_rows=case["table_rows"], old_queries=case["old_queries"],
                                       column_types=analyzer.column_types_from_sql(case["base_sql"]))

    # One untimed call first: imports and caches a process pays once, not per file.
    try:
        analyze(cases[0])
    except Exception:  # noqa: BLE001 - reported per case below
        pass
    total, runs = 0.0, 0
    for case in cases:
        try:
            result = None
            for _run in range(repeat):
                started = time.perf_counter()
                result = analyze(case)
                total += time.perf_counter() - started
                runs += 1
            case["ours"] = list(result.get("findings") or [])
        except Exception as exc:  # noqa: BLE001 - a crash on one case is reported, the others still run
            case["ours"] = []
            case["ours_error"] = f"{type(exc).__name__}: {exc}"
    return 1000.0 * total / runs if runs else float("nan")


def ours_alarms(case: dict, categories) -> List[dict]:
    return [f for f in case["ours"] if f.get("severity") in ALARM and f.get("category") in categories]


# --------------------------------------------------------------------------
# squawk
# --------------------------------------------------------------------------


def find_squawk(explicit: Optional[str]) -> str:
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise SetupError(f"--squawk {explicit} is not an executable")
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "squawk")
    found = beside if os.access(beside, os.X_OK) else shutil.which("squawk")
    if not found:
        raise SetupError("squawk is not installed; run scripts/bootstrap (requirements-dev.txt lists squawk-cli)")
    return found


def squawk_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip()


def pg_version_arg(server_version: int) -> str:
    major = server_version // 10000
    if major >= 10:
        return f"{major}.0"
    return f"{major}.{(server_version // 100) % 100}"


def run_squawk(binary: str, corpus: str, cases: List[dict]) -> float:
    """Fills case["squawk"] (violations) / case["squawk_error"]; returns wall ms per file."""
    by_version: Dict[int, List[dict]] = {}
    for case in cases:
        by_version.setdefault(case["server_version"], []).append(case)
    started = time.perf_counter()
    for version, group in sorted(by_version.items()):
        rel = {os.path.relpath(c["up_path"], corpus): c for c in group}
        cmd = [binary, "--reporter", "json", f"--pg-version={pg_version_arg(version)}"] + sorted(rel)
        proc = subprocess.run(cmd, cwd=corpus, capture_output=True, text=True, check=False)
        try:
            violations = json.loads(proc.stdout) if proc.stdout.strip() else []
        except ValueError:
            violations = None
        if proc.returncode not in (0, 1) or not isinstance(violations, list):
            message = (proc.stderr or proc.stdout).strip().splitlines()
            for case in group:
                case["squawk"] = []
                case["squawk_error"] = f"exit {proc.returncode}: {message[0] if message else 'no output'}"
            continue
        for case in group:
            case["squawk"] = []
        for v in violations:
            case = rel.get(os.path.normpath(v.get("file", "")))
            if case is None:
                continue
            if v.get("rule_name") == SQUAWK_SYNTAX_ERROR:
                case["squawk_error"] = f"syntax-error: {v.get('message')}"
                continue
            case["squawk"].append(v)
    return 1000.0 * (time.perf_counter() - started) / len(cases)


def squawk_rules(case: dict, safety_only: bool = False) -> List[str]:
    rules = sorted({v.get("rule_name", "?") for v in case["squawk"]})
    if safety_only:
        rules = [r for r in rules if SQUAWK_RULES.get(r, "") is not None]
    return rules


# --------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------


def score(cases: List[dict]) -> dict:
    unsafe = [c for c in cases if c["unsafe"]]
    safe = [c for c in cases if not c["unsafe"]]

    def frac(hits, group):
        return sum(1 for c in group if hits(c)) / len(group) if group else float("nan")

    for c in cases:
        c["ours_hit"] = bool(ours_alarms(c, c["categories"])) if c["unsafe"] else None
        c["ours_all"] = all(ours_alarms(c, [cat]) for cat in c["categories"]) if c["unsafe"] else None
        c["ours_fp"] = bool(ours_alarms(c, COMPAT_CATEGORIES)) if not c["unsafe"] else None
        c["ours_compatible"] = not any(f.get("severity") == "error" and f.get("category") in COMPAT_CATEGORIES
                                       for f in c["ours"])
        c["squawk_any"] = bool(squawk_rules(c))
        c["squawk_safety"] = bool(squawk_rules(c, safety_only=True))
        c["squawk_mapped"] = any(SQUAWK_RULES.get(r) in c["categories"] for r in squawk_rules(c))
    labelled_compat = [c for c in cases if isinstance(c["compatible"], bool)]
    return {
        "recall": frac(lambda c: c["ours_hit"], unsafe),
        "false_pos": frac(lambda c: c["ours_fp"], safe),
        "all_categories": frac(lambda c: c["ours_all"], unsafe),
        "compatible_agrees": sum(1 for c in labelled_compat if c["ours_compatible"] == c["compatible"]),
        "compatible_labelled": len(labelled_compat),
        "squawk_recall": frac(lambda c: c["squawk_any"], unsafe),
        "squawk_false_pos": frac(lambda c: c["squawk_any"], safe),
        "squawk_safety_recall": frac(lambda c: c["squawk_safety"], unsafe),
        "squawk_safety_false_pos": frac(lambda c: c["squawk_safety"], safe),
        "squawk_mapped_recall": frac(lambda c: c["squawk_mapped"], unsafe),
        "unsafe": len(unsafe), "safe": len(safe),
    }


def case_rows(cases: List[dict]) -> List[List[Tuple[str, Optional[str]]]]:
    rows = []
    for c in cases:
        expected = " ".join(SHORT[x] for x in c["categories"]) if c["unsafe"] else "safe"
        found = sorted({(f["category"], f["severity"]) for f in c["ours"] if f.get("severity") in ALARM})
        ours = " ".join(f"{SHORT.get(cat, cat)}:{sev[0].upper()}" for cat, sev in found) or "-"
        if "ours_error" in c:
            ours, ours_style = "CRASH " + c["ours_error"], "bold red"
        elif c["unsafe"]:
            ours, ours_style = (ours, "green") if c["ours_hit"] else ("MISS " + ours, "bold red")
        else:
            ours, ours_style = (ours, "green") if not c["ours_fp"] else ("FP " + ours, "bold red")
        safety = squawk_rules(c, safety_only=True)
        style_count = len(squawk_rules(c)) - len(safety)
        sq = ", ".join(safety) + (f" +{style_count} style" if style_count else "")
        sq = sq.strip(", ") or "-"
        if "squawk_error" in c:
            sq, sq_style = "ERROR " + c["squawk_error"], "bold red"
        elif c["unsafe"]:
            sq_style = "green" if c["squawk_any"] else "yellow"
        else:
            sq_style = "yellow" if c["squawk_any"] else "green"
        rows.append([(c["name"], None), (expected, None), (ours, ours_style), (sq, sq_style)])
    return rows


def fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.2f}"


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_lint", description=__doc__.split("\n\n", maxsplit=1)[0],
        epilog="Environment: REPEAT (like --repeat).")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"times each up.sql is analyzed by ours; the mean counts (default: $REPEAT or {DEFAULT_REPEAT})")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="corpus directory (default tests/data/migrations)")
    parser.add_argument("--squawk", metavar="PATH", help="squawk binary (default: the venv's, else $PATH)")
    parser.add_argument("--json", metavar="PATH", help="also write the per-case results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat is None:
        try:
            args.repeat = int(os.environ.get("REPEAT") or DEFAULT_REPEAT)
        except ValueError:
            parser.error("REPEAT must be an integer")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    try:
        cases = load_corpus(os.path.abspath(args.corpus))
        analyzer = import_analyzer()
        squawk = find_squawk(args.squawk)
    except SetupError as exc:
        print(f"bench_lint: error: {exc}", file=sys.stderr)
        return 2

    version = squawk_version(squawk)
    unsafe_n = sum(1 for c in cases if c["unsafe"])
    OUT.say(f"bench_lint: {len(cases)} cases ({unsafe_n} unsafe, {len(cases) - unsafe_n} safe) from "
            f"{os.path.relpath(os.path.abspath(args.corpus), os.getcwd())}; ours repeat={args.repeat}; {version}",
            style="bold")
    ms_per_file = run_ours(analyzer, cases, args.repeat)
    squawk_ms = run_squawk(squawk, os.path.abspath(args.corpus), cases)
    s = score(cases)

    OUT.table("per case (ours: category:E/W of error/warning findings; squawk: safety rules, +N style rules)",
              ["case", "expected", "ours", "squawk"], case_rows(cases))
    OUT.say(f"ours: recall={fmt(s['recall'])} false_pos={fmt(s['false_pos'])} "
            f"every_expected_category={fmt(s['all_categories'])} "
            f"compatible_agrees={s['compatible_agrees']}/{s['compatible_labelled']} ms_per_file={ms_per_file:.2f}")
    OUT.say(f"squawk any rule: recall={fmt(s['squawk_recall'])} false_pos={fmt(s['squawk_false_pos'])}; "
            f"safety rules only: recall={fmt(s['squawk_safety_recall'])} false_pos={fmt(s['squawk_safety_false_pos'])}; "
            f"rules mapped to the expected categories: recall={fmt(s['squawk_mapped_recall'])}; "
            f"wall ms_per_file={squawk_ms:.2f} (one process per server version)")

    crashed_ours = [c["name"] for c in cases if "ours_error" in c]
    crashed_squawk = [c["name"] for c in cases if "squawk_error" in c]
    code = 0
    if crashed_ours:
        OUT.say(f"FAILED: our static analysis crashed on {len(crashed_ours)} case(s): {', '.join(crashed_ours)}",
                style="bold red")
        code = 1
    if crashed_squawk:
        OUT.say(f"FAILED: squawk failed on {len(crashed_squawk)} case(s): {', '.join(crashed_squawk)}", style="bold red")
        code = 1
    notes = []  # a nan (no unsafe / no safe case, every call crashed) is no target missed
    if s["recall"] < TARGET_RECALL:
        notes.append(f"recall={fmt(s['recall'])} is below {TARGET_RECALL:.2f}")
    if s["recall"] < s["squawk_recall"]:
        notes.append(f"recall={fmt(s['recall'])} is below squawk's {fmt(s['squawk_recall'])}")
    if s["false_pos"] > TARGET_FALSE_POS:
        notes.append(f"false_pos={fmt(s['false_pos'])} is above {TARGET_FALSE_POS:.2f}")
    if ms_per_file >= TARGET_MS_PER_FILE:
        notes.append(f"ms_per_file={ms_per_file:.2f} is not below {TARGET_MS_PER_FILE:.0f}")
    OUT.say("note: target not met: " + "; ".join(notes) if notes else
            f"targets met (recall >= {TARGET_RECALL:.2f} and >= squawk's, false_pos <= {TARGET_FALSE_POS:.2f}, "
            f"ms_per_file < {TARGET_MS_PER_FILE:.0f})")
    summary = (f"lint cases={len(cases)} recall={fmt(s['recall'])} false_pos={fmt(s['false_pos'])} "
               f"squawk_recall={fmt(s['squawk_recall'])} squawk_false_pos={fmt(s['squawk_false_pos'])} "
               f"ms_per_file={fmt(ms_per_file)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"squawk_version": version, "repeat": args.repeat, "ms_per_file": ms_per_file,
                       "squawk_ms_per_file": squawk_ms, "scores": s, "summary": summary,
                       "cases": [{k: v for k, v in c.items() if k not in ("up_sql", "old_queries")} for c in cases]},
                      fh, indent=2, default=str)
            fh.write("\n")
    print(summary, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
