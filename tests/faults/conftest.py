# -*- coding: utf-8 -*-
"""The fault table: every test marked ``faults`` (here or anywhere under tests/) is one row of it.

* ``faults_extended`` tests (the long ``ansible-playbook`` faults) are skipped by a plain ``pytest tests``
  (what CI runs) and run when selected: ``make test-faults`` (FAULTS_ALL=1), ``FAULTS_ALL=1 pytest ...``, or
  a ``-m`` expression that names ``faults``.
* After the run, a table of the faults that ran: fault, survived (the test passed), rows lost (the test's
  ``rows_lost`` property, from its baseline comparison) and wall time. ``FAULTS_RESULTS=<path>`` also
  writes it as JSON.
"""

from __future__ import annotations

import json
import os

import pytest

_RESULTS = {}


def _selected(config):
    return bool(os.environ.get("FAULTS_ALL")) or "faults" in (config.getoption("markexpr") or "")


def pytest_collection_modifyitems(config, items):
    if _selected(config):
        return
    skip = pytest.mark.skip(reason="extended fault test (long ansible-playbook runs): run `make test-faults`, "
                                   "or set FAULTS_ALL=1")
    for item in items:
        if item.get_closest_marker("faults_extended") is not None:
            item.add_marker(skip)


def pytest_runtest_logreport(report):
    if "faults" not in report.keywords:
        return
    entry = _RESULTS.setdefault(report.nodeid, {"test": report.nodeid, "outcome": "passed", "seconds": 0.0, "properties": {}})
    entry["seconds"] += report.duration
    entry["properties"].update(dict(report.user_properties))
    if report.skipped and report.when in ("setup", "call"):
        entry["outcome"] = "skipped"
    elif report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"


def _rows(results):
    rows = []
    for entry in results:
        props = entry["properties"]
        fault = props.get("fault") or entry["test"].split("::")[-1]
        rows.append({
            "fault": fault,
            "test": entry["test"],
            "survived": {"passed": "yes", "skipped": "skipped"}.get(entry["outcome"], "no"),
            "rows_lost": props.get("rows_lost", "n/a" if entry["outcome"] == "passed" else "?"),
            "seconds": round(entry["seconds"], 1),
        })
    return rows


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    rows = _rows(_RESULTS.values())
    ran = [r for r in rows if r["survived"] != "skipped"]
    if not ran:
        return
    width = max(len(r["fault"]) for r in ran)
    terminalreporter.section("fault table")
    terminalreporter.write_line("%-*s  %-8s  %-9s  %s" % (width, "fault", "survived", "rows lost", "seconds"))
    for row in ran:
        terminalreporter.write_line("%-*s  %-8s  %-9s  %s" % (width, row["fault"], row["survived"], row["rows_lost"], row["seconds"]))
    path = os.environ.get("FAULTS_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
