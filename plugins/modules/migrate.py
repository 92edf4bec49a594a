#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: migrate
short_description: Apply, revert, pause and resume the PostgreSQL migrations of a release, exactly once, with a journal
version_added: 0.1.0
description:
  - Runs the migrations of a release manifest (see O(manifest)) against a PostgreSQL primary, in manifest order, and
    records every step in a journal kept in the database itself (O(journal_schema)), so that a run that is interrupted
    at any point (SIGKILL, lost connection, failed statement) can simply be run again and continues where it stopped.
  - O(state=applied) runs the C(up) script of every migration not applied yet (up to O(target)), then its backfill.
    O(state=reverted) runs the C(down) scripts, in reverse order, of the migrations this release applied.
    O(state=paused) asks a running backfill to stop at its next batch boundary; O(state=resumed) clears that request and
    continues like O(state=applied). O(state=status) reports per migration whether it is applied, its progress, rate
    and ETA, and never writes.
  - B(One runner per database.) A run holds a session-level advisory lock for its whole duration,
    C(pg_advisory_lock(1397902663, key)) where 1397902663 is C(0x53524D47) (C(SRMG)) and C(key) is the first 4 bytes,
    big-endian and signed, of SHA-256 of C(stateful.rollback.migrate:) followed by the journal schema name. A second run
    waits up to O(lock_wait_timeout) seconds, then fails naming the PID, application_name and client of the holder.
  - B(Exactly once, transactional steps.) When every statement of a script may run in a transaction block (detected
    with pglast, PostgreSQL's own parser, unless the migration sets C(transactional)), the script, its C(verify) query
    and the journal's C(done) update are one transaction. A crash leaves both or neither; the step is simply run again.
    A leading C(BEGIN) and a trailing C(COMMIT) in a script are ignored; other transaction control is refused.
  - B(Non-transactional steps) (C(CREATE/DROP INDEX CONCURRENTLY), C(REINDEX CONCURRENTLY), C(VACUUM), C(ALTER SYSTEM),
    ...) run statement by statement in autocommit after a committed C(running) journal row, and the journal counts the
    statements done. After an interruption the step continues at the first statement not journaled as done. That
    statement may already have taken effect, so it is run again, except that an B(invalid) index it names (left by an
    interrupted C(CREATE INDEX CONCURRENTLY), C(pg_index.indisvalid = false)) is dropped with
    C(DROP INDEX CONCURRENTLY IF EXISTS) and built again, a valid index it creates or an index it drops that is already
    gone counts as done, and when the migration has C(verify) and it returns true before anything is re-run, the step
    is recorded as done. Other statements of such scripts should be idempotent (C(IF NOT EXISTS)). Name the indexes
    a script creates concurrently, since an unnamed one cannot be found after an interruption.
  - B(Tamper evidence.) Before anything runs, the SHA-256 journaled for every step that took effect is compared with
    the script's current SHA-256 (a backfill's with the checksum of its table, key, set and where); a difference is
    refused, naming the migration and the file. A script may still be fixed after a transactional attempt failed, since
    nothing of it was kept, and after the migration was reverted.
  - B(Lock safety.) Every transaction sets C(lock_timeout) and C(statement_timeout) locally (O(lock_timeout),
    O(statement_timeout)). A lock timeout (SQLSTATE 55P03) or a deadlock (40P01) rolls the attempt back and retries it
    after an exponential backoff with full jitter (uniform in 0 .. min(O(retry_max_delay), O(retry_base_delay) * 2^n)),
    up to O(max_retries) times; then the step fails, journaled as C(failed) with the error and the attempts, and a
    transactional step leaves nothing behind.
  - >-
    B(Backfills) (C(backfill) of a migration) run after its up script, in key order, one key range per transaction
    C(UPDATE t SET <set> WHERE key > last AND key <= upper AND <where>), C(upper) being the C(batch_size)-th key after
    C(last) read from the key's index. The journal's last key and row count are updated in the same transaction, so a
    backfill killed at any moment resumes right after its last committed batch: no row is updated twice, none is
    skipped. Row locks are held for one batch only; RV(max_batch_ms) reports the longest. The key must have an index
    whose first column it is, and a type of smallint, integer, bigint, numeric, text, varchar, char or uuid.
    C(set) and C(where) are parsed (pglast) before the journal is touched: each must stay a fragment of that one
    UPDATE, so a second statement, an unbalanced parenthesis or a top-level C(OR) that would drop the key range is
    refused; each ends a line of the batch statement, so a trailing C(-- comment) in it is harmless.
    C(max_rows_per_second) limits the rate (a token bucket across batches). With C(max_replica_lag_bytes), before each
    batch the replay lag of the primary's streaming replicas (C(pg_stat_replication)) and the confirmed position of its
    active logical slots are measured, and the backfill waits, backing off, until the worst is under the threshold.
    When it is still over after O(lag_wait_timeout) seconds, the backfill stops at the batch boundary, is journaled as
    C(paused) (nothing is wrong with the data, it resumes where it stopped) and the module fails with RV(paused) true
    and RV(pause_reason) C(replica_lag).
  - B(Pause and resume.) O(state=paused) sets C(pause_requested) for the release in C(migration_control) from a
    separate session. A running backfill reads it at each batch boundary (and a run before each migration), commits its
    batch, journals C(paused) and returns RV(paused) true, not failed. While the flag is set, O(state=applied) refuses
    to run (a pause is an operator's decision; a pipeline re-run must not undo it); O(state=resumed) clears the flag and
    continues. O(state=reverted) ignores the flag.
  - B(Revert.) O(state=reverted) considers the migrations of the manifest that this release applied (their journaled
    up step names this release's version), including ones partly applied (a failed non-transactional step, a backfill
    not finished). When one of them is irreversible (C(irreversible) in the manifest), nothing is run and the module
    returns RV(needs_restore) true with the irreversible ids and reasons, without failing unless
    O(fail_on_irreversible); restoring the database from a snapshot is then the caller's decision.
  - B(verify.) A migration's C(verify) SQL (one boolean) runs right after its up script, in the script's transaction
    when it is transactional; false fails the step (and rolls the transaction back). It checks the schema phase, not
    the backfill, whose completion the journal tracks. It is never used to skip a step the journal knows nothing
    about; such a step always runs.
  - B(The journal.) Table C(<journal_schema>.migration_journal), one row per step execution (a step is the C(schema)
    phase, the up or down script, or the C(backfill) phase of one migration in one direction; an unfinished step is
    continued on its own row, C(attempts) counting the runs), columns C(id), C(release_version), C(release_digest),
    C(migration_id), C(direction) (up, down), C(phase) (schema, backfill), C(script) (path as in the manifest),
    C(script_sha256), C(transactional), C(state) (running, done, failed, paused), C(started_at), C(finished_at),
    C(last_key) (text) and C(last_key_type), C(rows_processed), C(batches), C(statements_done), C(elapsed_seconds)
    (active time of a backfill), C(attempts), C(executed_by), C(error), C(note). Table
    C(<journal_schema>.migration_control) holds one row per release version, C(release_version), C(pause_requested),
    C(requested_by), C(requested_at). Both are created (C(IF NOT EXISTS)) by the first run that writes.
  - B(State of a migration.) A migration is applied iff its latest up schema step is C(done) (and its backfill step,
    when it has one) and no down step finished after it. The C(status) of each entry of RV(migrations) is one of C(pending), C(applied),
    C(reverted), C(running), C(failed), C(paused), C(backfill_pending), C(revert_running), C(revert_failed).
author:
  - stateful.rollback maintainers (@stateful-rollback)
extends_documentation_fragment:
  - stateful.rollback.postgres
attributes:
  check_mode:
    support: full
    description:
      - Lists the steps that would run (RV(plan)) with checksums, whether they run in a transaction, and for backfills the
        rows left to update. Writes nothing, not even the journal schema, and takes no lock.
  diff_mode:
    support: full
    description: RV(diff) shows the status of each migration before and after the run.
options:
  manifest:
    description:
      - Path of the release manifest (C(release.yml)) on the host the module runs on. Its migrations, their scripts and
        their checksums come from there.
    type: path
    required: true
  state:
    description:
      - What to do. See the description.
    type: str
    default: applied
    choices: [ applied, reverted, paused, resumed, status ]
  journal_schema:
    description:
      - Schema of the journal tables on the target database. Also part of the runner lock's key, so two journals in one
        database never block each other.
    type: str
    default: stateful_rollback
  target:
    description:
      - With O(state=applied) or O(state=resumed), apply the migrations up to and including this migration id only.
    type: str
  to:
    description:
      - With O(state=reverted), revert only the migrations after this migration id (in manifest order); it stays applied.
    type: str
  migrations:
    description:
      - With O(state=reverted), revert only these migration ids (still in reverse manifest order).
    type: list
    elements: str
  lock_wait_timeout:
    description:
      - Seconds to wait for another runner on the same database and journal to finish before failing.
    type: float
    default: 30
  lock_timeout:
    description:
      - Seconds a statement may wait for a table lock (C(SET LOCAL lock_timeout)) before the attempt is rolled back and
        retried. 0 waits forever, which lets a migration queue behind a long transaction and block every query behind it.
    type: float
    default: 5
  statement_timeout:
    description:
      - Seconds a statement may run (C(SET LOCAL statement_timeout)); 0 means no limit. A statement timeout is not retried.
    type: float
    default: 0
  max_retries:
    description:
      - Retries of an attempt that hit a lock timeout or a deadlock.
    type: int
    default: 5
  retry_base_delay:
    description:
      - Seconds; the n-th retry waits a random time between 0 and min(O(retry_max_delay), O(retry_base_delay) * 2^n).
    type: float
    default: 0.5
  retry_max_delay:
    description:
      - Upper bound in seconds of one backoff wait.
    type: float
    default: 30
  lag_wait_timeout:
    description:
      - Seconds a backfill waits, before one batch, for the replicas to come under its C(max_replica_lag_bytes) before it
        stops (journaled C(paused); the module fails with RV(pause_reason) C(replica_lag)).
    type: float
    default: 600
  fail_on_irreversible:
    description:
      - With O(state=reverted), fail when an irreversible migration is in the way (RV(needs_restore) is true either way).
    type: bool
    default: false
  backfill:
    description:
      - Run (and count) the migrations' backfills. V(false) applies the schema steps only, and a migration counts as
        applied once its schema step is done.
      - For logical subscribers. Logical replication does not carry DDL, so a subscriber must get a release's schema
        changes itself (before the primary, for columns and tables the primary will write), while the backfilled rows
        reach it through replication. Reverting works the same way, after the primary.
    type: bool
    default: true
  progress_log:
    description:
      - File to which progress events are appended as JSON lines (step starts and ends, retries, and per backfill batch
        the migration, rows, last key, rows per second and ETA), for long backfills.
    type: path
  executed_by:
    description:
      - Who runs the migrations, recorded in the journal. Default is C(user@host), plus C(awx-job=<JOB_ID>) when the
        C(JOB_ID) environment variable is set (AWX, Ansible Automation Platform).
    type: str
notes:
  - The role that connects needs to create the journal schema on first use (or have it created for it), to run the
    scripts, and C(pg_monitor) to read replica lag and the lock holder's details.
  - Run it against the primary; a standby is refused.
seealso:
  - module: stateful.rollback.schema_compat_check
  - module: stateful.rollback.replication_parity
"""

EXAMPLES = r"""
- name: Apply the release's migrations and backfills
  stateful.rollback.migrate:
    manifest: releases/2.0.0/release.yml
    login_host: db-primary.internal
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app
    progress_log: /var/log/stateful-rollback/migrate-2.0.0.jsonl
  register: migrated

- name: Pause the running backfill (from another play or an operator's shell)
  stateful.rollback.migrate:
    manifest: releases/2.0.0/release.yml
    state: paused
    login_host: db-primary.internal
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app

- name: Resume it later
  stateful.rollback.migrate:
    manifest: releases/2.0.0/release.yml
    state: resumed
    login_host: db-primary.internal
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app

- name: Show progress and ETA
  stateful.rollback.migrate:
    manifest: releases/2.0.0/release.yml
    state: status
    login_host: db-primary.internal
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app
  register: progress

- name: Roll the release's migrations back
  stateful.rollback.migrate:
    manifest: releases/2.0.0/release.yml
    state: reverted
    login_host: db-primary.internal
    login_user: migrator
    login_password: "{{ migrator_password }}"
    login_db: app
  register: reverted

- name: Restore the snapshot when down scripts cannot undo the release
  ansible.builtin.debug:
    msg: "restore needed: {{ reverted.irreversible | map(attribute='id') | join(', ') }}"
  when: reverted.needs_restore
"""

RETURN = r"""
state:
  description: The state that was requested.
  returned: always
  type: str
  sample: applied
release:
  description: Version and digest of the release manifest.
  returned: always
  type: dict
  sample: {version: "2.0.0", digest: "sha256:5f0c..."}
journal_schema:
  description: Schema of the journal.
  returned: always
  type: str
  sample: stateful_rollback
connection:
  description: The database, as C(user@host:port/db) (no password).
  returned: when the database was reached
  type: str
  sample: migrator@db-primary.internal:5432/app
executed_by:
  description: Who ran it, as recorded in the journal.
  returned: always
  type: str
  sample: deploy@ci-runner-3 awx-job=4711
steps:
  description:
    - The steps this run executed, in order. Each has C(migration), C(direction), C(phase), C(state) (done, failed,
      paused), C(seconds), C(resumed) (it continued an interrupted step), C(retries) and C(notes).
    - Schema steps also C(script), C(sha256), C(transactional) and C(statements); backfill steps C(table), C(key),
      C(key_type), C(batch_size), C(rows_processed) (by this run), C(rows_total), C(batches), C(max_batch_ms),
      C(resumed_from_key), C(last_key), C(rows_estimated), C(rows_estimate_method), C(lag_wait_seconds), and
      C(pause_reason) when it stopped early, C(error) when it failed.
  returned: always
  type: list
  elements: dict
  sample:
    - {migration: 001_add_full_name, direction: up, phase: schema, script: sql/001_up.sql, sha256: "9c1e...",
       transactional: true, statements: 2, state: done, seconds: 0.012, resumed: false, retries: 0, notes: []}
    - {migration: 001_add_full_name, direction: up, phase: backfill, table: public.customers, key: id,
       rows_processed: 200000, batches: 40, max_batch_ms: 41.7, state: done, seconds: 1.9}
migrations:
  description:
    - Per migration of the manifest after the run, C(id), C(applied), C(status), C(irreversible), C(applied_by) (release
      version), C(sha256) of the up script; C(schema) with the latest schema step's C(state), C(direction), C(release),
      C(sha256), C(attempts), C(started_at), C(finished_at), C(seconds), C(executed_by), C(error), C(note); and for a
      migration with a backfill C(backfill) with C(state), C(rows_processed), C(batches), C(last_key), C(key_type),
      C(rows_per_second), C(rows_remaining) (C(rows_remaining_method) exact or planner), C(eta_seconds), C(started_at),
      C(finished_at), C(active_seconds).
  returned: when the database was reached
  type: list
  elements: dict
  sample:
    - id: 001_add_full_name
      applied: false
      status: paused
      backfill: {state: paused, rows_processed: 80000, last_key: "80000", rows_remaining: 120000, rows_per_second: 52000,
                 eta_seconds: 2.3}
plan:
  description: In check mode, the steps that would run, with C(sha256), C(transactional), C(statements) and for backfills
    C(rows_remaining) and C(resumes_from_key).
  returned: in check mode
  type: list
  elements: dict
paused:
  description: True when a backfill stopped at a batch boundary (pause requested, or replicas too far behind).
  returned: always
  type: bool
  sample: false
pause_reason:
  description: C(requested) (O(state=paused); the module does not fail) or C(replica_lag) (the module fails).
  returned: when paused
  type: str
  sample: requested
pause_requested:
  description: The release's pause flag.
  returned: when state is paused or status (status only when the journal exists)
  type: bool
  sample: true
resumed:
  description: True when O(state=resumed) cleared a pause flag.
  returned: when state is resumed and the flag was set
  type: bool
  sample: true
needs_restore:
  description: True when O(state=reverted) found an irreversible migration among those to revert; nothing was run.
  returned: always
  type: bool
  sample: false
irreversible:
  description: The irreversible migrations in the way of a revert, with C(id) and C(reason).
  returned: always
  type: list
  elements: dict
  sample: [{id: 002_drop_legacy, reason: drops a column}]
rows_processed:
  description: Rows updated by backfills in this run.
  returned: always
  type: int
  sample: 200000
batches:
  description: Backfill batches committed in this run.
  returned: always
  type: int
  sample: 40
max_batch_ms:
  description: Longest backfill batch transaction of this run in milliseconds, the longest time row locks were held.
  returned: always
  type: float
  sample: 41.7
journal_exists:
  description: Whether the journal tables exist.
  returned: when state is status
  type: bool
  sample: true
runner:
  description: The session holding the runner lock (C(pid), C(application_name), C(client), C(user), C(backend_start)),
    or null when no run is active.
  returned: when state is status
  type: dict
tampered:
  description: Journaled steps whose script changed since it took effect (a run would refuse them).
  returned: when state is status
  type: list
  elements: str
manifest_errors:
  description: >-
    Every problem of an invalid manifest, as C(<field path>: <message>).
  returned: when the manifest is invalid
  type: list
  elements: str
diff:
  description: C(before) and C(after), the status of each migration.
  returned: in diff mode
  type: dict
  sample: {before: {001_add_full_name: pending}, after: {001_add_full_name: "applied (rows 200000)"}}
timings:
  description: Wall-clock seconds, C(total_seconds) and C(lock_wait_seconds).
  returned: always
  type: dict
  sample: {total_seconds: 2.41, lock_wait_seconds: 0.0}
"""

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module, progress_writer

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    HAS_PSYCOPG2,
    PSYCOPG2_IMP_ERR,
    postgres_common_argument_spec,
)

try:
    from ansible_collections.stateful.rollback.plugins.module_utils.migrate_runner import MigrateFailure, run
    from ansible_collections.stateful.rollback.plugins.module_utils.journal import JournalError, check_schema_name
    from ansible_collections.stateful.rollback.plugins.module_utils.compat_static import HAS_PGLAST, PGLAST_IMP_ERR

    RUNNER_IMP_ERR = None
except ImportError:  # pragma: no cover - only without the libraries
    HAS_PGLAST = False
    PGLAST_IMP_ERR = None
    RUNNER_IMP_ERR = traceback.format_exc()

NON_NEGATIVE = ("lock_wait_timeout", "lock_timeout", "statement_timeout", "max_retries", "retry_base_delay",
                "retry_max_delay", "lag_wait_timeout")


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(
        manifest=dict(type="path", required=True),
        state=dict(type="str", default="applied", choices=["applied", "reverted", "paused", "resumed", "status"]),
        journal_schema=dict(type="str", default="stateful_rollback"),
        target=dict(type="str"),
        to=dict(type="str"),
        migrations=dict(type="list", elements="str"),
        lock_wait_timeout=dict(type="float", default=30),
        lock_timeout=dict(type="float", default=5),
        statement_timeout=dict(type="float", default=0),
        max_retries=dict(type="int", default=5),
        retry_base_delay=dict(type="float", default=0.5),
        retry_max_delay=dict(type="float", default=30),
        lag_wait_timeout=dict(type="float", default=600),
        fail_on_irreversible=dict(type="bool", default=False),
        backfill=dict(type="bool", default=True),
        progress_log=dict(type="path"),
        executed_by=dict(type="str"),
    )
    return spec


def validate(module):
    params = module.params
    for name in NON_NEGATIVE:
        if params[name] < 0:
            module.fail_json(msg="%s must not be negative, got %s" % (name, params[name]))
    if params["retry_max_delay"] < params["retry_base_delay"]:
        module.fail_json(msg="retry_max_delay (%s) must be at least retry_base_delay (%s)" % (params["retry_max_delay"], params["retry_base_delay"]))
    if params["target"] is not None and params["state"] not in ("applied", "resumed"):
        module.fail_json(msg="target is only for state=applied or state=resumed, not state=%s" % params["state"])
    for name in ("to", "migrations"):
        if params[name] is not None and params["state"] != "reverted":
            module.fail_json(msg="%s is only for state=reverted, not state=%s" % (name, params["state"]))
    for name in ("target", "to", "executed_by"):
        if params[name] is not None and not params[name].strip():
            module.fail_json(msg="%s must not be empty" % name)
    try:
        check_schema_name(params["journal_schema"])
    except JournalError as exc:
        module.fail_json(msg=str(exc))


def main():
    module = ansible_module(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("to", "migrations")],
    )
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMP_ERR)
    if RUNNER_IMP_ERR:
        module.fail_json(msg="cannot load the migration runner", exception=RUNNER_IMP_ERR)
    if not HAS_PGLAST:
        module.fail_json(msg=missing_required_lib("pglast"), exception=PGLAST_IMP_ERR)
    validate(module)
    try:
        result = run(module.params, check_mode=module.check_mode, progress=progress_writer(module), diff=module._diff)
    except MigrateFailure as exc:
        context = dict(exc.result)
        context.pop("msg", None)
        module.fail_json(msg=exc.msg, **context)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
