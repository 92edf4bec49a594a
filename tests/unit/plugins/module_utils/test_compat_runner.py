# -*- coding: utf-8 -*-
"""Merging static and live findings, the fail_on policy and input handling of compat_runner."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils import compat_runner
from ansible_collections.stateful.rollback.plugins.module_utils.compat_static import CompatError


def finding(rule, category, severity="error", index=0, table="public.orders", source="static"):
    return dict(rule=rule, category=category, severity=severity, statement="...", statement_index=index, line=1,
                message="m", table=table, source=source)


def test_live_measurement_overrides_a_static_rewrite_guess():
    static = [finding("alter-column-type-rewrite", "table_rewrite")]
    live = {"statements": [{"index": 0, "locks": [], "rewritten": []}], "findings": []}
    findings, overridden = compat_runner.merge(static, live)
    assert findings == []
    assert overridden[0]["rule"] == "alter-column-type-rewrite" and overridden[0]["measured"] == "rewritten: nothing"


def test_confirmed_guess_becomes_static_plus_live_with_the_worse_severity():
    static = [finding("create-index-blocking", "blocking_lock", severity="warning")]
    live = {
        "statements": [{"index": 0, "locks": [{"relation": "public.orders", "mode": "ShareLock", "preexisting": True}], "rewritten": []}],
        "findings": [finding("live-blocking-lock", "blocking_lock", severity="error", source="live")],
    }
    findings, overridden = compat_runner.merge(static, live)
    assert overridden == [] and len(findings) == 1
    assert findings[0]["source"] == "static+live" and findings[0]["severity"] == "error"
    assert "ShareLock" in findings[0]["measured"]


def test_locks_on_new_relations_do_not_confirm_blocking():
    static = [finding("create-index-blocking", "blocking_lock")]
    live = {"statements": [{"index": 0, "locks": [{"relation": "public.orders", "mode": "ShareLock", "preexisting": False}]}], "findings": []}
    findings, overridden = compat_runner.merge(static, live)
    assert findings == [] and len(overridden) == 1


def test_unmeasured_categories_and_failed_statements_keep_static_findings():
    static = [finding("drop-column", "breaks_old_app"), finding("alter-column-type-rewrite", "table_rewrite", index=1)]
    live = {"statements": [{"index": 0, "locks": []}, {"index": 1, "error": "boom"}], "findings": []}
    findings, overridden = compat_runner.merge(static, live)
    assert [f["rule"] for f in findings] == ["drop-column", "alter-column-type-rewrite"] and overridden == []


def test_live_only_findings_are_added():
    live = {"statements": [], "findings": [finding("live-old-query-fails", "breaks_old_app", source="live")]}
    findings, overridden = compat_runner.merge([], live)
    assert [f["source"] for f in findings] == ["live"]


def test_policy_by_severity_and_category():
    found = [finding("a", "data_loss", "warning"), finding("b", "blocking_lock", "error"), finding("c", "table_rewrite", "info")]
    assert [f["rule"] for f in compat_runner.policy_failures(found, ["error"])] == ["b"]
    assert [f["rule"] for f in compat_runner.policy_failures(found, ["data_loss"])] == ["a"]
    assert [f["rule"] for f in compat_runner.policy_failures(found, ["warning", "error"])] == ["a", "b"]
    assert compat_runner.policy_failures(found, ["table_rewrite"]) == []  # info never fails
    with pytest.raises(CompatError) as err:
        compat_runner.policy_failures(found, ["fatal"])
    assert "fail_on has unknown entries: fatal" in str(err.value)


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(CompatError) as err:
        compat_runner.read_sql_file(str(tmp_path / "nope.sql"), "migration")
    assert str(err.value) == "migration file %s does not exist" % (tmp_path / "nope.sql")
    with pytest.raises(CompatError) as err:
        compat_runner.read_sql_file(str(tmp_path), "rollback")
    assert "is a directory" in str(err.value)
    binary = tmp_path / "bin.sql"
    binary.write_bytes(b"SELECT 1;\xff\xfe")
    with pytest.raises(CompatError) as err:
        compat_runner.read_sql_file(str(binary), "migration")
    assert "is not UTF-8 text" in str(err.value)


def test_run_static_reports_syntax_error_with_line():
    with pytest.raises(compat_runner.CompatFailure) as err:
        compat_runner.run({"migration_sql": "ALTER TABLE t ADD COLUMN a int;\nALTER TABLE t ADD COLUMN b;\n", "fail_on": []})
    assert err.value.msg.startswith("migration <migration_sql>: syntax error at line 2")


def test_run_static_policy_failure_keeps_the_result():
    with pytest.raises(compat_runner.CompatFailure) as err:
        compat_runner.run({"migration_sql": "ALTER TABLE orders DROP COLUMN note;", "fail_on": ["error"]})
    assert "migration is not safe by the fail_on policy" in err.value.msg
    assert err.value.result["compatible"] is False and err.value.result["mode"] == "static"
    assert err.value.result["summary"]["data_loss"] >= 1


def test_run_static_safe_migration_passes():
    result = compat_runner.run({"migration_sql": "ALTER TABLE orders ADD COLUMN status text;", "fail_on": ["error"]})
    assert result["compatible"] is True and result["reversible"] is None and result["mode"] == "static"


def test_mode_defaults_to_live_only_with_a_connection():
    assert compat_runner.wants_live({"login_host": "db"}) is True
    assert compat_runner.wants_live({"login_host": "", "login_db": ""}) is False
    assert compat_runner.wants_live({"login_host": "db", "mode": "static"}) is False
