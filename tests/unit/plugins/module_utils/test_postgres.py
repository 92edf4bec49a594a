# -*- coding: utf-8 -*-
"""Pure helpers of module_utils/postgres.py: names, LSNs, connection parameters."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    describe,
    get_conn_params,
    int_to_lsn,
    lsn_to_int,
    qualified,
    redact,
    split_qualified_name,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("orders", ("public", "orders")),
        ("Orders", ("public", "orders")),
        ("sales.orders", ("sales", "orders")),
        ('"Sales"."Order Lines"', ("Sales", "Order Lines")),
        ('"we""ird"', ("public", 'we"ird')),
        ('sales."a.b"', ("sales", "a.b")),
        ("  spaced  ", ("public", "spaced")),
    ],
)
def test_split_qualified_name(name, expected):
    assert split_qualified_name(name) == expected


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "expected 'table'"),
        ("a.b.c", "expected 'table' or 'schema.table'"),
        ('"open', "unterminated quote"),
        ("a.", "ends with '.'"),
        ("a..b", "empty name part"),
        ('ab"c', "stray quote"),
        ("x\x00y", "NUL byte"),
        ("t" * 64, "longer than 63 bytes"),
        ('"a"b', "expected '.' after a quoted part"),
        (None, "expected 'table'"),
    ],
)
def test_split_qualified_name_rejects(name, fragment):
    with pytest.raises(PostgresError) as err:
        split_qualified_name(name)
    assert fragment in str(err.value)


def test_injection_text_stays_a_name():
    # Whatever is typed becomes one identifier looked up in the catalog.
    assert split_qualified_name('"users; DROP TABLE x"') == ("public", "users; DROP TABLE x")


def test_qualified_quotes_only_when_needed():
    assert qualified("public", "orders") == "public.orders"
    assert qualified("Sales", 'a"b') == '"Sales"."a""b"'


def test_lsn_round_trip():
    assert lsn_to_int("0/0") == 0
    assert lsn_to_int("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert int_to_lsn(lsn_to_int("16/B374D848")) == "16/B374D848"
    assert lsn_to_int(None) is None and int_to_lsn(None) is None
    with pytest.raises(ValueError):
        lsn_to_int("not-an-lsn")


def test_conn_params_fall_back_to_primary():
    primary = dict(login_host="10.0.0.1", login_port=5432, login_user="checker", login_password="s3cret", login_db="app",
                   ssl_mode="prefer", connect_timeout=10, connect_params={"target_session_attrs": "any"})
    replica = dict(login_host="127.0.0.1", login_port=25431, login_user=None)
    params = get_conn_params(replica, primary)
    assert params == dict(host="127.0.0.1", port=25431, user="checker", password="s3cret", dbname="app",
                          sslmode="prefer", connect_timeout=10, target_session_attrs="any")


def test_unix_socket_used_when_no_host():
    params = get_conn_params(dict(login_host="", login_unix_socket="/run/pg", login_port=5433))
    assert params["host"] == "/run/pg"


def test_describe_and_redact_hide_password():
    params = dict(host="h", port=1, user="u", password="pw-123", dbname="d")
    assert describe(params) == "u@h:1/d"
    assert "pw-123" not in redact("password=pw-123 failed", params)
