# -*- coding: utf-8 -*-
"""docs/sql/roles.sql against the real sandbox: the least-privilege migrator and
checker roles it creates are enough for the modules, and no more than enough.

The layout is the one the script recommends: a NOLOGIN owner role (``srt_owner``)
owns the app's table ``public.srt_items`` (replicated to the standby through WAL
and to the logical subscriber through the publication), the migrator is a member
of it, the checker only reads. The script runs as superuser on the primary (the
standby replays it, roles included) and on the subscriber (a cluster of its own).
The modules run in-process through their runners (what each module's main()
calls) with nothing but the new roles' credentials.

Everything the module creates (roles, tables, schemas, the journal) is removed at
the end: the session sandbox is shared with the other tests.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import subprocess

import psycopg2
import pytest
from psycopg2 import errors as pg_errors

import sandbox as sandbox_lib  # scripts/sandbox.py (tests/conftest.py puts scripts/ on sys.path)
from ansible_collections.stateful.rollback.plugins.module_utils import compat_runner, migrate_runner, parity_runner

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES_SQL = os.path.join(REPO, "docs", "sql", "roles.sql")
IMAGE = "registry.example/demo@sha256:" + hashlib.sha256(b"demo").hexdigest()

OWNER = "srt_owner"
MIGRATOR = "srt_migrator"
CHECKER = "srt_checker"
JOURNAL = "srt_journal"
OTHER = "srt_other"
TABLE = "srt_items"
PASSWORDS = {MIGRATOR: "migrator-secret", CHECKER: "checker-secret"}
CLUSTERS = ("primary", "subscriber")  # the standby replays the primary


# -- helpers ---------------------------------------------------------------------------------


def psql_script(sandbox, node, path, **variables):
    """Run ``path`` with psql as the superuser of ``node``; returns the CompletedProcess."""
    p = sandbox.superuser(node)
    command = [os.path.join(sandbox_lib.find_bindir(sandbox.config), "psql"), "-X",
               "-h", str(p["host"]), "-p", str(p["port"]), "-U", p["user"], "-d", p["dbname"]]
    for name, value in variables.items():
        command += ["-v", "%s=%s" % (name, value)]
    command += ["-f", path]
    env = dict(os.environ, PGPASSWORD=p["password"], PGCONNECT_TIMEOUT="5")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def apply_roles(sandbox, node):
    proc = psql_script(sandbox, node, ROLES_SQL, app_owner=OWNER, app_user="app", migrator=MIGRATOR,
                       checker=CHECKER, journal_schema=JOURNAL)
    assert proc.returncode == 0, proc.stderr
    return proc


def login(sandbox, node, role):
    """libpq parameters of ``node`` for one of the new roles."""
    return dict(sandbox.params(node), user=role, password=PASSWORDS[role])


def connect(sandbox, node, role):
    conn = psycopg2.connect(connect_timeout=5, **login(sandbox, node, role))
    conn.autocommit = True
    return conn


def options(sandbox, node, role, **extra):
    """Module connection options (login_*) of ``node`` for ``role``."""
    p = login(sandbox, node, role)
    result = dict(login_host=p["host"], login_port=int(p["port"]), login_user=p["user"],
                  login_password=p["password"], login_db=p["dbname"])
    result.update(extra)
    return result


def replicas(sandbox):
    """Both replicas; user, password and database come from the primary's options."""
    return [dict(name=node, login_host=getattr(sandbox, node)["host"], login_port=int(getattr(sandbox, node)["port"]))
            for node in ("standby", "subscriber")]


def denied(sandbox, node, role, statement, read_write=True):
    """The psycopg2 error ``statement`` raises for ``role`` on ``node`` (it must raise)."""
    conn = connect(sandbox, node, role)
    try:
        with conn.cursor() as cur:
            if read_write:
                # The checker's sessions start read-only (roles.sql); switch that off to reach the
                # privilege check itself: it is a default, not a privilege.
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
            with pytest.raises(psycopg2.Error) as err:
                cur.execute(statement)
        return err.value
    finally:
        conn.close()


def privileges(sandbox, node):
    """What roles.sql controls, as sorted rows: attributes, memberships, ACLs, default ACLs, settings."""
    roles = [OWNER, MIGRATOR, CHECKER]
    queries = [
        ("SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls"
         " FROM pg_roles WHERE rolname = ANY(%s)", (roles,)),
        ("SELECT r.rolname, m.rolname, a.admin_option FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid"
         " JOIN pg_roles m ON m.oid = a.member WHERE m.rolname = ANY(%s)", (roles,)),
        ("SELECT datname, datacl::text FROM pg_database WHERE datname = current_database()", None),
        ("SELECT nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace WHERE nspname IN ('public', %s, %s)",
         (JOURNAL, OTHER)),
        ("SELECT c.oid::regclass::text, c.relacl::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
         " WHERE n.nspname IN ('public', %s) AND c.relkind IN ('r', 'S')", (JOURNAL,)),
        ("SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, defaclobjtype, defaclacl::text"
         " FROM pg_default_acl", None),
        ("SELECT setrole::regrole::text, setconfig::text FROM pg_db_role_setting WHERE setrole <> 0", None),
    ]
    return [sorted(sandbox.sql(node, query, params, superuser=True)) for query, params in queries]


def write_release(directory, version, migrations):
    """A release directory (release.yml + sql/) with the given migrations; returns the manifest path."""
    os.makedirs(os.path.join(str(directory), "sql"), exist_ok=True)
    entries = []
    for item in migrations:
        entry = {"id": item["id"]}
        for direction in ("up", "down"):
            rel = "sql/%s.%s.sql" % (item["id"], direction)
            with open(os.path.join(str(directory), rel), "w") as handle:
                handle.write(item[direction])
            entry[direction] = rel
        entries.append(entry)
    manifest = {"version": version,
                "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": IMAGE}}]},
                "migrations": entries}
    path = os.path.join(str(directory), "release.yml")
    with open(path, "w") as handle:
        json.dump(manifest, handle, indent=2)  # JSON is YAML
    return path


def migrate(sandbox, node, manifest, **extra):
    params = dict(options(sandbox, node, MIGRATOR), manifest=manifest, journal_schema=JOURNAL,
                  retry_base_delay=0.05, retry_max_delay=0.2)
    params.update(extra)
    return migrate_runner.run(params)


def columns(sandbox, node, table=TABLE):
    rows = sandbox.sql(node, "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                       " AND NOT attisdropped ORDER BY attnum", ("public." + table,), superuser=True)
    return [r[0] for r in rows]


# -- setup and cleanup -----------------------------------------------------------------------


def cleanup(sandbox):
    """Remove whatever this module creates, on both clusters; safe to run when nothing exists."""
    for node in CLUSTERS:
        exists = sandbox.sql(node, "SELECT to_regclass(%s) IS NOT NULL", ("public." + TABLE,), superuser=True)[0][0]
        if exists:
            # Back to the app's role, so that sandbox.drop_table (which runs as app) may drop it.
            sandbox.sql(node, "ALTER TABLE public.%s OWNER TO app" % TABLE, superuser=True)
        sandbox.sql(node, "DROP SCHEMA IF EXISTS %s CASCADE" % OTHER, superuser=True)
        sandbox.sql(node, "DROP SCHEMA IF EXISTS %s CASCADE" % JOURNAL, superuser=True)
    sandbox.drop_table(TABLE)
    for node in CLUSTERS:
        present = {r[0] for r in sandbox.sql(node, "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                             ([OWNER, MIGRATOR, CHECKER],), superuser=True)}
        # One role per DROP OWNED: PostgreSQL 15 fails on several roles whose default ACLs name each other.
        for role in (CHECKER, MIGRATOR, OWNER):
            if role in present:
                sandbox.sql(node, "DROP OWNED BY %s" % role, superuser=True)
        if present:
            sandbox.sql(node, "DROP ROLE %s" % ", ".join(sorted(present)), superuser=True)
    sandbox.wait_standby_caught_up()


@pytest.fixture(scope="module")
def roles(sandbox):
    """The owner role and its replicated table, the other schema, and roles.sql applied (twice) on both clusters."""
    cleanup(sandbox)
    try:
        for node in CLUSTERS:
            sandbox.sql(node, "CREATE ROLE %s NOLOGIN" % OWNER, superuser=True)
        sandbox.create_table("CREATE TABLE %s (id bigint PRIMARY KEY, sku text NOT NULL, qty int NOT NULL DEFAULT 0)" % TABLE)
        for node in CLUSTERS:
            sandbox.sql(node, "ALTER TABLE public.%s OWNER TO %s" % (TABLE, OWNER), superuser=True)
        sandbox.sql("primary", "INSERT INTO public.%s SELECT i, 'sku-' || i, i %% 7 FROM generate_series(1, 500) i" % TABLE,
                    superuser=True)
        # A schema the migrator has no business in (owned by the superuser, like any schema not granted to it).
        sandbox.sql("primary", "CREATE SCHEMA %s; CREATE TABLE %s.secrets (id int PRIMARY KEY, v text);"
                    " INSERT INTO %s.secrets VALUES (1, 'x')" % (OTHER, OTHER, OTHER), superuser=True)

        runs = {}
        for node in CLUSTERS:
            runs[node] = apply_roles(sandbox, node)
        before = privileges(sandbox, "primary")
        runs["primary-again"] = apply_roles(sandbox, "primary")
        assert privileges(sandbox, "primary") == before  # idempotent: nothing changes on a second run
        for role, password in PASSWORDS.items():
            for node in CLUSTERS:
                sandbox.sql(node, "ALTER ROLE %s PASSWORD %%s" % role, (password,), superuser=True)
        sandbox.wait_standby_caught_up()
        sandbox.wait_subscriber_caught_up()
        yield runs
    finally:
        cleanup(sandbox)


# -- the script itself -------------------------------------------------------------------------


def test_roles_sql_creates_least_privilege_roles_idempotently(sandbox, roles):
    for node in CLUSTERS:
        assert "WARNING" not in roles[node].stderr, roles[node].stderr  # a dedicated owner role: nothing to warn about
        assert "ERROR" not in roles[node].stderr
    assert "ready in database app" in roles["primary-again"].stdout
    for node in ("primary", "standby", "subscriber"):  # the standby has the roles through WAL
        rows = sandbox.sql(node, "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
                                 " FROM pg_roles WHERE rolname IN (%s, %s) ORDER BY 1", (CHECKER, MIGRATOR), superuser=True)
        assert rows == [(CHECKER, True, False, False, False, False, False),
                        (MIGRATOR, True, False, False, False, False, False)], node
    member_of = dict((role, sorted(r[0] for r in sandbox.sql(
        "primary", "SELECT b.rolname FROM pg_auth_members a JOIN pg_roles b ON b.oid = a.roleid"
                   " WHERE a.member = %s::regrole", (role,), superuser=True))) for role in (MIGRATOR, CHECKER))
    # No pg_read_all_data; pg_checkpoint (PostgreSQL 15+) for the snapshot stage's CHECKPOINT.
    assert member_of == {MIGRATOR: ["pg_checkpoint", "pg_monitor", OWNER], CHECKER: ["pg_monitor"]}
    owner = sandbox.sql("primary", "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", (JOURNAL,), superuser=True)
    assert owner == [(MIGRATOR,)]
    checks = sandbox.sql("primary", """
        SELECT has_table_privilege(%(c)s, 'public.srt_items', 'SELECT'),
               has_table_privilege(%(c)s, 'public.srt_items', 'INSERT'),
               has_sequence_privilege(%(c)s, 'public.customers_id_seq', 'SELECT'),
               has_schema_privilege(%(c)s, 'public', 'CREATE'),
               has_schema_privilege(%(c)s, %(other)s, 'USAGE'),
               has_schema_privilege(%(m)s, %(other)s, 'USAGE'),
               has_schema_privilege(%(m)s, 'public', 'CREATE'),
               has_database_privilege(%(m)s, current_database(), 'CREATE'),
               has_database_privilege(%(c)s, current_database(), 'CREATE')""",
                         {"c": CHECKER, "m": MIGRATOR, "other": OTHER}, superuser=True)
    assert checks == [(True, False, True, False, False, False, True, False, False)]
    setting = sandbox.sql("primary", "SELECT setconfig FROM pg_db_role_setting WHERE setrole = %s::regrole", (CHECKER,), superuser=True)
    assert setting == [(["default_transaction_read_only=on"],)]


def test_roles_sql_refuses_bad_input_before_changing_anything(sandbox, roles):
    before = privileges(sandbox, "primary")
    cases = [
        (dict(), "app_owner is not set"),
        (dict(app_owner=OWNER, app_schema="no_such_schema"), "schema no_such_schema does not exist"),
        (dict(app_owner="postgres"), "is a superuser"),
        (dict(app_owner=OWNER, migrator=CHECKER, checker=CHECKER), "must be different roles"),
        (dict(app_owner=OWNER, db="postgres"), "connected to database app, but db=postgres"),
    ]
    for variables, message in cases:
        proc = psql_script(sandbox, "primary", ROLES_SQL, **variables)
        assert proc.returncode != 0 and message in proc.stderr, (variables, proc.stderr)
    assert privileges(sandbox, "primary") == before


def test_roles_sql_warns_when_the_owner_also_owns_the_database(sandbox, roles):
    # The sandbox's own layout: `app` owns the database and the seeded tables. The script works, but says
    # that the migrator would inherit the database owner's rights. Dry run inside a rolled-back transaction.
    p = sandbox.superuser("primary")
    command = [os.path.join(sandbox_lib.find_bindir(sandbox.config), "psql"), "-X", "-1",
               "-h", str(p["host"]), "-p", str(p["port"]), "-U", p["user"], "-d", p["dbname"],
               "-v", "app_owner=app", "-v", "migrator=srt_dry_migrator", "-v", "checker=srt_dry_checker",
               "-v", "journal_schema=srt_dry_journal", "-f", ROLES_SQL, "-c", "SELECT 1/0"]
    proc = subprocess.run(command, env=dict(os.environ, PGPASSWORD=p["password"]), capture_output=True, text=True,
                          timeout=120, check=False)
    assert "WARNING:  roles.sql: app_owner app also owns database app" in proc.stderr, proc.stderr
    assert "division by zero" in proc.stderr  # the forced rollback, after the whole script ran
    assert sandbox.sql("primary", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'srt_dry_%%'", superuser=True) == [(0,)]


# -- the checker -------------------------------------------------------------------------------


def test_checker_runs_replication_health_and_parity(sandbox, roles):
    primary = options(sandbox, "primary", CHECKER)
    health = parity_runner.run(dict(primary, mode="health", replicas=replicas(sandbox), max_lag_bytes=64 * 1024 * 1024,
                                    max_lag_seconds=60))
    assert health["healthy"] is True
    kinds = dict((r["name"], (r["kind"], r["state"])) for r in health["replicas"])
    assert kinds == {"standby": ("physical", "streaming"), "subscriber": ("logical", "streaming")}
    subscriber = next(r for r in health["replicas"] if r["name"] == "subscriber")
    assert {"table": "public.%s" % TABLE, "state": "ready"}.items() <= next(
        t for t in subscriber["subscriptions"][0]["tables"] if t["table"] == "public.%s" % TABLE).items()
    # pg_monitor is what shows the checker the WAL positions behind these numbers.
    assert all(s["retained_bytes"] is not None and s["retained_bytes"] >= 0 for s in health["slots"])

    result = parity_runner.run(dict(primary, mode="parity", replicas=replicas(sandbox), settle_timeout=20,
                                    tables=["public.%s" % TABLE, "public.customers", "public.orders"]))
    assert result["in_sync"] is True and result["difference_count"] == 0
    for replica in result["replicas"]:
        assert [t["status"] for t in replica["tables"]] == ["in_sync"] * 3, replica["name"]
        items = next(t for t in replica["tables"] if t["table"] == "public.%s" % TABLE)
        assert items["rows_primary"] == items["rows_replica"] == 500


def test_checker_captures_and_compares_baselines(sandbox, roles, tmp_path):
    primary = options(sandbox, "primary", CHECKER)
    path = str(tmp_path / "baseline.json")
    tables = ["public.%s" % TABLE, "public.customers"]
    captured = parity_runner.run(dict(primary, mode="baseline_capture", baseline_path=path, tables=tables,
                                      invariants=["all"]))
    assert captured["changed"] is True
    assert captured["fingerprint"]["tables"]["public.%s" % TABLE] == 500
    # Sequences are read too (the invariant compares last_value with the column): SELECT on sequences.
    assert captured["invariants"]["ok"] is True, captured["invariants"]
    assert parity_runner.run(dict(primary, mode="baseline_compare", baseline_path=path))["in_sync"] is True
    # The comparison really looks: a change made behind the checker's back is found, by key.
    sandbox.sql("primary", "UPDATE public.%s SET qty = qty + 1 WHERE id = 42" % TABLE, superuser=True)
    try:
        with pytest.raises(parity_runner.ParityFailure) as err:
            parity_runner.run(dict(primary, mode="baseline_compare", baseline_path=path))
        table = next(t for t in err.value.result["comparison"]["tables"] if t["table"] == "public.%s" % TABLE)
        assert table["differences"]["different"] == [{"id": 42}]
    finally:
        sandbox.sql("primary", "UPDATE public.%s SET qty = qty - 1 WHERE id = 42" % TABLE, superuser=True)
    # The same comparison against the standby, still as the checker.
    standby = options(sandbox, "standby", CHECKER)
    sandbox.wait_standby_caught_up()
    assert parity_runner.run(dict(standby, mode="baseline_compare", baseline_path=path))["in_sync"] is True


def test_checker_schema_dump_feeds_schema_compat_check_static(sandbox, roles, tmp_path):
    # Static mode needs no connection at all; its type rules become exact with a schema dump, and the
    # checker may take that dump (pg_dump locks each table ACCESS SHARE: SELECT is enough).
    p = login(sandbox, "primary", CHECKER)
    dump = tmp_path / "schema.sql"
    subprocess.run([os.path.join(sandbox_lib.find_bindir(sandbox.config), "pg_dump"), "--schema-only", "-n", "public",
                    "-h", p["host"], "-p", str(p["port"]), "-U", p["user"], "-f", str(dump), p["dbname"]],
                   env=dict(os.environ, PGPASSWORD=p["password"]), check=True, capture_output=True, timeout=120)
    assert "CREATE TABLE public.%s" % TABLE in dump.read_text()
    migration = "ALTER TABLE public.%s ALTER COLUMN qty TYPE bigint;\n" % TABLE
    with pytest.raises(compat_runner.CompatFailure) as err:
        compat_runner.run(dict(migration_sql=migration, schema=str(dump), mode="static", fail_on=["error"]))
    result = err.value.result
    assert result["mode"] == "static" and result["compatible"] is False
    # The dump told it qty is an integer: the rewrite is certain, and named.
    rewrite = next(f for f in result["findings"] if f["category"] == "table_rewrite")
    assert rewrite["severity"] == "error" and "from integer to bigint" in rewrite["message"]


def test_checker_cannot_write_or_leave_its_schemas(sandbox, roles):
    table = "public.%s" % TABLE
    # Sessions start read-only ...
    err = denied(sandbox, "primary", CHECKER, "INSERT INTO %s VALUES (9001, 'x', 1)" % table, read_write=False)
    assert isinstance(err, pg_errors.ReadOnlySqlTransaction)
    # ... and underneath that, the privileges say no.
    statements = {
        "INSERT INTO %s VALUES (9001, 'x', 1)" % table: "permission denied for table %s" % TABLE,
        "UPDATE %s SET qty = 0" % table: "permission denied for table %s" % TABLE,
        "DELETE FROM %s" % table: "permission denied for table %s" % TABLE,
        "TRUNCATE %s" % table: "permission denied for table %s" % TABLE,
        "ALTER TABLE %s ADD COLUMN evil int" % table: "must be owner of table %s" % TABLE,
        "CREATE TABLE public.srt_checker_table (id int)": "permission denied for schema public",
        "CREATE TABLE %s.t (id int)" % JOURNAL: "permission denied for schema %s" % JOURNAL,
        "SELECT * FROM %s.secrets" % OTHER: "permission denied for schema %s" % OTHER,
        "CREATE SCHEMA srt_checker_schema": "permission denied for database app",
    }
    for node in CLUSTERS:
        for statement, message in statements.items():
            if node == "subscriber" and OTHER in statement:
                continue  # the other schema exists on the primary only
            err = denied(sandbox, node, CHECKER, statement)
            assert isinstance(err, pg_errors.InsufficientPrivilege), (node, statement, err)
            assert message in str(err), (node, statement, str(err))
    assert sandbox.sql("primary", "SELECT count(*) FROM %s WHERE id = 9001" % table, superuser=True) == [(0,)]


# -- the migrator ------------------------------------------------------------------------------


def test_migrator_applies_and_reverts_a_release(sandbox, roles, tmp_path):
    manifest = write_release(tmp_path / "1.1.0", "1.1.0", [{
        "id": "001-items-note",
        "up": "ALTER TABLE public.%s ADD COLUMN note text;\n"
              "CREATE INDEX %s_note_idx ON public.%s (note);\n" % (TABLE, TABLE, TABLE),
        "down": "DROP INDEX public.%s_note_idx;\nALTER TABLE public.%s DROP COLUMN note;\n" % (TABLE, TABLE),
    }])
    # Logical replication carries no DDL: the subscriber gets the schema step first (no backfill there).
    sub = migrate(sandbox, "subscriber", manifest, backfill=False)
    applied = migrate(sandbox, "primary", manifest)
    assert sub["changed"] is True and applied["changed"] is True
    assert [(s["migration"], s["direction"], s["state"]) for s in applied["steps"]] == [("001-items-note", "up", "done")]
    assert [(m["id"], m["applied"]) for m in applied["migrations"]] == [("001-items-note", True)]
    sandbox.wait_standby_caught_up()
    for node in ("primary", "standby", "subscriber"):
        assert columns(sandbox, node) == ["id", "sku", "qty", "note"], node
    # The snapshot stage's CHECKPOINT works with the migrator's connection.
    conn = connect(sandbox, "primary", MIGRATOR)
    try:
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
    finally:
        conn.close()
    # Exactly once: a second run changes nothing.
    assert migrate(sandbox, "primary", manifest)["changed"] is False
    # The journal belongs to the migrator, and the checker reads it through the default privileges.
    owners = sandbox.sql("primary", "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = %s", (JOURNAL,), superuser=True)
    assert owners == [(MIGRATOR,)]
    conn = connect(sandbox, "primary", CHECKER)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT migration_id, direction, state FROM %s.migration_journal ORDER BY id" % JOURNAL)
            assert cur.fetchall() == [("001-items-note", "up", "done")]
    finally:
        conn.close()
    # Rows written with the new column replicate, and the checker proves all three nodes equal.
    sandbox.sql("primary", "UPDATE public.%s SET note = 'n-' || id WHERE id <= 10" % TABLE, superuser=True)
    result = parity_runner.run(dict(options(sandbox, "primary", CHECKER), mode="parity", replicas=replicas(sandbox),
                                    settle_timeout=20, tables=["public.%s" % TABLE]))
    assert result["in_sync"] is True

    reverted = migrate(sandbox, "primary", manifest, state="reverted")
    assert reverted["changed"] is True and reverted.get("needs_restore") is not True
    migrate(sandbox, "subscriber", manifest, state="reverted", backfill=False)
    sandbox.wait_standby_caught_up()
    for node in ("primary", "standby", "subscriber"):
        assert columns(sandbox, node) == ["id", "sku", "qty"], node


def test_migrator_cannot_touch_another_schema(sandbox, roles, tmp_path):
    manifest = write_release(tmp_path / "6.6.6", "6.6.6", [{
        "id": "001-other",
        "up": "ALTER TABLE %s.secrets ADD COLUMN stolen text;\n" % OTHER,
        "down": "ALTER TABLE %s.secrets DROP COLUMN stolen;\n" % OTHER,
    }])
    with pytest.raises(migrate_runner.MigrateFailure) as err:
        migrate(sandbox, "primary", manifest, max_retries=0)
    assert "permission denied for schema %s" % OTHER in err.value.msg
    assert sandbox.sql("primary", "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'stolen'",
                       ("%s.secrets" % OTHER,), superuser=True) == [(0,)]
    statements = {
        "SELECT * FROM %s.secrets" % OTHER: "permission denied for schema %s" % OTHER,
        "CREATE TABLE %s.t (id int)" % OTHER: "permission denied for schema %s" % OTHER,
        "DROP SCHEMA %s CASCADE" % OTHER: "must be owner of schema %s" % OTHER,
        # Tables of another owner in the app schema are out of reach too: membership is in srt_owner only.
        "ALTER TABLE public.customers ADD COLUMN evil int": "must be owner of table customers",
        "SELECT * FROM public.customers": "permission denied for table customers",
    }
    for statement, message in statements.items():
        err = denied(sandbox, "primary", MIGRATOR, statement, read_write=False)
        assert isinstance(err, pg_errors.InsufficientPrivilege), (statement, err)
        assert message in str(err), (statement, str(err))
