#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: schema_compat_check
short_description: Prove a PostgreSQL migration is safe while the old app version runs, and that it can be rolled back
version_added: 0.1.0
description:
  - Answers, before a change reaches production, whether a migration can run online while the previous application
    version keeps serving, and whether it can be undone without losing data.
  - Static analysis parses the migration with pglast (libpg_query, the PostgreSQL parser itself) and reports findings in
    five categories. C(breaks_old_app) - drop or rename of a column, table, view, function or enum value the old app
    uses, NOT NULL without a default, narrowing or incompatible type changes. C(blocking_lock) - statements holding
    ACCESS EXCLUSIVE or SHARE locks on existing tables for longer than a catalog update, and a missing C(lock_timeout).
    C(table_rewrite) - statements that rewrite a table, but not those PostgreSQL 11 and later run without a rewrite.
    C(data_loss) - DROP TABLE or COLUMN, TRUNCATE, DELETE or UPDATE without WHERE, lossy type changes.
    C(non_transactional) - statements that cannot run in a transaction block, whose failure cannot be rolled back.
  - Live analysis measures on a real server without ever changing it. By default (O(scratch=always)) the migration
    runs in a scratch database made on the same server from the target's schema (no rows) and dropped afterwards, so
    nothing on the target is locked and the time does not grow with table sizes; table sizes come from the target's
    statistics. With O(scratch=auto) it runs on the target itself in a transaction that is always rolled back (a
    scratch database only for statements that cannot run in a transaction). Per statement it records the locks held on
    pre-existing relations, whether a table was rewritten (its relfilenode changed) or scanned, and the duration; the
    old app's queries are prepared against the migrated schema; the rollback script is applied after the migration in
    a scratch database and the schema compared with the original.
  - A live measurement overrides a static guess; each finding says whether it is C(static), C(live) or C(static+live),
    and overridden static findings are returned apart.
author:
  - stateful.rollback maintainers (@stateful-rollback)
extends_documentation_fragment:
  - stateful.rollback.postgres
attributes:
  check_mode:
    support: full
    description: The module never changes the target, so check mode runs the full analysis.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
options:
  migration:
    description: Path of the migration (up) SQL file. One of O(migration) and O(migration_sql) is required.
    type: path
  migration_sql:
    description: The migration SQL itself.
    type: str
  rollback:
    description: Path of the rollback (down) SQL file. Without a rollback, RV(reversible) is null.
    type: path
  rollback_sql:
    description: The rollback SQL itself.
    type: str
  old_queries:
    description:
      - Path of a file with the statements the running (old) app version issues, separated by semicolons; C($1)
        parameters are allowed.
    type: path
  old_queries_sql:
    description: The old app's statements themselves.
    type: str
  old_queries_from:
    description:
      - Where the old app's statements come from. V(pg_stat_statements) reads the most called statements from the
        target's C(pg_stat_statements) view (live mode only).
    type: str
    choices: [ file, pg_stat_statements ]
    default: file
  mode:
    description:
      - V(static) analyzes the SQL alone; V(live) also measures on the server given by the connection options.
      - Default is V(live) when O(login_host), O(login_unix_socket) or O(login_db) is set, else V(static).
    type: str
    choices: [ static, live ]
  server_version:
    description:
      - Server version the static rules assume when there is no connection, as C(server_version_num) (150000 for 15).
        In live mode the target's version is used.
    type: int
    default: 150000
  large_table_rows:
    description:
      - Tables with at least this many rows (the target's statistics) make blocking statements an error; below it they
        are a warning. Without statistics (static mode) an existing table counts as large.
    type: int
    default: 100000
  fail_on:
    description:
      - Severities (V(error), V(warning)) and/or categories (V(breaks_old_app), V(blocking_lock), V(table_rewrite),
        V(data_loss), V(non_transactional)) whose findings make the module fail. Info findings never do.
    type: list
    elements: str
    default: [ error ]
  ignore_rules:
    description: Rule ids to leave out (the C(rule) of RV(findings)).
    type: list
    elements: str
    default: []
  schema:
    description:
      - Path of the target's current schema as SQL (for example C(pg_dump --schema-only) output). In static mode it gives
        the rules the current column types, so a type change is classified exactly (widening or narrowing). In live
        mode the types are read from the server.
    type: path
  schema_sql:
    description: The current schema as SQL text, instead of O(schema).
    type: str
  scratch:
    description:
      - Where live analysis runs the migration. V(always) - in a scratch database with the target's schema and no rows,
        catalog work only, no lock taken on the target's tables. V(auto) - on the target in a transaction that is
        always rolled back, measuring against the real rows; a statement that rewrites, indexes or validates a table
        then does that work and holds its lock on the target while it runs (bounded by O(timeout)). Meant for a
        staging copy.
      - The rollback round trip always runs in a scratch database. A scratch database needs the CREATEDB privilege.
    type: str
    choices: [ auto, always ]
    default: always
  timeout:
    description:
      - Seconds a measured statement may run before it is reported as too slow. A lock wait is cut at the smaller of 5
        seconds and half of this, so the analysis never queues the target's traffic behind it.
    type: int
    default: 300
notes:
  - Without a connection the module needs only pglast. Live analysis needs psycopg2, and C(pg_dump) and C(psql) on the
    host the module runs on when a scratch database is used.
  - The same analysis runs without Ansible, for a pre-merge pipeline, through C(scripts/schema-compat-check) in this
    collection, which prints the same result as JSON.
"""

EXAMPLES = r"""
- name: Lint a migration in a pre-merge pipeline (no database)
  stateful.rollback.schema_compat_check:
    migration: migrations/0042_add_status.up.sql
    rollback: migrations/0042_add_status.down.sql
    server_version: 150000

- name: Measure it against a staging copy, with the queries the running version issues
  stateful.rollback.schema_compat_check:
    migration: migrations/0042_add_status.up.sql
    rollback: migrations/0042_add_status.down.sql
    old_queries: app/queries-v1.41.sql
    login_host: db-staging.internal
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app
    fail_on: [error, data_loss]
  register: compat

- name: Take the old app's queries from pg_stat_statements and only report
  stateful.rollback.schema_compat_check:
    migration_sql: "ALTER TABLE orders RENAME COLUMN note TO remark"
    old_queries_from: pg_stat_statements
    login_host: db-staging.internal
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app
    fail_on: []
"""

RETURN = r"""
compatible:
  description: True when no finding of severity error is in breaks_old_app, blocking_lock, table_rewrite or data_loss.
  returned: success or policy failure
  type: bool
  sample: false
reversible:
  description: Whether up then down gives back the original schema (live mode), null without a rollback or live run.
  returned: success or policy failure
  type: bool
  sample: true
mode:
  description: V(static) or V(live).
  returned: always
  type: str
  sample: live
live_mode:
  description: How live analysis applied the migration, C(transaction) (rolled back) or C(scratch) (scratch database).
  returned: in live mode
  type: str
  sample: transaction
server_version:
  description: Server version the rules used.
  returned: success or policy failure
  type: int
  sample: 150018
findings:
  description:
    - Each with C(rule), C(category), C(severity), C(statement), C(statement_index), C(line), C(message) (what is
      wrong and the safe alternative), C(table), C(source) (static, live or static+live) and, when measured, C(measured).
  returned: success or policy failure
  type: list
  elements: dict
  sample:
    - rule: add-constraint-validates
      category: blocking_lock
      severity: error
      statement: ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)
      statement_index: 1
      line: 4
      message: validates every row under a SHARE ROW EXCLUSIVE lock; add the constraint NOT VALID, then VALIDATE CONSTRAINT in a separate transaction
      table: public.orders
      source: static+live
overridden_findings:
  description: Static findings a live measurement disproved, with C(measured) saying what was measured.
  returned: success or policy failure
  type: list
  elements: dict
summary:
  description: Number of error and warning findings per category.
  returned: success or policy failure
  type: dict
  sample: {breaks_old_app: 0, blocking_lock: 1, table_rewrite: 0, data_loss: 0, non_transactional: 0}
statements:
  description:
    - Per statement C(index), C(line), C(text), C(kind), C(transactional), C(tables), and in live mode C(locks)
      (C(relation), C(mode), C(preexisting)), C(rewritten), C(duration_ms), C(error).
  returned: success or policy failure
  type: list
  elements: dict
incompatible_queries:
  description: Old app statements that fail against the migrated schema, each with C(query) and the server's C(error).
  returned: success or policy failure
  type: list
  elements: dict
  sample: [{query: "SELECT note FROM orders WHERE id = $1", error: "column \"note\" does not exist"}]
invalid_old_queries:
  description: Old app statements that already fail against the current schema (not blamed on the migration).
  returned: when there are some
  type: list
  elements: dict
schema_diff:
  description: What does not round-trip through up and down, as C(added), C(removed) and C(changed) schema objects.
  returned: success or policy failure
  type: dict
  sample: {added: ["index public.orders_status_idx"], removed: [], changed: []}
seconds:
  description: Wall-clock time of the analysis.
  returned: success or policy failure
  type: float
  sample: 0.42
"""

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import postgres_common_argument_spec

try:
    from ansible_collections.stateful.rollback.plugins.module_utils.compat_runner import CompatFailure, run

    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(
        migration=dict(type="path"),
        migration_sql=dict(type="str"),
        rollback=dict(type="path"),
        rollback_sql=dict(type="str"),
        old_queries=dict(type="path"),
        old_queries_sql=dict(type="str"),
        old_queries_from=dict(type="str", default="file", choices=["file", "pg_stat_statements"]),
        mode=dict(type="str", choices=["static", "live"]),
        server_version=dict(type="int", default=150000),
        large_table_rows=dict(type="int", default=100000),
        fail_on=dict(type="list", elements="str", default=["error"]),
        ignore_rules=dict(type="list", elements="str", default=[]),
        schema=dict(type="path"),
        schema_sql=dict(type="str"),
        scratch=dict(type="str", default="always", choices=["auto", "always"]),
        timeout=dict(type="int", default=300),
    )
    return spec


def main():
    module = ansible_module(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[
            ("migration", "migration_sql"),
            ("rollback", "rollback_sql"),
            ("old_queries", "old_queries_sql"),
            ("schema", "schema_sql"),
        ],
        required_one_of=[("migration", "migration_sql")],
    )
    if IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("pglast"), exception=IMPORT_ERROR)
    for name in ("large_table_rows", "timeout"):
        if module.params[name] < 1:
            module.fail_json(msg="%s must be a positive number, got %s" % (name, module.params[name]))
    if module.params["server_version"] < 90600:
        module.fail_json(msg="server_version is server_version_num, e.g. 150000 for PostgreSQL 15; got %s" % module.params["server_version"])
    try:
        result = run(module.params, check_mode=module.check_mode)
    except CompatFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
