#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: replication_parity
short_description: Prove PostgreSQL replicas are healthy and hold the primary's data, or that a database equals a baseline
version_added: 0.1.0
description:
  - Before and after any change, proves that physical standbys and logical subscribers are healthy and hold exactly
    the data of the primary, and that a restored database equals the fingerprint captured before the change.
  - O(mode=health) reports per replica its kind (physical or logical), state and replay lag in bytes and seconds, for
    logical subscribers the subscription state and each table's sync state, and the primary's replication slots with
    the WAL they retain. It fails when a replica is not streaming or passes O(max_lag_bytes) / O(max_lag_seconds).
  - O(mode=parity) compares each table by key-range chunk hashes computed on the servers (one scan per node, all nodes
    at once), then bisects differing chunks down to the exact keys missing on, extra on, or different on each replica,
    bounded by O(max_differences).
  - Parity is consistent under concurrent writes. A chunk or key that differs is read again in order (the primary
    first, then the replica once it has applied the primary's WAL position of that read), and only what differs every
    time is reported. A replica that cannot catch up within O(settle_timeout) fails the module as C(not confirmed);
    it is never reported as in sync and its transient differences are never reported as data differences.
  - O(mode=baseline_capture) fingerprints a database (schema objects, per-table row counts and chunk hashes, and row
    hashes for tables up to O(baseline_row_limit) rows); O(mode=baseline_compare) compares any database with it.
  - O(invariants), in any mode, checks that keys are unique, sequences are ahead of the columns they feed, foreign keys
    (validated or NOT VALID) have no orphans, and counts rows.
  - The module only reads databases. In check mode it runs fully, except that a baseline file is not written.
author:
  - stateful.rollback maintainers (@stateful-rollback)
extends_documentation_fragment:
  - stateful.rollback.postgres
attributes:
  check_mode:
    support: full
    description: Everything is read-only; O(baseline_path) is not written in check mode.
  diff_mode:
    support: none
    description: Nothing is changed on a database, so there is nothing to diff.
options:
  mode:
    description:
      - What to do. See the description.
    type: str
    default: parity
    choices: [ health, parity, baseline_capture, baseline_compare ]
  replicas:
    description:
      - The replicas to check, physical standbys and logical subscribers alike.
      - Each entry takes the same connection options as the primary; what an entry leaves out is taken from the
        primary's options (user, password, database, SSL settings).
      - Required for O(mode=health) and O(mode=parity).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name used in results and messages. Defaults to C(host:port).
        type: str
      subscription:
        description: For a logical subscriber with several subscriptions, the one fed by this primary.
        type: str
      login_user:
        description: Role to connect as.
        type: str
        aliases: [ login ]
      login_password:
        description: Password of O(replicas[].login_user).
        type: str
      login_host:
        description: Host of the replica.
        type: str
        aliases: [ host ]
      login_unix_socket:
        description: Unix socket directory of the replica.
        type: str
        aliases: [ unix_socket ]
      login_port:
        description: Port of the replica.
        type: int
        aliases: [ port ]
      login_db:
        description: Database on the replica.
        type: str
        aliases: [ db ]
      ssl_mode:
        description: libpq C(sslmode).
        type: str
        choices: [ allow, disable, prefer, require, verify-ca, verify-full ]
      ca_cert:
        description: Certificate authorities file.
        type: str
        aliases: [ ssl_rootcert ]
      ssl_cert:
        description: Client certificate file.
        type: path
      ssl_key:
        description: Client private key file.
        type: path
      connect_timeout:
        description: Seconds to wait for a connection.
        type: int
      connect_params:
        description: Further libpq parameters.
        type: dict
  tables:
    description:
      - Tables to compare or capture, as C(table) (schema C(public)) or C(schema.table); parts may be double-quoted.
      - Default is every user table (not in system schemas, not owned by an extension).
    type: list
    elements: str
  exclude_tables:
    description: Tables left out.
    type: list
    elements: str
    default: []
  exclude_schemas:
    description: Schemas left out when O(tables) is not given.
    type: list
    elements: str
    default: []
  key_columns:
    description:
      - "Key columns per table, for tables without a primary key, as C({table: [col, ...]})."
      - Without it the key is the primary key, or else a unique index whose columns are all NOT NULL.
    type: dict
    default: {}
  on_missing_key:
    description:
      - What to do with a table that has no key. V(fail) stops with an error naming it; V(skip) leaves it out;
        V(table_hash) compares its whole content as a multiset of rows, which tells that it differs but cannot
        name the rows.
    type: str
    default: fail
    choices: [ fail, skip, table_hash ]
  chunk_size:
    description: Rows per chunk of the first comparison pass.
    type: int
    default: 10000
  leaf_rows:
    description: Bisection stops at ranges of at most this many rows and compares them row by row.
    type: int
    default: 1000
  bisect_factor:
    description: Pieces a differing range is cut into at each bisection step.
    type: int
    default: 16
  max_differences:
    description: Stop after this many differing keys per replica (or per baseline comparison); results say C(truncated).
    type: int
    default: 100
  settle_timeout:
    description: Seconds a replica is given to apply the primary's position before a re-read.
    type: float
    default: 30
  confirm_rounds:
    description: Re-reads of a differing chunk or key; only what differs every time is reported.
    type: int
    default: 3
  fail_on_difference:
    description: Fail when replicas (or the database compared with a baseline) differ. When false, only report.
    type: bool
    default: true
  max_lag_bytes:
    description: In O(mode=health), fail when a replica is more than this many bytes of WAL behind.
    type: int
  max_lag_seconds:
    description: In O(mode=health), fail when a replica's replay lag exceeds this many seconds.
    type: float
  max_slot_retained_bytes:
    description: In O(mode=health), fail when a replication slot retains more WAL than this.
    type: int
  baseline_path:
    description:
      - File of the fingerprint. Written by O(mode=baseline_capture) (atomically, and only when the content changed),
        read by O(mode=baseline_compare). The path is on the host the module runs on.
    type: path
  baseline:
    description: A fingerprint returned earlier by O(mode=baseline_capture), instead of O(baseline_path).
    type: dict
  baseline_row_limit:
    description:
      - Tables with at most this many rows keep every row's key and hash in the baseline, so a comparison names the
        exact keys; larger tables are compared per chunk and report the differing key ranges.
    type: int
    default: 100000
  return_baseline:
    description: Return the fingerprint as RV(baseline). Defaults to true when O(baseline_path) is not given.
    type: bool
  invariants:
    description: Invariant checks to run on the primary (or the database compared with a baseline) over O(tables).
    type: list
    elements: str
    default: []
    choices: [ all, unique_keys, sequences, foreign_keys, row_counts ]
  progress_log:
    description: File to which progress events are appended as JSON lines (tables done, rows, rate), for long comparisons.
    type: path
notes:
  - Row hashes are computed over the text form of the columns both nodes have with the same type, under fixed session
    settings (UTC, ISO dates, full float precision), so servers with different C(TimeZone) or C(DateStyle) compare equal.
  - Replication position of a logical subscriber is read from its replication origin, C(pg_stat_subscription) and the
    primary's slot; the checking role needs C(pg_monitor) and SELECT on the tables, nothing more.
seealso:
  - name: PostgreSQL replication monitoring
    description: Views used by O(mode=health).
    link: https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-REPLICATION-VIEW
"""

EXAMPLES = r"""
- name: Check that the standby and the subscriber stream and lag little
  stateful.rollback.replication_parity:
    mode: health
    login_host: db-primary.internal
    login_user: checker
    login_password: "{{ checker_password }}"
    login_db: app
    max_lag_bytes: 16777216
    max_lag_seconds: 30
    replicas:
      - name: standby
        login_host: db-standby.internal
      - name: reporting
        login_host: db-reporting.internal

- name: Prove both replicas hold exactly the primary's data
  stateful.rollback.replication_parity:
    mode: parity
    login_host: db-primary.internal
    login_user: checker
    login_password: "{{ checker_password }}"
    login_db: app
    replicas:
      - {name: standby, login_host: db-standby.internal}
      - {name: reporting, login_host: db-reporting.internal}
    exclude_tables: [public.audit_events]
    max_differences: 50
  register: parity

- name: Fingerprint the database before the release
  stateful.rollback.replication_parity:
    mode: baseline_capture
    login_host: db-primary.internal
    login_user: checker
    login_password: "{{ checker_password }}"
    login_db: app
    baseline_path: /var/lib/stateful-rollback/app-1.4.2.baseline.json
    invariants: [all]

- name: After a rollback, prove the restored database equals the baseline
  stateful.rollback.replication_parity:
    mode: baseline_compare
    login_host: db-primary.internal
    login_user: checker
    login_password: "{{ checker_password }}"
    login_db: app
    baseline_path: /var/lib/stateful-rollback/app-1.4.2.baseline.json
"""

RETURN = r"""
mode:
  description: The mode that ran.
  returned: always
  type: str
  sample: parity
in_sync:
  description:
    - O(mode=parity) true when every replica holds the primary's data, false when one differs, null when a replica
      could not be confirmed. O(mode=baseline_compare) true when the database equals the baseline.
  returned: when mode is parity or baseline_compare
  type: bool
  sample: true
healthy:
  description: O(mode=health) true when every replica streams within the thresholds.
  returned: when mode is health
  type: bool
  sample: true
difference_count:
  description: Differing keys found over all replicas and tables.
  returned: when mode is parity
  type: int
  sample: 3
primary:
  description: The primary as seen by the module.
  returned: always
  type: dict
  sample: {connection: "checker@db-primary:5432/app", server_version: 150018, in_recovery: false, lsn: "0/3A2B1C8"}
tables:
  description: The tables compared, captured or checked.
  returned: when tables were selected
  type: list
  elements: str
  sample: [public.customers, public.orders]
replicas:
  description:
    - Per replica. In O(mode=health) C(name), C(kind), C(state), C(streaming), C(lag_bytes), C(lag_seconds),
      C(healthy), C(problems), and for physical standbys C(replay_lsn), C(replay_paused), for logical subscribers
      C(subscriptions) with each table's sync state.
    - In O(mode=parity) C(name), C(kind), C(in_sync), C(difference_count), C(tables_differing) and C(tables) with,
      per table, C(rows_primary), C(rows_replica), C(chunks), C(chunks_differing), C(truncated), C(seconds),
      C(status) (one of in_sync, differs, missing_on_replica, not_confirmed, skipped) and C(differences), whose
      C(missing_on_replica), C(extra_on_replica) and C(different) list keys as column-value dicts.
  returned: when mode is health or parity
  type: list
  elements: dict
  sample:
    - name: subscriber
      kind: logical
      in_sync: false
      difference_count: 1
      tables_differing: [public.orders]
      tables:
        - table: public.orders
          rows_primary: 5000
          rows_replica: 4999
          chunks: 1
          chunks_differing: 1
          differences: {missing_on_replica: [{id: 42}], extra_on_replica: [], different: []}
          truncated: false
          status: differs
slots:
  description: Replication slots on the primary with C(retained_bytes) of WAL, C(active), C(wal_status) and C(problems).
  returned: when mode is health
  type: list
  elements: dict
  sample: [{name: standby_slot, type: physical, active: true, retained_bytes: 16384, wal_status: reserved, problems: []}]
fingerprint:
  description: Summary of a captured baseline.
  returned: when mode is baseline_capture
  type: dict
  sample: {schema_sha256: "9f2c...", tables: {public.orders: 5000}}
baseline:
  description: The full fingerprint, to pass back as O(baseline).
  returned: when mode is baseline_capture and return_baseline is true
  type: dict
baseline_path:
  description: Where the fingerprint was written.
  returned: when mode is baseline_capture and baseline_path is set
  type: str
  sample: /var/lib/stateful-rollback/app-1.4.2.baseline.json
comparison:
  description:
    - Result of O(mode=baseline_compare). C(schema) lists the objects C(added), C(removed) and C(changed);
      C(tables) per table C(rows_baseline), C(rows_now), C(status), C(differing_ranges) and C(differences)
      (C(missing), C(extra), C(different) keys when the baseline holds row hashes).
  returned: when mode is baseline_compare
  type: dict
invariants:
  description:
    - Per check the findings (C(unique_keys), C(sequences), C(foreign_keys), C(row_counts)), C(ok) and C(violations).
  returned: when invariants is set
  type: dict
  sample: {ok: false, violations: ["sequence public.orders_id_seq is behind public.orders.id: next value 10, column max 5000"]}
rows_compared:
  description: Rows read on the primary (or the compared database).
  returned: always
  type: int
  sample: 2000000
rows_per_second:
  description: Rows compared per second of the whole run.
  returned: always
  type: int
  sample: 812345
timings:
  description: Wall-clock seconds.
  returned: always
  type: dict
  sample: {total_seconds: 2.46}
"""

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module, progress_writer

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    HAS_PSYCOPG2,
    PSYCOPG2_IMP_ERR,
    postgres_common_argument_spec,
    replica_argument_spec,
)

try:
    from ansible_collections.stateful.rollback.plugins.module_utils.parity_runner import ParityFailure, run

    RUNNER_IMP_ERR = None
except ImportError:  # pragma: no cover - only without psycopg2
    RUNNER_IMP_ERR = traceback.format_exc()

POSITIVE = ("chunk_size", "leaf_rows", "max_differences", "confirm_rounds", "baseline_row_limit")
NON_NEGATIVE = ("settle_timeout", "max_lag_bytes", "max_lag_seconds", "max_slot_retained_bytes")


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(
        mode=dict(type="str", default="parity", choices=["health", "parity", "baseline_capture", "baseline_compare"]),
        replicas=dict(type="list", elements="dict", default=[], options=replica_argument_spec()),
        tables=dict(type="list", elements="str"),
        exclude_tables=dict(type="list", elements="str", default=[]),
        exclude_schemas=dict(type="list", elements="str", default=[]),
        key_columns=dict(type="dict", default={}, no_log=False),
        on_missing_key=dict(type="str", default="fail", choices=["fail", "skip", "table_hash"]),
        chunk_size=dict(type="int", default=10000),
        leaf_rows=dict(type="int", default=1000),
        bisect_factor=dict(type="int", default=16),
        max_differences=dict(type="int", default=100),
        settle_timeout=dict(type="float", default=30),
        confirm_rounds=dict(type="int", default=3),
        fail_on_difference=dict(type="bool", default=True),
        max_lag_bytes=dict(type="int"),
        max_lag_seconds=dict(type="float"),
        max_slot_retained_bytes=dict(type="int"),
        baseline_path=dict(type="path"),
        baseline=dict(type="dict"),
        baseline_row_limit=dict(type="int", default=100000),
        return_baseline=dict(type="bool"),
        invariants=dict(
            type="list", elements="str", default=[],
            choices=["all", "unique_keys", "sequences", "foreign_keys", "row_counts"],
        ),
        progress_log=dict(type="path"),
    )
    return spec


def validate(module):
    params = module.params
    for name in POSITIVE:
        if params.get(name) is not None and params[name] < 1:
            module.fail_json(msg="%s must be a positive number, got %s" % (name, params[name]))
    for name in NON_NEGATIVE:
        if params.get(name) is not None and params[name] < 0:
            module.fail_json(msg="%s must not be negative, got %s" % (name, params[name]))
    if params["bisect_factor"] < 2:
        module.fail_json(msg="bisect_factor must be at least 2, got %s" % params["bisect_factor"])
    for table, cols in params["key_columns"].items():
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
            module.fail_json(msg="key_columns[%s] must be a non-empty list of column names" % table)
    for index, entry in enumerate(params["replicas"]):
        if not entry.get("login_host") and not entry.get("login_unix_socket") and not entry.get("login_port"):
            module.fail_json(msg="replicas[%d] needs login_host, login_unix_socket or login_port" % index)


def log_progress(module):
    def on_event(event):
        if event.get("event") == "progress":
            module.log("replication_parity: %(tables_done)s/%(tables)s tables, %(rows)s rows" % event)
    return on_event


def main():
    module = ansible_module(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("baseline", "baseline_path")],
    )
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMP_ERR)
    if RUNNER_IMP_ERR:
        module.fail_json(msg="cannot load the parity engine", exception=RUNNER_IMP_ERR)
    validate(module)
    try:
        result = run(module.params, check_mode=module.check_mode, progress=progress_writer(module, log_progress(module)))
    except ParityFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
