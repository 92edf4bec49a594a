#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: audit_log
short_description: Append to and verify a tamper-evident audit log (a SHA-256 hash chain in a file or a table)
version_added: 0.1.0
description:
  - Keeps the audit trail of deployments and rollbacks append-only and tamper-evident. Every record carries its
    position C(seq) (1-based), the hash of the record before it C(prev_hash) (64 zeros for the first) and its own
    C(hash), so that changing, removing or moving any record breaks the chain where it happened.
  - O(state=appended) adds one record to the store chosen by O(store) - a JSON-lines file (O(path)), the table
    C(<journal_schema>.audit_log) of the target database, or both (each store is its own chain).
  - O(state=verified) walks the whole chain and fails, naming the position and the reason, at the first broken link.
  - "The record is format version 1 of the audit role (C(roles/README.md)) with the chain fields added: C(v), C(seq),
    C(time) (UTC, set by the module), C(run), C(playbook), C(stage), C(release), C(outcome), C(actor), C(awx_job_id),
    C(started_at), C(ended_at), C(seconds), C(changed), C(inputs_digest), C(details), C(error), C(prev_hash), C(hash)
    and, with O(hmac_key), C(hmac). With O(figures) or O(figures_from_details), also C(figures) (after C(details)):
    the stage's key figures, which make the record a structured event of the stage (stage, release, start, end,
    duration, outcome, figures)."
  - O(metrics_textfile) also exports the stage as Prometheus gauges to a node_exporter textfile-collector file,
    merged with the series already in it and replaced atomically.
  - C(hash) is the SHA-256 of the canonical JSON of the record without C(hash) and C(hmac) (keys sorted, separators
    C(,) and C(:), UTF-8 without ASCII escaping, no NaN or Infinity). C(hmac) is the HMAC-SHA256 of the same bytes
    with O(hmac_key). Both can be recomputed in any language from the stored line or row.
  - "Secrets never reach a record: keys of O(details) and O(error) whose names contain C(password), C(passwd),
    C(secret), C(token), C(api_key)/C(apikey), C(hmac_key), C(private_key)/C(privatekey) or C(credential)
    (case-insensitive, at any depth, in lists too) are dropped with their values, and passwords in URLs
    (C(scheme://user:password@host)) are masked. RV(stripped) names what was dropped. O(inputs) is never stored,
    only its digest."
author:
  - stateful.rollback maintainers (@stateful-rollback)
extends_documentation_fragment:
  - stateful.rollback.postgres
attributes:
  check_mode:
    support: full
    description:
      - O(state=appended) reports the record it would append (C(changed) true) and writes nothing - no file, no
        directory, no table. O(state=verified) only reads.
  diff_mode:
    support: full
    description:
      - O(state=appended) shows, per store, the C(seq) and C(hash) of the last record before and of the new record
        after.
options:
  state:
    description:
      - V(appended) adds one record; V(verified) checks the whole chain.
    type: str
    default: appended
    choices: [ appended, verified ]
  store:
    description:
      - Where the log is. V(file) is the JSON-lines file O(path); V(table) is C(<journal_schema>.audit_log) in the
        database of the connection options (created with its append-only triggers on the first append when missing);
        V(both) writes or verifies both, each as its own chain.
      - The connection options are only used with V(table) and V(both).
    type: str
    default: file
    choices: [ file, table, both ]
  path:
    description:
      - The JSON-lines file, one record per line. Required with O(store=file) and O(store=both).
      - Created with mode C(0640) (less the umask) on the first append, with missing parent directories (C(0750)).
    type: path
  journal_schema:
    description:
      - Schema of the table C(audit_log). A plain identifier (letters, digits, C(_), C($)); used as written, quoted.
      - Created with the table when missing. For an executor that must not be able to drop the table, create both
        beforehand with C(docs/sql/audit-log-privileges.sql) in a schema the executor does not own, for example
        C(stateful_rollback_audit).
    type: str
    default: stateful_rollback
  stage:
    description:
      - The stage the record is about (C(preflight), C(snapshot), C(migrate), C(deploy), C(verify), C(rollback),
        C(run), C(approval), ...). Required with O(state=appended).
    type: str
  outcome:
    description:
      - How the stage ended. V(compensated) is a rollback step that undid an earlier change; V(approved) and
        V(refused) record a governance decision; V(overridden) a check that found a problem an operator chose to
        proceed past (the rollback's replica pre-check with C(stateful_rollback_rollback_allow_diverged_replicas)).
        Defaults to V(ok).
    type: str
    choices: [ ok, failed, skipped, compensated, approved, refused, overridden ]
  run:
    description: The run id (C(stateful_rollback_run.id) of the roles, for example C(20261125T161500Z-2.1.0)).
    type: str
  playbook:
    description: The playbook that ran (for example C(deploy.yml)).
    type: str
  release:
    description: The release version the record is about.
    type: str
  actor:
    description:
      - Who acted. Defaults to C(user@host) of the process running the module, followed by C((AWX job N)) when the
        environment holds C(AWX_JOB_ID), or C(JOB_ID) with C(AWX_HOST), as AWX and Ansible Automation Platform set
        them (the same text as the release ledger's C(recorded_by)). C(JOB_ID) without C(AWX_HOST) shows as
        C((job N)).
    type: str
  awx_job_id:
    description:
      - The AWX/AAP job id. Defaults to C(AWX_JOB_ID), or C(JOB_ID) when C(AWX_HOST) is set, from the environment of
        the module; null otherwise.
    type: str
  started_at:
    description:
      - When the stage started, ISO 8601 (C(2026-11-25T16:15:00.123Z)); a time without an offset is UTC. Stored in UTC
        with milliseconds.
    type: str
  ended_at:
    description:
      - When the stage ended, ISO 8601. Defaults to the record's C(time) when O(started_at) is given.
    type: str
  seconds:
    description:
      - Duration of the stage. Defaults to O(ended_at) minus O(started_at), rounded to milliseconds.
    type: float
  changed:
    description:
      - Whether the stage changed something (stored as the record's C(changed); the module's own C(changed) is
        about the log).
    type: bool
    default: false
  details:
    description:
      - What the stage did, as a dict (snapshots, LSNs, migrations, ...). Secret-named keys are dropped, see the
        description.
    type: dict
  error:
    description:
      - Why the stage failed - a message, or a dict/list such as C(ansible_failed_result). Secret-named keys are
        dropped as in O(details).
    type: raw
  inputs:
    description:
      - The inputs of the stage (its variables, the manifest summary, ...). Not stored - the record holds only
        C(inputs_digest), C(sha256:) and the SHA-256 of their canonical JSON, so a later run can prove it had the same
        inputs without the log holding them. Secret-named keys are hashed with the rest; they never reach the store.
    type: dict
  hmac_key:
    description:
      - Key of the C(hmac) of every record (HMAC-SHA256 over the bytes that C(hash) covers). Keep it out of the store
        (a vault, an AWX credential). Without it, someone who can rewrite the whole log can rebuild a consistent
        chain; with it, they cannot.
      - A chain is signed from its first record or not at all. Appending with a key to an unsigned chain, or without
        a key to a signed one, or with a different key, is refused.
      - With O(state=verified), every record must carry a matching C(hmac). Without it, a signed chain is verified by
        its hashes only (RV(hmac_checked) false).
    type: str
  figures:
    description:
      - Key figures of the stage, stored in the record as C(figures) and exported by O(metrics_textfile). Numbers
        C(rows_compared), C(rows_backfilled), C(snapshot_bytes), C(rto_seconds) (any other name with a number is
        stored too), and per replica (a dict of replica name to number) C(replica_lag_bytes) and
        C(parity_differences).
      - Merged over the figures O(figures_from_details) derives (these win).
    type: dict
  figures_from_details:
    description:
      - Derive the key figures from O(details) as the roles record them - C(replica_lag_bytes) from every
        C(replicas) list whose items carry C(name) and C(lag_bytes); C(parity_differences) per replica from
        C(details.parity) (C(all) when only its total C(difference_count) is known); C(rows_compared) and
        C(rows_backfilled) (C(rows_backfilled) or C(rows_processed)) summed at any depth; C(snapshot_bytes) for stages
        named C(snapshot*) (C(snapshot_bytes), C(restore_size_bytes), C(restore_size) or C(size_bytes); Kubernetes
        quantities such as C(2Gi) are read as bytes); C(rto_seconds) from C(details.rto_seconds), or
        C(details.seconds) of the stage C(rollback). The stage C(run) (a summary of the others) has none.
      - The record then always carries C(figures), empty when nothing was found.
    type: bool
    default: false
  metrics_textfile:
    description:
      - A Prometheus textfile-collector file (a name ending in C(.prom), in the directory node_exporter reads with
        C(--collector.textfile.directory)) to export the stage to, as gauges -
        C(stateful_rollback_stage_duration_seconds{stage,release,outcome}) (the record's C(seconds)),
        C(stateful_rollback_rto_seconds{kind,release}) (C(kind) C(rollback) for the rollback stages, else the stage,
        e.g. C(drill)), C(stateful_rollback_replica_lag_bytes{replica}) and
        C(stateful_rollback_parity_differences{stage,release,replica}) from the figures.
      - The file is read, the stage's series replace those with the same name and labels, every other series and
        family in it is kept (earlier stages, other runs, other tools), and the result replaces the file atomically
        (a temporary file in the same directory, C(fsync), C(rename)) under an exclusive lock on the hidden sibling
        C(.<name>.lock), mode C(0644). Missing parent directories are created.
      - Needs the Python library C(prometheus_client) on the host the module runs on.
      - Written after the record is appended; a failure to write it is a warning and C(error) in RV(metrics), not a failure
        (the record is already in the log, and a retried task would append it twice). Not written in check mode.
    type: path
  missing_ok:
    description:
      - With O(state=verified), accept a store that does not exist yet (a file or table never appended to) as a valid
        log with 0 records. By default a missing store fails, since a deleted log must not pass as an empty one.
    type: bool
    default: false
notes:
  - "Appending is serialized: on the file with an exclusive C(flock) held from reading the last line to the C(fsync)
    of the new one; on the table with a transaction-level advisory lock (C(pg_advisory_xact_lock)) held from reading
    the highest C(seq) to the commit, backed by the primary key on C(seq) and a unique C(prev_hash), so concurrent
    appenders from any number of processes or hosts never fork the chain. The advisory lock needs no privilege
    beyond C(INSERT) and C(SELECT) (a C(SELECT ... FOR UPDATE) would need C(UPDATE))."
  - "Appending reads only the last record, so it stays fast on a long log. It is refused, with the reason, when that
    record is not a whole, chained record that hashes to its C(hash) - most often a last line without its newline
    left by an interrupted write. Run O(state=verified), repair (add the newline when the record is whole, or move
    the broken line out), and append again. Damage further back is found by O(state=verified), not by appending."
  - "O(state=verified) reports the first broken link as C(position) (line of the file, or row in C(seq) order of the
    table), C(seq) and one reason: C(edited) (the record does not hash to its C(hash); for the table also a column
    that disagrees with the row's C(record)), C(deleted) (C(seq) jumps and the missing records never appear),
    C(reordered) (the missing records appear later), C(truncated) (the first record is not C(seq) 1 with
    C(prev_hash) zeros: leading records were removed, typically truncated and then appended to), C(replaced)
    (C(seq) follows but C(prev_hash) is not the previous record's C(hash): that record was rewritten with a recomputed
    hash), C(duplicated), C(forked) (two records with one C(seq)), C(hmac_missing), C(hmac_mismatch) (a wrong key or
    a forged record), C(malformed) (not a JSON record: duplicate keys, missing fields) and C(incomplete) (the last line
    lacks its newline)."
  - "What a hash chain cannot detect on its own: records removed from the end (and a log deleted and started again,
    or cut back and appended to). Keep RV(last_hash) somewhere else (the release ledger, a CI artifact, a second
    store) and compare it, and use O(hmac_key) so that a rewritten chain cannot be made consistent again."
  - "The table is append-only for everyone: C(BEFORE UPDATE OR DELETE) row and C(BEFORE TRUNCATE) statement triggers
    raise C(audit log <schema>.audit_log is append-only: UPDATE refused). Grant the executing role only C(INSERT) and
    C(SELECT) (and C(USAGE) on the schema) - C(docs/sql/audit-log-privileges.sql) creates the table, its triggers and
    these grants with C(psql -v executor=ROLE). The table owner (or a superuser) can still disable the triggers or
    drop the table; the hash chain is what detects a change made that way, and RV(append_only) reports disabled
    triggers."
  - "O(state=appended) always appends, so it always reports C(changed). A playbook that must report no change on a
    second run marks its audit tasks C(changed_when: false) - a record of the run is not a change of the deployment."
  - "The module does not write its arguments to the syslog of the host it runs on, and the C(invocation) it returns
    (shown with C(-vvv)) holds O(details) and O(error) as stored and O(inputs) as its digest; O(hmac_key) and
    O(login_password) are never shown."
seealso:
  - module: stateful.rollback.release
  - name: The audit record format (roles/README.md)
    description: Format version 1 of the records the roles write, which this module extends with the chain fields.
    link: https://github.com/stateful-rollback/stateful.rollback/blob/main/roles/README.md
"""

EXAMPLES = r"""
- name: Record the snapshot stage in the local audit log
  stateful.rollback.audit_log:
    path: /var/lib/stateful-rollback/audit.jsonl
    run: "{{ stateful_rollback_run.id }}"
    playbook: deploy.yml
    stage: snapshot
    release: 2.1.0
    outcome: ok
    started_at: "2026-11-25T16:15:00.120Z"
    changed: true
    details:
      snapshots: [db-2.1.0-data-db-0]
      checkpoint_lsn: 0/5A0001C8
    inputs: "{{ stateful_rollback_snapshot_inputs }}"
    hmac_key: "{{ vault_audit_hmac_key }}"
  delegate_to: localhost
  changed_when: false

- name: Record a refused approval in the database too
  stateful.rollback.audit_log:
    store: both
    path: /var/lib/stateful-rollback/audit.jsonl
    journal_schema: stateful_rollback_audit
    stage: approval
    release: 2.1.0
    outcome: refused
    error: "migration 003 drops a column the running release reads"
    hmac_key: "{{ vault_audit_hmac_key }}"
    login_host: db-primary.internal
    login_user: deployer
    login_password: "{{ deployer_password }}"
    login_db: app
  delegate_to: localhost

- name: Record the verify stage as an event with its key figures, and export it to Prometheus
  stateful.rollback.audit_log:
    path: /var/lib/stateful-rollback/audit-log.jsonl
    run: "{{ stateful_rollback_run.id }}"
    stage: verify
    release: 2.1.0
    started_at: "2026-11-25T16:20:00.000Z"
    details:
      parity: {in_sync: true, difference_count: 0}
    figures_from_details: true
    figures: {rows_compared: 6000}
    metrics_textfile: /var/lib/node_exporter/textfile_collector/stateful_rollback.prom
  changed_when: false

- name: Prove nobody changed the log
  stateful.rollback.audit_log:
    state: verified
    store: both
    path: /var/lib/stateful-rollback/audit.jsonl
    journal_schema: stateful_rollback_audit
    hmac_key: "{{ vault_audit_hmac_key }}"
    login_host: db-primary.internal
    login_user: auditor
    login_password: "{{ auditor_password }}"
    login_db: app
  register: audit
  delegate_to: localhost

- name: Show the anchor to keep elsewhere
  ansible.builtin.debug:
    msg: "{{ audit.records }} records, last hash {{ audit.last_hash }}"
"""

RETURN = r"""
state:
  description: The state that ran.
  returned: always
  type: str
  sample: appended
store:
  description: The store option.
  returned: always
  type: str
  sample: file
path:
  description:
    - The file, when the store includes it. When it exists, Ansible adds its C(uid), C(gid), C(owner), C(group),
      C(mode) and C(size) to the result, as for file modules.
  returned: when store is file or both
  type: str
  sample: /var/lib/stateful-rollback/audit.jsonl
table:
  description: The table, as C(schema.audit_log).
  returned: when store is table or both
  type: str
  sample: stateful_rollback.audit_log
record:
  description:
    - The record appended (in check mode, the record that would be appended), as stored. With O(store=both), the
      table's record (RV(stores) has both).
  returned: when state is appended
  type: dict
  sample:
    v: 1
    seq: 7
    time: "2026-11-25T16:15:02.123Z"
    run: 20261125T161500Z-2.1.0
    playbook: deploy.yml
    stage: snapshot
    release: 2.1.0
    outcome: ok
    actor: "deploy@ci-3 (AWX job 812)"
    awx_job_id: "812"
    started_at: "2026-11-25T16:15:00.120Z"
    ended_at: "2026-11-25T16:15:02.123Z"
    seconds: 2.003
    changed: true
    inputs_digest: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    details: {snapshots: [db-2.1.0-data-db-0], checkpoint_lsn: 0/5A0001C8}
    error: null
    prev_hash: "5d41402abc4b2a76b9719d911017c592ae1e6c5a3c2f8f7f1c6f1d6f9e3d2a11"
    hash: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    hmac: "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"
seq:
  description: C(seq) of RV(record).
  returned: when state is appended
  type: int
  sample: 7
hash:
  description: C(hash) of RV(record).
  returned: when state is appended
  type: str
  sample: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
stripped:
  description: Key paths dropped from O(details) and O(error) because their names look secret (names only).
  returned: when state is appended
  type: list
  elements: str
  sample: ["details.db.login_password"]
figures:
  description:
    - The key figures stored in the record (O(figures) over those derived with O(figures_from_details)).
  returned: when state is appended and figures or figures_from_details is set
  type: dict
  sample: {replica_lag_bytes: {standby: 0, subscriber: 120}, rows_backfilled: 1000}
metrics:
  description:
    - What was exported to O(metrics_textfile) - C(path), C(samples) (the stage's series), C(series) (all series now
      in the file, null when it was not written) and C(error) (why it was not written, else null).
  returned: when state is appended and metrics_textfile is set
  type: dict
  sample:
    path: /var/lib/node_exporter/textfile_collector/stateful_rollback.prom
    samples:
      - {name: stateful_rollback_stage_duration_seconds, labels: {stage: verify, release: 2.1.0, outcome: ok}, value: 3.2}
    series: 14
    error: null
created:
  description: Whether the file or table was (or in check mode would be) created by this append, per store.
  returned: when state is appended
  type: dict
  sample: {file: false, table: true}
valid:
  description: Whether every store's chain is intact. Only ever true in a successful result; a broken chain fails.
  returned: when state is verified
  type: bool
  sample: true
records:
  description:
    - Number of records (lines or rows) read. With O(store=both), those of the first broken store, else the table's
      (RV(stores) has both).
  returned: when state is verified
  type: int
  sample: 42
first_broken:
  description:
    - The first broken link - C(store), C(position) (1-based), C(unit) (C(line) or C(row)), C(seq) (null when the
      line is not a record), C(reason) (see the notes) and C(detail) - or null.
  returned: when state is verified
  type: dict
  sample: {store: file, position: 5, unit: line, seq: 5, reason: edited, detail: "content does not hash to its hash"}
last_hash:
  description:
    - C(hash) of the last record as stored, null for an empty log (with O(store=both), as RV(records)). Keep it
      outside the store to detect records later removed from the end.
  returned: when state is verified
  type: str
  sample: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
hmac_checked:
  description: Whether HMACs were checked (O(hmac_key) given).
  returned: when state is verified
  type: bool
  sample: true
append_only:
  description:
    - Whether both append-only triggers of the table exist and are enabled; null when the table does not exist.
  returned: when state is verified and store is table or both
  type: bool
  sample: true
stores:
  description:
    - Per store (C(file), C(table)). For O(state=appended) - C(seq), C(hash), C(record) and C(previous) (C(seq) and
      C(hash) of the record before, or null). For O(state=verified) - C(valid), C(records), C(last_seq), C(last_hash),
      C(first_broken), C(hmac_checked), C(exists) and C(path) or C(table) (with C(append_only)).
  returned: always
  type: dict
  sample:
    file: {valid: true, records: 42, last_seq: 42, last_hash: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
           first_broken: null, hmac_checked: true, exists: true, path: /var/lib/stateful-rollback/audit.jsonl}
"""

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    HAS_PSYCOPG2,
    PSYCOPG2_IMP_ERR,
    PostgresError,
    connect,
    get_conn_params,
    postgres_common_argument_spec,
)

try:
    from ansible_collections.stateful.rollback.plugins.module_utils import audit
    from ansible_collections.stateful.rollback.plugins.module_utils import metrics

    AUDIT_IMP_ERR = None
except ImportError:  # pragma: no cover - only with a broken installation
    audit = metrics = None
    AUDIT_IMP_ERR = traceback.format_exc()

OUTCOMES = ["ok", "failed", "skipped", "compensated", "approved", "refused", "overridden"]
APPEND_ONLY = ("stage", "outcome", "run", "playbook", "release", "actor", "awx_job_id", "started_at", "ended_at",
               "seconds", "changed", "details", "error", "inputs", "figures", "figures_from_details", "metrics_textfile")
NO_LOG_SHOWN = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(
        state=dict(type="str", default="appended", choices=["appended", "verified"]),
        store=dict(type="str", default="file", choices=["file", "table", "both"]),
        path=dict(type="path"),
        journal_schema=dict(type="str", default="stateful_rollback"),
        stage=dict(type="str"),
        outcome=dict(type="str", choices=OUTCOMES),
        run=dict(type="str"),
        playbook=dict(type="str"),
        release=dict(type="str"),
        actor=dict(type="str"),
        awx_job_id=dict(type="str"),
        started_at=dict(type="str"),
        ended_at=dict(type="str"),
        seconds=dict(type="float"),
        changed=dict(type="bool", default=False),
        details=dict(type="dict"),
        error=dict(type="raw"),
        inputs=dict(type="dict"),
        figures=dict(type="dict"),
        figures_from_details=dict(type="bool", default=False),
        metrics_textfile=dict(type="path"),
        hmac_key=dict(type="str", no_log=True),
        missing_ok=dict(type="bool", default=False),
    )
    return spec


class Invocation:
    """What the module returns as ``invocation``: details and error as stored, inputs as a digest, no secrets."""

    def __init__(self, module):
        self.module = module
        # AnsibleModule adds the stat of a returned ``path`` (owner, mode, size, ...) and overwrites ``state``
        # with the file's type; keep the file's facts, but ``state`` stays the state that ran.
        add_path_info = module.add_path_info

        def keep_state(kwargs):
            state = kwargs.get("state")
            kwargs = add_path_info(kwargs)
            if state is not None:
                kwargs["state"] = state
            return kwargs

        module.add_path_info = keep_state

    def args(self):
        params = dict(self.module.params)
        for name in ("details", "error"):
            if params.get(name) is not None and audit is not None:
                params[name] = audit.strip_secrets(params[name], name)[0]
        if params.get("inputs") is not None:
            try:
                params["inputs"] = audit.inputs_digest(params["inputs"])
            except Exception:  # pylint: disable=broad-except
                params["inputs"] = "(not shown)"
        for name in ("hmac_key", "login_password"):
            if params.get(name):
                params[name] = NO_LOG_SHOWN
        return {"module_args": params}

    def fail(self, **kwargs):
        self.module.fail_json(invocation=self.args(), **kwargs)

    def exit(self, **kwargs):
        self.module.exit_json(invocation=self.args(), **kwargs)


def validate(module, out):
    params = module.params
    state, store = params["state"], params["store"]
    if state == "verified":
        given = [name for name in APPEND_ONLY if params.get(name) not in (None, False, "", {}, [])]
        if given:
            out.fail(msg="%s: only used with state=appended, not state=verified" % ", ".join(given))
    elif params["missing_ok"]:
        out.fail(msg="missing_ok: only used with state=verified")
    if store == "table" and params.get("path") is not None:
        out.fail(msg="path: only used with store=file or store=both, not store=table")
    if params.get("hmac_key") is not None and not params["hmac_key"]:
        out.fail(msg="hmac_key must not be empty (leave it out to append unsigned records)")
    if params.get("path") is not None and not params["path"].strip():
        out.fail(msg="path must not be empty")
    if params.get("path") is not None and "\x00" in params["path"]:
        out.fail(msg="path must not contain a NUL byte")
    if store in ("file", "both") and params.get("path") is None:
        out.fail(msg="path is required with store=%s" % store)
    if state == "appended" and metrics is not None:
        try:
            if params.get("figures") is not None:
                metrics.check_figures(params["figures"])
            if params.get("metrics_textfile") is not None:
                metrics.check_textfile(params["metrics_textfile"])
        except metrics.MetricsError as exc:
            if not metrics.HAS_PROMETHEUS_CLIENT and params.get("metrics_textfile") is not None:
                out.fail(msg=missing_required_lib("prometheus_client"), exception=metrics.PROMETHEUS_CLIENT_IMP_ERR)
            out.fail(msg=str(exc))


def figures_of(module):
    """The figures to store (None: the record has no ``figures``)."""
    params = module.params
    if params.get("figures") is None and not params["figures_from_details"]:
        return None
    figures = {}
    if params["figures_from_details"]:
        figures.update(metrics.stage_figures(params.get("stage") or "", params.get("details") or {}))
    figures.update(params.get("figures") or {})
    return figures


def entry_from(module):
    params = module.params
    return audit.new_entry(
        stage=params.get("stage"),
        outcome=params.get("outcome") or "ok",
        run=params.get("run"),
        playbook=params.get("playbook"),
        release=params.get("release"),
        actor=params.get("actor"),
        job_id=params.get("awx_job_id"),
        started_at=params.get("started_at"),
        ended_at=params.get("ended_at"),
        seconds=params.get("seconds"),
        changed=params.get("changed"),
        details=params.get("details"),
        error=params.get("error"),
        inputs=params.get("inputs"),
        figures=figures_of(module),
    )


def stores_of(module, conn):
    params = module.params
    out = []
    if params["store"] in ("file", "both"):
        out.append(audit.FileStore(params["path"]))
    if params["store"] in ("table", "both"):
        out.append(audit.TableStore(conn, params["journal_schema"]))
    return out


def _brief(record):
    return None if record is None else {"seq": record["seq"], "hash": record["hash"]}


def appended(module, stores, result):
    entry, stripped = entry_from(module)
    hmac_key = module.params.get("hmac_key")
    per_store, created = {}, {}
    for store in stores:
        record, last, created[store.name] = store.append(entry, hmac_key=hmac_key, check_mode=module.check_mode)
        per_store[store.name] = {"seq": record["seq"], "hash": record["hash"], "record": record, "previous": _brief(last)}
    main = per_store.get("table") or per_store["file"]
    result.update(changed=True, record=main["record"], seq=main["seq"], hash=main["hash"], stripped=stripped,
                  created=created, stores=per_store)
    if "figures" in entry:
        result["figures"] = entry["figures"]
    if module.params.get("metrics_textfile") is not None:
        result["metrics"] = export(module, main["record"])
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = {
            "before": {name: s["previous"] or {} for name, s in per_store.items()},
            "after": {name: {"seq": s["seq"], "hash": s["hash"]} for name, s in per_store.items()},
        }
    return result


def export(module, record):
    """Merge the record's series into metrics_textfile; a failure is a warning (the record is already appended)."""
    path = module.params["metrics_textfile"]
    samples = metrics.series(record["stage"], record.get("release"), record.get("outcome"), record.get("seconds"),
                             record.get("figures"))
    out = {"path": path, "samples": [{"name": n, "labels": labels, "value": v} for n, labels, v in samples],
           "series": None, "error": None}
    if module.check_mode:
        out["error"] = "not written in check mode"
        return out
    try:
        out["series"] = metrics.merge_textfile(path, samples)
    except metrics.MetricsError as exc:
        out["error"] = str(exc)
        module.warn("the audit record was appended, but the metrics were not exported: %s" % exc)
    return out


def verified(module, stores, result, out):
    params = module.params
    per_store = {}
    for store in stores:
        per_store[store.name] = store.verify(hmac_key=params.get("hmac_key"), missing_ok=params["missing_ok"])
    broken = [s for s in per_store.values() if not s["valid"]]
    main = broken[0] if broken else (per_store.get("table") or per_store["file"])
    result.update(valid=not broken, records=main["records"], first_broken=main["first_broken"],
                  last_hash=main["last_hash"], hmac_checked=main["hmac_checked"], stores=per_store)
    if "table" in per_store:
        result["append_only"] = per_store["table"]["append_only"]
        if per_store["table"]["append_only"] is False:
            module.warn("the append-only triggers of %s are missing or disabled: UPDATE, DELETE and TRUNCATE are not "
                        "refused (the hash chain still shows any change)" % per_store["table"]["table"])
    if broken:
        names = [s.get("path") or s.get("table") for s in broken]
        out.fail(msg="; ".join(audit.broken_message(name, s["first_broken"]) for name, s in zip(names, broken)), **result)
    return result


def run(module, out):
    params = module.params
    store = params["store"]
    result = dict(changed=False, state=params["state"], store=store)
    if store in ("file", "both"):
        result["path"] = params["path"]
    conn = None
    if store in ("table", "both"):
        result["table"] = audit.table_name(params["journal_schema"])  # checks the name before connecting
        conn = connect(get_conn_params(params), application_name="stateful.rollback.audit_log")
    try:
        stores = stores_of(module, conn)
        if params["state"] == "appended":
            return appended(module, stores, result)
        return verified(module, stores, result, out)
    finally:
        if conn is not None:
            conn.close()


def main():
    module = ansible_module(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[
            ("store", "file", ("path",)),
            ("store", "both", ("path",)),
            ("state", "appended", ("stage",)),
        ],
        # details may hold secret-named keys (stripped from the record): keep the raw arguments out of syslog.
        no_log=True,
    )
    out = Invocation(module)
    validate(module, out)
    if AUDIT_IMP_ERR:
        out.fail(msg="cannot load the audit log helpers", exception=AUDIT_IMP_ERR)
    if module.params["store"] != "file" and not HAS_PSYCOPG2:
        out.fail(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMP_ERR)
    try:
        result = run(module, out)
    except (audit.AuditError, PostgresError) as exc:
        out.fail(msg=str(exc), state=module.params["state"], store=module.params["store"])
    except Exception as exc:  # pylint: disable=broad-except
        # psycopg2.Error and the like: name the failure, keep the traceback for -vvv.
        out.fail(msg="audit log: %s: %s" % (type(exc).__name__, str(exc).strip()), state=module.params["state"],
                 store=module.params["store"], exception=traceback.format_exc())
    out.exit(**result)


if __name__ == "__main__":
    main()
