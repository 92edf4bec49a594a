# -*- coding: utf-8 -*-
"""Pure helpers of module_utils/ledger.py (the database side is in tests/integration/test_release.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils.ledger import (
    COLUMNS,
    LedgerError,
    check_schema_name,
    default_recorded_by,
    row_dict,
)


@pytest.mark.parametrize("name", ["stateful_rollback", "_x", "Ledger$1", "a" * 63])
def test_schema_names_accepted(name):
    assert check_schema_name(name) == name


@pytest.mark.parametrize("name", ["1abc", "a-b", "a.b", 'a"b', "a b", "x; DROP TABLE y", "a" * 64, "é" * 32, "a\x00b"])
def test_schema_names_refused(name):
    with pytest.raises(LedgerError, match="is not a valid schema name"):
        check_schema_name(name)


@pytest.mark.parametrize("name, message", [("", "must be a non-empty schema name"), (None, "must be a non-empty schema name"),
                                           ("public", "is reserved"), ("pg_ledger", "is reserved"),
                                           ("PG_Ledger", "is reserved"), ("information_schema", "is reserved")])
def test_schema_names_empty_or_reserved(name, message):
    """The same rule as the journal's (migrate) and the audit table's: they share the schema."""
    with pytest.raises(LedgerError, match=message):
        check_schema_name(name)


@pytest.mark.parametrize("environ, expected", [
    ({"USER": "alice"}, "alice@build-1"),
    ({"LOGNAME": "bob"}, "bob@build-1"),
    ({"USER": "runner", "AWX_JOB_ID": "17"}, "runner@build-1 (AWX job 17)"),
    ({"USER": "runner", "JOB_ID": "42", "AWX_HOST": "https://awx.example"}, "runner@build-1 (AWX job 42)"),
    ({"USER": "runner", "JOB_ID": "42"}, "runner@build-1 (job 42)"),
])
def test_default_recorded_by(environ, expected):
    assert default_recorded_by(environ, hostname="build-1") == expected


def test_row_dict_renders_times_as_utc_iso():
    values = dict.fromkeys(COLUMNS)
    values["recorded_at"] = datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    values["updated_at"] = datetime.datetime(2026, 1, 2, 3, 4, 5)
    row = row_dict(tuple(values[c] for c in COLUMNS))
    assert row["recorded_at"] == "2026-01-02T01:04:05.000006Z"
    assert row["updated_at"] == "2026-01-02T03:04:05Z"
    assert row["promoted_at"] is None
    assert row_dict(None) is None
