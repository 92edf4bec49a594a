# -*- coding: utf-8 -*-
"""compat_live against the real sandbox primary (tests/conftest.py): every
measurement is taken on PostgreSQL itself, nothing is mocked.

The module owns a database, compat_live_test (owner app), with orders and
customers holding a few thousand analyzed rows, and a role
compat_live_deployer (CREATEDB, member of app) for the scratch database
path of a non-superuser; both are dropped at the end."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import psycopg2
import pytest

from ansible_collections.stateful.rollback.plugins.module_utils.compat_live import (
    SCRATCH_PREFIX,
    LiveError,
    analyze_live,
)
from ansible_collections.stateful.rollback.plugins.module_utils.fingerprint import schema_objects

pytestmark = pytest.mark.integration

DB = "compat_live_test"
DEPLOYER = "compat_live_deployer"
DEPLOYER_PASSWORD = "deployer-secret"
ORDERS = 3000
CUSTOMERS = 300

BASE_SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id int REFERENCES customers (id),
    amount numeric(12,2),
    note varchar(50)
);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, %d) AS g;
INSERT INTO orders SELECT g, 1 + g %% %d, (g * 7 %% 1000) / 10.0, 'note ' || g FROM generate_series(1, %d) AS g;
ANALYZE customers;
ANALYZE orders;
""" % (CUSTOMERS, CUSTOMERS, ORDERS)


class Db(object):
    """Connection parameters for compat_live_test as app, the superuser and the deployer."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.app = dict(sandbox.primary, dbname=DB)
        self.superuser = dict(sandbox.superuser("primary"), dbname=DB)
        self.deployer = dict(sandbox.primary, dbname=DB, user=DEPLOYER, password=DEPLOYER_PASSWORD)

    def connect(self, params=None):
        conn = psycopg2.connect(connect_timeout=5, **(params or self.app))
        conn.autocommit = True
        return conn

    def sql(self, query, params=None, conn_params=None):
        conn = self.connect(conn_params)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            conn.close()

    def state(self):
        """Schema fingerprint and data of the target, to prove nothing changed."""
        conn = self.connect()
        try:
            objects = schema_objects(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT count(*), sum(hashtext(o::text)) FROM orders o")
                orders = cur.fetchone()
                cur.execute("SELECT count(*), sum(hashtext(c::text)) FROM customers c")
                customers = cur.fetchone()
        finally:
            conn.close()
        return {"objects": objects, "orders": orders, "customers": customers}

    def scratch_databases(self):
        return [r[0] for r in self.sql("SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX + "%",))]


@pytest.fixture(scope="module")
def db(sandbox):
    admin = dict(sandbox.superuser("primary"), dbname="postgres")

    def as_admin(*queries):
        conn = psycopg2.connect(connect_timeout=5, **admin)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for query in queries:
                    cur.execute(query)
        finally:
            conn.close()

    as_admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB, "DROP ROLE IF EXISTS %s" % DEPLOYER)
    as_admin(
        "CREATE DATABASE %s OWNER app" % DB,
        "CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'" % (DEPLOYER, DEPLOYER_PASSWORD),
        "GRANT app TO %s" % DEPLOYER,
    )
    handle = Db(sandbox)
    try:
        handle.sql(BASE_SCHEMA)
        yield handle
    finally:
        as_admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB, "DROP ROLE IF EXISTS %s" % DEPLOYER)


@pytest.fixture
def unchanged(db):
    """Every test proves the target is as it was, and that no scratch database is left."""
    before = db.state()
    yield
    assert db.state() == before
    assert db.scratch_databases() == []


def stmts(*texts):
    return [
        {"index": i, "line": 10 * i + 1, "text": text, "transactional": "CONCURRENTLY" not in text.upper()}
        for i, text in enumerate(texts)
    ]


def findings(result, rule=None, index=None, script="migration"):
    return [
        f for f in result["findings"]
        if (rule is None or f["rule"] == rule) and (index is None or f["statement_index"] == index) and f["script"] == script
    ]


def lock_modes(statement, relation):
    return set(lock["mode"] for lock in statement["locks"] if lock["relation"] == relation)


# --- locks and rewrites --------------------------------------------------------------


def test_add_column_with_constant_default_takes_access_exclusive_without_rewrite(db, unchanged):
    result = analyze_live(db.app, stmts("ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'new'"))
    assert result["mode"] == "transaction"
    assert result["server_version"] >= 150000
    stmt = result["statements"][0]
    assert stmt["error"] is None and stmt["locks_measured"] is True
    assert stmt["rewritten"] == [] and stmt["scanned"] == []
    assert {"relation": "public.orders", "mode": "AccessExclusiveLock", "preexisting": True, "kind": "table"} in stmt["locks"]
    assert stmt["duration_ms"] > 0
    assert result["table_rows"] == {"public.orders": ORDERS}
    assert findings(result, "live-table-rewrite") == []
    (lock,) = findings(result, "live-blocking-lock")
    # catalog-only on a table below large_table_rows: brief, so info
    assert (lock["severity"], lock["category"], lock["table"], lock["source"]) == ("info", "blocking_lock", "public.orders", "live")
    assert "lock_timeout" in lock["message"]
    # the same statement on a "large" table: a warning, still no rewrite
    large = analyze_live(db.app, stmts("ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'new'"), large_table_rows=1000)
    assert [f["severity"] for f in findings(large, "live-blocking-lock")] == ["warning"]


def test_alter_column_type_int_to_bigint_is_a_rewrite(db, unchanged):
    result = analyze_live(db.app, stmts("ALTER TABLE orders ALTER COLUMN customer_id TYPE bigint"), large_table_rows=1000)
    stmt = result["statements"][0]
    assert "public.orders" in stmt["rewritten"]
    assert "AccessExclusiveLock" in lock_modes(stmt, "public.orders")
    # the foreign key is validated again: customers is scanned, under a lock of its own
    assert stmt["scanned"] == ["public.customers"]
    assert any("public.orders (~3,000 rows) on the target" in note for note in result["notes"]), result["notes"]
    (rewrite,) = findings(result, "live-table-rewrite")
    assert (rewrite["severity"], rewrite["category"], rewrite["table"], rewrite["rows"]) == ("error", "table_rewrite", "public.orders", ORDERS)
    assert "new column" in rewrite["message"]
    blocking = [f for f in findings(result, "live-blocking-lock") if f["table"] == "public.orders"]
    assert [f["severity"] for f in blocking] == ["error"]
    # below large_table_rows the same rewrite is a warning
    small = analyze_live(db.app, stmts("ALTER TABLE orders ALTER COLUMN customer_id TYPE bigint"))
    assert [f["severity"] for f in findings(small, "live-table-rewrite")] == ["warning"]


def test_widening_varchar_is_not_a_rewrite(db, unchanged):
    result = analyze_live(db.app, stmts("ALTER TABLE orders ALTER COLUMN note TYPE varchar(200)"))
    assert result["statements"][0]["rewritten"] == []
    assert findings(result, "live-table-rewrite") == []


def test_create_index_takes_share_lock_and_scans(db, unchanged):
    result = analyze_live(db.app, stmts("CREATE INDEX orders_amount_idx ON orders (amount)"), large_table_rows=1000)
    stmt = result["statements"][0]
    assert "ShareLock" in lock_modes(stmt, "public.orders")
    assert stmt["scanned"] == ["public.orders"] and stmt["rewritten"] == []
    new_index = [lock for lock in stmt["locks"] if lock["relation"] == "public.orders_amount_idx"]
    assert new_index and not new_index[0]["preexisting"]
    (finding,) = findings(result, "live-blocking-lock")
    assert (finding["severity"], finding["table"], finding["mode"]) == ("error", "public.orders", "ShareLock")
    assert "CONCURRENTLY" in finding["message"]


def test_lock_held_from_an_earlier_statement_counts_against_long_work(db, unchanged):
    result = analyze_live(
        db.app,
        stmts("ALTER TABLE customers ADD COLUMN vip boolean", "CREATE INDEX orders_note_idx ON orders (note)"),
        large_table_rows=1000,
    )
    second = result["statements"][1]
    held = [lock for lock in second["locks"] if lock["relation"] == "public.customers"]
    assert held == [{"relation": "public.customers", "mode": "AccessExclusiveLock", "preexisting": True, "kind": "table", "held_since": 0}]
    # the index build's own SHARE lock on orders is the error; the ACCESS EXCLUSIVE on customers, still held from
    # statement 0, only matters when the file runs as one transaction: a warning of its own
    own = findings(result, "live-blocking-lock", index=1)
    assert [(f["table"], f["mode"], f["severity"]) for f in own] == [("public.orders", "ShareLock", "error")]
    (held_finding,) = findings(result, "live-lock-held-during-long-work", index=1)
    assert (held_finding["table"], held_finding["severity"], held_finding["held_since"]) == ("public.customers", "warning", 0)
    assert "statement 0" in held_finding["message"] and "one transaction" in held_finding["message"]


def test_not_valid_then_validate_takes_no_blocking_lock_of_its_own(db, unchanged):
    result = analyze_live(
        db.app,
        stmts(
            "ALTER TABLE orders ADD CONSTRAINT orders_amount_positive CHECK (amount >= 0) NOT VALID",
            "ALTER TABLE orders VALIDATE CONSTRAINT orders_amount_positive",
        ),
        large_table_rows=1000,
    )
    validate = result["statements"][1]
    assert validate["scanned"] == ["public.orders"]
    assert "ShareUpdateExclusiveLock" in lock_modes(validate, "public.orders")
    assert findings(result, "live-blocking-lock", index=1) == []
    assert [f["severity"] for f in findings(result, "live-lock-held-during-long-work", index=1)] == ["warning"]
    assert not [f for f in result["findings"] if f["severity"] == "error"]


def test_create_index_concurrently_runs_in_a_scratch_database(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts("ALTER TABLE orders ADD COLUMN status text", "CREATE INDEX CONCURRENTLY orders_status_idx ON orders (status)"),
        old_queries=["SELECT id, note FROM orders WHERE id = $1"],
    )
    assert result["mode"] == "scratch"
    assert any("cannot run inside a transaction block" in note for note in result["notes"])
    first, second = result["statements"]
    assert first["error"] is None and second["error"] is None
    assert "AccessExclusiveLock" in lock_modes(first, "public.orders")
    assert second["locks_measured"] is False and second["locks"] == []
    assert result["incompatible_queries"] == []
    # sizes still come from the target, not from the empty scratch copy
    assert result["table_rows"] == {"public.orders": ORDERS}
    assert db.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_status_idx'") == [(0,)]


def test_statement_marked_transactional_that_is_not_falls_back_to_a_scratch_database(db, unchanged):
    migration = stmts("ALTER TABLE orders ADD COLUMN status text", "CREATE INDEX CONCURRENTLY orders_status_idx ON orders (status)")
    migration[1]["transactional"] = True
    result = analyze_live(db.superuser, migration)
    assert result["mode"] == "scratch"
    assert any("cannot run inside a transaction block" in note for note in result["notes"])
    assert [s["error"] for s in result["statements"]] == [None, None]


def test_scratch_database_for_a_role_with_createdb_that_is_not_superuser(db, unchanged):
    result = analyze_live(
        db.deployer,
        stmts("CREATE INDEX CONCURRENTLY orders_note_idx ON orders (note)"),
        rollback_statements=stmts("DROP INDEX CONCURRENTLY orders_note_idx"),
    )
    assert result["mode"] == "scratch"
    assert result["statements"][0]["error"] is None
    assert result["reversible"] is True


def test_target_is_unchanged_after_every_kind_of_migration(db):
    before = db.state()
    migration = stmts(
        "ALTER TABLE orders ADD COLUMN status text DEFAULT 'new'",
        "UPDATE orders SET status = 'old' WHERE amount > 50",
        "ALTER TABLE orders ALTER COLUMN customer_id TYPE bigint",
        "ALTER TABLE orders DROP COLUMN note",
        "CREATE TABLE audit (id bigserial PRIMARY KEY, order_id bigint)",
        "INSERT INTO audit (order_id) SELECT id FROM orders",
        "COMMIT",
        "DELETE FROM customers WHERE id > 100000",
        "CREATE ROLE compat_live_should_not_exist",
    )
    transaction = analyze_live(db.app, migration, old_queries=["SELECT note FROM orders"])
    assert transaction["mode"] == "transaction"
    assert [s["skipped"] is not None for s in transaction["statements"]] == [False] * 6 + [True, False, False]
    concurrently = migration + stmts("CREATE INDEX CONCURRENTLY orders_status_idx ON orders (status)")
    concurrently[-1]["index"] = len(migration)
    scratch = analyze_live(db.superuser, concurrently, rollback_statements=stmts("DROP TABLE audit"))
    assert scratch["mode"] == "scratch"
    assert [s["error"] for s in scratch["statements"]] == [None] * len(concurrently)
    # in a scratch database a server-wide statement is not run at all
    assert "whole server" in scratch["statements"][8]["skipped"]
    assert db.state() == before
    assert db.scratch_databases() == []
    assert db.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'compat_live_should_not_exist'") == [(0,)]
    assert db.sql("SELECT count(*) FROM pg_class WHERE relname = 'audit'") == [(0,)]


# --- the old app's queries -------------------------------------------------------------


OLD_QUERIES = [
    "SELECT id, note FROM orders WHERE id = $1",
    "SELECT sum(amount) FROM orders WHERE customer_id = $1;",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1",
    "UPDATE orders SET amount = $2 WHERE id = $1",
    "SELECT missing_column FROM orders",
]


@pytest.mark.parametrize("scratch", ["auto", "always"])
def test_old_queries_broken_by_rename_and_drop(db, unchanged, scratch):
    params = db.app if scratch == "auto" else db.superuser
    result = analyze_live(
        params,
        stmts(
            "ALTER TABLE orders ADD COLUMN status text",
            "ALTER TABLE orders RENAME COLUMN note TO remark",
            "CREATE INDEX orders_status_idx ON orders (status)",
            "ALTER TABLE orders DROP COLUMN amount",
        ),
        old_queries=OLD_QUERIES,
        scratch=scratch,
    )
    assert result["mode"] == ("transaction" if scratch == "auto" else "scratch")
    broken = dict((q["query"], q) for q in result["incompatible_queries"])
    assert sorted(broken) == sorted([OLD_QUERIES[0], OLD_QUERIES[1].rstrip(";"), OLD_QUERIES[3]])
    assert broken[OLD_QUERIES[0]]["error"] == 'column "note" does not exist'
    assert broken[OLD_QUERIES[0]]["statement_index"] == 1
    assert broken[OLD_QUERIES[1].rstrip(";")]["error"] == 'column "amount" does not exist'
    assert broken[OLD_QUERIES[1].rstrip(";")]["statement_index"] == 3
    assert broken[OLD_QUERIES[3]]["statement_index"] == 3
    # a query that fails on the original schema is not the migration's fault
    assert [q["query"] for q in result["invalid_old_queries"]] == [OLD_QUERIES[4]]
    assert 'column "missing_column" does not exist' in result["invalid_old_queries"][0]["error"]
    old = findings(result, "live-old-query-fails")
    assert len(old) == 3
    assert all(f["category"] == "breaks_old_app" and f["severity"] == "error" for f in old)
    assert sorted((f["statement_index"], f["line"]) for f in old) == [(1, 11), (3, 31), (3, 31)]
    assert all(f["query"] in broken for f in old)


def test_old_queries_that_still_work_are_not_reported(db, unchanged):
    result = analyze_live(
        db.app,
        stmts("ALTER TABLE orders ADD COLUMN status text", "ALTER TABLE orders ALTER COLUMN note TYPE varchar(100)"),
        old_queries=OLD_QUERIES[:4],
    )
    assert result["incompatible_queries"] == [] and result["invalid_old_queries"] == []
    assert findings(result, "live-old-query-fails") == []


# --- reversibility -------------------------------------------------------------------------


def test_up_then_down_gives_back_the_schema(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts(
            "ALTER TABLE orders ADD COLUMN status text",
            "CREATE INDEX orders_status_idx ON orders (status)",
            "ALTER TABLE orders RENAME COLUMN note TO remark",
        ),
        rollback_statements=stmts(
            "ALTER TABLE orders RENAME COLUMN remark TO note",
            "DROP INDEX orders_status_idx",
            "ALTER TABLE orders DROP COLUMN status",
        ),
    )
    assert result["mode"] == "transaction"
    assert result["reversible"] is True
    assert result["schema_diff"] == {"added": [], "removed": [], "changed": []}
    assert [s["error"] for s in result["rollback_statements"]] == [None, None, None]
    # renaming back is not a drop: only the new, never filled column is reported, as info
    loss = [f for f in result["findings"] if f["category"] == "data_loss"]
    assert [(f["rule"], f["severity"], f["script"], f["statement_index"]) for f in loss] == [
        ("live-rollback-drops-new-data", "info", "rollback", 2)
    ]


def test_down_that_forgets_an_index_is_not_reversible(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts("ALTER TABLE orders ADD COLUMN status text", "CREATE INDEX orders_amount_idx ON orders (amount)"),
        rollback_statements=stmts("ALTER TABLE orders DROP COLUMN status"),
    )
    assert result["reversible"] is False
    assert result["schema_diff"] == {"added": ["index public.orders_amount_idx"], "removed": [], "changed": []}


def test_rollback_dropping_a_preexisting_column_loses_data(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts("ALTER TABLE orders ADD COLUMN status text"),
        rollback_statements=stmts("ALTER TABLE orders DROP COLUMN status", "ALTER TABLE orders DROP COLUMN note"),
    )
    assert result["reversible"] is False
    assert result["schema_diff"]["removed"] == ["column public.orders.note"]
    (loss,) = findings(result, "live-rollback-drops-existing-data", script="rollback")
    assert (loss["category"], loss["severity"], loss["statement_index"], loss["line"], loss["table"]) == (
        "data_loss", "error", 1, 11, "public.orders"
    )
    assert "public.orders.note" in loss["message"]


def test_rollback_dropping_a_backfilled_column_warns(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts(
            "ALTER TABLE orders ADD COLUMN status text",
            "UPDATE orders SET status = CASE WHEN amount > 50 THEN 'big' ELSE 'small' END",
            "ALTER TABLE orders ADD COLUMN other text",
            "CREATE TABLE order_log AS SELECT id FROM orders",
        ),
        rollback_statements=stmts(
            "DROP TABLE order_log",
            "ALTER TABLE orders DROP COLUMN other",
            "ALTER TABLE orders DROP COLUMN status",
        ),
    )
    assert result["reversible"] is True
    loss = sorted((f["rule"], f["severity"], f["statement_index"]) for f in result["findings"] if f["category"] == "data_loss")
    assert loss == [
        ("live-rollback-drops-backfilled-data", "warning", 2),
        ("live-rollback-drops-new-data", "info", 0),
        ("live-rollback-drops-new-data", "info", 1),
    ]


def test_migration_dropping_a_column_that_the_rollback_recreates_cannot_restore_it(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts("ALTER TABLE orders DROP COLUMN note"),
        rollback_statements=stmts("ALTER TABLE orders ADD COLUMN note varchar(50)"),
    )
    assert result["schema_diff"] == {"added": [], "removed": [], "changed": []}  # the schema comes back ...
    assert result["reversible"] is False
    (loss,) = findings(result, "live-migration-data-not-restorable")  # ... the data does not
    assert (loss["severity"], loss["statement_index"], loss["table"]) == ("error", 0, "public.orders")


def test_lossy_type_round_trip_is_not_reversible(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts("ALTER TABLE orders ALTER COLUMN amount TYPE integer"),
        rollback_statements=stmts("ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2)"),
    )
    assert result["schema_diff"] == {"added": [], "removed": [], "changed": []}
    assert result["reversible"] is False
    (loss,) = findings(result, "live-migration-values-not-restorable")
    assert (loss["severity"], loss["statement_index"], loss["table"]) == ("error", 0, "public.orders")
    assert "numeric(12,2) to integer" in loss["message"]
    # a widening, or a narrowing that fails loudly on a value that does not fit, loses nothing silently
    for up, down in (("customer_id TYPE bigint", "customer_id TYPE integer"), ("note TYPE varchar(20)", "note TYPE varchar(50)")):
        loud = analyze_live(
            db.superuser,
            stmts("ALTER TABLE orders ALTER COLUMN " + up),
            rollback_statements=stmts("ALTER TABLE orders ALTER COLUMN " + down),
        )
        assert loud["reversible"] is True
        assert findings(loud, "live-migration-values-not-restorable") == []


def test_rollback_that_fails_is_not_reversible(db, unchanged):
    result = analyze_live(
        db.superuser,
        stmts("ALTER TABLE orders ADD COLUMN status text"),
        rollback_statements=stmts("ALTER TABLE orders DROP COLUMN state"),
    )
    assert result["reversible"] is False
    (failure,) = findings(result, "live-rollback-statement-error", script="rollback")
    assert 'column "state" of relation "orders" does not exist' in failure["message"]
    assert result["schema_diff"]["added"] == ["column public.orders.status"]


# --- errors ---------------------------------------------------------------------------------


def test_failing_statement_is_reported_with_the_server_message(db, unchanged):
    result = analyze_live(
        db.app,
        stmts(
            "ALTER TABLE orders ADD COLUMN status text",
            "ALTER TABLE orders ALTER COLUMN nope TYPE bigint",
            "ALTER TABLE orders DROP COLUMN note",
        ),
        old_queries=["SELECT note FROM orders"],
    )
    first, second, third = result["statements"]
    assert first["error"] is None
    assert second["error"] == 'column "nope" of relation "orders" does not exist' and second["sqlstate"] == "42703"
    assert third["skipped"] == "not run: an earlier statement failed"
    assert result["applied"] is False
    (error,) = findings(result, "live-statement-error")
    assert (error["severity"], error["statement_index"], error["line"]) == ("error", 1, 11)
    assert 'column "nope" of relation "orders" does not exist' in error["message"]
    # the migration never completes, so the old app is not blamed
    assert result["incompatible_queries"] == []


def test_role_without_createdb_gets_a_clear_error_when_a_scratch_database_is_needed(db, unchanged):
    with pytest.raises(LiveError) as err:
        analyze_live(db.app, stmts("CREATE INDEX CONCURRENTLY orders_note_idx ON orders (note)"))
    message = str(err.value)
    assert "scratch database" in message and "CREATEDB" in message and "app" in message
    assert "cannot run inside a transaction block" in message
    with pytest.raises(LiveError) as err:
        analyze_live(db.app, stmts("ALTER TABLE orders ADD COLUMN status text"), rollback_statements=stmts("ALTER TABLE orders DROP COLUMN status"))
    assert "CREATEDB" in str(err.value) and "rollback" in str(err.value)


def test_lock_held_by_another_session_fails_fast_with_a_lock_timeout_finding(db, unchanged):
    holder = db.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE orders IN ACCESS SHARE MODE")
        started = time.monotonic()
        result = analyze_live(db.app, stmts("ALTER TABLE orders ADD COLUMN status text"), timeout=2)
        elapsed = time.monotonic() - started
    finally:
        holder.cursor().execute("ROLLBACK")
        holder.close()
    assert elapsed < 10
    stmt = result["statements"][0]
    assert stmt["sqlstate"] == "55P03" and "lock timeout" in stmt["error"]
    assert 900 <= stmt["duration_ms"] < 2000  # lock_timeout: half of timeout
    (finding,) = findings(result, "live-lock-timeout")
    assert (finding["category"], finding["severity"]) == ("blocking_lock", "error")
    assert "lock_timeout" in finding["message"]


def test_statement_running_past_timeout_is_reported(db, unchanged):
    result = analyze_live(db.app, stmts("SELECT pg_sleep(3)"), timeout=1)
    stmt = result["statements"][0]
    assert stmt["sqlstate"] == "57014" and 900 <= stmt["duration_ms"] < 2500
    (finding,) = findings(result, "live-statement-timeout")
    assert (finding["category"], finding["severity"]) == ("blocking_lock", "error")


def test_a_statement_must_be_one_statement(db, unchanged):
    with pytest.raises(LiveError) as err:
        analyze_live(db.app, stmts("ALTER TABLE orders ADD COLUMN status text; COMMIT"))
    assert "more than one SQL statement" in str(err.value)
    # semicolons inside literals, identifiers, dollar quotes and comments are not statement ends
    result = analyze_live(
        db.app,
        stmts(
            "ALTER TABLE orders ADD COLUMN \"a;b\" text DEFAULT 'x;y' -- trailing; comment",
            "COMMENT ON TABLE orders IS $tag$ ; COMMIT; $tag$ /* ; */",
            "ALTER TABLE orders ADD COLUMN c text DEFAULT E'\\'; COMMIT'",
        ),
    )
    assert [s["error"] for s in result["statements"]] == [None, None, None]


def test_a_migration_setting_its_own_lock_timeout_cannot_loosen_the_analysis(db, unchanged):
    holder = db.connect()
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE orders IN ACCESS SHARE MODE")
        started = time.monotonic()
        result = analyze_live(db.app, stmts("SET lock_timeout = 0", "ALTER TABLE orders ADD COLUMN status text"), timeout=2)
        elapsed = time.monotonic() - started
    finally:
        holder.cursor().execute("ROLLBACK")
        holder.close()
    assert elapsed < 10
    assert result["statements"][1]["sqlstate"] == "55P03"


def test_invalid_arguments(db):
    with pytest.raises(LiveError):
        analyze_live(db.app, stmts("SELECT 1"), scratch="sometimes")
    with pytest.raises(LiveError):
        analyze_live(db.app, stmts("SELECT 1"), timeout=0)
    with pytest.raises(LiveError):
        analyze_live(db.app, [])
    with pytest.raises(LiveError):
        analyze_live(db.app, [{"index": 0, "line": 1}])
