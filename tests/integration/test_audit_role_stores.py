# -*- coding: utf-8 -*-
"""The audit role writes through stateful.rollback.audit_log into the store it is given: with
stateful_rollback_audit_store=both, the file and the table <schema>.audit_log of the sandbox primary (the
connection from stateful_rollback_db) each get one hash-chained, HMAC-signed record per stage, the HMAC key never
shows in the output, the run record links the records of both stores, and the Prometheus textfile holds each
stage's duration. A real ansible-playbook run against the session sandbox's primary."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import testkit
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.stateful.rollback.plugins.modules import audit_log

pytestmark = [pytest.mark.integration]

SCHEMA = "audit_role_stores_test"
HMAC_KEY = "hmac-key-that-must-not-show"


@pytest.fixture
def audit_schema(sandbox):
    sandbox.sql("primary", 'DROP SCHEMA IF EXISTS "%s" CASCADE' % SCHEMA, superuser=True)
    yield SCHEMA
    sandbox.sql("primary", 'DROP SCHEMA IF EXISTS "%s" CASCADE' % SCHEMA, superuser=True)


def db_options(sandbox):
    params = sandbox.primary
    return {"login_host": params["host"], "login_port": int(params["port"]), "login_user": params["user"],
            "login_password": params["password"], "login_db": params["dbname"]}


def test_role_writes_both_stores_through_the_module(sandbox, audit_schema, tmp_path, capsys):
    state, textfile = tmp_path / "state", tmp_path / "metrics" / "sr.prom"
    play = [{
        "name": "Record two stages and close the run",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "stateful_rollback_state_dir": str(state),
            "stateful_rollback_db": db_options(sandbox),
            "stateful_rollback_journal_schema": audit_schema,
            "stateful_rollback_audit_store": "both",
            "stateful_rollback_audit_hmac_key": HMAC_KEY,
            "stateful_rollback_metrics_textfile": str(textfile),
            "stateful_rollback_audit_version": "4.2.0",
            "stateful_rollback_playbook": "test.yml",
        },
        "tasks": [
            {"name": "Start", "ansible.builtin.include_role": {"name": "stateful.rollback.audit", "tasks_from": "init"}},
            {"name": "Preflight", "ansible.builtin.include_role": {"name": "stateful.rollback.audit", "tasks_from": "stage"},
             "vars": {"stateful_rollback_audit_stage": "preflight", "stateful_rollback_audit_details": {
                 "replication": {"replicas": [{"name": "standby", "lag_bytes": 123}]}}}},
            {"name": "Migrate", "ansible.builtin.include_role": {"name": "stateful.rollback.audit", "tasks_from": "stage"},
             "vars": {"stateful_rollback_audit_stage": "migrate", "stateful_rollback_audit_outcome": "failed",
                      "stateful_rollback_audit_error": "lock timeout",
                      "stateful_rollback_audit_details": {"primary": {"rows_processed": 77}}}},
            {"name": "Close", "ansible.builtin.include_role": {"name": "stateful.rollback.audit"}},
            {"name": "Show the run record", "ansible.builtin.copy": {
                "content": "{{ stateful_rollback_run | to_json }}", "dest": str(tmp_path / "run.json"), "mode": "0600"}},
        ],
    }]
    playbook_file = tmp_path / "play.yml"
    playbook_file.write_text(yaml.safe_dump(play, sort_keys=False), encoding="utf-8")
    env = testkit.playbook_env(sandbox)
    proc = subprocess.run([os.path.join(testkit.BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-v",
                           "-e", "ansible_python_interpreter=" + os.path.join(testkit.BIN, "python"), str(playbook_file)],
                          cwd=testkit.REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert HMAC_KEY not in out and HMAC_KEY not in (state / "audit-log.jsonl").read_text(encoding="utf-8")

    lines = [json.loads(line) for line in (state / "audit-log.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [json.loads(r[0]) for r in sandbox.sql("primary", 'SELECT record FROM "%s".audit_log ORDER BY seq' % audit_schema)]
    assert [r["stage"] for r in lines] == ["preflight", "migrate", "run"]
    # One entry, chained into two fresh stores: the same records, hashes and HMACs.
    assert rows == lines
    assert lines[1]["outcome"] == "failed" and lines[1]["error"] == "lock timeout" and lines[1]["release"] == "4.2.0"
    assert lines[0]["figures"] == {"replica_lag_bytes": {"standby": 123}} and lines[1]["figures"] == {"rows_backfilled": 77}

    args = dict(db_options(sandbox), state="verified", store="both", path=str(state / "audit-log.jsonl"),
                journal_schema=audit_schema, hmac_key=HMAC_KEY)
    verified = testkit.run_module(capsys, audit_log, args)
    assert verified.get("failed") is not True, verified
    assert (verified["stores"]["file"]["valid"], verified["stores"]["table"]["valid"]) == (True, True)
    assert verified["hmac_checked"] is True and verified["records"] == 3 and verified["append_only"] is True

    run = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    links = run["audit"]
    assert (links["store"], links["table"], links["signed"]) == ("both", audit_schema + ".audit_log", True)
    assert [(e["stage"], e["seq"], e["hash"], e["table_seq"], e["table_hash"]) for e in links["events"]] == [
        (r["stage"], r["seq"], r["hash"], r["seq"], r["hash"]) for r in lines]
    assert links["last_hash"] == lines[-1]["hash"]

    families = {f.name: f for f in text_string_to_metric_families(textfile.read_text(encoding="utf-8"))}
    durations = {(s.labels["stage"], s.labels["release"], s.labels["outcome"]): s.value
                 for s in families["stateful_rollback_stage_duration_seconds"].samples}
    assert durations == pytest.approx({(r["stage"], "4.2.0", r["outcome"]): r["seconds"] for r in lines})
    assert [(s.labels, s.value) for s in families["stateful_rollback_replica_lag_bytes"].samples] == [({"replica": "standby"}, 123.0)]
