# -*- coding: utf-8 -*-
"""The migrate module's argument handling: bad input fails with a message naming the option, an invalid
manifest fails listing its errors, never a traceback. Runs AnsibleModule for real (no database needed)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json

import pytest
import testkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.stateful.rollback.plugins.modules import migrate

IMAGE = "registry.example/demo@sha256:" + hashlib.sha256(b"demo").hexdigest()


def run_module(capsys, args):
    return testkit.run_module(capsys, migrate, args)


@pytest.fixture
def manifest(tmp_path):
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "001_up.sql").write_text("ALTER TABLE t ADD COLUMN c int;\n")
    (tmp_path / "sql" / "001_down.sql").write_text("ALTER TABLE t DROP COLUMN c;\n")
    path = tmp_path / "release.yml"
    path.write_text(json.dumps({
        "version": "2.0.0",
        "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": IMAGE}}]},
        "migrations": [{"id": "001_add_c", "up": "sql/001_up.sql", "down": "sql/001_down.sql"}],
    }))
    return str(path)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"state": "done"}, "value of state must be one of: applied, reverted, paused, resumed, status"),
        ({"lock_timeout": -1}, "lock_timeout must not be negative, got -1"),
        ({"max_retries": -2}, "max_retries must not be negative"),
        ({"lag_wait_timeout": -0.5}, "lag_wait_timeout must not be negative"),
        ({"retry_base_delay": 5, "retry_max_delay": 1}, "retry_max_delay (1.0) must be at least retry_base_delay (5.0)"),
        ({"target": "001_add_c", "state": "reverted"}, "target is only for state=applied or state=resumed, not state=reverted"),
        ({"to": "001_add_c"}, "to is only for state=reverted, not state=applied"),
        ({"migrations": ["001_add_c"], "state": "status"}, "migrations is only for state=reverted"),
        ({"to": "a", "migrations": ["b"], "state": "reverted"}, "parameters are mutually exclusive: to|migrations"),
        ({"journal_schema": "pg_journal"}, "journal_schema 'pg_journal' is reserved"),
        ({"journal_schema": ""}, "journal_schema must be a non-empty schema name"),
        ({"target": " "}, "target must not be empty"),
        ({"lock_wait_timeout": "soon"}, "lock_wait_timeout"),
        ({"max_retries": [1]}, "max_retries"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_arguments_fail_with_the_option_named(capsys, manifest, args, fragment):
    params = {"manifest": manifest, "login_host": "127.0.0.1", "login_port": 1}
    params.update(args)
    result = run_module(capsys, params)
    assert result["failed"] is True
    assert fragment in result["msg"]
    assert "Traceback" not in json.dumps(result)


def test_manifest_is_required(capsys):
    result = run_module(capsys, {"login_host": "127.0.0.1"})
    assert result["failed"] is True and "missing required arguments: manifest" in result["msg"]


def test_missing_manifest_file_is_a_clear_failure(capsys, tmp_path):
    result = run_module(capsys, {"manifest": str(tmp_path / "nope.yml"), "login_host": "127.0.0.1", "login_port": 1})
    assert result["failed"] is True
    assert result["msg"] == "manifest: release manifest %s does not exist" % (tmp_path / "nope.yml")


def test_invalid_manifest_lists_every_error(capsys, tmp_path):
    (tmp_path / "release.yml").write_text(json.dumps({
        "version": "2.0.0",
        "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": "demo:2.0"}}]},
        "migrations": [{"id": "001_x", "up": "sql/missing.sql"}],
    }))
    result = run_module(capsys, {"manifest": str(tmp_path / "release.yml"), "login_host": "127.0.0.1", "login_port": 1})
    assert result["failed"] is True and result["msg"].startswith("manifest: ")
    errors = result["manifest_errors"]
    assert len(errors) >= 3
    assert any(e.startswith("app.workloads[0].containers.web:") for e in errors)
    assert any(e.startswith("migrations[0].down:") for e in errors)
    assert any(e.startswith("migrations[0].up:") for e in errors)
    for error in errors:
        assert error in result["msg"]


def test_unreachable_database_is_a_clear_failure_without_the_password(capsys, manifest):
    result = run_module(capsys, {"manifest": manifest, "login_host": "127.0.0.1", "login_port": 1,
                                 "login_password": "hunter2-secret", "connect_timeout": 2})
    assert result["failed"] is True
    assert result["msg"].startswith("unable to connect to database:")
    assert "hunter2-secret" not in json.dumps(result)
    assert result["release"] == {"version": "2.0.0", "digest": result["release"]["digest"]}
    assert result["release"]["digest"].startswith("sha256:")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(["state", "journal_schema", "target", "to", "migrations", "lock_wait_timeout", "lock_timeout",
                            "statement_timeout", "max_retries", "retry_base_delay", "retry_max_delay", "lag_wait_timeout",
                            "fail_on_irreversible", "progress_log", "executed_by", "manifest", "login_port"]),
    value=st.one_of(st.integers(min_value=-10**12, max_value=-1), st.text(max_size=40), st.none(),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)),
)
def test_fuzzed_arguments_never_traceback(capsys, tmp_path, option, value):
    params = {"manifest": str(tmp_path / "none.yml"), "login_host": "127.0.0.1", "login_port": 1, "connect_timeout": 1,
              option: value}
    result = run_module(capsys, params)
    assert result.get("failed") is True
    assert result["msg"] and "Traceback" not in result["msg"]
