# -*- coding: utf-8 -*-
"""stateful.rollback.audit_log against the real sandbox primary: the table store (append, verify,
check mode, diff), append-only triggers, tampering made around them by a superuser, the privileges
script of docs/sql, concurrent appenders in separate processes keeping one chain (file and table),
and the file store's tamper cases plus secret hygiene through ansible-playbook -vvv."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import json
import os
import shutil
import subprocess
import sys
import time

import psycopg2
import pytest
import testkit
import yaml

from ansible_collections.stateful.rollback.plugins.module_utils import audit
from ansible_collections.stateful.rollback.plugins.modules import audit_log as audit_module

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
MODULE_FILE = os.path.join(REPO, "plugins", "modules", "audit_log.py")
SCRIPT = os.path.join(REPO, "docs", "sql", "audit-log-privileges.sql")
APP_NAME = "stateful.rollback.audit_log"
_SCHEMAS = itertools.count(1)


@pytest.fixture(scope="module")
def audit_db(sandbox):
    """The sandbox primary; every schema the tests made is dropped at the end (as superuser: some are not app's)."""
    made = []
    yield made
    for schema in made:
        sandbox.sql("primary", 'DROP SCHEMA IF EXISTS "%s" CASCADE' % schema, superuser=True)


@pytest.fixture
def schema(audit_db):
    name = "sr_audit_test_%d_%d" % (os.getpid(), next(_SCHEMAS))
    audit_db.append(name)
    return name


def conn_options(sandbox, **extra):
    return testkit.login_options(sandbox.primary, **extra)


def run_module(capsys, args, check_mode=False, diff=False):
    return testkit.run_module(capsys, audit_module, args, check_mode=check_mode, diff=diff)


def table_args(sandbox, schema, **args):
    return conn_options(sandbox, store="table", journal_schema=schema, **args)


def rows(sandbox, schema):
    return sandbox.sql("primary", 'SELECT seq, stage, outcome, prev_hash, hash, hmac, record FROM "%s".audit_log ORDER BY seq'
                       % schema)


def table_exists(sandbox, schema):
    return bool(sandbox.sql("primary", "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                       " WHERE n.nspname = %s AND c.relname = 'audit_log'", [schema]))


def sql_error(sandbox, query, superuser=False):
    with pytest.raises(psycopg2.Error) as info:
        sandbox.sql("primary", query, superuser=superuser)
    return info.value


# --- the table store ------------------------------------------------------------------------------


def test_table_append_verify_check_and_diff(capsys, sandbox, schema, tmp_path):
    checked = run_module(capsys, table_args(sandbox, schema, stage="preflight"), check_mode=True, diff=True)
    assert checked["changed"] is True and checked["seq"] == 1 and checked["created"] == {"table": True}
    assert checked["table"] == "%s.audit_log" % schema
    assert not table_exists(sandbox, schema)  # check mode created nothing

    made = []
    for index, outcome in enumerate(["ok", "failed", "compensated"]):
        result = run_module(capsys, table_args(sandbox, schema, stage="stage-%d" % index, outcome=outcome, release="2.1.0",
                                               details={"index": index, "login_password": "x"}, hmac_key="table-key"),
                            diff=True)
        assert result.get("failed") is not True, result
        assert result["seq"] == index + 1 and result["created"] == {"table": index == 0}
        assert result["stripped"] == ["details.login_password"]
        made.append(result["record"])
    assert result["diff"] == {"before": {"table": {"seq": 2, "hash": made[1]["hash"]}},
                              "after": {"table": {"seq": 3, "hash": made[2]["hash"]}}}
    stored = rows(sandbox, schema)
    assert [(r[0], r[1], r[2]) for r in stored] == [(1, "stage-0", "ok"), (2, "stage-1", "failed"), (3, "stage-2", "compensated")]
    assert [json.loads(r[6]) for r in stored] == made
    assert stored[0][3] == audit.ZERO_HASH and stored[1][3] == stored[0][4] and stored[2][3] == stored[1][4]
    assert all(r[5] == audit.record_hmac(json.loads(r[6]), "table-key") for r in stored)

    before = rows(sandbox, schema)
    again = run_module(capsys, table_args(sandbox, schema, stage="x", hmac_key="table-key"), check_mode=True, diff=True)
    assert again["seq"] == 4 and again["record"]["prev_hash"] == made[2]["hash"] and rows(sandbox, schema) == before

    verified = run_module(capsys, table_args(sandbox, schema, state="verified", hmac_key="table-key"))
    assert verified.get("failed") is not True, verified
    assert (verified["valid"], verified["records"], verified["last_hash"], verified["append_only"]) == (True, 3, made[2]["hash"], True)
    assert verified["changed"] is False and verified["hmac_checked"] is True
    wrong = run_module(capsys, table_args(sandbox, schema, state="verified", hmac_key="other-key"))
    assert wrong["failed"] is True
    assert wrong["msg"].startswith("audit log %s.audit_log is broken at row 1 (seq 1): hmac_mismatch" % schema)
    refused = run_module(capsys, table_args(sandbox, schema, stage="x"))
    assert refused["failed"] is True and "cannot append without hmac_key" in refused["msg"]

    # both: one record in each store, each its own chain; the table's is the main result.
    path = str(tmp_path / "audit.jsonl")
    both = run_module(capsys, dict(table_args(sandbox, schema, stage="both", hmac_key="table-key"), store="both", path=path))
    assert both.get("failed") is not True, both
    assert both["stores"]["file"]["seq"] == 1 and both["stores"]["table"]["seq"] == 4 and both["seq"] == 4
    assert both["stores"]["file"]["record"]["time"] == both["stores"]["table"]["record"]["time"]
    checked_both = run_module(capsys, dict(table_args(sandbox, schema, state="verified", hmac_key="table-key"), store="both",
                                           path=path))
    assert checked_both["valid"] is True and checked_both["stores"]["file"]["records"] == 1 and checked_both["records"] == 4


def test_missing_table(capsys, sandbox, schema):
    result = run_module(capsys, table_args(sandbox, schema, state="verified"))
    assert result["failed"] is True and "audit table %s.audit_log does not exist (set missing_ok=true" % schema in result["msg"]
    result = run_module(capsys, table_args(sandbox, schema, state="verified", missing_ok=True))
    assert (result["valid"], result["records"], result["append_only"]) == (True, 0, None)


def test_update_delete_truncate_refused_by_the_trigger(capsys, sandbox, schema):
    for stage in ("a", "b"):
        run_module(capsys, table_args(sandbox, schema, stage=stage))
    for query, op in [('UPDATE "%s".audit_log SET outcome = \'failed\' WHERE seq = 1', "UPDATE"),
                      ('DELETE FROM "%s".audit_log WHERE seq = 2', "DELETE"),
                      ('TRUNCATE "%s".audit_log', "TRUNCATE")]:
        # app owns the table the module created; the trigger refuses it anyway.
        error = sql_error(sandbox, query % schema)
        assert "audit log %s.audit_log is append-only: %s refused" % (schema, op) in str(error)
        assert error.pgcode == "42501"
    assert [r[:3] for r in rows(sandbox, schema)] == [(1, "a", "ok"), (2, "b", "ok")]


def tamper(sandbox, schema, *queries):
    """Change rows as a superuser with the triggers disabled (the attack the chain must catch)."""
    sandbox.sql("primary", 'ALTER TABLE "%s".audit_log DISABLE TRIGGER USER' % schema, superuser=True)
    for query in queries:
        sandbox.sql("primary", query % {"t": '"%s".audit_log' % schema}, superuser=True)


def test_changes_made_around_the_trigger_are_detected(capsys, sandbox, audit_db):
    def fresh(count=5):
        name = "sr_audit_tamper_%d_%d" % (os.getpid(), next(_SCHEMAS))
        audit_db.append(name)
        for index in range(count):
            result = run_module(capsys, table_args(sandbox, name, stage="s%d" % (index + 1)))
            assert result.get("failed") is not True, result
        return name

    cases = [
        # the record itself rewritten: its hash no longer matches
        ("UPDATE %(t)s SET record = replace(record, '\"stage\":\"s3\"', '\"stage\":\"sX\"'), stage = 'sX' WHERE seq = 3",
         3, 3, "edited"),
        # only a query column changed: it disagrees with the row's record
        ("UPDATE %(t)s SET outcome = 'refused' WHERE seq = 2", 2, None, "edited"),
        ("DELETE FROM %(t)s WHERE seq = 3", 3, 4, "deleted"),
        ("DELETE FROM %(t)s WHERE seq <= 2", 1, 3, "truncated"),
    ]
    for query, position, seq, reason in cases:
        name = fresh()
        tamper(sandbox, name, query)
        result = run_module(capsys, table_args(sandbox, name, state="verified"))
        assert result["failed"] is True and result["valid"] is False, (query, result)
        assert (result["first_broken"]["position"], result["first_broken"]["reason"]) == (position, reason), (query, result)
        if seq is not None:
            assert result["first_broken"]["seq"] == seq
        assert result["append_only"] is False
        assert "broken at row %d" % position in result["msg"] and reason in result["msg"]
        assert "append-only triggers of %s.audit_log are missing or disabled" % name in json.dumps(result.get("warnings"))
        if reason == "truncated":
            # truncated, then appended to: still found at the first row
            sandbox.sql("primary", 'ALTER TABLE "%s".audit_log ENABLE TRIGGER USER' % name, superuser=True)
            appended = run_module(capsys, table_args(sandbox, name, stage="after"))
            assert appended["seq"] == 6
            again = run_module(capsys, table_args(sandbox, name, state="verified"))
            assert (again["first_broken"]["position"], again["first_broken"]["reason"], again["records"]) == (1, "truncated", 4)
            assert again["append_only"] is True

    # Rows swapped (seq and content moved together, by a superuser): the stored order is by seq,
    # so a swap shows as edited records (seq is inside the hash).
    name = fresh()
    tamper(sandbox, name, "UPDATE %(t)s SET seq = seq + 100 WHERE seq IN (2, 3)",
           "UPDATE %(t)s SET seq = 105 - seq WHERE seq IN (102, 103)")
    result = run_module(capsys, table_args(sandbox, name, state="verified"))
    assert (result["first_broken"]["position"], result["first_broken"]["reason"]) == (2, "edited")
    # Appending to a table whose last record was rewritten is refused.
    name = fresh(2)
    tamper(sandbox, name, "UPDATE %(t)s SET record = replace(record, '\"outcome\":\"ok\"', '\"outcome\":\"approved\"') WHERE seq = 2")
    refused = run_module(capsys, table_args(sandbox, name, stage="x"))
    assert refused["failed"] is True and "does not hash to its hash - it was edited" in refused["msg"]


# --- the privileges script ------------------------------------------------------------------------


def psql(sandbox, *variables, superuser=True):
    import sandbox as sandbox_lib  # scripts/sandbox.py (tests/conftest.py puts it on the path)

    params = sandbox.params("primary", superuser=superuser)
    cmd = [os.path.join(sandbox_lib.find_bindir(sandbox.config), "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
           "-h", str(params["host"]), "-p", str(params["port"]), "-U", params["user"], "-d", params["dbname"]]
    for variable in variables:
        cmd += ["-v", variable]
    cmd += ["-f", SCRIPT]
    env = dict(os.environ, PGPASSWORD=params["password"], PGCONNECT_TIMEOUT="5")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


def definitions(sandbox, schema):
    trigger_defs = sandbox.sql(
        "primary", "SELECT replace(pg_get_triggerdef(t.oid), %s, 'S') FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal ORDER BY t.tgname",
        [schema, schema])
    function = sandbox.sql("primary", "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                                      " WHERE n.nspname = %s AND p.proname = 'audit_log_append_only'", [schema])
    columns = sandbox.sql("primary", "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                                     " WHERE table_schema = %s AND table_name = 'audit_log' ORDER BY ordinal_position", [schema])
    checks = sandbox.sql("primary", "SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
                                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1", [schema])
    return trigger_defs, function, columns, checks


def test_privileges_script(capsys, sandbox, schema, audit_db):
    proc = psql(sandbox, "executor=app", "schema=%s" % schema)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert psql(sandbox, "executor=app", "schema=%s" % schema).returncode == 0  # rerunnable
    owner = sandbox.sql("primary", "SELECT pg_get_userbyid(c.relowner), pg_get_userbyid(n.nspowner) FROM pg_class c"
                                   " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'audit_log'",
                        [schema])
    assert owner == [("postgres", "postgres")]
    grants = sandbox.sql("primary", "SELECT privilege_type FROM information_schema.role_table_grants WHERE grantee = 'app'"
                                    " AND table_schema = %s AND table_name = 'audit_log' ORDER BY 1", [schema])
    assert grants == [("INSERT",), ("SELECT",)]

    # The module appends and verifies with INSERT and SELECT only (the advisory lock needs nothing more).
    for stage in ("one", "two"):
        result = run_module(capsys, table_args(sandbox, schema, stage=stage))
        assert result.get("failed") is not True and result["created"] == {"table": False}, result
    verified = run_module(capsys, table_args(sandbox, schema, state="verified"))
    assert (verified["valid"], verified["records"], verified["append_only"]) == (True, 2, True)

    # app cannot change rows (no privilege), nor disable the triggers (not the owner).
    for query in ('UPDATE "%s".audit_log SET outcome = \'x\'', 'DELETE FROM "%s".audit_log', 'TRUNCATE "%s".audit_log',
                  'ALTER TABLE "%s".audit_log DISABLE TRIGGER USER', 'DROP TABLE "%s".audit_log'):
        error = sql_error(sandbox, query % schema)
        assert error.pgcode == "42501", (query, str(error))
    # The owner (here a superuser) gets the trigger's refusal.
    error = sql_error(sandbox, 'DELETE FROM "%s".audit_log WHERE seq = 1' % schema, superuser=True)
    assert "audit log %s.audit_log is append-only: DELETE refused" % schema in str(error)

    # Same definitions as the table the module creates itself.
    own = "sr_audit_own_%d_%d" % (os.getpid(), next(_SCHEMAS))
    audit_db.append(own)
    run_module(capsys, table_args(sandbox, own, stage="x"))
    theirs, ours = definitions(sandbox, schema), definitions(sandbox, own)
    assert len(theirs[0]) == 2 and len(theirs[3]) == 7
    assert theirs == ours


def test_privileges_script_refusals(sandbox, audit_db):
    owned = "sr_audit_app_owned_%d" % os.getpid()
    audit_db.append(owned)
    sandbox.sql("primary", 'CREATE SCHEMA "%s"' % owned)  # as app: app owns it and could drop any table in it
    proc = psql(sandbox, "executor=app", "schema=%s" % owned)
    assert proc.returncode != 0 and "app owns schema %s" % owned in proc.stdout + proc.stderr
    assert not table_exists(sandbox, owned)
    proc = psql(sandbox, "schema=%s" % owned)
    assert proc.returncode != 0 and "-v executor=ROLE" in proc.stdout + proc.stderr
    proc = psql(sandbox, "executor=postgres", "schema=x")
    assert proc.returncode != 0 and "is a superuser" in proc.stdout + proc.stderr
    proc = psql(sandbox, "executor=no_such_role", "schema=x")
    assert proc.returncode != 0 and "does not exist" in proc.stdout + proc.stderr


# --- concurrency ----------------------------------------------------------------------------------


def spawn(tmp_path, count, args, tag):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".collections"))
    procs = []
    for index in range(count):
        path = tmp_path / ("args-%s-%d.json" % (tag, index))
        path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, stage="writer-%d" % index)}))
        procs.append(subprocess.Popen([sys.executable, MODULE_FILE, str(path)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def collect(procs):
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        results.append(json.loads(out))
    return results


def wait_for(condition, procs, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.05)


def flock_waiters(path):
    inode = os.stat(path).st_ino
    with open("/proc/locks") as handle:
        return sum(1 for line in handle if "->" in line and "FLOCK" in line and line.split()[-3].endswith(":%d" % inode))


def test_concurrent_appenders_keep_one_chain(sandbox, schema, tmp_path):
    """Eight processes append at once, each store held so that all of them wait for the same lock:
    one chain, seq 1..8, no fork, every writer's record present exactly once."""
    count = 8
    # The table: the test holds the appenders' advisory lock until every writer waits for it.
    run_args = table_args(sandbox, schema, hmac_key="k")
    holder = sandbox.connect("primary")
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (audit.LOCK_CLASS, "%s.audit_log" % schema))
        procs = spawn(tmp_path, count, run_args, "table")

        def waiting():
            return sandbox.sql("primary", "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                          " AND wait_event_type = 'Lock'", [APP_NAME])[0][0] == count

        wait_for(waiting, procs, "table writers did not all wait")
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (audit.LOCK_CLASS, "%s.audit_log" % schema))
    finally:
        holder.close()
    results = collect(procs)
    assert sorted(r["seq"] for r in results) == list(range(1, count + 1))
    stored = rows(sandbox, schema)
    assert sorted(r[1] for r in stored) == sorted("writer-%d" % i for i in range(count))
    assert audit.verify_records([json.loads(r[6]) for r in stored], "k").valid

    # The file: the test holds the flock until every writer is blocked on it.
    import fcntl

    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        procs = spawn(tmp_path, count, {"path": str(path), "hmac_key": "k"}, "file")
        if os.path.exists("/proc/locks"):
            wait_for(lambda: flock_waiters(str(path)) == count, procs, "file writers did not all wait")
        else:  # pragma: no cover - not Linux
            time.sleep(3)
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    results = collect(procs)
    assert sorted(r["seq"] for r in results) == list(range(1, count + 1))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["seq"] for r in records] == list(range(1, count + 1))
    assert sorted(r["stage"] for r in records) == sorted("writer-%d" % i for i in range(count))
    assert audit.verify_records(records, "k").valid

    # Both stores at once, no holding: 2 x 8 more writers, still one chain per store.
    both = dict(run_args, store="both", path=str(path))
    results = collect(spawn(tmp_path, count, both, "both-a") + spawn(tmp_path, count, both, "both-b"))
    assert sorted(r["stores"]["table"]["seq"] for r in results) == list(range(count + 1, 3 * count + 1))
    assert sorted(r["stores"]["file"]["seq"] for r in results) == list(range(count + 1, 3 * count + 1))
    assert audit.FileStore(str(path)).verify("k")["valid"] is True
    conn = sandbox.connect("primary")
    try:
        assert audit.TableStore(conn, schema).verify("k")["records"] == 3 * count
        assert audit.TableStore(conn, schema).verify("k")["valid"] is True
    finally:
        conn.close()


# --- through ansible-playbook: file tamper cases and secrets at -vvv ------------------------------


def make_log(path, count, key="file-key"):
    store = audit.FileStore(str(path))
    for index in range(count):
        store.append(audit.new_entry("stage-%d" % (index + 1), details={"n": index + 1})[0], hmac_key=key)
    return path.read_text(encoding="utf-8").splitlines(True)


def test_file_store_through_ansible_playbook(sandbox, schema, tmp_path):
    base = make_log(tmp_path / "base.jsonl", 6)
    logs = {}

    def variant(name, lines):
        path = tmp_path / ("%s.jsonl" % name)
        path.write_text("".join(lines), encoding="utf-8")
        logs[name] = str(path)

    variant("intact", base)
    variant("edited", base[:2] + [base[2].replace('"stage":"stage-3"', '"stage":"stage-X"')] + base[3:])
    variant("deleted", base[:3] + base[4:])
    variant("reordered", base[:1] + [base[2], base[1]] + base[3:])
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("".join(base[2:]), encoding="utf-8")
    audit.FileStore(str(truncated)).append(audit.new_entry("after truncation")[0], hmac_key="file-key")
    logs["truncated"] = str(truncated)
    variant("cut", base[:5] + [base[5][:40]])
    shutil.copy(logs["intact"], str(tmp_path / "to-append.jsonl"))
    logs["to_append"] = str(tmp_path / "to-append.jsonl")

    secret_key, secret_password = "hmac-key-never-shown-7f3a", sandbox.primary["password"]
    assert secret_password  # the sandbox's app password
    tasks = [
        ("intact", {"state": "verified", "path": logs["intact"], "hmac_key": "file-key"}),
        ("edited", {"state": "verified", "path": logs["edited"]}),
        ("deleted", {"state": "verified", "path": logs["deleted"]}),
        ("reordered", {"state": "verified", "path": logs["reordered"]}),
        ("truncated", {"state": "verified", "path": logs["truncated"]}),
        ("wrong_key", {"state": "verified", "path": logs["intact"], "hmac_key": "not-the-file-key"}),
        ("cut", {"state": "verified", "path": logs["cut"]}),
        ("append_to_cut", {"path": logs["cut"], "stage": "x", "hmac_key": "file-key"}),
        ("missing", {"state": "verified", "path": str(tmp_path / "absent.jsonl")}),
        ("appended", dict(conn_options(sandbox), store="both", path=logs["to_append"], journal_schema=schema, stage="deploy",
                          hmac_key="file-key", run="r-1", playbook="audit.yml",
                          details={"api_token": "tok-never-shown", "image": "web@sha256:" + "1" * 64},
                          inputs={"login_password": secret_password})),
        ("signed_table", dict(conn_options(sandbox), store="table", journal_schema=schema + "_signed", stage="deploy",
                              hmac_key=secret_key)),
        ("verified_both", dict(conn_options(sandbox), state="verified", store="both", path=logs["to_append"],
                               journal_schema=schema, hmac_key="file-key")),
    ]
    body = []
    for key, args in tasks:
        body.append({"name": key, "stateful.rollback.audit_log": args, "register": key, "ignore_errors": True})
    out = tmp_path / "results.json"
    body.append({"name": "Save the results", "ansible.builtin.copy": {
        "dest": str(out), "mode": "0600",
        "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (k, k) for k, dummy in tasks)}})
    playbook = tmp_path / "audit.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": body}], sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    try:
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-vvv", str(playbook)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    finally:
        sandbox.sql("primary", 'DROP SCHEMA IF EXISTS "%s" CASCADE' % (schema + "_signed"), superuser=True)
    output = proc.stdout + proc.stderr
    assert out.exists(), output[-5000:]
    results = json.loads(out.read_text())

    assert results["intact"]["valid"] is True and results["intact"]["records"] == 6 and results["intact"]["hmac_checked"]
    expected = {
        "edited": (3, 3, "edited"),
        "deleted": (4, 5, "deleted"),
        "reordered": (2, 3, "reordered"),
        "truncated": (1, 3, "truncated"),
        "wrong_key": (1, 1, "hmac_mismatch"),
        "cut": (6, None, "incomplete"),
    }
    for key, (position, seq, reason) in expected.items():
        result = results[key]
        assert result["failed"] is True and result["valid"] is False, (key, result)
        broken = result["first_broken"]
        assert (broken["position"], broken["seq"], broken["reason"]) == (position, seq, reason), (key, broken)
        assert result["msg"].startswith("audit log %s is broken at line %d" % (logs.get(key, logs["intact"]), position)), result["msg"]
    assert "cannot append to %s: its last line (6) does not end with a newline" % logs["cut"] in results["append_to_cut"]["msg"]
    assert "does not exist (set missing_ok=true" in results["missing"]["msg"]
    appended = results["appended"]
    assert appended.get("failed") is not True, appended
    assert appended["stores"]["file"]["seq"] == 7 and appended["stores"]["table"]["seq"] == 1
    assert appended["record"]["details"] == {"image": "web@sha256:" + "1" * 64}
    assert results["signed_table"]["record"]["hmac"] and results["verified_both"]["valid"] is True

    # -vvv shows results and invocations: neither the HMAC key nor the login password, nor stripped values.
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in output  # the invocation is shown, with the secrets masked
    for secret in (secret_key, secret_password, "tok-never-shown"):
        assert secret not in output, secret
        assert secret not in out.read_text()
        for path in logs.values():
            assert secret not in open(path, encoding="utf-8").read()
