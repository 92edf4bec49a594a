# -*- coding: utf-8 -*-
"""schema_compat_check's argument handling and static runs under AnsibleModule (no database)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


import pytest
import testkit

from ansible_collections.stateful.rollback.plugins.modules import schema_compat_check


def run_module(capsys, args, check_mode=False):
    return testkit.run_module(capsys, schema_compat_check, args, check_mode=check_mode)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({}, "one of the following is required: migration, migration_sql"),
        ({"migration_sql": "SELECT 1", "migration": "/x.sql"}, "parameters are mutually exclusive: migration|migration_sql"),
        ({"migration_sql": "SELECT 1", "large_table_rows": 0}, "large_table_rows must be a positive number, got 0"),
        ({"migration_sql": "SELECT 1", "server_version": 15}, "server_version is server_version_num"),
        ({"migration_sql": "SELECT 1", "scratch": "never"}, "value of scratch must be one of"),
        ({"migration_sql": "SELECT 1", "fail_on": ["fatal"]}, "fail_on has unknown entries: fatal"),
        ({"migration": "/no/such/file.sql"}, "migration file /no/such/file.sql does not exist"),
        ({"migration_sql": "ALTER TABLE t ADD COLUMN x;"}, "migration <migration_sql>: syntax error at line 1"),
        ({"migration_sql": "-- nothing here\n"}, "holds no SQL statement"),
        ({"migration_sql": "SELECT 1", "old_queries_from": "pg_stat_statements"}, "needs a connection (mode live)"),
    ],
)
def test_bad_input_is_named(capsys, args, fragment):
    result = run_module(capsys, args)
    assert result["failed"] is True and fragment in result["msg"]


def test_static_finding_fails_by_default_and_reports_everything(capsys):
    result = run_module(capsys, {"migration_sql": "SET lock_timeout = '2s';\nALTER TABLE orders DROP COLUMN note;\n"})
    assert result["failed"] is True and result["compatible"] is False
    rules = set(f["rule"] for f in result["findings"])
    assert {"drop-column", "drop-column-data"} <= rules
    assert all(f["source"] == "static" and f["line"] == 2 for f in result["findings"] if f["rule"] != "missing-lock-timeout")


def test_check_mode_runs_the_full_analysis(capsys):
    result = run_module(capsys, {"migration_sql": "CREATE INDEX CONCURRENTLY orders_note_idx ON orders (note);", "fail_on": []}, check_mode=True)
    assert result["changed"] is False and result["compatible"] is True
    assert [f["category"] for f in result["findings"]] == ["non_transactional"]
    assert result["statements"][0]["transactional"] is False


def test_schema_gives_static_rules_the_column_types(capsys):
    schema = "CREATE TABLE public.orders (id bigint PRIMARY KEY, note character varying(50));"
    widen = run_module(capsys, {"migration_sql": "ALTER TABLE orders ALTER COLUMN note TYPE varchar(200);", "schema_sql": schema, "fail_on": []})
    assert not [f for f in widen["findings"] if f["category"] in ("table_rewrite", "breaks_old_app")]
    narrow = run_module(capsys, {"migration_sql": "ALTER TABLE orders ALTER COLUMN note TYPE varchar(10);", "schema_sql": schema, "fail_on": []})
    assert "narrow-column-type" in [f["rule"] for f in narrow["findings"]]
