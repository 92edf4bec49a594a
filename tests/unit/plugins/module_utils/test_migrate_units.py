# -*- coding: utf-8 -*-
"""Pieces of the migration runner that need no database: statement classification (pglast), backoff with
jitter, the rows-per-second token bucket, key casting, the journal's state machine and the lock key."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import random

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils import backfill as bf
from ansible_collections.stateful.rollback.plugins.module_utils import journal as jr
from ansible_collections.stateful.rollback.plugins.module_utils.manifest import Backfill, Migration, Script
from ansible_collections.stateful.rollback.plugins.module_utils.migrate_runner import (
    MigrateError,
    default_executed_by,
    plan_script,
)


def script(text, rel="sql/001_up.sql"):
    return Script(path="/release/" + rel, relpath=rel, sql=text, sha256=hashlib.sha256(text.encode()).hexdigest())


def migration(up, transactional=None, down=None, mid="001_test"):
    return Migration(id=mid, up=script(up), down=script(down, "sql/001_down.sql") if down else None, irreversible=False,
                     reason=None, verify=None, transactional=transactional, backfill=None)


# -- statement classification ---------------------------------------------------------


@pytest.mark.parametrize("sql, transactional", [
    ("ALTER TABLE t ADD COLUMN c int;", True),
    ("CREATE INDEX i ON t (c);", True),
    ("CREATE INDEX CONCURRENTLY i ON t (c);", False),
    ("DROP INDEX CONCURRENTLY i;", False),
    ("REINDEX INDEX CONCURRENTLY i;", False),
    ("VACUUM t;", False),
    ("ALTER SYSTEM SET work_mem = '64MB';", False),
    ("CREATE DATABASE other;", False),
    ("ALTER TYPE mood ADD VALUE 'meh';", True),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\nSELECT f();", True),
    ("ALTER TABLE t ADD COLUMN c int;\nCREATE INDEX CONCURRENTLY i ON t (c);", False),
])
def test_statements_are_classified_with_pglast(sql, transactional):
    plan = plan_script(migration(sql), "up", 150000)
    assert plan.transactional is transactional


def test_statements_are_split_by_the_parser_not_by_semicolons():
    text = ("-- a comment; with a semicolon\nCREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 'a;b';\nEND\n$$;\n"
            "UPDATE t SET note = 'x; y' WHERE id = 1;\n")
    plan = plan_script(migration(text), "up")
    assert [(s.kind, s.line) for s in plan.statements] == [("CreateFunctionStmt", 2), ("UpdateStmt", 7)]
    assert plan.statements[1].text == "UPDATE t SET note = 'x; y' WHERE id = 1"


def test_wrapping_begin_commit_is_ignored_other_transaction_control_refused():
    plan = plan_script(migration("BEGIN;\nALTER TABLE t ADD COLUMN c int;\nSAVEPOINT s;\nCOMMIT;\n"), "up")
    assert [s.kind for s in plan.statements] == ["AlterTableStmt", "TransactionStmt"]
    assert plan.notes == ["line 1: BEGIN ignored (the runner makes the transaction)",
                          "line 4: COMMIT ignored (the runner makes the transaction)"]
    with pytest.raises(MigrateError) as refused:
        plan_script(migration("ALTER TABLE t ADD COLUMN c int;\nROLLBACK;\n"), "up")
    assert str(refused.value) == ("migration 001_test: sql/001_up.sql: line 2: ROLLBACK is not allowed in a migration script; "
                                  "the runner controls transactions (a leading BEGIN and a trailing COMMIT are ignored)")
    with pytest.raises(MigrateError):
        plan_script(migration("COMMIT;\nALTER TABLE t ADD COLUMN c int;\n"), "up")


def test_explicit_transactional_true_with_a_concurrent_index_is_refused():
    with pytest.raises(MigrateError) as refused:
        plan_script(migration("SELECT 1;\nCREATE INDEX CONCURRENTLY i ON t (c);", transactional=True), "up")
    assert "transactional is true but line 2 (IndexStmt) cannot run inside a transaction block" in str(refused.value)
    assert plan_script(migration("ALTER TABLE t ADD COLUMN c int;", transactional=False), "up").transactional is False


def test_syntax_errors_name_the_file_and_line():
    with pytest.raises(MigrateError) as refused:
        plan_script(migration("ALTER TABLE t ADD COLUMN c int;\nALTER TABLE t ADD COLUMN;\n"), "up")
    assert str(refused.value).startswith("migration 001_test: sql/001_up.sql: syntax error at line 2")
    with pytest.raises(MigrateError) as empty:
        plan_script(migration("-- nothing\n"), "up")
    assert str(empty.value) == "migration 001_test: sql/001_up.sql contains no SQL statement"


def test_unnamed_concurrent_index_gets_a_note():
    plan = plan_script(migration("CREATE INDEX CONCURRENTLY ON t (c);"), "up")
    assert plan.transactional is False
    assert "without an index name" in plan.notes[0]


def test_down_scripts_are_planned_too():
    plan = plan_script(migration("CREATE INDEX CONCURRENTLY i ON t (c);", down="DROP INDEX CONCURRENTLY i;"), "down")
    assert plan.script.relpath == "sql/001_down.sql" and plan.transactional is False
    assert plan.as_dict()["non_transactional_statements"] == ["line 1: DropStmt"]


# -- backoff and the token bucket ------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(0, 12))
def test_backoff_is_full_jitter_within_the_exponential_ceiling(attempt):
    base, cap = 0.5, 30.0
    ceiling = min(cap, base * 2 ** attempt)
    assert bf.backoff_delay(attempt, base, cap, rand=lambda: 0.0) == 0.0
    assert bf.backoff_delay(attempt, base, cap, rand=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)
    rng = random.Random(attempt)
    samples = [bf.backoff_delay(attempt, base, cap, rand=rng.random) for dummy in range(500)]
    assert all(0.0 <= s <= ceiling for s in samples)
    assert max(samples) > 0.8 * ceiling and min(samples) < 0.2 * ceiling  # spread over the whole range
    assert bf.backoff_delay(10 ** 6, base, cap, rand=lambda: 1.0) == cap  # no overflow on huge attempts


class FakeClock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


@pytest.mark.parametrize("rate, batch", [(1000.0, 100), (50000.0, 2000), (300.0, 1000), (7.5, 3)])
def test_token_bucket_keeps_the_rate_over_any_window(rate, batch):
    clock = FakeClock()
    bucket = bf.TokenBucket(rate, burst=min(batch, rate), clock=clock)
    events = []
    for index in range(300):
        clock.now += 0.0005 * (index % 7)  # the batch itself takes a little time
        events.append((clock.now, batch))
        clock.sleep(bucket.consume(batch))
    burst = min(batch, rate)
    for i, (start, dummy) in enumerate(events):
        for j in range(i, len(events)):
            window = events[j][0] - start
            rows = batch * (j - i + 1)
            assert rows <= burst + rate * window + batch + 1e-6
    total_time = events[-1][0] - events[0][0]
    assert batch * (len(events) - 1) / total_time == pytest.approx(rate, rel=0.05)


def test_token_bucket_does_not_sleep_under_the_rate():
    clock = FakeClock()
    bucket = bf.TokenBucket(1000, burst=100, clock=clock)
    assert bucket.consume(100) == 0.0
    clock.now += 1.0
    assert bucket.consume(100) == 0.0
    assert bucket.consume(100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        bf.TokenBucket(0)


# -- keys and fragments --------------------------------------------------------------------------


def test_key_casts_use_the_column_type_as_identifiers():
    target = bf.Target("app", "Customers", "id", "pg_catalog", "uuid", "uuid", 10.0)
    cast = target.cast()
    assert "Identifier('pg_catalog', 'uuid')" in repr(cast)
    assert "SQL('CAST(%s AS ')" in repr(cast)
    assert "Identifier('app', 'Customers')" in repr(target.rel)
    assert target.display == 'app."Customers"'


@pytest.mark.parametrize("name, column", [("id", "id"), ("ID", "id"), ('"CustomerId"', "CustomerId"), ('"a""b"', 'a"b')])
def test_key_column_names_follow_postgres_folding(name, column):
    assert bf.parse_column(name) == column


@pytest.mark.parametrize("name", ["public.id", "", '"unterminated', "a.b.c"])
def test_bad_key_column_names_are_refused(name):
    with pytest.raises(bf.BackfillError):
        bf.parse_column(name)


def test_key_types_cover_int_bigint_text_uuid():
    for name in ("int2", "int4", "int8", "text", "varchar", "uuid", "numeric"):
        assert name in bf.KEY_TYPES
    assert "timestamptz" not in bf.KEY_TYPES  # its text form depends on TimeZone/DateStyle


def backfill_spec(**kw):
    spec = dict(table="public.customers", key="id", set="full_name = first_name || ' ' || last_name",
                where="full_name IS NULL", batch_size=5000, max_rows_per_second=None, max_replica_lag_bytes=None)
    spec.update(kw)
    return Backfill(**spec)


def test_fragments_must_fit_one_update_and_percent_is_escaped():
    bf.check_fragments(backfill_spec())
    bf.check_fragments(backfill_spec(where="note LIKE 'a%'"))
    assert repr(bf.fragment("note LIKE 'a%'")) == "SQL(\"note LIKE 'a%%'\")"
    with pytest.raises(bf.BackfillError):
        bf.check_fragments(backfill_spec(set="full_name = 'x'; DROP TABLE customers"))
    with pytest.raises(bf.BackfillError):
        bf.check_fragments(backfill_spec(where="full_name IS NULL)"))


def test_backfill_checksum_covers_what_changes_the_data():
    base = bf.spec_sha256(backfill_spec())
    assert base == bf.spec_sha256(backfill_spec(batch_size=100, max_rows_per_second=10.0))  # pacing is not content
    assert base != bf.spec_sha256(backfill_spec(set="full_name = last_name"))
    assert base != bf.spec_sha256(backfill_spec(where=None))


def test_max_lag_takes_the_worst_and_unknown_wins():
    assert bf.max_lag([]) == (0, None)
    assert bf.max_lag([("physical", "standby", 10), ("logical", "sub", 300)]) == (300, "sub")
    assert bf.max_lag([("physical", "standby", 10), ("physical", "other", None)]) == (None, "other")
    assert bf.sleep_for_lag(0) == pytest.approx(0.1) and bf.sleep_for_lag(1000) == 5.0


# -- journal state machine -------------------------------------------------------------------------


def row(rid, direction, phase, state, release="2.0.0", transactional=True, statements_done=0, batches=0):
    return {"id": rid, "direction": direction, "phase": phase, "state": state, "release_version": release,
            "transactional": transactional, "statements_done": statements_done, "batches": batches}


def test_applied_iff_latest_up_done_and_no_later_down_done():
    assert jr.summarize([], False)["status"] == "pending"
    up = row(1, "up", "schema", "done")
    assert jr.summarize([up], False)["applied"] is True
    assert jr.summarize([up], True)["status"] == "backfill_pending"
    assert jr.summarize([up, row(2, "up", "backfill", "paused")], True)["status"] == "paused"
    assert jr.summarize([up, row(2, "up", "backfill", "done")], True)["applied"] is True
    reverted = [up, row(2, "down", "schema", "done")]
    assert jr.summarize(reverted, False)["status"] == "reverted" and not jr.summarize(reverted, False)["applied"]
    again = reverted + [row(3, "up", "schema", "done", release="2.1.0")]
    summary = jr.summarize(again, False)
    assert summary["applied"] is True and summary["applied_by"] == "2.1.0"
    failed_down = [up, row(2, "down", "schema", "failed")]
    assert jr.summarize(failed_down, False)["applied"] is True
    assert jr.summarize(failed_down, False)["status"] == "revert_failed"
    assert jr.unfinished(failed_down, "down", "schema")["id"] == 2
    assert jr.unfinished(again, "up", "schema") is None


def test_effects_of_unfinished_steps():
    assert jr.summarize([row(1, "up", "schema", "failed")], False)["has_effects"] is False
    partial = [row(1, "up", "schema", "failed", transactional=False, statements_done=1)]
    assert jr.summarize(partial, False)["has_effects"] is True
    assert jr.summarize(partial, False)["status"] == "failed"
    assert jr.unfinished(partial, "up", "schema")["id"] == 1


def test_lock_key_is_stable_signed_int4_and_per_schema():
    namespace, key = jr.lock_key("stateful_rollback")
    assert namespace == 0x53524D47 == 1397902663
    digest = hashlib.sha256(b"stateful.rollback.migrate:stateful_rollback").digest()
    expected = int.from_bytes(digest[:4], "big", signed=True)
    assert key == expected and -2 ** 31 <= key < 2 ** 31
    assert jr.lock_key("other")[1] != key
    assert jr.ddl_lock_key("stateful_rollback") != (namespace, key)


@pytest.mark.parametrize("name", ["", "pg_journal", "public", "information_schema", "x" * 64, "a\x00b"])
def test_bad_journal_schema_names_are_refused(name):
    with pytest.raises(jr.JournalError):
        jr.check_schema_name(name)


def test_executed_by_names_user_host_and_awx_job():
    assert "@" in default_executed_by({})
    assert default_executed_by({"JOB_ID": "4711"}).endswith(" awx-job=4711")
