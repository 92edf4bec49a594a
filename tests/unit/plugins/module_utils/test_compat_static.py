# -*- coding: utf-8 -*-
"""Static compatibility rules of module_utils/compat_static.py.

Each rule is checked on its unsafe form and on the safe look-alike it must
stay silent on. No database: the analysis is pure parsing (pglast).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils.compat_static import (
    CATEGORIES,
    RULES,
    SEVERITIES,
    CompatError,
    Statement,
    analyze_static,
    column_types_from_sql,
    parse_sql,
)
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import PostgresError

LOCK_TIMEOUT = "SET lock_timeout = '2s';\n"


def findings(sql, **kwargs):
    return analyze_static(sql, **kwargs)["findings"]


def rules_of(sql, **kwargs):
    """{rule: severity} of the findings (rules are asserted unique where used)."""
    out = {}
    for finding in findings(sql, **kwargs):
        out[finding["rule"]] = finding["severity"]
    return out


def categories_of(sql, **kwargs):
    return set(f["category"] for f in findings(sql, **kwargs))


def only(sql, rule, **kwargs):
    found = [f for f in findings(sql, **kwargs) if f["rule"] == rule]
    assert len(found) == 1, (rule, found)
    return found[0]


# -- the API -----------------------------------------------------------------------


def test_rules_table_is_consistent():
    assert CATEGORIES == ("breaks_old_app", "blocking_lock", "table_rewrite", "data_loss", "non_transactional")
    assert SEVERITIES == ("error", "warning", "info")
    for rule, (category, severity, description) in RULES.items():
        assert re.match(r"^[a-z0-9]+(-[a-z0-9]+)*$", rule), rule
        assert category in CATEGORIES, rule
        assert severity in SEVERITIES, rule
        assert description and "\n" not in description
    # Every category has rules.
    assert set(c for c, s, d in RULES.values()) == set(CATEGORIES)


def test_compat_error_is_a_postgres_error():
    assert issubclass(CompatError, PostgresError)


def test_finding_shape():
    finding = only(LOCK_TIMEOUT + "ALTER TABLE orders DROP COLUMN note;", "drop-column")
    assert sorted(finding) == sorted(
        ["rule", "category", "severity", "statement", "statement_index", "line", "message", "table", "source"])
    assert finding == dict(
        finding,
        rule="drop-column",
        category="breaks_old_app",
        severity="error",
        statement="ALTER TABLE orders DROP COLUMN note",
        statement_index=1,
        line=2,
        table="public.orders",
        source="static",
    )


def test_every_finding_has_a_known_rule_category_and_severity():
    result = findings(UNSAFE, old_queries=["SELECT * FROM users"], table_rows={"app.users": 10})
    assert len(result) > 40
    for finding in result:
        category, severity = RULES[finding["rule"]][:2]
        assert finding["category"] == category
        assert finding["severity"] in SEVERITIES
        assert finding["message"]
    lines = UNSAFE.splitlines()
    for finding in result:
        # The reported line is where the statement starts.
        assert finding["statement"].split("\n")[0] in lines[finding["line"] - 1]


def test_result_statements_view():
    result = analyze_static("CREATE INDEX CONCURRENTLY i ON s.t (a);\nALTER TYPE mood ADD VALUE 'x'", server_version=110000)
    assert result["statements"] == [
        {"index": 0, "line": 1, "text": "CREATE INDEX CONCURRENTLY i ON s.t (a)", "kind": "IndexStmt", "transactional": False,
         "tables": ["s.t"]},
        {"index": 1, "line": 2, "text": "ALTER TYPE mood ADD VALUE 'x'", "kind": "AlterEnumStmt", "transactional": False,
         "tables": []},
    ]


def test_analyze_accepts_parsed_statements():
    statements = parse_sql(LOCK_TIMEOUT + "TRUNCATE logs;")
    assert [f["rule"] for f in analyze_static(statements)["findings"]] == ["truncate"]


def test_empty_file():
    assert parse_sql("-- nothing here\n/* at all */\n") == []
    assert analyze_static("") == {"statements": [], "findings": []}


# -- parsing ---------------------------------------------------------------------------


def test_statement_lines_and_text_with_comments_and_non_ascii():
    sql = (
        "-- migration 0042\n"
        "/* a block comment\n"
        "   over two lines */\n"
        "SET lock_timeout = '2s';\n"
        "\n"
        "INSERT INTO labels (name) VALUES ('héllo wörld ✓ 日本');  -- trailing comment\n"
        "  /* before */ UPDATE labels\n"
        "     SET name = 'ß'\n"
        "   WHERE id = 1 /* inside */;\n"
        "SELECT 'a -- not a comment' AS x -- last, no semicolon\n"
    )
    statements = parse_sql(sql)
    assert [(s.index, s.line, s.kind) for s in statements] == [
        (0, 4, "VariableSetStmt"), (1, 6, "InsertStmt"), (2, 7, "UpdateStmt"), (3, 10, "SelectStmt")]
    assert statements[0].text == "SET lock_timeout = '2s'"
    assert statements[1].text == "INSERT INTO labels (name) VALUES ('héllo wörld ✓ 日本')"
    assert statements[2].text == "UPDATE labels\n     SET name = 'ß'\n   WHERE id = 1"
    assert statements[3].text == "SELECT 'a -- not a comment' AS x"
    assert statements[1].tables == ("public.labels",)
    assert type(statements[1].node).__name__ == "InsertStmt"


def test_statement_text_after_many_multibyte_characters():
    sql = "".join("INSERT INTO t VALUES ('%s');\n" % ("é" * i) for i in range(1, 40)) + "DROP TABLE t;"
    statements = parse_sql(sql)
    assert statements[-1].text == "DROP TABLE t"
    assert statements[-1].line == 40
    assert statements[38].text == "INSERT INTO t VALUES ('%s')" % ("é" * 39)


def test_syntax_error_reports_the_line_in_the_file():
    sql = "SELECT 1;\n-- comment\nALTER TABLE t\n  ADD COLUMN x int,\n  RENAME COLUMN a TO b;\nSELECT 2;"
    with pytest.raises(CompatError) as info:
        parse_sql(sql)
    assert str(info.value) == 'syntax error at line 5: syntax error at or near "RENAME"'


def test_syntax_error_line_after_non_ascii_text():
    sql = "SELECT 'ééé';\nSELECT 'ü' FROM x WHERE\n;"
    with pytest.raises(CompatError, match=r'^syntax error at line 3: syntax error at or near ";"$'):
        parse_sql(sql)


def test_syntax_error_at_end_of_input():
    with pytest.raises(CompatError, match=r"^syntax error at line 3: syntax error at end of input$"):
        parse_sql("SELECT 1;\n\nSELECT (1\n\n")


def test_analyze_raises_compat_error_on_bad_sql():
    with pytest.raises(CompatError, match="syntax error at line 1"):
        analyze_static("ALTER TABLE")


def test_tables_are_qualified_with_the_search_path_in_effect():
    statements = parse_sql(
        "ALTER TABLE a ADD COLUMN x int;\n"
        "SET search_path TO \"$user\", app, public;\n"
        "ALTER TABLE b ADD COLUMN x int;\n"
        "TRUNCATE c, other.d;\n"
        "RESET search_path;\n"
        "DROP TABLE e, f;\n"
    )
    assert [s.tables for s in statements] == [
        ("public.a",), (), ("app.b",), ("app.c", "other.d"), (), ("public.e", "public.f")]


@pytest.mark.parametrize("sql, transactional", [
    ("CREATE INDEX CONCURRENTLY i ON t (a)", False),
    ("CREATE INDEX i ON t (a)", True),
    ("DROP INDEX CONCURRENTLY i", False),
    ("DROP INDEX i", True),
    ("REINDEX INDEX CONCURRENTLY i", False),
    ("REINDEX (CONCURRENTLY) TABLE t", False),
    ("REINDEX TABLE t", True),
    ("REINDEX SCHEMA app", False),
    ("VACUUM t", False),
    ("VACUUM FULL t", False),
    ("ANALYZE t", True),
    ("CREATE DATABASE d", False),
    ("ALTER SYSTEM SET work_mem = '64MB'", False),
    ("CLUSTER t USING i", True),
    ("CLUSTER", False),
    ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", False),
    ("ALTER TABLE p DETACH PARTITION c", True),
    ("ALTER TYPE mood ADD VALUE 'meh'", True),
    ("ALTER TABLE t ADD COLUMN x int", True),
])
def test_transactional(sql, transactional):
    (stmt,) = parse_sql(sql)
    assert stmt.transactional is transactional
    assert isinstance(stmt, Statement)


def test_enum_add_value_is_transactional_from_12():
    (stmt,) = parse_sql("ALTER TYPE mood ADD VALUE 'meh'")
    assert stmt.is_transactional(110000) is False
    assert stmt.is_transactional(120000) is True
    assert "non-transactional" in rules_of("ALTER TYPE mood ADD VALUE 'meh'", server_version=110000)
    assert "non-transactional" not in rules_of("ALTER TYPE mood ADD VALUE 'meh'", server_version=150000)


# -- non_transactional -------------------------------------------------------------------


def test_create_index_concurrently_is_non_transactional_not_blocking():
    result = findings(LOCK_TIMEOUT + "CREATE INDEX CONCURRENTLY orders_status ON orders (status);")
    assert [(f["rule"], f["category"], f["severity"]) for f in result] == [
        ("non-transactional", "non_transactional", "warning")]
    message = result[0]["message"]
    assert "only statement" in message and "INVALID index" in message and "orders_status" in message


def test_drop_index_concurrently_is_non_transactional_not_blocking():
    assert rules_of("DROP INDEX CONCURRENTLY orders_status;") == {"non-transactional": "warning"}


# -- blocking_lock -------------------------------------------------------------------------


def test_create_index_without_concurrently_blocks_writes():
    finding = only(LOCK_TIMEOUT + "CREATE INDEX orders_status ON orders (status);", "create-index-non-concurrent")
    assert finding["category"] == "blocking_lock" and finding["severity"] == "error"
    assert "CONCURRENTLY" in finding["message"] and "SHARE" in finding["message"]


def test_foreign_key_without_not_valid_validates_under_lock():
    sql = LOCK_TIMEOUT + "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);"
    finding = only(sql, "add-constraint-validates")
    assert finding["severity"] == "error"
    assert "NOT VALID" in finding["message"] and "VALIDATE CONSTRAINT" in finding["message"]
    assert "public.users" in finding["message"]


def test_not_valid_then_validate_has_no_blocking_finding():
    sql = LOCK_TIMEOUT + (
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;\n"
        "ALTER TABLE orders ADD CONSTRAINT orders_total CHECK (total >= 0) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_total;\n"
    )
    result = findings(sql)
    assert [f for f in result if f["category"] == "blocking_lock"] == []
    # The constraints reject writes that violate them, the old version's too: a fact, not an alarm.
    assert set(f["rule"] for f in result) == {"add-constraint-old-writes"}
    assert all(f["severity"] == "info" for f in result)


def test_check_without_not_valid_validates_under_lock():
    assert rules_of(LOCK_TIMEOUT + "ALTER TABLE orders ADD CONSTRAINT c CHECK (total >= 0);") == {
        "add-constraint-validates": "error", "add-constraint-old-writes": "info"}


def test_unique_constraint_builds_index_unless_using_index():
    unsafe = rules_of(LOCK_TIMEOUT + "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);")
    assert unsafe["add-unique-builds-index"] == "error"
    assert unsafe["add-constraint-old-writes"] == "info"
    safe = rules_of(LOCK_TIMEOUT + "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_idx;")
    assert safe == {}
    assert rules_of(LOCK_TIMEOUT + "ALTER TABLE users ADD PRIMARY KEY (id);")["add-unique-builds-index"] == "error"


def test_set_not_null_scans_and_breaks_old_writes():
    result = rules_of(LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;")
    assert result == {"set-not-null": "error", "set-not-null-scan": "error"}
    message = only(LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "set-not-null-scan")["message"]
    assert "CHECK (email IS NOT NULL) NOT VALID" in message and "12" in message


def test_set_not_null_after_validated_check_is_free_from_12():
    sql = LOCK_TIMEOUT + (
        "ALTER TABLE users ADD CONSTRAINT users_email_nn CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE users VALIDATE CONSTRAINT users_email_nn;\n"
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"
        "ALTER TABLE users DROP CONSTRAINT users_email_nn;\n"
    )
    result = findings(sql)
    assert [f["rule"] for f in result] == ["add-constraint-old-writes"]
    assert result[0]["statement_index"] == 1
    # Before 12, SET NOT NULL scans even with the CHECK constraint validated.
    old = [f for f in findings(sql, server_version=110000) if f["category"] == "blocking_lock"]
    assert [(f["rule"], f["statement_index"]) for f in old] == [("set-not-null-scan", 3)]


def test_set_not_null_without_validate_still_scans():
    sql = LOCK_TIMEOUT + (
        "ALTER TABLE users ADD CONSTRAINT users_email_nn CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"
    )
    assert "set-not-null-scan" in rules_of(sql)


def test_reindex_refresh_drop_index_lock_vacuum_cluster():
    assert rules_of(LOCK_TIMEOUT + "REINDEX TABLE users;") == {"reindex-non-concurrent": "error"}
    assert rules_of("REINDEX TABLE CONCURRENTLY users;") == {"non-transactional": "warning"}
    assert rules_of(LOCK_TIMEOUT + "REFRESH MATERIALIZED VIEW stats;") == {"refresh-matview-non-concurrent": "error"}
    assert rules_of(LOCK_TIMEOUT + "REFRESH MATERIALIZED VIEW CONCURRENTLY stats;") == {}
    assert rules_of(LOCK_TIMEOUT + "DROP INDEX users_email;") == {"drop-index-non-concurrent": "warning"}
    assert rules_of(LOCK_TIMEOUT + "LOCK TABLE users;") == {"lock-table": "error"}
    assert rules_of(LOCK_TIMEOUT + "LOCK TABLE users IN SHARE MODE;") == {"lock-table": "error"}
    assert rules_of(LOCK_TIMEOUT + "LOCK TABLE users IN ROW EXCLUSIVE MODE;") == {}
    assert rules_of(LOCK_TIMEOUT + "VACUUM FULL users;") == {
        "vacuum-full-rewrite": "error", "vacuum-full-lock": "error", "non-transactional": "warning"}
    assert rules_of(LOCK_TIMEOUT + "VACUUM (ANALYZE) users;") == {"non-transactional": "warning"}
    assert rules_of(LOCK_TIMEOUT + "CLUSTER users USING users_pkey;") == {"cluster-rewrite": "error", "cluster-lock": "error"}


def test_alter_column_type_rewrite_blocks():
    sql = LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN id TYPE bigint;"
    result = rules_of(sql, column_types={"public.users": {"id": "integer"}})
    assert result == {"alter-column-type-rewrite": "error", "alter-column-type-lock": "error"}


def test_table_created_in_the_same_file_has_no_lock_or_rewrite_finding():
    sql = (
        "CREATE TABLE audit (id bigint PRIMARY KEY, note text, at timestamptz);\n"
        "CREATE INDEX audit_at ON audit (at);\n"
        "ALTER TABLE audit ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid();\n"
        "ALTER TABLE audit ALTER COLUMN note SET NOT NULL;\n"
        "ALTER TABLE audit ALTER COLUMN note TYPE varchar(20);\n"
        "ALTER TABLE audit ADD CONSTRAINT audit_note CHECK (note <> '');\n"
        "ALTER TABLE audit DROP COLUMN at;\n"
        "ALTER TABLE audit RENAME COLUMN note TO remark;\n"
        "ALTER TABLE audit RENAME TO audit_log;\n"
        "CREATE INDEX audit_log_remark ON audit_log (remark);\n"
        "DROP TABLE audit_log;\n"
    )
    assert findings(sql) == []


@pytest.mark.parametrize("rows, severity", [(500, "warning"), (99999, "warning"), (100000, "error"), (5000000, "error")])
def test_blocking_severity_follows_table_size(rows, severity):
    finding = only(LOCK_TIMEOUT + "CREATE INDEX i ON orders (status);", "create-index-non-concurrent",
                   table_rows={"public.orders": rows})
    assert finding["severity"] == severity
    assert str(rows) in finding["message"]


def test_blocking_severity_without_statistics_counts_as_large():
    sql = LOCK_TIMEOUT + "CREATE INDEX i ON orders (status);"
    assert only(sql, "create-index-non-concurrent")["severity"] == "error"
    assert only(sql, "create-index-non-concurrent", table_rows={"public.other": 10})["severity"] == "error"
    assert only(sql, "create-index-non-concurrent", table_rows={"public.orders": None})["severity"] == "error"
    assert only(sql, "create-index-non-concurrent", table_rows={"public.orders": 10}, large_table_rows=5)["severity"] == "error"


def test_small_table_turns_warnings_into_info():
    sql = LOCK_TIMEOUT + "ALTER TABLE orders ALTER COLUMN note TYPE varchar(100);"
    assert only(sql, "alter-column-type-rewrite")["severity"] == "warning"
    assert only(sql, "alter-column-type-rewrite", table_rows={"public.orders": 10})["severity"] == "info"


def test_renamed_table_keeps_its_statistics():
    sql = LOCK_TIMEOUT + "ALTER TABLE orders RENAME TO purchases;\nCREATE INDEX i ON purchases (status);"
    finding = only(sql, "create-index-non-concurrent", table_rows={"public.orders": 10})
    assert finding["severity"] == "warning" and finding["table"] == "public.purchases"


# -- missing-lock-timeout --------------------------------------------------------------


def test_missing_lock_timeout_warns_on_access_exclusive():
    finding = only("ALTER TABLE users ADD COLUMN nickname text;", "missing-lock-timeout")
    assert finding["severity"] == "warning" and finding["category"] == "blocking_lock"
    assert "lock_timeout" in finding["message"] and "queue" in finding["message"]
    assert finding["table"] == "public.users"


@pytest.mark.parametrize("setting", [
    "SET lock_timeout = '2s';",
    "SET lock_timeout TO 2000;",
    "SET LOCAL lock_timeout = '5s';",
    "SELECT set_config('lock_timeout', '2s', true);",
])
def test_lock_timeout_set_before_silences_it(setting):
    assert findings(setting + "\nALTER TABLE users ADD COLUMN nickname text;") == []


def test_lock_timeout_must_come_before_and_stay_set():
    sql = (
        "ALTER TABLE users ADD COLUMN a text;\n"
        "SET lock_timeout = '2s';\n"
        "ALTER TABLE users ADD COLUMN b text;\n"
        "RESET lock_timeout;\n"
        "ALTER TABLE users ADD COLUMN c text;\n"
        "SET lock_timeout = '1s';\n"
        "SET lock_timeout = 0;\n"
        "ALTER TABLE users ADD COLUMN d text;\n"
    )
    assert [f["statement_index"] for f in findings(sql) if f["rule"] == "missing-lock-timeout"] == [0, 4, 7]


def test_missing_lock_timeout_not_for_weaker_locks_or_new_tables():
    sql = (
        "ALTER TABLE users VALIDATE CONSTRAINT users_fk;\n"
        "ALTER TABLE users ALTER COLUMN email SET STATISTICS 500;\n"
        "CREATE INDEX CONCURRENTLY i ON users (email);\n"
        "LOCK TABLE users IN ACCESS EXCLUSIVE MODE NOWAIT;\n"
        "CREATE TABLE fresh (id int);\n"
        "ALTER TABLE fresh ADD COLUMN x int;\n"
    )
    assert [f["rule"] for f in findings(sql) if f["rule"] == "missing-lock-timeout"] == []


def test_one_missing_lock_timeout_per_statement():
    sql = "ALTER TABLE users ADD COLUMN a text, ADD COLUMN b text, DROP COLUMN c;"
    assert [f["rule"] for f in findings(sql)].count("missing-lock-timeout") == 1


# -- table_rewrite -----------------------------------------------------------------------


def test_constant_default_has_no_rewrite_from_11():
    sql = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN score int DEFAULT 0;"
    assert findings(sql) == []
    finding = only(sql, "add-column-default-pre11", server_version=100000)
    assert finding["category"] == "table_rewrite" and finding["severity"] == "error"
    assert "without a default" in finding["message"]


def test_null_default_never_rewrites():
    assert findings(LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN score int DEFAULT NULL;", server_version=100000) == []


@pytest.mark.parametrize("default", ["now()", "CURRENT_TIMESTAMP", "'2020-01-01'::timestamptz", "lower('X')", "now() + interval '1 day'"])
def test_stable_defaults_do_not_rewrite(default):
    assert findings(LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN at timestamptz DEFAULT %s;" % default) == []


@pytest.mark.parametrize("default", ["random()", "gen_random_uuid()", "clock_timestamp()", "nextval('s')", "uuid_generate_v4()",
                                     "md5(random()::text)"])
def test_volatile_defaults_rewrite(default):
    finding = only(LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN x text DEFAULT %s;" % default, "add-column-volatile-default")
    assert finding["severity"] == "error" and finding["category"] == "table_rewrite"


def test_unknown_function_default_is_a_warning():
    finding = only(LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN x text DEFAULT app.make_code();", "add-column-volatile-default")
    assert finding["severity"] == "warning"
    assert "make_code()" in finding["message"] and "not known" in finding["message"]


@pytest.mark.parametrize("column", ["id2 bigserial", "id2 serial", "id2 int GENERATED ALWAYS AS IDENTITY"])
def test_sequence_filled_columns_rewrite(column):
    assert only(LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN %s;" % column, "add-column-volatile-default")["severity"] == "error"


def test_stored_generated_column_rewrites():
    sql = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN total2 numeric GENERATED ALWAYS AS (total * 2) STORED;"
    assert rules_of(sql) == {"add-column-generated-stored": "error"}


@pytest.mark.parametrize("sql, rule", [
    ("ALTER TABLE users SET TABLESPACE fast;", "set-tablespace"),
    ("ALTER TABLE users SET LOGGED;", "set-logged"),
    ("ALTER TABLE users SET UNLOGGED;", "set-logged"),
    ("ALTER TABLE users SET ACCESS METHOD heap2;", "set-access-method"),
    ("ALTER TABLE users ALTER COLUMN total2 SET EXPRESSION AS (total * 3);", "set-generated-expression"),
])
def test_other_rewrites(sql, rule):
    assert rules_of(LOCK_TIMEOUT + sql) == {rule: "error"}


# -- type changes ------------------------------------------------------------------------


def type_change(old, new, using=""):
    sql = LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN c TYPE %s%s;" % (new, using)
    return rules_of(sql, column_types={"public.users": {"c": old}})


@pytest.mark.parametrize("old, new", [
    ("character varying(50)", "varchar(100)"),
    ("character varying(50)", "varchar(50)"),
    ("character varying(50)", "varchar"),
    ("character varying(50)", "text"),
    ("text", "varchar"),
    ("numeric(10,2)", "numeric(12,2)"),
    ("numeric(10,2)", "numeric"),
    ("timestamp(3) without time zone", "timestamp"),
    ("timestamp(3) with time zone", "timestamptz(6)"),
    ("bit varying(8)", "varbit(16)"),
    ("cidr", "inet"),
])
def test_binary_coercible_widenings_are_free(old, new):
    assert type_change(old, new) == {}


@pytest.mark.parametrize("old, new", [
    ("integer", "bigint"),
    ("smallint", "integer"),
    ("real", "double precision"),
    ("date", "timestamptz"),
    ("numeric(10,2)", "numeric(14,4)"),
    ("integer", "numeric"),
    ("json", "jsonb"),
    ("integer[]", "bigint[]"),
])
def test_widenings_that_rewrite(old, new):
    assert type_change(old, new) == {"alter-column-type-rewrite": "error", "alter-column-type-lock": "error"}


@pytest.mark.parametrize("old, new", [
    ("character varying(100)", "varchar(50)"),
    ("text", "varchar(20)"),
    ("numeric(10,2)", "numeric(8,2)"),
    ("numeric(10,2)", "numeric(10,1)"),
    ("bigint", "integer"),
    ("integer", "smallint"),
    ("double precision", "real"),
    ("timestamp(6) with time zone", "timestamptz(0)"),
])
def test_narrowing_breaks_old_writes_and_loses_data(old, new):
    assert type_change(old, new) == {
        "alter-column-type-rewrite": "error", "alter-column-type-lock": "error",
        "narrow-column-type": "error", "lossy-type-change": "error"}


@pytest.mark.parametrize("old, new", [
    ("timestamp with time zone", "date"),
    ("double precision", "integer"),
    ("numeric(10,2)", "integer"),
])
def test_lossy_conversions(old, new):
    assert type_change(old, new) == {
        "alter-column-type-rewrite": "error", "alter-column-type-lock": "error",
        "incompatible-column-type": "error", "lossy-type-change": "error"}


@pytest.mark.parametrize("old, new, using", [
    ("integer", "text", ""),
    ("text", "integer", " USING c::integer"),
    ("uuid", "text", ""),
    ("text", "jsonb", " USING c::jsonb"),
    ("integer", "integer[]", ""),
])
def test_incompatible_changes(old, new, using):
    assert type_change(old, new, using) == {
        "alter-column-type-rewrite": "error", "alter-column-type-lock": "error", "incompatible-column-type": "error"}


def test_using_expression_forces_a_rewrite():
    assert "alter-column-type-rewrite" in type_change("text", "text", " USING lower(c)")
    assert type_change("character varying(5)", "text", " USING c::text") == {}


def test_unknown_current_type_is_reported_with_its_uncertainty():
    maybe_free = rules_of(LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN name TYPE varchar(100);")
    assert maybe_free == {"alter-column-type-rewrite": "warning", "incompatible-column-type": "warning"}
    message = only(LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN name TYPE varchar(100);", "alter-column-type-rewrite")["message"]
    assert "not known" in message
    rewrite = rules_of(LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN id TYPE bigint;")
    assert rewrite == {"alter-column-type-rewrite": "error", "alter-column-type-lock": "error", "incompatible-column-type": "warning"}


def test_column_types_from_a_schema_file():
    base = (
        "CREATE TABLE customers (id bigint PRIMARY KEY, email varchar(64) NOT NULL, \"Tags\" text[], kind \"Kind\");\n"
        "ALTER TABLE customers ADD COLUMN amount numeric(10,2);\n"
        "ALTER TABLE customers RENAME COLUMN kind TO category;\n"
        "SET search_path = app;\n"
        "CREATE TABLE orders (id int, at timestamp(3) with time zone);\n"
        "ALTER TABLE orders ALTER COLUMN id TYPE bigint;\n"
    )
    types = column_types_from_sql(base)
    assert types == {
        "public.customers": {"id": "bigint", "email": "varchar(64)", "Tags": "text[]", "category": '"Kind"',
                             "amount": "numeric(10,2)"},
        "app.orders": {"id": "bigint", "at": "timestamptz(3)"},
    }
    assert findings(LOCK_TIMEOUT + "ALTER TABLE customers ALTER COLUMN email TYPE varchar(255);", column_types=types) == []
    assert "narrow-column-type" in rules_of(LOCK_TIMEOUT + "ALTER TABLE customers ALTER COLUMN email TYPE varchar(32);",
                                            column_types=types)
    assert findings(LOCK_TIMEOUT + 'ALTER TABLE customers ALTER COLUMN category TYPE "Kind";', column_types=types) == []


def test_type_known_from_an_earlier_add_column():
    sql = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN code varchar(10);\nALTER TABLE users ALTER COLUMN code TYPE varchar(40);"
    assert findings(sql) == []
    sql = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN code varchar(10);\nALTER TABLE users ALTER COLUMN code TYPE integer USING 0;"
    # A rewrite, but no old writer or reader of the fresh column to break, and no data to lose.
    assert rules_of(sql) == {"alter-column-type-rewrite": "error", "alter-column-type-lock": "error"}


# -- breaks_old_app ---------------------------------------------------------------------


@pytest.mark.parametrize("sql, rule", [
    ("ALTER TABLE users DROP COLUMN email;", "drop-column"),
    ("ALTER TABLE users RENAME COLUMN email TO mail;", "rename-column"),
    ("DROP TABLE users;", "drop-table"),
    ("ALTER TABLE users RENAME TO accounts;", "rename-table"),
    ("DROP VIEW active_users;", "drop-view"),
    ("DROP MATERIALIZED VIEW stats;", "drop-view"),
    ("ALTER VIEW active_users RENAME TO live_users;", "rename-view"),
    ("DROP FUNCTION user_score(int);", "drop-function"),
    ("DROP PROCEDURE purge();", "drop-function"),
    ("ALTER FUNCTION user_score(int) RENAME TO account_score;", "rename-function"),
    ("ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';", "rename-enum-value"),
    ("ALTER TABLE users ADD COLUMN tenant int NOT NULL;", "add-column-not-null-no-default"),
    ("ALTER TABLE users ALTER COLUMN email SET NOT NULL;", "set-not-null"),
    ("DROP SCHEMA legacy;", "drop-schema"),
    ("ALTER SCHEMA legacy RENAME TO old;", "rename-schema"),
    ("ALTER TABLE users SET SCHEMA archive;", "set-schema"),
    ("DROP TYPE mood;", "drop-type"),
    ("DROP SEQUENCE users_code_seq;", "drop-sequence"),
])
def test_breaking_changes_are_errors(sql, rule):
    finding = only(LOCK_TIMEOUT + sql, rule)
    assert finding["category"] == "breaks_old_app"
    assert finding["severity"] == "error"
    assert ";" in finding["message"]  # what is wrong; the safe alternative


@pytest.mark.parametrize("sql", [
    "ALTER TABLE users ADD COLUMN tenant int;",
    "ALTER TABLE users ADD COLUMN tenant int NOT NULL DEFAULT 0;",
    "ALTER TABLE users ALTER COLUMN email DROP NOT NULL;",
    "ALTER TABLE users ALTER COLUMN email SET DEFAULT '';",
    "ALTER TYPE mood ADD VALUE 'meh';",
    "CREATE VIEW v AS SELECT 1;",
    "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
    "COMMENT ON TABLE users IS 'people';",
    "ALTER INDEX users_email RENAME TO users_email_idx;",
])
def test_compatible_changes_do_not_break_the_old_app(sql):
    assert [f for f in findings(LOCK_TIMEOUT + sql) if f["category"] == "breaks_old_app"] == []


def test_rename_type_and_drop_default_are_warnings():
    assert rules_of(LOCK_TIMEOUT + "ALTER TYPE mood RENAME TO feeling;") == {"rename-type": "warning"}
    assert rules_of(LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN kind DROP DEFAULT;") == {"drop-column-default": "warning"}


def test_rename_with_a_view_under_the_old_name_keeps_the_old_app_working():
    sql = (
        "BEGIN;\n"
        "SET LOCAL lock_timeout = '2s';\n"
        "ALTER TABLE invoices RENAME TO bills;\n"
        "CREATE VIEW invoices AS SELECT id, number, total FROM bills;\n"
        "COMMIT;\n"
    )
    finding = only(sql, "rename-table")
    assert finding["severity"] == "info"
    assert "creates view public.invoices under the old name" in finding["message"]
    assert only("SET lock_timeout = '1s';\nALTER TABLE invoices RENAME TO bills;", "rename-table")["severity"] == "error"


def test_dropping_and_recreating_a_view_is_still_a_drop():
    sql = LOCK_TIMEOUT + "DROP VIEW active_customers;\nCREATE VIEW active_customers AS SELECT id, name FROM customers;"
    assert only(sql, "drop-view")["severity"] == "error"


def test_enum_value_removed_by_swapping_the_type():
    sql = LOCK_TIMEOUT + (
        "ALTER TYPE order_status RENAME TO order_status_old;\n"
        "CREATE TYPE order_status AS ENUM ('new', 'paid');\n"
        "ALTER TABLE orders ALTER COLUMN status TYPE order_status USING status::text::order_status;\n"
        "DROP TYPE order_status_old;\n"
    )
    result = rules_of(sql, column_types={"public.orders": {"status": "order_status"}},
                      old_queries=["UPDATE orders SET status = 'cancelled' WHERE id = $1"])
    assert result["incompatible-column-type"] == "error"
    assert result["alter-column-type-rewrite"] == "error"
    message = only(sql, "incompatible-column-type", column_types={"public.orders": {"status": "order_status"}})["message"]
    assert "from order_status_old to order_status" in message


def test_types_created_in_the_file_can_be_renamed_and_dropped():
    sql = LOCK_TIMEOUT + "CREATE TYPE tmp_kind AS ENUM ('a');\nALTER TYPE tmp_kind RENAME TO tmp_kind2;\nDROP TYPE tmp_kind2;"
    assert findings(sql) == []


def test_drop_cascade_warns_about_dependents():
    assert rules_of(LOCK_TIMEOUT + "DROP VIEW active_users CASCADE;") == {"drop-view": "error", "drop-cascade": "warning"}


def test_constraints_on_a_new_column():
    # The old version leaves a new column to its default: constraints that accept the default are safe.
    safe = LOCK_TIMEOUT + (
        "ALTER TABLE orders ADD COLUMN status text DEFAULT 'new';\n"
        "ALTER TABLE orders ADD CONSTRAINT s_check CHECK (status IN ('new', 'paid')) NOT VALID;\n"
        "ALTER TABLE orders ADD CONSTRAINT s_nn CHECK (status IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT s_nn;\n"
        "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;\n"
    )
    assert findings(safe) == []
    # Without a default, the old version's INSERTs write NULL into it.
    unsafe = LOCK_TIMEOUT + (
        "ALTER TABLE orders ADD COLUMN status text;\n"
        "ALTER TABLE orders ADD CONSTRAINT s_nn CHECK (status IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE orders ADD COLUMN kind text;\n"
        "ALTER TABLE orders ALTER COLUMN kind SET DEFAULT 'x';\n"
        "ALTER TABLE orders ALTER COLUMN kind DROP DEFAULT;\n"
        "ALTER TABLE orders ALTER COLUMN kind SET NOT NULL;\n"
    )
    assert [(f["rule"], f["severity"], f["statement_index"]) for f in findings(unsafe) if f["category"] == "breaks_old_app"] == [
        ("add-constraint-old-writes", "error", 2), ("set-not-null", "error", 6)]


def test_constraint_on_a_column_old_inserts_omit_is_a_warning():
    sql = LOCK_TIMEOUT + "ALTER TABLE orders ADD CONSTRAINT nn CHECK (note IS NOT NULL) NOT VALID;"
    assert only(sql, "add-constraint-old-writes")["severity"] == "info"
    omits = ["INSERT INTO orders (customer_id, amount) VALUES ($1, $2)"]
    finding = only(sql, "add-constraint-old-writes", old_queries=omits)
    assert finding["severity"] == "warning" and "omits column note" in finding["message"]
    names = ["INSERT INTO orders (customer_id, amount, note) VALUES ($1, $2, $3)"]
    assert only(sql, "add-constraint-old-writes", old_queries=names)["severity"] == "info"


def test_unique_index_concurrently_is_a_fact_not_an_alarm():
    result = rules_of("CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);")
    assert result == {"add-constraint-old-writes": "info", "non-transactional": "warning"}


def test_new_objects_can_be_dropped_and_renamed():
    sql = LOCK_TIMEOUT + (
        "ALTER TABLE users ADD COLUMN tmp text;\n"
        "ALTER TABLE users RENAME COLUMN tmp TO tmp2;\n"
        "ALTER TABLE users DROP COLUMN tmp2;\n"
        "CREATE FUNCTION helper() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
        "DROP FUNCTION helper();\n"
        "CREATE VIEW v AS SELECT 1 AS one;\n"
        "DROP VIEW v;\n"
    )
    assert findings(sql) == []


# -- old_queries --------------------------------------------------------------------------

OLD_QUERIES = [
    "SELECT id, name, email FROM users WHERE id = $1",
    "INSERT INTO users (name, email) VALUES ($1, $2)",
    "SELECT o.* FROM orders o WHERE o.user_id = $1",
    "SELECT user_score($1)",
]


def test_dropping_a_column_the_old_queries_use_is_an_error():
    finding = only(LOCK_TIMEOUT + "ALTER TABLE users DROP COLUMN email;", "drop-column", old_queries=OLD_QUERIES)
    assert finding["severity"] == "error"
    assert "reference it" in finding["message"]


def test_dropping_a_column_no_old_query_mentions_is_a_warning():
    finding = only(LOCK_TIMEOUT + "ALTER TABLE users DROP COLUMN legacy_flag;", "drop-column", old_queries=OLD_QUERIES)
    assert finding["severity"] == "warning"
    assert "none of the old version's queries" in finding["message"]
    # The data is gone either way.
    assert only(LOCK_TIMEOUT + "ALTER TABLE users DROP COLUMN legacy_flag;", "drop-column-data",
                old_queries=OLD_QUERIES)["severity"] == "error"


def test_select_star_uses_every_column():
    assert only(LOCK_TIMEOUT + "ALTER TABLE orders DROP COLUMN anything;", "drop-column",
                old_queries=OLD_QUERIES)["severity"] == "error"
    positional = ["INSERT INTO orders VALUES ($1, $2, $3)"]
    assert only(LOCK_TIMEOUT + "ALTER TABLE orders DROP COLUMN anything;", "drop-column",
                old_queries=positional)["severity"] == "error"


def test_same_column_name_on_another_table_does_not_count():
    # users.email is used; accounts.email is not (no old query touches accounts).
    assert only(LOCK_TIMEOUT + "ALTER TABLE accounts DROP COLUMN email;", "drop-column",
                old_queries=OLD_QUERIES)["severity"] == "warning"


def test_old_queries_lower_other_drops_and_renames():
    kwargs = dict(old_queries=OLD_QUERIES)
    assert only(LOCK_TIMEOUT + "DROP TABLE users;", "drop-table", **kwargs)["severity"] == "error"
    assert only(LOCK_TIMEOUT + "DROP TABLE ghosts;", "drop-table", **kwargs)["severity"] == "warning"
    assert only(LOCK_TIMEOUT + "ALTER TABLE users RENAME COLUMN name TO full_name;", "rename-column", **kwargs)["severity"] == "error"
    assert only(LOCK_TIMEOUT + "ALTER TABLE users RENAME COLUMN bio TO about;", "rename-column", **kwargs)["severity"] == "warning"
    assert only(LOCK_TIMEOUT + "DROP FUNCTION user_score(int);", "drop-function", **kwargs)["severity"] == "error"
    assert only(LOCK_TIMEOUT + "DROP FUNCTION unused_fn();", "drop-function", **kwargs)["severity"] == "warning"
    # Without old queries nothing is known: the default severity.
    assert only(LOCK_TIMEOUT + "DROP TABLE ghosts;", "drop-table")["severity"] == "error"


def test_not_null_column_and_old_inserts():
    sql = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN tenant int NOT NULL;"
    assert only(sql, "add-column-not-null-no-default", old_queries=OLD_QUERIES)["severity"] == "error"
    assert only(sql, "add-column-not-null-no-default", old_queries=["SELECT id FROM users"])["severity"] == "warning"
    sql = LOCK_TIMEOUT + "ALTER TABLE users ALTER COLUMN bio SET NOT NULL;"
    assert only(sql, "set-not-null", old_queries=OLD_QUERIES)["severity"] == "error"
    assert only(sql, "set-not-null", old_queries=["INSERT INTO users (name, bio) VALUES ($1, $2)"])["severity"] == "warning"


def test_unparsable_old_query_counts_conservatively():
    # psycopg2-style placeholders do not parse: every identifier in it counts as referenced.
    old = ["SELECT name, email FROM users WHERE id = %s"]
    assert only(LOCK_TIMEOUT + "ALTER TABLE users DROP COLUMN email;", "drop-column", old_queries=old)["severity"] == "error"
    assert only(LOCK_TIMEOUT + "DROP TABLE ghosts;", "drop-table", old_queries=old)["severity"] == "warning"


def test_whole_row_reference_uses_every_column():
    old = ["SELECT u FROM users u"]
    assert only(LOCK_TIMEOUT + "ALTER TABLE users DROP COLUMN bio;", "drop-column", old_queries=old)["severity"] == "error"


# -- data_loss ----------------------------------------------------------------------------


def test_data_loss_statements():
    assert rules_of(LOCK_TIMEOUT + "TRUNCATE logs;") == {"truncate": "error"}
    assert rules_of(LOCK_TIMEOUT + "DELETE FROM logs;") == {"delete-without-where": "error"}
    assert rules_of(LOCK_TIMEOUT + "UPDATE users SET kind = 'user';") == {"update-without-where": "error", "backfill-unbatched": "error"}
    assert rules_of(LOCK_TIMEOUT + "DROP TABLE logs;") == {"drop-table": "error", "drop-table-data": "error"}
    assert rules_of(LOCK_TIMEOUT + "DROP SCHEMA legacy CASCADE;") == {"drop-schema": "error", "drop-schema-cascade": "error"}
    assert categories_of(LOCK_TIMEOUT + "ALTER TABLE users DROP COLUMN bio;") == {"breaks_old_app", "data_loss"}


def test_backfill_of_a_new_column_without_where_loses_nothing_but_blocks():
    sql = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN email_lower text;\nUPDATE users SET email_lower = lower(email);"
    assert rules_of(sql) == {"backfill-unbatched": "error"}
    assert rules_of(sql, table_rows={"public.users": 500}) == {"backfill-unbatched": "warning"}
    sql = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN email_lower text;\nUPDATE users SET email_lower = lower(email), email = '';"
    assert rules_of(sql) == {"update-without-where": "error", "backfill-unbatched": "error"}
    batched = LOCK_TIMEOUT + "ALTER TABLE users ADD COLUMN email_lower text;\nUPDATE users SET email_lower = lower(email) WHERE id < 1000;"
    assert findings(batched) == []


def test_data_modifying_ctes_and_select_into():
    sql = LOCK_TIMEOUT + (
        "WITH gone AS (DELETE FROM logs RETURNING *) SELECT count(*) FROM gone;\n"
        "WITH moved AS (UPDATE users SET kind = 'x' RETURNING id) INSERT INTO audit SELECT id FROM moved;\n"
        "SELECT * INTO users_copy FROM users;\n"
        "DELETE FROM users_copy;\n"
    )
    result = findings(sql)
    assert [(f["rule"], f["statement_index"], f["table"]) for f in result] == [
        ("delete-without-where", 1, "public.logs"), ("backfill-unbatched", 2, "public.users"), ("update-without-where", 2, "public.users")]
    assert parse_sql(sql)[3].tables == ("public.users_copy",)


def test_updates_and_deletes_with_where_lose_nothing():
    assert findings(LOCK_TIMEOUT + "UPDATE users SET a = 1 WHERE id = 1;") == []
    assert findings(LOCK_TIMEOUT + "UPDATE users SET kind = 'user' WHERE kind IS NULL;") == []
    assert findings(LOCK_TIMEOUT + "DELETE FROM logs WHERE at < now() - interval '90 days';") == []
    assert findings("CREATE TABLE scratch (a int);\nDELETE FROM scratch;\nTRUNCATE scratch;") == []


# -- ignore_rules ---------------------------------------------------------------------------


def test_ignore_rules_drops_those_findings_only():
    sql = "ALTER TABLE users DROP COLUMN bio;"
    assert set(rules_of(sql)) == {"drop-column", "drop-column-data", "missing-lock-timeout"}
    assert set(rules_of(sql, ignore_rules=["missing-lock-timeout", "drop-column-data"])) == {"drop-column"}
    # Ids the static analysis does not know (e.g. live-only rules) are accepted.
    assert set(rules_of(sql, ignore_rules=["some-live-rule"])) == {"drop-column", "drop-column-data", "missing-lock-timeout"}


# -- a realistic file ---------------------------------------------------------------------

CORPUS = """\
-- 0042: order status, safe version
SET lock_timeout = '2s';
SET statement_timeout = '15min';

ALTER TABLE orders ADD COLUMN status text;
ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'new';
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_status_check;
UPDATE orders SET status = 'new' WHERE status IS NULL AND id BETWEEN 1 AND 10000;
ALTER TABLE orders ADD CONSTRAINT orders_status_nn CHECK (status IS NOT NULL) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_status_nn;
ALTER TABLE orders ALTER COLUMN status SET NOT NULL;
ALTER TABLE orders DROP CONSTRAINT orders_status_nn;

CREATE TABLE order_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    note text  -- « free text »
);
CREATE INDEX order_events_order ON order_events (order_id, at);
ALTER TABLE order_events ADD COLUMN payload jsonb NOT NULL DEFAULT '{}';

ALTER TABLE customers ALTER COLUMN email TYPE varchar(320);
ALTER TABLE customers ADD COLUMN marketing boolean NOT NULL DEFAULT false;
ALTER TABLE customers ADD COLUMN created_at timestamptz DEFAULT now();
COMMENT ON COLUMN customers.marketing IS 'opt-in';
"""


UNSAFE = """\
-- everything at once
SET search_path = app, public;
CREATE TABLE audit (id bigserial PRIMARY KEY, note text);
CREATE INDEX audit_note ON audit (note);
ALTER TABLE users ADD COLUMN status text NOT NULL DEFAULT 'new', ADD COLUMN token uuid DEFAULT gen_random_uuid();
ALTER TABLE users ALTER COLUMN name TYPE varchar(100);
ALTER TABLE users DROP COLUMN legacy;
  /* why */ ALTER TABLE users RENAME COLUMN a TO b;
ALTER TABLE public.orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);
CREATE INDEX CONCURRENTLY users_email ON users (email);
DROP TABLE old_stuff CASCADE;
UPDATE users SET status = 'x';
TRUNCATE logs;
VACUUM FULL users;
CLUSTER users USING users_pkey;
REINDEX TABLE users;
LOCK TABLE users;
ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';
DROP INDEX users_email;
REFRESH MATERIALIZED VIEW mv;
ALTER TABLE users ADD CONSTRAINT uq UNIQUE (email);
ALTER TABLE users ALTER COLUMN id TYPE bigint;
ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED;
DROP SCHEMA legacy CASCADE;
DROP FUNCTION f(int);
ALTER FUNCTION g(int) RENAME TO h;
ALTER TABLE t RENAME TO t2;
"""


def test_safe_corpus_has_no_finding():
    result = analyze_static(CORPUS, column_types={"public.customers": {"email": "character varying(255)"}})
    assert len(result["statements"]) == 18
    assert result["findings"] == []
    event_table = [s for s in result["statements"] if s["kind"] == "CreateStmt"][0]
    assert event_table["line"] == 16 and event_table["tables"] == ["public.order_events"]
    assert event_table["text"].endswith("note text  -- « free text »\n)")


def test_large_file_analyzes_statement_by_statement():
    sql = "SET lock_timeout = '1s';\n" + "".join(
        "ALTER TABLE t%d ADD COLUMN c%d text DEFAULT 'é%d';\nCREATE INDEX CONCURRENTLY i%d ON t%d (c%d);\n" % (i, i, i, i, i, i)
        for i in range(1500))
    result = analyze_static(sql)
    assert len(result["statements"]) == 3001
    assert result["statements"][-1]["line"] == 3001
    assert result["statements"][-1]["text"] == "CREATE INDEX CONCURRENTLY i1499 ON t1499 (c1499)"
    assert set(f["rule"] for f in result["findings"]) == {"non-transactional"}
    assert len(result["findings"]) == 1500
