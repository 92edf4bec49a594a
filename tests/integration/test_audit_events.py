# -*- coding: utf-8 -*-
"""Governance and observability end to end, on a sandbox of its own (ports 27400-27406): the demo
(playbooks/demo.yml: release 1.0.0 deployed and promoted, then the drill with fault `health_check`:
release 2.1.0 fails its rollout and is rolled back) with a Prometheus textfile set.

It proves that every stage of both runs wrote exactly one record through stateful.rollback.audit_log into
the hash-chained store (no longer the unchained audit.jsonl), that `state: verified` passes on it after the
deploy and the rollback, that each record is the stage's structured event with its key figures, that the
textfile parses with prometheus_client and holds a duration series per stage with the record's labels and
value (plus RTO, replica lag and parity), and that the drill report links every event by seq and hash.

Everything is real but the Kubernetes API server (kubesim on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import stat
import xml.etree.ElementTree as ET

import pytest
import testkit
from prometheus_client.parser import text_string_to_metric_families
from testkit import playbook

from ansible_collections.stateful.rollback.plugins.module_utils import audit
from ansible_collections.stateful.rollback.plugins.modules import audit_log

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3000)]

OWN_SANDBOX_PORT_BASE = 27400
OWN_SANDBOX_NAME = "pytest-audit-events"


@pytest.fixture(scope="module")
def demo(own_sandbox, tmp_path_factory):
    """The demo, run once with stateful_rollback_metrics_textfile in a directory of its own."""
    metrics_dir = tmp_path_factory.mktemp("textfile_collector")
    textfile = os.path.join(str(metrics_dir), "stateful_rollback.prom")
    # No RTO limit: what is measured here is the record of the run, not the speed of a (possibly loaded) machine.
    rc, out = playbook(own_sandbox, "demo.yml", "-e", "stateful_rollback_metrics_textfile=" + textfile,
                       "-e", '{"drill_max_rto_seconds": null}', timeout=2400)
    assert rc == 0, out[-6000:]
    state = os.path.join(own_sandbox.config.sandbox_dir, "state")
    with open(os.path.join(state, "drills", "latest.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    with open(os.path.join(state, "audit-log.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    runs = {}
    for phase in ("baseline", "fault"):
        with open(os.path.join(state, "runs", report["runs"][phase] + ".json"), encoding="utf-8") as handle:
            runs[phase] = json.load(handle)
    return {"sb": own_sandbox, "state": state, "report": report, "records": records, "runs": runs,
            "textfile": textfile, "metrics_dir": str(metrics_dir)}


def ms(text):
    return audit.iso(audit.parse_time(text, "time"))


def of_run(records, run_id):
    return [r for r in records if r["run"] == run_id]


def test_the_hash_chained_store_holds_one_record_per_stage_and_verifies(demo, capsys):
    assert not os.path.exists(os.path.join(demo["state"], "audit.jsonl")), "the unchained audit.jsonl is no longer written"
    path = os.path.join(demo["state"], "audit-log.jsonl")
    result = testkit.run_module(capsys, audit_log, {"state": "verified", "path": path})
    assert result.get("failed") is not True and result["valid"] is True, result
    assert result["records"] == len(demo["records"]) and result["last_hash"] == demo["records"][-1]["hash"]
    # The chain links line to line, from seq 1.
    assert [r["seq"] for r in demo["records"]] == list(range(1, len(demo["records"]) + 1))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(demo["records"], demo["records"][1:]))

    for phase in ("baseline", "fault"):
        run = demo["runs"][phase]
        mine = [r for r in of_run(demo["records"], run["id"]) if r["stage"] != "drill"]
        # One record per stage of the run record, in order, plus the closing `run` record.
        assert [r["stage"] for r in mine] == [s["stage"] for s in run["stages"]] + ["run"]
        assert len(mine) == len(run["stages"]) + 1
        for record, stage in zip(mine, run["stages"]):
            assert record["v"] == 1 and record["playbook"] == "drill.yml" and record["release"] == run["release"]["version"]
            # The record keeps times in UTC with milliseconds (a role may note microseconds).
            assert (record["outcome"], record["seconds"], record["started_at"], record["ended_at"]) == (
                stage["outcome"], stage["seconds"], ms(stage["started_at"]), ms(stage["ended_at"]))
            assert record["details"] == stage["details"] and isinstance(record["figures"], dict)
        # The run record links exactly these records (its file is written after the closing record).
        assert [(e["stage"], e["seq"], e["hash"]) for e in run["audit"]["events"]] == [
            (r["stage"], r["seq"], r["hash"]) for r in mine]
        assert run["audit"]["store"] == "file" and run["audit"]["path"] == path
    fault = of_run(demo["records"], demo["runs"]["fault"]["id"])
    stages = [r["stage"] for r in fault]
    assert stages[:4] == ["preflight", "snapshot", "migrate", "deploy"] and stages[-3:] == ["rollback", "run", "drill"]
    assert stages[4:-3] == ["rollback_flags", "rollback_workloads", "rollback_schema", "rollback_verify_checks", "rollback_verify",
                            "rollback_ledger"]
    assert len(set(stages)) == len(stages), stages  # one record per stage: none twice
    assert [r["outcome"] for r in fault][:4] == ["ok", "ok", "ok", "failed"]
    assert fault[-2]["details"]["run_outcome"] == "rolled_back"


def test_records_carry_the_stage_key_figures(demo):
    baseline = {r["stage"]: r for r in of_run(demo["records"], demo["runs"]["baseline"]["id"])}
    assert baseline["verify"]["figures"]["parity_differences"] == {"all": 0}
    records = of_run(demo["records"], demo["runs"]["fault"]["id"])
    fault = {r["stage"]: r for r in records}
    assert set(fault["preflight"]["figures"]["replica_lag_bytes"]) == {"standby", "subscriber"}
    assert fault["migrate"]["figures"]["rows_backfilled"] == fault["migrate"]["details"]["primary"]["rows_processed"] > 0
    assert fault["rollback"]["figures"]["rto_seconds"] == fault["rollback"]["details"]["seconds"] > 0
    # The rollback's verification checked parity: its record carries the differences (none).
    checked = [r["figures"]["parity_differences"] for r in records if "parity_differences" in r["figures"]]
    assert checked and all(c == {"all": 0} for c in checked)
    assert fault["run"]["figures"] == {}


def test_the_textfile_parses_and_has_a_duration_series_per_stage(demo):
    mode = os.stat(demo["textfile"]).st_mode
    assert stat.S_IMODE(mode) == 0o644
    # Replaced by rename: no temporary file is left beside it (only the hidden lock file).
    assert sorted(os.listdir(demo["metrics_dir"])) == [".stateful_rollback.prom.lock", "stateful_rollback.prom"]
    with open(demo["textfile"], encoding="utf-8") as handle:
        families = {f.name: f for f in text_string_to_metric_families(handle.read())}
    assert all(families[n].type == "gauge" for n in families)
    durations = {(s.labels["stage"], s.labels["release"], s.labels["outcome"]): s.value
                 for s in families["stateful_rollback_stage_duration_seconds"].samples}
    for phase in ("baseline", "fault"):
        for record in of_run(demo["records"], demo["runs"][phase]["id"]):
            key = (record["stage"], record["release"], record["outcome"])
            assert key in durations, (key, sorted(durations))
    # A series is the last record with its labels.
    expected = {}
    for record in demo["records"]:
        expected[(record["stage"], record["release"], record["outcome"])] = record["seconds"]
    assert durations == pytest.approx(expected)
    assert durations[("deploy", "2.1.0", "failed")] > 0 and durations[("deploy", "1.0.0", "ok")] > 0

    rto = {(s.labels["kind"], s.labels["release"]): s.value for s in families["stateful_rollback_rto_seconds"].samples}
    assert rto[("drill", "2.1.0")] == pytest.approx(demo["report"]["rto_seconds"])
    assert rto[("rollback", "2.1.0")] > 0
    lag = {s.labels["replica"] for s in families["stateful_rollback_replica_lag_bytes"].samples}
    assert lag == {"standby", "subscriber"}
    parity = {(s.labels["stage"], s.labels["release"], s.labels["replica"]): s.value
              for s in families["stateful_rollback_parity_differences"].samples}
    assert parity == {(r["stage"], r["release"], "all"): 0 for r in demo["records"] if "parity_differences" in r["figures"]}
    assert ("verify", "1.0.0", "all") in parity and any(key[1] == "2.1.0" for key in parity)


def test_the_drill_report_links_the_runs_events(demo):
    report = demo["report"]
    assert report["outcome"] == "passed", report["failed_checks"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["audit_log_intact"]["ok"] is True
    audit = report["audit"]
    assert audit["store"] == "file" and audit["path"] == os.path.join(demo["state"], "audit-log.jsonl")
    assert audit["verified"] is True and audit["metrics_textfile"] == demo["textfile"]
    wanted = [(r["run"], r["stage"], r["seq"], r["hash"]) for phase in ("baseline", "fault")
              for r in of_run(demo["records"], demo["runs"][phase]["id"]) if r["stage"] != "drill"]
    # The drill's own record (stage drill) closes the list; it is the last line of the store.
    drill = demo["records"][-1]
    assert drill["stage"] == "drill" and drill["details"]["outcome"] == "passed"
    assert drill["figures"]["rto_seconds"] == pytest.approx(report["rto_seconds"])
    assert [(e["run"], e["stage"], e["seq"], e["hash"]) for e in audit["events"]] == wanted + [
        (report["id"], "drill", drill["seq"], drill["hash"])]
    assert audit["last_hash"] == drill["hash"]
    assert audit["records_verified"] == len(demo["records"]) - 1

    with open(os.path.join(demo["state"], "drills", "latest.md"), encoding="utf-8") as handle:
        markdown = handle.read()
    assert "## Audit events" in markdown and "verified intact" in markdown
    for event in audit["events"]:
        assert "| %s | %s |" % (event["run"], event["stage"]) in markdown and event["hash"] in markdown
    junit = ET.parse(os.path.join(demo["state"], "drills", "latest.xml")).getroot()
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props["audit_path"] == audit["path"] and props["audit_verified"] == "true"
    assert [props["audit_event.%d" % i] for i in range(1, len(audit["events"]) + 1)] == [
        "run=%s stage=%s outcome=%s seq=%s hash=%s" % (e["run"], e["stage"], e["outcome"], e["seq"], e["hash"])
        for e in audit["events"]]
