# -*- coding: utf-8 -*-
"""stateful.rollback.migrate against the real sandbox primary (with its standby and subscriber).

Most tests call the runner in-process (``migrate_runner.run``, what the module's
main() calls with its validated parameters). The crash test runs the module as
operators do, through ``ansible-playbook`` in its own process group, and
SIGKILLs that whole group mid-backfill: the module process dies with its
connections, exactly like a killed CI job.

Every test works in schemas of its own (``mig_*``, not published to the logical
subscriber, so no DDL has to be mirrored there) and a journal schema of its
own (so tests never share a journal or a runner lock); both are dropped at the end.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils import journal as jr
from ansible_collections.stateful.rollback.plugins.module_utils import parity_runner
from ansible_collections.stateful.rollback.plugins.module_utils.migrate_runner import MigrateFailure, run

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
IMAGE = "registry.example/demo@sha256:" + hashlib.sha256(b"demo").hexdigest()


# -- helpers ---------------------------------------------------------------------------


def write_release(directory, version, migrations):
    """A release directory: release.yml plus sql/<id>_up.sql / _down.sql. Returns the manifest path.

    ``migrations``: dicts with id, up (SQL text), down (SQL text) or irreversible/reason, and any other
    manifest field (backfill, verify, transactional) as is.
    """
    os.makedirs(os.path.join(str(directory), "sql"), exist_ok=True)
    entries = []
    for item in migrations:
        entry = {"id": item["id"]}
        for direction in ("up", "down"):
            if item.get(direction) is not None:
                rel = "sql/%s_%s.sql" % (item["id"], direction)
                with open(os.path.join(str(directory), rel), "w") as handle:
                    handle.write(item[direction])
                entry[direction] = rel
        for key in ("irreversible", "reason", "verify", "transactional", "backfill"):
            if key in item:
                entry[key] = item[key]
        entries.append(entry)
    manifest = {
        "version": version,
        "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": IMAGE}}]},
        "migrations": entries,
    }
    path = os.path.join(str(directory), "release.yml")
    with open(path, "w") as handle:
        handle.write(json.dumps(manifest, indent=2))  # JSON is YAML
    return path


def conn_params(sandbox):
    p = sandbox.primary
    return dict(login_host=p["host"], login_port=int(p["port"]), login_user=p["user"], login_password=p["password"],
                login_db=p["dbname"])


class Env(object):
    """Schemas and a journal of one test."""

    def __init__(self, sandbox, name):
        self.sandbox = sandbox
        self.name = name
        self.journal = "mig_journal_" + name
        self.schemas = []

    def schema(self, suffix=""):
        name = "mig_%s%s" % (self.name, suffix)
        self.sandbox.sql("primary", "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s" % (name, name))
        self.schemas.append(name)
        return name

    def run(self, manifest, **options):
        params = dict(conn_params(self.sandbox), manifest=manifest, journal_schema=self.journal,
                      retry_base_delay=0.05, retry_max_delay=0.2)
        params.update(options)
        check_mode = params.pop("check_mode", False)
        diff = params.pop("diff", False)
        return run(params, check_mode=check_mode, diff=diff, progress=params.pop("progress", None))

    def journal_rows(self, migration=None):
        rows = self.sandbox.sql(
            "primary",
            "SELECT migration_id, direction, phase, state, rows_processed, batches, attempts, last_key, statements_done, "
            "error, note FROM %s.migration_journal ORDER BY id" % self.journal)
        keys = ("migration", "direction", "phase", "state", "rows_processed", "batches", "attempts", "last_key",
                "statements_done", "error", "note")
        out = [dict(zip(keys, r)) for r in rows]
        return [r for r in out if migration is None or r["migration"] == migration]

    def journal_exists(self):
        return bool(self.sandbox.sql("primary", "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (self.journal,))[0][0])

    def cleanup(self):
        for name in self.schemas + [self.journal]:
            self.sandbox.sql("primary", "DROP SCHEMA IF EXISTS %s CASCADE" % name)


@pytest.fixture
def env(sandbox, request):
    name = request.node.name.replace("test_", "", 1).split("[")[0][:20].lower()
    environment = Env(sandbox, name)
    sandbox.sql("primary", "DROP SCHEMA IF EXISTS %s CASCADE" % environment.journal)
    try:
        yield environment
    finally:
        environment.cleanup()


def customers(sandbox, schema, rows, key_type="bigint"):
    """<schema>.customers(id, first_name, last_name, touched) with ``rows`` deterministic rows."""
    key_expr = {
        "bigint": "g", "integer": "g", "text": "lpad(g::text, 8, '0')",
        "uuid": "md5(g::text)::uuid",
    }[key_type]
    sandbox.sql("primary", textwrap.dedent("""\
        CREATE TABLE {s}.customers (id {t} PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL,
                                    touched integer NOT NULL DEFAULT 0);
        INSERT INTO {s}.customers (id, first_name, last_name)
        SELECT {k}, 'first' || g, 'last' || (g % 977) FROM generate_series(1, {n}) AS g;
        ANALYZE {s}.customers;
        """).format(s=schema, t=key_type, k=key_expr, n=int(rows)))


def full_name_migration(schema, **backfill):
    spec = {"table": "%s.customers" % schema, "key": "id",
            "set": "full_name = first_name || ' ' || last_name, touched = touched + 1", "batch_size": 1000}
    spec.update(backfill)
    return {
        "id": "001_add_full_name",
        "up": "ALTER TABLE %s.customers ADD COLUMN full_name text;\n" % schema,
        "down": "ALTER TABLE %s.customers DROP COLUMN full_name;\n" % schema,
        "backfill": spec,
    }


def schema_dump(sandbox, schema):
    """pg_dump --schema-only of one schema, without the \\restrict lines and comments."""
    import sandbox as sandbox_lib  # scripts/sandbox.py

    bindir = sandbox_lib.find_bindir(sandbox.config)
    p = sandbox.primary
    env = dict(os.environ, PGPASSWORD=p["password"])
    out = subprocess.run([os.path.join(bindir, "pg_dump"), "--schema-only", "-n", schema, "-h", p["host"], "-p", str(p["port"]),
                          "-U", p["user"], p["dbname"]], env=env, capture_output=True, text=True, check=True, timeout=60).stdout
    return "\n".join(line for line in out.splitlines()
                     if line.strip() and not line.startswith(("\\restrict", "\\unrestrict", "--")))


def process_tree(root):
    """PIDs of ``root`` and all its descendants (from /proc), children first."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out = []

    def walk(pid):
        for child in children.get(pid, ()):
            walk(child)
        out.append(pid)

    walk(root)
    return out


def kill_tree(root):
    """SIGKILL a process we started and everything it started.

    ansible-playbook's workers call setsid(), so killing its process group would miss the module.
    """
    for pid in process_tree(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(predicate, timeout=30.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within %ss" % timeout)


def backfill_rows_done(env):
    try:
        rows = env.sandbox.sql("primary", "SELECT rows_processed FROM %s.migration_journal WHERE phase = 'backfill' "
                               "ORDER BY id DESC LIMIT 1" % env.journal)
    except Exception:  # pylint: disable=broad-except
        return 0  # the journal does not exist yet
    return rows[0][0] if rows else 0


# -- tests -------------------------------------------------------------------------------


def test_apply_revert_round_trip_restores_the_schema(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 3000)
    before = schema_dump(env.sandbox, schema)
    data_before = env.sandbox.sql("primary", "SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM %s.customers c" % schema)
    manifest = write_release(tmp_path, "2.0.0", [
        dict(full_name_migration(schema), verify="SELECT count(*) = 1 FROM information_schema.columns WHERE "
             "table_schema = '%s' AND table_name = 'customers' AND column_name = 'full_name'" % schema),
        {"id": "002_index_last_name",
         "up": "CREATE INDEX CONCURRENTLY customers_last_name_idx ON %s.customers (last_name);\n" % schema,
         "down": "DROP INDEX CONCURRENTLY %s.customers_last_name_idx;\n" % schema},
        {"id": "003_check_names",
         "up": "BEGIN;\nALTER TABLE %s.customers ADD CONSTRAINT first_name_not_empty CHECK (first_name <> '') NOT VALID;\n"
               "ALTER TABLE %s.customers VALIDATE CONSTRAINT first_name_not_empty;\nCOMMIT;\n" % (schema, schema),
         "down": "ALTER TABLE %s.customers DROP CONSTRAINT first_name_not_empty;\n" % schema},
    ])
    progress = []
    result = env.run(manifest, diff=True, progress=progress.append)
    assert result["changed"] is True
    assert [(s["migration"], s["phase"], s["state"]) for s in result["steps"]] == [
        ("001_add_full_name", "schema", "done"), ("001_add_full_name", "backfill", "done"),
        ("002_index_last_name", "schema", "done"), ("003_check_names", "schema", "done")]
    assert [s["transactional"] for s in result["steps"] if s["phase"] == "schema"] == [True, False, True]
    assert "line 1: BEGIN ignored (the runner makes the transaction)" in result["steps"][3]["notes"]
    assert result["rows_processed"] == 3000 and result["batches"] == 3
    assert all(m["applied"] and m["status"] == "applied" for m in result["migrations"])
    assert result["diff"]["before"]["001_add_full_name"] == "pending"
    assert result["diff"]["after"]["001_add_full_name"] == "applied (rows 3000)"
    assert [e["rows"] for e in progress if e["event"] == "batch"] == [1000, 2000, 3000]
    assert env.sandbox.sql("primary", "SELECT count(*) FROM %s.customers WHERE full_name = first_name || ' ' || last_name "
                           "AND touched = 1" % schema)[0][0] == 3000
    # Applied is idempotent: nothing to do, nothing changed.
    again = env.run(manifest)
    assert again["changed"] is False and again["steps"] == []
    # Revert restores the schema exactly (and the other columns' data).
    reverted = env.run(manifest, state="reverted")
    assert reverted["changed"] is True and reverted["needs_restore"] is False
    assert [s["migration"] for s in reverted["steps"]] == ["003_check_names", "002_index_last_name", "001_add_full_name"]
    assert all(m["status"] == "reverted" and not m["applied"] for m in reverted["migrations"])
    assert schema_dump(env.sandbox, schema) == before
    env.sandbox.sql("primary", "UPDATE %s.customers SET touched = 0" % schema)
    assert env.sandbox.sql("primary", "SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM %s.customers c" % schema) == data_before
    assert env.run(manifest, state="reverted")["changed"] is False
    # The journal: one row per step execution, up then down.
    journal = [(r["migration"], r["direction"], r["phase"], r["state"]) for r in env.journal_rows()]
    assert journal == [
        ("001_add_full_name", "up", "schema", "done"), ("001_add_full_name", "up", "backfill", "done"),
        ("002_index_last_name", "up", "schema", "done"), ("003_check_names", "up", "schema", "done"),
        ("003_check_names", "down", "schema", "done"), ("002_index_last_name", "down", "schema", "done"),
        ("001_add_full_name", "down", "schema", "done")]
    # Applying again after the revert starts a new cycle (new rows).
    env.sandbox.sql("primary", "UPDATE %s.customers SET touched = 0" % schema)
    assert env.run(manifest, target="001_add_full_name")["steps"][1]["rows_processed"] == 3000
    status = env.run(manifest, state="status")
    assert [m["status"] for m in status["migrations"]] == ["applied", "reverted", "reverted"]


@pytest.mark.parametrize("key_type", ["integer", "bigint", "text", "uuid"])
def test_backfill_key_types(env, tmp_path, key_type):
    schema = env.schema()
    customers(env.sandbox, schema, 2500, key_type)
    manifest = write_release(tmp_path, "2.0.0", [full_name_migration(schema, where="touched = 0")])
    result = env.run(manifest)
    step = result["steps"][1]
    assert (step["rows_processed"], step["batches"]) == (2500, 3)
    last = env.sandbox.sql("primary", "SELECT c.id::text AS last FROM %s.customers c ORDER BY c.id DESC LIMIT 1" % schema)[0][0]
    assert step["last_key"] == last
    assert env.journal_rows("001_add_full_name")[1]["last_key"] == last
    assert env.sandbox.sql("primary", "SELECT count(*) FROM %s.customers WHERE touched = 1 AND full_name IS NOT NULL" % schema)[0][0] == 2500


def test_sigkill_mid_backfill_resumes_exactly_once(env, tmp_path):
    """Kill ansible-playbook (and the module) mid-backfill; the rerun ends where an uninterrupted run ends."""
    rows = 200000
    schema = env.schema()
    migration = full_name_migration(schema, batch_size=2000, max_rows_per_second=50000)
    # 1. The reference: an uninterrupted run (no rate limit), fingerprinted with replication_parity's baseline.
    customers(env.sandbox, schema, rows)
    reference = write_release(tmp_path / "reference", "2.0.0", [full_name_migration(schema, batch_size=2000)])
    assert env.run(reference, journal_schema=env.journal + "_ref")["rows_processed"] == rows
    env.sandbox.sql("primary", "DROP SCHEMA %s_ref CASCADE" % env.journal)
    baseline = parity_runner.run(dict(conn_params(env.sandbox), mode="baseline_capture", tables=["%s.customers" % schema],
                                      baseline_row_limit=rows, return_baseline=True, exclude_schemas=[env.journal]))["baseline"]
    # 2. The same table again from scratch.
    env.sandbox.sql("primary", "DROP SCHEMA %s CASCADE; CREATE SCHEMA %s" % (schema, schema))
    customers(env.sandbox, schema, rows)
    manifest = write_release(tmp_path / "release", "2.0.0", [migration])
    playbook = tmp_path / "migrate.yml"
    playbook.write_text(textwrap.dedent("""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: Apply the migrations
              stateful.rollback.migrate:
                manifest: {manifest}
                journal_schema: {journal}
                login_host: {host}
                login_port: {port}
                login_user: {user}
                login_password: {password}
                login_db: {dbname}
        """).format(manifest=manifest, journal=env.journal, **env.sandbox.primary))
    environ = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.Popen([os.path.join(BIN, "ansible-playbook"), str(playbook)], cwd=REPO, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: backfill_rows_done(env) >= rows // 4, timeout=120)
        module_pids = [pid for pid in process_tree(proc.pid) if pid != proc.pid]
    finally:
        kill_tree(proc.pid)  # ansible-playbook, its worker and the module process: SIGKILL, no cleanup anywhere
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert module_pids and proc.returncode == -signal.SIGKILL, output
    # The killed session's backend goes away, and with it the runner lock and the open batch.
    wait_for(lambda: not env.sandbox.sql("primary", "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                         "'stateful.rollback.migrate%%' AND datname = current_database()")[0][0], timeout=30)
    killed = env.journal_rows("001_add_full_name")[1]
    assert killed["state"] == "running" and 0 < killed["rows_processed"] < rows
    # Every committed batch is journaled, and nothing else was committed.
    assert env.sandbox.sql("primary", "SELECT count(*) FROM %s.customers WHERE touched = 1" % schema)[0][0] == killed["rows_processed"]
    assert env.sandbox.sql("primary", "SELECT max(id)::text FROM %s.customers WHERE touched = 1" % schema)[0][0] == killed["last_key"]
    # 3. The rerun continues at the journaled key.
    result = env.run(manifest)
    step = result["steps"][0]
    assert step["phase"] == "backfill" and step["resumed"] is True
    assert step["resumed_from_key"] == killed["last_key"]
    assert step["rows_processed"] == rows - killed["rows_processed"]
    done = env.journal_rows("001_add_full_name")
    assert len(done) == 2 and done[1]["state"] == "done" and done[1]["attempts"] == 2
    assert done[1]["rows_processed"] == rows and done[1]["batches"] == rows // 2000  # each batch exactly once
    compare = parity_runner.run(dict(conn_params(env.sandbox), mode="baseline_compare", baseline=baseline,
                                     tables=["%s.customers" % schema], fail_on_difference=False, exclude_schemas=[env.journal]))
    assert compare["in_sync"] is True, compare["comparison"]
    assert env.sandbox.sql("primary", "SELECT min(touched), max(touched) FROM %s.customers" % schema)[0] == (1, 1)


def test_two_runners_one_waits_or_fails_naming_the_holder(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 40000)
    manifest = write_release(tmp_path, "2.0.0", [full_name_migration(schema, batch_size=1000, max_rows_per_second=20000)])
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", env.run(manifest)))
    first.start()
    try:
        wait_for(lambda: backfill_rows_done(env) > 0)
        with pytest.raises(MigrateFailure) as failed:
            env.run(manifest, lock_wait_timeout=0.3)
        msg = failed.value.msg
        assert msg.startswith("another migration runner holds the lock of journal %s" % env.journal)
        assert "application_name 'stateful.rollback.migrate lock 2.0.0" in msg and "pid " in msg and "client 127.0.0.1:" in msg
        assert "waited lock_wait_timeout=0.3s" in msg
        # A patient runner waits for the first one, then finds nothing left to do.
        patient = env.run(manifest, lock_wait_timeout=60)
    finally:
        first.join(60)
    assert results["first"]["rows_processed"] == 40000
    assert patient["changed"] is False and patient["timings"]["lock_wait_seconds"] > 0.1
    assert env.sandbox.sql("primary", "SELECT count(*) FROM %s.customers WHERE touched = 1" % schema)[0][0] == 40000


def test_changed_script_is_refused(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 10)
    manifest = write_release(tmp_path, "2.0.0", [full_name_migration(schema)])
    env.run(manifest)
    up = tmp_path / "sql" / "001_add_full_name_up.sql"
    old = hashlib.sha256(up.read_bytes()).hexdigest()
    up.write_text("ALTER TABLE %s.customers ADD COLUMN full_name varchar(200);\n" % schema)
    new = hashlib.sha256(up.read_bytes()).hexdigest()
    expected = ("migration 001_add_full_name: sql/001_add_full_name_up.sql changed since it was applied (journal sha256 "
                "%s…, file now %s…); a migration is immutable once applied — write a new migration" % (old[:12], new[:12]))
    for state in ("applied", "reverted"):
        with pytest.raises(MigrateFailure) as failed:
            env.run(manifest, state=state)
        assert failed.value.msg == expected
    assert env.run(manifest, state="status")["tampered"] == [expected]
    assert len(env.journal_rows()) == 2  # nothing ran


def test_lock_held_on_the_table_backs_off_then_succeeds_or_fails_cleanly(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 10)
    manifest = write_release(tmp_path, "2.0.0", [{
        "id": "001_two_statements",
        "up": "CREATE TABLE %s.side (id int);\nALTER TABLE %s.customers ADD COLUMN email text;\n" % (schema, schema),
        "down": "ALTER TABLE %s.customers DROP COLUMN email;\nDROP TABLE %s.side;\n" % (schema, schema),
    }])
    blocker = env.sandbox.connect("primary")
    blocker.autocommit = False
    with blocker.cursor() as cur:
        cur.execute("SELECT count(*) FROM %s.customers" % schema)  # holds ACCESS SHARE until the transaction ends
    try:
        # Never released: max_retries attempts, then a clean failure.
        with pytest.raises(MigrateFailure) as failed:
            env.run(manifest, lock_timeout=0.1, max_retries=2)
        assert "failed after 3 attempts: lock_timeout" in failed.value.msg
        assert "nothing of this attempt was kept" in failed.value.msg
        row = env.journal_rows()[0]
        assert row["state"] == "failed" and row["attempts"] == 3 and "lock_timeout" in row["error"]
        assert failed.value.result["steps"][0]["retries"] == 2
        # Nothing half-applied: the first statement's table is not there either.
        assert env.sandbox.sql("primary", "SELECT to_regclass('%s.side')" % schema)[0][0] is None
        # Released after a while: the retries get through.
        timer = threading.Timer(0.8, blocker.rollback)
        timer.start()
        result = env.run(manifest, lock_timeout=0.1, max_retries=30)
        timer.join()
    finally:
        blocker.close()
    step = result["steps"][0]
    assert step["state"] == "done" and step["retries"] >= 1 and step["resumed"] is True
    row = env.journal_rows()[0]
    assert row["state"] == "done" and row["attempts"] > 3 and row["error"] is None
    assert env.sandbox.sql("primary", "SELECT to_regclass('%s.side') IS NOT NULL" % schema)[0][0] is True


def test_pause_then_resume_reaches_the_uninterrupted_end_state(env, tmp_path):
    rows = 40000
    schema = env.schema()
    customers(env.sandbox, schema, rows)
    manifest = write_release(tmp_path, "2.0.0", [
        full_name_migration(schema, batch_size=1000, max_rows_per_second=20000, where="full_name IS NULL"),
        {"id": "002_after", "up": "CREATE TABLE %s.after_backfill (id int);\n" % schema,
         "down": "DROP TABLE %s.after_backfill;\n" % schema},
    ])
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("run", env.run(manifest)))
    worker.start()
    try:
        wait_for(lambda: backfill_rows_done(env) >= 4000)
        paused = env.run(manifest, state="paused", executed_by="operator@console")
        assert paused["changed"] is True and paused["pause_requested"] is True
        assert env.run(manifest, state="paused")["changed"] is False
    finally:
        worker.join(60)
    first = results["run"]
    assert first["paused"] is True and first["pause_reason"] == "requested" and first["changed"] is True
    assert "pause requested by operator@console" in first["msg"]
    done = first["rows_processed"]
    assert 0 < done < rows
    row = env.journal_rows("001_add_full_name")[1]
    assert row["state"] == "paused" and row["rows_processed"] == done
    assert env.sandbox.sql("primary", "SELECT count(*) FROM %s.customers WHERE full_name IS NOT NULL" % schema)[0][0] == done
    assert env.sandbox.sql("primary", "SELECT to_regclass('%s.after_backfill')" % schema)[0][0] is None
    # Status: progress, rate and ETA, read-only.
    status = env.run(manifest, state="status")
    assert status["changed"] is False and status["pause_requested"] is True and status["runner"] is None
    backfill = status["migrations"][0]["backfill"]
    assert status["migrations"][0]["status"] == "paused"
    assert backfill["rows_processed"] == done and backfill["rows_remaining"] == rows - done
    assert backfill["rows_remaining_method"] == "exact"
    assert backfill["rows_per_second"] > 0 and backfill["eta_seconds"] > 0
    assert backfill["last_key"] == str(done)
    # applied does not override a pause.
    with pytest.raises(MigrateFailure) as refused:
        env.run(manifest)
    assert "release 2.0.0 is paused (requested by operator@console" in refused.value.msg
    assert "run state=resumed to continue" in refused.value.msg
    resumed = env.run(manifest, state="resumed")
    assert resumed["resumed"] is True and resumed["paused"] is False
    assert resumed["rows_processed"] == rows - done
    assert [m["status"] for m in resumed["migrations"]] == ["applied", "applied"]
    assert env.sandbox.sql("primary", "SELECT count(*) FROM %s.customers WHERE full_name = first_name || ' ' || last_name "
                           "AND touched = 1" % schema)[0][0] == rows
    backfill_row = env.journal_rows("001_add_full_name")[1]
    assert backfill_row["rows_processed"] == rows and backfill_row["batches"] == rows // 1000


def test_irreversible_step_reports_needs_restore(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 10)
    manifest = write_release(tmp_path, "2.0.0", [
        {"id": "001_add_email", "up": "ALTER TABLE %s.customers ADD COLUMN email text;\n" % schema,
         "down": "ALTER TABLE %s.customers DROP COLUMN email;\n" % schema},
        {"id": "002_drop_last_name", "up": "ALTER TABLE %s.customers DROP COLUMN last_name;\n" % schema,
         "irreversible": True, "reason": "drops a column"},
    ])
    env.run(manifest)
    result = env.run(manifest, state="reverted")
    assert result["needs_restore"] is True and result["changed"] is False and result["steps"] == []
    assert result["irreversible"] == [{"id": "002_drop_last_name", "reason": "drops a column"}]
    assert "restore the database from the snapshot" in result["msg"]
    assert [m["applied"] for m in result["migrations"]] == [True, True]
    with pytest.raises(MigrateFailure) as failed:
        env.run(manifest, state="reverted", fail_on_irreversible=True)
    assert failed.value.result["needs_restore"] is True and "002_drop_last_name is irreversible (drops a column)" in failed.value.msg
    # Limiting the scope to reversible migrations lets the down scripts run.
    limited = env.run(manifest, state="reverted", migrations=["001_add_email"])
    assert limited["needs_restore"] is False and [s["migration"] for s in limited["steps"]] == ["001_add_email"]


def test_create_index_concurrently_invalid_index_is_cleaned_up_on_retry(env, tmp_path):
    schema = env.schema()
    env.sandbox.sql("primary", "CREATE TABLE %s.users (id int PRIMARY KEY, email text); "
                    "INSERT INTO %s.users SELECT g, 'u' || (g %% 900) FROM generate_series(1, 1000) g" % (schema, schema))
    manifest = write_release(tmp_path, "2.0.0", [{
        "id": "001_unique_email",
        "up": "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON %s.users (email);\n" % schema,
        "down": "DROP INDEX CONCURRENTLY IF EXISTS %s.users_email_key;\n" % schema,
        "verify": "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('%s.users_email_key')" % schema,
    }])
    with pytest.raises(MigrateFailure) as failed:
        env.run(manifest)
    assert "could not create unique index" in failed.value.msg and "23505" in failed.value.msg
    assert failed.value.result["steps"][0]["transactional"] is False
    invalid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('%s.users_email_key')" % schema
    assert env.sandbox.sql("primary", invalid) == [(False,)]  # the INVALID leftover
    row = env.journal_rows()[0]
    assert row["state"] == "failed" and row["statements_done"] == 0
    # IF NOT EXISTS alone would skip the invalid index and leave it; the runner drops it and builds it again.
    env.sandbox.sql("primary", "UPDATE %s.users SET email = 'u' || id" % schema)
    result = env.run(manifest)
    step = result["steps"][0]
    assert step["state"] == "done" and step["resumed"] is True
    assert any("dropped the invalid index %s.users_email_key" % schema in n for n in step["notes"])
    assert env.sandbox.sql("primary", invalid) == [(True,)]
    row = env.journal_rows()[0]
    assert row["state"] == "done" and row["attempts"] == 2 and row["statements_done"] == 1


def test_check_mode_writes_nothing(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 5000)
    manifest = write_release(tmp_path, "2.0.0", [
        full_name_migration(schema, where="full_name IS NULL"),
        {"id": "002_index", "up": "CREATE INDEX CONCURRENTLY customers_touched_idx ON %s.customers (touched);\n" % schema,
         "down": "DROP INDEX CONCURRENTLY %s.customers_touched_idx;\n" % schema},
    ])
    before = schema_dump(env.sandbox, schema)
    result = env.run(manifest, check_mode=True, diff=True)
    assert result["changed"] is True and result["steps"] == []
    plan = result["plan"]
    assert [(p["migration"], p["phase"]) for p in plan] == [
        ("001_add_full_name", "schema"), ("001_add_full_name", "backfill"), ("002_index", "schema")]
    assert plan[0]["transactional"] is True and plan[2]["transactional"] is False
    assert plan[2]["non_transactional_statements"] == ["line 1: IndexStmt"]
    assert plan[0]["sha256"] == hashlib.sha256((tmp_path / "sql" / "001_add_full_name_up.sql").read_bytes()).hexdigest()
    # full_name does not exist before the up script: the estimate is the upper bound, and says so.
    assert plan[1]["rows_remaining"] == 5000 and plan[1]["rows_remaining_method"] == "exact"
    assert plan[1]["rows_remaining_note"].startswith("at most: where cannot be evaluated before the up script ran")
    assert result["diff"]["after"]["002_index"] == "would run up schema"
    assert not env.journal_exists()
    assert schema_dump(env.sandbox, schema) == before
    # status is read-only too, and works without a journal.
    status = env.run(manifest, state="status")
    assert status["journal_exists"] is False and [m["status"] for m in status["migrations"]] == ["pending", "pending"]
    assert not env.journal_exists()


def test_replica_lag_gates_the_backfill(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 20000)
    manifest = write_release(tmp_path, "2.0.0", [full_name_migration(schema, batch_size=2000, max_replica_lag_bytes=100000)])
    events = []
    # Start from replicas that are caught up (an earlier test may have written a lot of WAL).
    env.sandbox.wait_standby_caught_up(timeout=120)
    env.sandbox.wait_subscriber_caught_up(timeout=120)
    env.sandbox.sql("standby", "SELECT pg_wal_replay_pause()", superuser=True)
    try:
        with pytest.raises(MigrateFailure) as failed:
            env.run(manifest, lag_wait_timeout=1.0, progress=events.append)
    finally:
        env.sandbox.sql("standby", "SELECT pg_wal_replay_resume()", superuser=True)
    result = failed.value.result
    assert result["paused"] is True and result["pause_reason"] == "replica_lag"
    assert "over max_replica_lag_bytes=100000, for lag_wait_timeout=1.0s" in failed.value.msg
    assert any(e["event"] == "lag_wait" and e["lag_bytes"] > 100000 for e in events)
    row = env.journal_rows("001_add_full_name")[1]
    assert row["state"] == "paused" and 0 < row["rows_processed"] < 20000
    # Once the standby replays again, the rerun completes from where it stopped.
    again = env.run(manifest)
    assert again["rows_processed"] == 20000 - row["rows_processed"]
    assert env.sandbox.sql("primary", "SELECT min(touched), max(touched) FROM %s.customers" % schema)[0] == (1, 1)


def test_ansible_doc_renders_the_module():
    proc = subprocess.run([os.path.join(BIN, "ansible-doc"), "-t", "module", "stateful.rollback.migrate"], cwd=REPO,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg")),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for text in ("migration_journal", "migration_control", "needs_restore", "lock_wait_timeout", "EXAMPLES", "RETURN VALUES"):
        assert text in proc.stdout


def test_journal_state_definition_matches_the_database(env, tmp_path):
    """applied iff the latest up step is done and no later down step is done, as the runner and the journal agree."""
    schema = env.schema()
    customers(env.sandbox, schema, 10)
    manifest = write_release(tmp_path, "2.0.0", [full_name_migration(schema)])
    env.run(manifest)
    env.run(manifest, state="reverted")
    env.run(manifest)
    conn = env.sandbox.connect("primary")
    try:
        journal = jr.Journal(env.journal)
        rows = journal.rows(conn)
    finally:
        conn.close()
    assert [(r["direction"], r["phase"], r["state"]) for r in rows] == [
        ("up", "schema", "done"), ("up", "backfill", "done"), ("down", "schema", "done"),
        ("up", "schema", "done"), ("up", "backfill", "done")]
    assert jr.summarize(rows, True)["applied"] is True
    assert jr.summarize(rows[:3], True)["status"] == "reverted"


def test_revert_touches_only_what_this_release_applied(env, tmp_path):
    schema = env.schema()
    customers(env.sandbox, schema, 10)
    first = {"id": "001_add_email", "up": "ALTER TABLE %s.customers ADD COLUMN email text;\n" % schema,
             "down": "ALTER TABLE %s.customers DROP COLUMN email;\n" % schema}
    second = {"id": "002_add_phone", "up": "ALTER TABLE %s.customers ADD COLUMN phone text;\n" % schema,
              "down": "ALTER TABLE %s.customers DROP COLUMN phone;\n" % schema}
    old = write_release(tmp_path / "1.0.0", "1.0.0", [first])
    new = write_release(tmp_path / "2.0.0", "2.0.0", [first, second])
    env.run(old)
    applied = env.run(new)
    assert [s["migration"] for s in applied["steps"]] == ["002_add_phone"]
    assert [m["applied_by"] for m in applied["migrations"]] == ["1.0.0", "2.0.0"]
    plan = env.run(new, state="reverted", check_mode=True)
    assert [(p["migration"], p["direction"]) for p in plan["plan"]] == [("002_add_phone", "down")]
    assert [r["direction"] for r in env.journal_rows()] == ["up", "up"]  # check mode ran nothing
    reverted = env.run(new, state="reverted")
    assert [s["migration"] for s in reverted["steps"]] == ["002_add_phone"]
    assert [m["status"] for m in reverted["migrations"]] == ["applied", "reverted"]
    columns = [c for (c,) in env.sandbox.sql("primary", "SELECT column_name FROM information_schema.columns WHERE "
                                             "table_schema = %s AND table_name = 'customers' ORDER BY ordinal_position", (schema,))]
    assert "email" in columns and "phone" not in columns
    # A migration inserted before an applied one is refused: manifest order is the apply order.
    env.run(new)
    inserted = write_release(tmp_path / "2.1.0", "2.1.0", [
        first, {"id": "001b_late", "up": "SELECT 1;\n", "down": "SELECT 1;\n"}, second])
    with pytest.raises(MigrateFailure) as refused:
        env.run(inserted)
    assert refused.value.msg.startswith("migration 001b_late is not applied but the later migration 002_add_phone is")


@pytest.mark.parametrize("by_hand", [False, True])
def test_interrupted_non_transactional_step_continues_and_verify_detects_effects(env, tmp_path, by_hand):
    schema = env.schema()
    env.sandbox.sql("primary", "CREATE TABLE %s.a (id int PRIMARY KEY, x int); CREATE TABLE %s.b (id int PRIMARY KEY, y int)"
                    % (schema, schema))
    manifest = write_release(tmp_path, "2.0.0", [{
        "id": "001_two_indexes",
        "up": "CREATE INDEX CONCURRENTLY a_x_idx ON %s.a (x);\nCREATE INDEX CONCURRENTLY b_y_idx ON %s.b (y);\n" % (schema, schema),
        "down": "DROP INDEX CONCURRENTLY IF EXISTS %s.b_y_idx;\nDROP INDEX CONCURRENTLY IF EXISTS %s.a_x_idx;\n" % (schema, schema),
        "verify": "SELECT count(*) = 2 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n "
                  "ON n.oid = c.relnamespace WHERE n.nspname = '%s' AND c.relname IN ('a_x_idx', 'b_y_idx') AND i.indisvalid" % schema,
    }])
    blocker = env.sandbox.connect("primary")
    blocker.autocommit = False
    with blocker.cursor() as cur:
        cur.execute("LOCK TABLE %s.b IN SHARE UPDATE EXCLUSIVE MODE" % schema)
    try:
        with pytest.raises(MigrateFailure) as failed:
            env.run(manifest, lock_timeout=0.1, max_retries=0)
    finally:
        blocker.rollback()
        blocker.close()
    assert "line 2 (IndexStmt) failed after 1 attempts: lock_timeout" in failed.value.msg
    row = env.journal_rows()[0]
    assert row["state"] == "failed" and row["statements_done"] == 1  # the first index is built and journaled
    status = env.run(manifest, state="status")["migrations"][0]
    assert status["status"] == "failed" and status["applied"] is False
    if not by_hand:
        # The rerun continues with the second statement; the first (no IF NOT EXISTS) is not run again.
        step = env.run(manifest)["steps"][0]
        assert step["state"] == "done" and step["resumed"] is True
        assert "continuing after statement 1 of 2 (journaled by the interrupted run)" in step["notes"]
        row = env.journal_rows()[0]
        assert row["state"] == "done" and row["statements_done"] == 2 and row["attempts"] == 2
        return
    # Meanwhile the second index got built by hand: verify sees the step's effect, nothing is run again.
    env.sandbox.sql("primary", "CREATE INDEX b_y_idx ON %s.b (y)" % schema)
    result = env.run(manifest)
    step = result["steps"][0]
    assert step["state"] == "done" and step["resumed"] is True
    assert "verify returned true before re-running: the interrupted run had taken effect" in step["notes"]
    row = env.journal_rows()[0]
    assert row["state"] == "done" and row["note"] == "already effective (verify) after an interrupted run"


def test_schema_only_run_for_a_logical_subscriber(env, tmp_path):
    """backfill=false: the schema step runs and counts as applied; no row is touched, no backfill is journaled."""
    schema = env.schema()
    customers(env.sandbox, schema, 1500)
    manifest = write_release(tmp_path, "2.0.0", [full_name_migration(schema)])
    check = env.run(manifest, backfill=False, check_mode=True)
    assert [(p["migration"], p.get("phase", "schema")) for p in check["plan"]] == [("001_add_full_name", "schema")]
    result = env.run(manifest, backfill=False)
    assert [(s["migration"], s["phase"]) for s in result["steps"]] == [("001_add_full_name", "schema")]
    assert result["rows_processed"] == 0 and result["migrations"][0]["applied"] is True
    assert "backfill" not in result["migrations"][0]
    assert env.sandbox.sql("primary", "SELECT count(*) FROM %s.customers WHERE full_name IS NOT NULL OR touched <> 0"
                           % schema)[0][0] == 0
    assert env.run(manifest, backfill=False)["changed"] is False
    # The same journal with backfills on: the schema step is done, the backfill is what remains.
    full = env.run(manifest)
    assert [(s["migration"], s["phase"]) for s in full["steps"]] == [("001_add_full_name", "backfill")]
    reverted = env.run(manifest, state="reverted", backfill=False)
    assert [s["migration"] for s in reverted["steps"]] == ["001_add_full_name"]
