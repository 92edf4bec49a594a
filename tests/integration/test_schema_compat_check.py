# -*- coding: utf-8 -*-
"""schema_compat_check as operators and pipelines run it: through ansible-playbook
(FQCN, live on the sandbox primary) and through scripts/schema-compat-check (JSON)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
CORPUS = os.path.join(REPO, "tests", "data", "migrations")
CLI = os.path.join(REPO, "scripts", "schema-compat-check")


def env():
    out = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    out.pop("PGPASSWORD", None)
    return out


def cli(*args):
    proc = subprocess.run([CLI] + list(args), cwd=REPO, env=env(), capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


def test_cli_static_unsafe_safe_and_bad_input():
    rc, out, err = cli("--migration", os.path.join(CORPUS, "017-create-index", "up.sql"))
    assert rc == 1 and out["failed"] is True and out["compatible"] is False, err
    assert "create-index-non-concurrent" in [f["rule"] for f in out["findings"]]
    rc, out, err = cli("--migration", os.path.join(CORPUS, "018-create-index-concurrently", "up.sql"))
    assert rc == 0 and out["failed"] is False and out["compatible"] is True, err
    rc, out, err = cli("--migration", "/no/such.sql")
    assert rc == 2 and out["msg"] == "migration file /no/such.sql does not exist"
    assert "Traceback" not in err


def test_cli_live_measures_and_leaves_the_target_unchanged(sandbox):
    admin = sandbox.superuser("primary")
    before = sandbox.sql("primary", "SELECT count(*) FROM pg_catalog.pg_database")[0][0]
    schema_before = sandbox.sql("primary", "SELECT md5(string_agg(column_name || data_type, ',' ORDER BY table_name, column_name)) "
                                           "FROM information_schema.columns WHERE table_schema = 'public'")
    with_pw = dict(env(), PGPASSWORD=admin["password"])
    proc = subprocess.run(
        [CLI, "--migration-sql",
         "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,2);\nALTER TABLE orders ALTER COLUMN amount TYPE integer USING amount::integer;",
         "--rollback-sql", "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2);",
         "--old-queries", os.devnull, "--login-host", admin["host"], "--login-port", str(admin["port"]),
         "--login-user", admin["user"], "--login-db", "app", "--fail-on", "error"],
        cwd=REPO, env=with_pw, capture_output=True, text=True, timeout=300, check=False,
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["mode"] == "live" and out["live_mode"] == "scratch", proc.stderr
    rules = set(f["rule"] for f in out["findings"])
    assert rules & {"narrow-column-type", "incompatible-column-type"} and "lossy-type-change" in rules
    assert out["statements"][0]["rewritten"] == []  # numeric precision widened: no rewrite, measured
    assert "public.orders" in out["statements"][1]["rewritten"]  # numeric -> integer: rewritten, measured
    assert out["reversible"] is False  # the cents do not come back
    assert admin["password"] not in proc.stdout + proc.stderr
    # Nothing stayed behind on the target.
    assert sandbox.sql("primary", "SELECT count(*) FROM pg_catalog.pg_database")[0][0] == before
    assert sandbox.sql("primary", "SELECT md5(string_agg(column_name || data_type, ',' ORDER BY table_name, column_name)) "
                                  "FROM information_schema.columns WHERE table_schema = 'public'") == schema_before


def test_playbook_live_check_with_pg_stat_statements(sandbox, tmp_path):
    admin = sandbox.superuser("primary")
    # The old app's traffic, recorded by pg_stat_statements on the sandbox primary. Start
    # from an empty record: queries of earlier tests would crowd the failure message.
    sandbox.sql("primary", "SELECT pg_stat_statements_reset()", superuser=True)
    sandbox.sql("primary", "SELECT id, amount, status FROM orders WHERE customer_id = 7")
    playbook = tmp_path / "compat.yml"
    playbook.write_text(textwrap.dedent("""\
        - hosts: localhost
          gather_facts: false
          module_defaults:
            group/stateful.rollback.postgres:
              login_host: {host}
              login_port: {port}
              login_user: {user}
              login_password: {password}
              login_db: app
          tasks:
            - name: A rename the old app's recorded queries still use
              stateful.rollback.schema_compat_check:
                migration_sql: "SET lock_timeout = '2s'; ALTER TABLE orders RENAME COLUMN status TO state;"
                rollback_sql: "SET lock_timeout = '2s'; ALTER TABLE orders RENAME COLUMN state TO status;"
                old_queries_from: pg_stat_statements
                fail_on: []
              register: rename
            - name: The same check in check mode fails by the default policy
              stateful.rollback.schema_compat_check:
                migration_sql: "ALTER TABLE orders RENAME COLUMN status TO state;"
                old_queries_from: pg_stat_statements
              check_mode: true
              register: strict
              ignore_errors: true
            - name: Show what was measured
              ansible.builtin.assert:
                that:
                  - not rename.changed
                  - not rename.compatible
                  - rename.reversible
                  - rename.old_queries_from_pg_stat_statements > 0
                  - rename.incompatible_queries | selectattr('query', 'search', 'status') | list | length > 0
                  - strict.failed
                  - "'rename-column' in strict.msg"
        """).format(**admin))
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(playbook), "-v"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert admin["password"] not in proc.stdout
    assert sandbox.sql("primary", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'status'")[0][0] == 1


def test_role_without_createdb_gets_a_clear_error(sandbox):
    from ansible_collections.stateful.rollback.plugins.module_utils.compat_runner import CompatFailure, run  # pylint: disable=import-outside-toplevel

    app = sandbox.primary
    with pytest.raises(CompatFailure) as err:
        run(dict(migration_sql="ALTER TABLE orders ADD COLUMN x int;", login_host=app["host"], login_port=int(app["port"]),
                 login_user=app["user"], login_password=app["password"], login_db=app["dbname"]))
    assert "may not create databases" in err.value.msg and "CREATEDB" in err.value.msg
    assert app["password"] not in err.value.msg
