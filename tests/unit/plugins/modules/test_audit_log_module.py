# -*- coding: utf-8 -*-
"""audit_log under AnsibleModule with the file store (no database): bad input names the option
without a traceback, check mode writes nothing, diff, secrets stay out of the result, and a
broken chain fails naming the line and the reason."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest
import testkit

from ansible_collections.stateful.rollback.plugins.module_utils import audit
from ansible_collections.stateful.rollback.plugins.modules import audit_log

# Nothing listens on port 1: a test that reached the database would fail with "unable to connect".
NO_DB = {"login_host": "127.0.0.1", "login_port": 1, "connect_timeout": 1}


def run_module(capsys, args, check_mode=False, diff=False):
    return testkit.run_module(capsys, audit_log, args, check_mode=check_mode, diff=diff, raw=True)


def test_the_outcomes_are_the_stores_and_the_docs():
    """The module's choices (kept in the module, so that its argument spec works without module_utils), the
    store's rule and DOCUMENTATION name the same outcomes."""
    import yaml

    assert audit_log.OUTCOMES == list(audit.OUTCOMES)
    assert yaml.safe_load(audit_log.DOCUMENTATION)["options"]["outcome"]["choices"] == list(audit.OUTCOMES)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"path": "/tmp/x.jsonl"}, "state is appended but all of the following are missing: stage"),
        ({"stage": "s"}, "store is file but all of the following are missing: path"),
        ({"stage": "s", "store": "both"}, "store is both but all of the following are missing: path"),
        ({"stage": "s", "path": "/tmp/x", "store": "tape"}, "value of store must be one of: file, table, both"),
        ({"stage": "s", "path": "/tmp/x", "state": "gone"}, "value of state must be one of: appended, verified"),
        ({"stage": "s", "path": "/tmp/x", "outcome": "done"},
         "value of outcome must be one of: ok, failed, skipped, compensated, approved, refused, overridden"),
        ({"state": "verified", "path": "/tmp/x", "stage": "s", "outcome": "ok"},
         "stage, outcome: only used with state=appended, not state=verified"),
        ({"stage": "s", "path": "/tmp/x", "missing_ok": True}, "missing_ok: only used with state=verified"),
        ({"stage": "s", "store": "table", "path": "/tmp/x"}, "path: only used with store=file or store=both, not store=table"),
        ({"stage": "s", "path": "/tmp/x", "hmac_key": ""}, "hmac_key must not be empty"),
        ({"stage": " ", "path": "/tmp/x"}, "stage must be a non-empty name"),
        ({"stage": "s", "path": "/tmp/x", "started_at": "noon"}, "started_at must be an ISO 8601 time"),
        ({"stage": "s", "path": "/tmp/x", "seconds": [1]}, "argument 'seconds' is of type list"),
        ({"stage": "s", "path": "/tmp/x", "seconds": -2}, "seconds must be a non-negative number"),
        ({"stage": "s", "path": "/tmp/x", "details": "not a dict"}, "details"),
        ({"stage": "s", "path": "/tmp/x", "error": 5}, "error must be a string, a dict or a list, got int"),
        ({"stage": "s", "store": "table", "journal_schema": "x; DROP TABLE y"}, "journal_schema 'x; DROP TABLE y' is not a valid schema name"),
        ({"stage": "s", "path": "/tmp/x", "figures": {"rows_compared": "many"}},
         "figures.rows_compared must be a finite number, got 'many'"),
        ({"stage": "s", "path": "/tmp/x", "figures": {"replica_lag_bytes": 7}},
         "figures.replica_lag_bytes must be a dict of replica name to number"),
        ({"stage": "s", "path": "/tmp/x", "metrics_textfile": "/tmp/metrics.txt"},
         "metrics_textfile /tmp/metrics.txt must be a file name ending in .prom"),
        ({"state": "verified", "path": "/tmp/x", "metrics_textfile": "/tmp/m.prom", "figures_from_details": True},
         "figures_from_details, metrics_textfile: only used with state=appended, not state=verified"),
        ({"stage": "s", "store": "table"}, "unable to connect to database:"),
        ({"state": "verified", "store": "table"}, "unable to connect to database:"),
    ],
)
def test_bad_input_is_named(capsys, args, fragment):
    result, raw = run_module(capsys, dict(NO_DB, **args))
    assert result["failed"] is True and fragment in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"]


def test_check_mode_writes_nothing_and_shows_the_record(capsys, tmp_path):
    path = tmp_path / "logs" / "audit.jsonl"
    args = {"path": str(path), "stage": "snapshot", "release": "2.1.0", "details": {"n": 1}}
    result, raw = run_module(capsys, args, check_mode=True, diff=True)
    assert result["changed"] is True and result["seq"] == 1 and result["record"]["prev_hash"] == audit.ZERO_HASH
    assert result["record"]["hash"] == audit.record_hash(result["record"]) == result["hash"]
    assert result["created"] == {"file": True}
    assert result["diff"] == {"before": {"file": {}}, "after": {"file": {"seq": 1, "hash": result["hash"]}}}
    assert not (tmp_path / "logs").exists()
    first, raw = run_module(capsys, args, diff=True)
    assert first["changed"] is True and first["seq"] == 1 and first["created"] == {"file": True}
    # Ansible's file facts of the returned path do not replace the module's state.
    assert first["state"] == "appended" and first["path"] == str(path) and first["size"] == len(path.read_bytes())
    content = path.read_bytes()
    checked, raw = run_module(capsys, args, check_mode=True, diff=True)
    assert checked["seq"] == 2 and checked["record"]["prev_hash"] == first["hash"]
    assert checked["diff"]["before"] == {"file": {"seq": 1, "hash": first["hash"]}}
    assert path.read_bytes() == content
    verified, raw = run_module(capsys, {"state": "verified", "path": str(path)}, check_mode=True)
    assert (verified["valid"], verified["records"], verified["last_hash"], verified["changed"]) == (True, 1, first["hash"], False)


def test_appended_then_verified_and_secrets_stay_out(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AWX_JOB_ID", "4242")
    path = str(tmp_path / "audit.jsonl")
    args = {
        "path": path, "stage": "migrate", "outcome": "failed", "run": "r1", "playbook": "deploy.yml", "release": "2.1.0",
        "started_at": "2026-11-25T16:15:00Z", "ended_at": "2026-11-25T16:15:03.5Z", "changed": True,
        "details": {"applied": ["001"], "db": {"login_password": "pw-in-details", "host": "db"}},
        "error": {"msg": "lock timeout", "api_key": "key-in-error"},
        "inputs": {"manifest": "release.yml", "token": "token-in-inputs"},
        "hmac_key": "hmac-secret-value", "login_password": "login-secret-value",
    }
    result, raw = run_module(capsys, args)
    record = result["record"]
    assert record["details"] == {"applied": ["001"], "db": {"host": "db"}} and record["error"] == {"msg": "lock timeout"}
    assert (record["seconds"], record["awx_job_id"], record["outcome"], record["changed"]) == (3.5, "4242", "failed", True)
    assert record["actor"].endswith(" (AWX job 4242)")
    assert record["inputs_digest"] == audit.inputs_digest(args["inputs"])
    assert result["stripped"] == ["details.db.login_password", "error.api_key"]
    for secret in ("pw-in-details", "key-in-error", "token-in-inputs", "hmac-secret-value", "login-secret-value"):
        assert secret not in raw, secret
        assert secret not in open(path, encoding="utf-8").read()
    invocation = result["invocation"]["module_args"]
    assert invocation["inputs"] == record["inputs_digest"] and invocation["details"] == record["details"]
    signed = json.loads(open(path, encoding="utf-8").read())
    assert signed == record and signed["hmac"] == audit.record_hmac(signed, "hmac-secret-value")
    verified, raw = run_module(capsys, {"state": "verified", "path": path, "hmac_key": "hmac-secret-value"})
    assert (verified["valid"], verified["records"], verified["hmac_checked"], verified["first_broken"]) == (True, 1, True, None)
    refused, raw = run_module(capsys, dict(args, hmac_key=None))
    assert refused["failed"] is True and "cannot append without hmac_key: the chain's records are signed" in refused["msg"]


def test_broken_chain_fails_naming_line_and_reason(capsys, tmp_path):
    path = tmp_path / "audit.jsonl"
    hashes = [run_module(capsys, {"path": str(path), "stage": "s%d" % i})[0]["hash"] for i in range(4)]
    lines = path.read_text(encoding="utf-8").splitlines(True)
    lines[2] = lines[2].replace('"stage":"s2"', '"stage":"sX"')
    path.write_text("".join(lines), encoding="utf-8")
    result, raw = run_module(capsys, {"state": "verified", "path": str(path)})
    assert result["failed"] is True and result["valid"] is False
    assert result["msg"].startswith("audit log %s is broken at line 3 (seq 3): edited - " % path)
    assert result["first_broken"]["position"] == 3 and result["first_broken"]["reason"] == "edited"
    assert result["records"] == 4 and result["last_hash"] == hashes[-1]
    assert "Traceback" not in raw and "exception" not in result


def test_missing_file(capsys, tmp_path):
    path = str(tmp_path / "nothing.jsonl")
    result, raw = run_module(capsys, {"state": "verified", "path": path})
    assert result["failed"] is True and "audit log %s does not exist (set missing_ok=true" % path in result["msg"]
    result, raw = run_module(capsys, {"state": "verified", "path": path, "missing_ok": True})
    assert (result["valid"], result["records"], result["last_hash"], result["stores"]["file"]["exists"]) == (True, 0, None, False)


def test_figures_and_metrics_textfile(capsys, tmp_path):
    """The record is the stage's event with its figures; the textfile gets its series, merged and parseable."""
    from prometheus_client.parser import text_string_to_metric_families

    path, prom = tmp_path / "audit.jsonl", tmp_path / "textfile" / "stateful_rollback.prom"
    base = {"path": str(path), "run": "r1", "release": "2.1.0", "figures_from_details": True, "metrics_textfile": str(prom)}
    preflight, raw = run_module(capsys, dict(base, stage="preflight", started_at="2026-11-25T16:15:00Z",
                                             ended_at="2026-11-25T16:15:08.5Z", details={"replication": {"replicas": [
                                                 {"name": "standby", "lag_bytes": 0}, {"name": "subscriber", "lag_bytes": 4096}]}}))
    assert preflight["figures"] == preflight["record"]["figures"] == {"replica_lag_bytes": {"standby": 0, "subscriber": 4096}}
    assert preflight["metrics"]["error"] is None and preflight["metrics"]["series"] == 3
    assert preflight["metrics"]["samples"][0] == {"name": "stateful_rollback_stage_duration_seconds",
                                                  "labels": {"stage": "preflight", "release": "2.1.0", "outcome": "ok"}, "value": 8.5}
    # Explicit figures win over derived ones; a rollback's duration is its RTO.
    rollback, raw = run_module(capsys, dict(base, stage="rollback", outcome="compensated", seconds=18.0,
                                            details={"seconds": 17.5}, figures={"rows_compared": 6000}))
    assert rollback["record"]["figures"] == {"rto_seconds": 17.5, "rows_compared": 6000}
    assert rollback["metrics"]["series"] == 5
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text(encoding="utf-8"))}
    durations = {s.labels["stage"]: s.value for s in families["stateful_rollback_stage_duration_seconds"].samples}
    assert durations == {"preflight": 8.5, "rollback": 18.0}
    assert [(s.labels, s.value) for s in families["stateful_rollback_rto_seconds"].samples] == [
        ({"kind": "rollback", "release": "2.1.0"}, 17.5)]
    verified, raw = run_module(capsys, {"state": "verified", "path": str(path)})
    assert verified["valid"] is True and verified["records"] == 2
    # Without figures options the record has no figures field, as before.
    plain, raw = run_module(capsys, {"path": str(path), "stage": "promote"})
    assert "figures" not in plain["record"] and "figures" not in plain and "metrics" not in plain


def test_metrics_not_written_in_check_mode_and_a_write_failure_only_warns(capsys, tmp_path):
    path, prom = tmp_path / "audit.jsonl", tmp_path / "m.prom"
    args = {"path": str(path), "stage": "verify", "details": {"parity": {"difference_count": 2}},
            "figures_from_details": True, "metrics_textfile": str(prom), "seconds": 3.0}
    checked, raw = run_module(capsys, args, check_mode=True)
    assert checked["metrics"]["error"] == "not written in check mode" and not prom.exists() and not path.exists()
    assert checked["record"]["figures"] == {"parity_differences": {"all": 2}}
    prom.write_text("garbage { here\n", encoding="utf-8")
    result, raw = run_module(capsys, args)
    assert result.get("failed") is not True and result["seq"] == 1
    assert result["metrics"]["series"] is None and "is not in the Prometheus text format" in result["metrics"]["error"]
    # ansible-core 2.19 returns warnings as summaries ({"event": {"msg": ...}}), older cores as strings.
    warnings = [w if isinstance(w, str) else w["event"]["msg"] for w in result["warnings"]]
    assert any(w.startswith("the audit record was appended, but the metrics were not exported: ") for w in warnings)
    assert prom.read_text(encoding="utf-8") == "garbage { here\n"
