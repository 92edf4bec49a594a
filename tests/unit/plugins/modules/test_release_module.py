# -*- coding: utf-8 -*-
"""release's argument handling and its database-free state (validated) under AnsibleModule."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest
import testkit

from ansible_collections.stateful.rollback.plugins.module_utils import manifest as manifest_lib
from ansible_collections.stateful.rollback.plugins.modules import release

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
V2 = os.path.join(REPO, "tests", "data", "releases", "demo-2.0.0", "release.yml")
# Nothing listens on port 1: a test that reached the database would fail with "unable to connect".
NO_DB = {"login_host": "127.0.0.1", "login_port": 1, "connect_timeout": 1}


def run_module(capsys, args, check_mode=False):
    return testkit.run_module(capsys, release, args, check_mode=check_mode)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({}, "missing required arguments: state"),
        ({"state": "absent"}, "value of state must be one of: validated, recorded, promoted, info"),
        ({"state": "validated"}, "state is validated but all of the following are missing: manifest"),
        ({"state": "info", "outcome": "failed"}, "outcome: only used with state=recorded, not state=info"),
        ({"state": "promoted", "version": "1", "snapshots": ["s"], "baseline_path": "/b"},
         "snapshots, baseline_path: only used with state=recorded, not state=promoted"),
        ({"state": "info", "note": "x"}, "note: only used with state=recorded or state=promoted, not state=info"),
        ({"state": "recorded", "version": "1", "outcome": "done"}, "value of outcome must be one of: pending, deployed, verified, failed, rolled_back"),
        ({"state": "info", "history_limit": 0}, "history_limit must be a positive number, got 0"),
        ({"state": "recorded", "version": "1", "snapshots": [" "]}, "snapshots must be non-empty snapshot names"),
        ({"state": "recorded"}, "state=recorded needs version or manifest"),
        ({"state": "promoted"}, "state=promoted needs version or manifest"),
        ({"state": "info", "journal_schema": "Robert'); DROP"}, "journal_schema \"Robert'); DROP\" is not a valid schema name"),
        ({"state": "validated", "manifest": "/no/such/release.yml"}, "release manifest /no/such/release.yml does not exist"),
        ({"state": "recorded", "manifest": V2, "version": "2.0.1"}, "version 2.0.1 does not match the manifest's version 2.0.0"),
        ({"state": "info"}, "unable to connect to database:"),
    ],
)
def test_bad_input_is_named(capsys, args, fragment):
    result = run_module(capsys, dict(NO_DB, **args))
    assert result["failed"] is True and fragment in result["msg"], result["msg"]


def test_validated_returns_the_summary_in_check_mode_too(capsys):
    for check_mode in (False, True):
        result = run_module(capsys, {"state": "validated", "manifest": V2}, check_mode=check_mode)
        assert result["changed"] is False and result["state"] == "validated"
        assert result["manifest"] == json.loads(json.dumps(manifest_lib.load_release(V2).summary()))
        assert "ledger" not in result and "release" not in result


def test_validated_reports_every_error(capsys, tmp_path):
    (tmp_path / "release.yml").write_text("version: 2.0\napp:\n  workloads: []\nextra: 1\n")
    result = run_module(capsys, {"state": "validated", "manifest": str(tmp_path / "release.yml")})
    assert result["failed"] is True
    assert result["errors"] == [
        "app.workloads: must hold at least 1 item(s)",
        "extra: unknown field (allowed: app, feature_flags, health_checks, invariants, migrations, version)",
        "version: expected a string, got a number (2.0); quote it",
    ]
    assert result["msg"] == "%s is not a valid release manifest (3 errors): %s" % (tmp_path / "release.yml", "; ".join(result["errors"]))


def test_missing_jsonschema_is_reported_with_missing_required_lib(capsys, monkeypatch):
    monkeypatch.setattr(manifest_lib, "HAS_JSONSCHEMA", False)
    monkeypatch.setattr(manifest_lib, "JSONSCHEMA_IMP_ERR", "Traceback: No module named 'jsonschema'")
    result = run_module(capsys, {"state": "validated", "manifest": V2})
    assert result["failed"] is True and "Failed to import the required Python library (jsonschema)" in result["msg"]
