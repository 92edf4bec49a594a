# -*- coding: utf-8 -*-
"""The module's argument handling: bad input fails with a message naming the option,
never a traceback. Runs AnsibleModule for real (no database needed)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest
import testkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.stateful.rollback.plugins.modules import replication_parity


def run_module(capsys, args):
    return testkit.run_module(capsys, replication_parity, args)


REPLICA = [{"name": "standby", "login_host": "127.0.0.1", "login_port": 1}]


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"chunk_size": 0}, "chunk_size must be a positive number, got 0"),
        ({"leaf_rows": -3}, "leaf_rows must be a positive number, got -3"),
        ({"max_differences": 0}, "max_differences must be a positive number"),
        ({"settle_timeout": -1}, "settle_timeout must not be negative"),
        ({"bisect_factor": 1}, "bisect_factor must be at least 2, got 1"),
        ({"mode": "compare"}, "value of mode must be one of"),
        ({"invariants": ["everything"]}, "value of invariants must be one or more of"),
        ({"key_columns": {"orders": "id"}}, "key_columns[orders] must be a non-empty list of column names"),
        ({"key_columns": {"orders": []}}, "key_columns[orders] must be a non-empty list"),
        ({"replicas": [{"name": "x"}]}, "replicas[0] needs login_host, login_unix_socket or login_port"),
        ({"baseline": {}, "baseline_path": "/tmp/b.json"}, "parameters are mutually exclusive: baseline|baseline_path"),
        ({"chunk_size": "many"}, "chunk_size"),
        ({"replicas": [{"bogus": 1, "login_port": 2}]}, "bogus"),
    ],
)
def test_bad_arguments_fail_with_the_option_named(capsys, args, fragment):
    params = {"login_host": "127.0.0.1", "login_port": 1, "replicas": REPLICA}
    params.update(args)
    result = run_module(capsys, params)
    assert result["failed"] is True
    assert fragment in result["msg"]
    assert "Traceback" not in json.dumps(result)


def test_unreachable_primary_is_a_clear_failure(capsys):
    result = run_module(capsys, {"login_host": "127.0.0.1", "login_port": 1, "login_password": "hunter2-secret",
                                 "connect_timeout": 2, "replicas": REPLICA})
    assert result["failed"] is True
    assert result["msg"].startswith("primary: unable to connect to database:")
    assert "hunter2-secret" not in json.dumps(result)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(["chunk_size", "leaf_rows", "bisect_factor", "max_differences", "confirm_rounds",
                            "settle_timeout", "max_lag_bytes", "baseline_row_limit", "tables", "key_columns",
                            "replicas", "mode", "invariants", "login_port"]),
    value=st.one_of(st.integers(min_value=-10**12, max_value=0), st.text(max_size=40), st.none(),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)),
)
def test_fuzzed_arguments_never_traceback(capsys, option, value):
    params = {"login_host": "127.0.0.1", "login_port": 1, "connect_timeout": 1, "replicas": REPLICA, option: value}
    result = run_module(capsys, params)
    assert result.get("failed") is True
    assert result["msg"] and "Traceback" not in result["msg"]
    assert "exception" not in result or "Traceback" not in result.get("msg", "")


def test_list_for_an_int_option_names_the_option(capsys):
    # ansible-core's int check reads a list as a Decimal tuple and can raise OverflowError.
    params = {"login_host": "127.0.0.1", "login_port": 1, "replicas": REPLICA, "chunk_size": [2 ** 63, 0, 0]}
    result = run_module(capsys, params)
    assert result == {"failed": True, "msg": "chunk_size must be an int, got a list"}
    params = {"login_host": "127.0.0.1", "replicas": [{"name": "s", "login_port": [2 ** 63, 0, 0]}]}
    result = run_module(capsys, params)
    assert result["failed"] is True and "replicas[0].login_port must be an int, got a list" in result["msg"]
