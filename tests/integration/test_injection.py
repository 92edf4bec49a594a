# -*- coding: utf-8 -*-
"""SQL identifier injection through every option and manifest field that names a database object, against the
real sandbox (issue 9, "Bad input").

Table names, key columns, excluded schemas (replication_parity), journal schemas (migrate, release, audit_log) and
backfill tables and keys (release manifests run by migrate) are given hostile values: statements after a ``;``,
quotes, a lone ``"``, NUL bytes, names longer than PostgreSQL's 63 bytes. Each must be refused with a clear error
naming the option, or used as exactly one quoted identifier. After every attempt the victim table
``public.h6_victim`` still exists with its three rows on the primary and the logical subscriber (the writable
nodes), and at the end also on the streaming standby. Bad release content (a script or fragment that does not parse) changes nothing: not even the journal
schema is created.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest
import testkit
from psycopg2 import sql

from ansible_collections.stateful.rollback.plugins.modules import audit_log, migrate, release, replication_parity, schema_compat_check

pytestmark = pytest.mark.integration

VICTIM = "h6_victim"
ROWS = [(1, "alice"), (2, "bob"), (3, "carol")]
DROP = "DROP TABLE public.%s" % VICTIM
# Identifier payloads: each is either refused or must become one quoted identifier.
PAYLOADS = [
    "%s; %s" % (VICTIM, DROP),
    '%s"; %s; --' % (VICTIM, DROP),
    '"%s"; %s; --"' % (VICTIM, DROP),
    "%s'; %s; --" % (VICTIM, DROP),
    "%s) ; %s; --" % (VICTIM, DROP),
    "public.%s; %s" % (VICTIM, DROP),
    '"',
    '""',
    "'",
    "a\x00b",
    "x" * 64,
    "\u00e9" * 32,  # 64 bytes
    "%s/**/;%s" % (VICTIM, DROP),
    "$$; %s; $$" % DROP,
]


def login(sandbox, node="primary"):
    p = getattr(sandbox, node)
    return dict(login_host=p["host"], login_port=int(p["port"]), login_user=p["user"], login_password=p["password"],
                login_db=p["dbname"], connect_timeout=5)


def replicas(sandbox):
    return [dict(name=node, login_host=getattr(sandbox, node)["host"], login_port=int(getattr(sandbox, node)["port"]))
            for node in ("standby", "subscriber")]


@pytest.fixture(scope="module")
def victim(sandbox):
    sandbox.drop_table(VICTIM)
    sandbox.create_table("CREATE TABLE public.%s (id int PRIMARY KEY, name text NOT NULL)" % VICTIM)
    sandbox.sql("primary", "INSERT INTO public.%s VALUES (1, 'alice'), (2, 'bob'), (3, 'carol')" % VICTIM)
    sandbox.wait_standby_caught_up()
    sandbox.wait_subscriber_caught_up()
    yield VICTIM
    # Every node at the end (each test checks the primary): parity also connects to the standby and the subscriber.
    sandbox.wait_standby_caught_up()
    sandbox.wait_subscriber_caught_up()
    try:
        for node in ("primary", "standby", "subscriber"):
            assert sandbox.sql(node, "SELECT id, name FROM public.%s ORDER BY id" % VICTIM) == ROWS, node
    finally:
        sandbox.drop_table(VICTIM)


def schemas(sandbox):
    return set(r[0] for r in sandbox.sql("primary", "SELECT nspname FROM pg_namespace"))


@pytest.fixture
def intact(sandbox, victim):
    """Checks, after the test, that the victim survived everywhere and no schema appeared unaccounted for."""
    before = schemas(sandbox)
    allowed = set()
    yield allowed
    for node in ("primary", "subscriber"):  # the two writable nodes; the standby replays the primary
        assert sandbox.sql(node, "SELECT id, name FROM public.%s ORDER BY id" % VICTIM) == ROWS, node
    created = schemas(sandbox) - before
    for name in created & allowed:
        sandbox.sql("primary", sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
    assert not created - allowed, "schemas created on bad input: %r" % sorted(created - allowed)


def no_traceback(result):
    text = json.dumps(result)
    assert "Traceback" not in text and "exception" not in result, text[-2000:]
    return result


# -- replication_parity: table names, key columns, excluded schemas ------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS)
def test_parity_table_name_injection_is_refused(capsys, sandbox, intact, payload):
    result = no_traceback(testkit.run_module(capsys, replication_parity, dict(
        login(sandbox), mode="parity", replicas=replicas(sandbox), tables=[payload], settle_timeout=10)))
    assert result["failed"] is True
    msg = result["msg"]
    assert "malformed table name" in msg or ("table " in msg and "does not exist on the primary" in msg), msg


@pytest.mark.parametrize("payload", PAYLOADS)
def test_parity_key_column_injection_is_refused(capsys, sandbox, intact, payload):
    result = no_traceback(testkit.run_module(capsys, replication_parity, dict(
        login(sandbox), mode="parity", replicas=replicas(sandbox), tables=["public." + VICTIM],
        key_columns={"public." + VICTIM: [payload]}, settle_timeout=10)))
    assert result["failed"] is True
    assert "key_columns for public.%s name columns that do not exist: %s" % (VICTIM, payload) in result["msg"], result["msg"]


@pytest.mark.parametrize("payload", PAYLOADS[:6])
def test_parity_key_columns_table_injection_is_refused(capsys, sandbox, intact, payload):
    result = no_traceback(testkit.run_module(capsys, replication_parity, dict(
        login(sandbox), mode="parity", replicas=replicas(sandbox), tables=["public." + VICTIM],
        key_columns={payload: ["id"]}, settle_timeout=10)))
    assert result["failed"] is True
    assert "key_columns names tables that are not compared" in result["msg"] or "malformed table name" in result["msg"], \
        result["msg"]


def test_parity_exclusions_are_bound_values_not_sql(capsys, sandbox, intact):
    """exclude_schemas and exclude_tables are compared as values: hostile ones exclude nothing and break nothing."""
    result = no_traceback(testkit.run_module(capsys, replication_parity, dict(
        login(sandbox), mode="parity", replicas=replicas(sandbox), settle_timeout=20,
        exclude_schemas=["public'); %s; --" % DROP, '"; %s; --' % DROP],
        exclude_tables=["%s; %s" % (VICTIM, DROP)])))
    assert result.get("failed") is not True, result.get("msg")
    compared = [t["table"] for t in result["replicas"][0]["tables"]]
    assert "public.%s" % VICTIM in compared, compared


# -- journal_schema: migrate (quoted identifier), release and audit_log (plain identifiers only) ---------------------


def harmless_release(directory, migration=None, up="SELECT 1;\n"):
    os.makedirs(str(directory), exist_ok=True)
    with open(os.path.join(str(directory), "up.sql"), "w") as handle:
        handle.write(up)
    with open(os.path.join(str(directory), "down.sql"), "w") as handle:
        handle.write("SELECT 1;\n")
    manifest = {
        "version": "9.9.9",
        "app": {"workloads": [{"kind": "Deployment", "name": "web",
                               "containers": {"web": "registry.example/h6@sha256:" + "a" * 64}}]},
        "migrations": [dict({"id": "001-h6", "up": "up.sql", "down": "down.sql"}, **(migration or {}))],
    }
    path = os.path.join(str(directory), "release.yml")
    with open(path, "w") as handle:
        handle.write(json.dumps(manifest))
    return path


MIGRATE_REFUSED = {
    "pg_%s" % VICTIM: "is reserved",
    "public": "is reserved",
    "": "journal_schema must be a non-empty schema name",
}


@pytest.mark.parametrize("payload", PAYLOADS + ["pg_%s" % VICTIM, "public", ""])
def test_migrate_journal_schema_is_refused_before_connecting(capsys, sandbox, intact, tmp_path, payload):
    """One rule for journal_schema in migrate, release and audit_log (they share the schema): a plain identifier."""
    manifest = harmless_release(tmp_path / "release")
    result = no_traceback(testkit.run_module(capsys, migrate, dict(login(sandbox), manifest=manifest, journal_schema=payload)))
    assert result["failed"] is True and "journal_schema" in result["msg"], result["msg"]
    expected = MIGRATE_REFUSED.get(payload, "journal_schema %r is not a valid schema name: use letters, digits, _ and $" % payload)
    assert expected in result["msg"], result["msg"]


def test_migrate_journal_schema_is_one_quoted_identifier(capsys, sandbox, intact, tmp_path):
    """A plain name with upper case and $ is kept exactly (quoted, never folded or read as SQL)."""
    payload = "Journal_%s$x" % VICTIM
    manifest = harmless_release(tmp_path / "release")
    result = no_traceback(testkit.run_module(capsys, migrate, dict(login(sandbox), manifest=manifest, journal_schema=payload)))
    intact.add(payload)
    assert result.get("failed") is not True, result.get("msg")
    assert result["journal_schema"] == payload
    rows = sandbox.sql("primary", sql.SQL("SELECT migration_id, state FROM {}.migration_journal").format(sql.Identifier(payload)))
    assert ("001-h6", "done") in rows, rows


@pytest.mark.parametrize("payload", PAYLOADS + ["Robert'); DROP TABLE students;--"])
@pytest.mark.parametrize("state", ["info", "recorded"])
def test_release_journal_schema_injection_is_refused_before_connecting(capsys, sandbox, intact, payload, state):
    args = dict(login(sandbox), state=state, journal_schema=payload)
    if state == "recorded":
        args["version"] = "9.9.9"
    result = no_traceback(testkit.run_module(capsys, release, args))
    assert result["failed"] is True
    assert result["msg"].startswith("journal_schema %r is not a valid schema name" % payload), result["msg"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_audit_log_journal_schema_injection_is_refused(capsys, sandbox, intact, payload):
    result = no_traceback(testkit.run_module(capsys, audit_log, dict(
        login(sandbox), store="table", stage="h6-injection", journal_schema=payload)))
    assert result["failed"] is True
    assert "journal_schema %r is not a valid schema name" % payload in result["msg"], result["msg"]


# -- release content: backfill identifiers and fragments, scripts that do not parse --------------------------------


@pytest.mark.parametrize("backfill, fragment", [
    ({"table": "%s; DROP TABLE %s" % (VICTIM, VICTIM), "key": "id", "set": "name = name"},
     'backfill table public."%s; drop table %s" does not exist' % (VICTIM, VICTIM)),
    ({"table": "public.%s; %s" % (VICTIM, DROP), "key": "id", "set": "name = name"},
     "backfill table: malformed table name"),
    ({"table": 'public."%s"; %s' % (VICTIM, DROP), "key": "id", "set": "name = name"},
     "backfill table: malformed table name"),
    ({"table": '"unterminated', "key": "id", "set": "name = name"}, "backfill table: malformed table name"),
    ({"table": "public." + VICTIM, "key": "id; DROP TABLE %s" % VICTIM, "set": "name = name"},
     'backfill key column id; drop table %s does not exist in public.%s' % (VICTIM, VICTIM)),
    ({"table": "public." + VICTIM, "key": "id; %s" % DROP, "set": "name = name"}, "must be a single column name"),
    ({"table": "public." + VICTIM, "key": 'id"; %s; --' % DROP, "set": "name = name"}, "malformed key column name"),
    ({"table": "public." + VICTIM, "key": "id", "set": "name = 'x'; %s; --" % DROP}, "backfill set/where "),
    ({"table": "public." + VICTIM, "key": "id", "set": "name = name", "where": "true); %s; SELECT (1" % DROP},
     "backfill set/where must be fragments of one UPDATE statement"),
    ({"table": "public." + VICTIM, "key": "id", "set": "name = name", "where": "true) UNION (SELECT"},
     "backfill set/where do not parse"),
])
def test_backfill_identifier_and_fragment_injection(capsys, sandbox, intact, tmp_path, backfill, fragment):
    journal = "h6_inj_journal"
    manifest = harmless_release(tmp_path / "release", {"backfill": backfill})
    result = no_traceback(testkit.run_module(capsys, migrate, dict(login(sandbox), manifest=manifest, journal_schema=journal)))
    assert result["failed"] is True
    assert fragment in result["msg"], result["msg"]
    if "does not exist" in fragment:
        # A name that is well-formed but unknown can only be found after the up script ran (it may create the
        # table): the journal holds that run, as for any failed backfill.
        intact.add(journal)
    else:
        assert journal not in schemas(sandbox), "the journal was created for a release that cannot run"


@pytest.mark.parametrize("up, fragment", [
    ("SELECT 1;\nCOMMIT;\nSELECT 2;\n", "is not allowed in a migration script; the runner controls transactions"),
])
def test_script_the_runner_cannot_run_creates_no_journal(capsys, sandbox, intact, tmp_path, up, fragment):
    """A script that parses but cannot run (a COMMIT in the middle): refused before the journal exists (it was
    created, and left behind, before the fix)."""
    journal = "h6_inj_nojournal"
    manifest = harmless_release(tmp_path / "release", up=up)
    result = no_traceback(testkit.run_module(capsys, migrate, dict(login(sandbox), manifest=manifest, journal_schema=journal)))
    assert result["failed"] is True
    assert "migration 001-h6: up.sql: line 2:" in result["msg"] and fragment in result["msg"], result["msg"]
    assert journal not in schemas(sandbox)


def test_sql_syntax_error_in_a_script_creates_no_journal(capsys, sandbox, intact, tmp_path):
    """Was: the journal schema was created, then the script failed to parse."""
    journal = "h6_inj_syntax"
    manifest = harmless_release(tmp_path / "release", up="CREATE TABLE h6_never (id int);\nDROP TABEL %s;\n" % VICTIM)
    result = no_traceback(testkit.run_module(capsys, migrate, dict(login(sandbox), manifest=manifest, journal_schema=journal)))
    assert result["failed"] is True
    assert result["manifest_errors"] == [
        "migrations[0].up: 'up.sql' is not valid SQL: syntax error at line 2: syntax error at or near \"TABEL\""]
    assert journal not in schemas(sandbox)
    assert sandbox.sql("primary", "SELECT to_regclass('public.h6_never')") == [(None,)]


# -- schema_compat_check: takes SQL, not identifiers; what it runs live runs in a scratch database ------------------


def test_compat_check_runs_a_destructive_migration_only_in_its_scratch_database(capsys, sandbox, intact):
    """schema_compat_check has no identifier option; the SQL it is given (here one that drops the victim) runs only
    in a scratch copy of the schema, which is dropped afterwards."""
    admin = sandbox.superuser("primary")
    databases = sandbox.sql("primary", "SELECT datname FROM pg_database ORDER BY 1")
    result = no_traceback(testkit.run_module(capsys, schema_compat_check, dict(
        login_host=admin["host"], login_port=int(admin["port"]), login_user=admin["user"],
        login_password=admin["password"], login_db=sandbox.primary["dbname"], connect_timeout=5, mode="live",
        migration_sql="DROP TABLE public.%s; -- '; DROP DATABASE %s; --" % (VICTIM, sandbox.primary["dbname"]),
        rollback_sql="CREATE TABLE public.%s (id int PRIMARY KEY, name text NOT NULL);" % VICTIM)))
    assert result["failed"] is True  # dropping a table the old version reads is an error finding
    assert any(f["category"] == "data_loss" for f in result["findings"]), result["findings"]
    assert sandbox.sql("primary", "SELECT datname FROM pg_database ORDER BY 1") == databases


@pytest.mark.parametrize("backfill, refused", [
    # A trailing comment in set made the rest of the one-line batch UPDATE a comment: every batch updated every row.
    ({"set": "touched = touched + 1 -- count the visit"}, None),
    # A where that closes its parenthesis OR-ed the batch range away: the same whole-table update per batch.
    ({"set": "touched = touched + 1", "where": "true) OR (true"}, "must not reach outside their place"),
    ({"set": "touched = touched + 1 WHERE true --"}, "do not parse"),
])
def test_backfill_fragment_cannot_escape_the_batch_range(capsys, sandbox, intact, tmp_path, backfill, refused):
    table, journal = "h6_batched", "h6_inj_batches"
    sandbox.drop_table(table)
    sandbox.create_table("CREATE TABLE public.%s (id int PRIMARY KEY, touched int NOT NULL DEFAULT 0)" % table)
    sandbox.sql("primary", "INSERT INTO public.%s (id) SELECT generate_series(1, 5)" % table)
    intact.add(journal)
    try:
        manifest = harmless_release(tmp_path / "release", {"backfill": dict(
            {"table": "public." + table, "key": "id", "batch_size": 2}, **backfill)})
        result = no_traceback(testkit.run_module(capsys, migrate, dict(login(sandbox), manifest=manifest, journal_schema=journal)))
        touched = [r[0] for r in sandbox.sql("primary", "SELECT touched FROM public.%s ORDER BY id" % table)]
        if refused:
            assert result["failed"] is True and refused in result["msg"], result["msg"]
            assert touched == [0] * 5
            assert journal not in schemas(sandbox)
        else:
            assert result.get("failed") is not True, result.get("msg")
            assert touched == [1] * 5, "rows updated more than once: %s" % touched
            assert result["rows_processed"] == 5 and result["batches"] == 3
    finally:
        sandbox.drop_table(table)
