# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migrate module's flow, importable without Ansible: a journaled, resumable migration runner.

``run(params)`` takes the module's validated parameters and returns the
result dict; an operator-facing failure raises MigrateFailure(msg, result).

Guarantees (the module documentation states them for operators):

* One runner per database and journal schema: a session-level advisory lock
  (``journal.lock_key``) held on a dedicated connection for the whole run.
* Transactional steps (every statement may run in a transaction block) run
  the script, the ``verify`` query and the journal's ``done`` update in one
  transaction: after a crash either all of it is committed or none of it.
* Non-transactional steps (CREATE/DROP INDEX CONCURRENTLY, VACUUM, ...) run
  statement by statement in autocommit after a committed ``running`` row; the
  journal counts the statements done. After a crash the step continues at the
  first statement not journaled: that statement may have taken effect (it
  ran, the crash came before its journal update), so it is run again, except
  that an INVALID index it names is dropped and rebuilt, a valid index it
  creates or an index it drops that is already gone is taken as done, and a
  ``verify`` query that returns true ends the step as done.
* Backfills commit each batch together with the journal's last key, so a
  resumed backfill starts right after the last committed batch.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import getpass
import os
import socket
import time

from ansible_collections.stateful.rollback.plugins.module_utils import backfill as bf
from ansible_collections.stateful.rollback.plugins.module_utils import journal as jr
from ansible_collections.stateful.rollback.plugins.module_utils.compat_static import CompatError, parse_sql
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    CONNECTION_KEYS,
    PostgresError,
    connect,
    describe,
    fetch_all,
    fetch_one,
    get_conn_params,
    psycopg2,
    qualified,
    sql,
)

STATES = ("applied", "reverted", "paused", "resumed", "status")
DEFAULTS = {
    "journal_schema": jr.DEFAULT_SCHEMA,
    "lock_wait_timeout": 30.0,
    "lock_timeout": 5.0,
    "statement_timeout": 0.0,
    "max_retries": 5,
    "retry_base_delay": 0.5,
    "retry_max_delay": 30.0,
    "lag_wait_timeout": 600.0,
    "fail_on_irreversible": False,
    "backfill": True,
}
# SQLSTATEs retried with backoff: lock_not_available (lock_timeout) and deadlock_detected.
RETRYABLE = {"55P03": "lock_timeout", "40P01": "deadlock"}
_BEGIN_KINDS = ("TRANS_STMT_BEGIN", "TRANS_STMT_START")
_COMMIT_KINDS = ("TRANS_STMT_COMMIT",)
_SAVEPOINT_KINDS = ("TRANS_STMT_SAVEPOINT", "TRANS_STMT_RELEASE", "TRANS_STMT_ROLLBACK_TO")


class MigrateError(PostgresError):
    """A migration problem whose message is meant for the operator."""


class MigrateFailure(Exception):
    def __init__(self, msg, result):
        Exception.__init__(self, msg)
        self.msg = msg
        self.result = result


class StepFailed(MigrateError):
    """A step failed; the journal says so."""


class Paused(Exception):
    """A backfill stopped at a batch boundary: pause requested, or replicas too far behind."""

    def __init__(self, reason, msg):
        Exception.__init__(self, msg)
        self.reason = reason
        self.msg = msg


def _no_progress(event):
    return event


_REGCLASS = ("to_regclass(array_to_string(ARRAY(SELECT quote_ident(u.p) FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, n) "
             "ORDER BY u.n), '.'))")


def default_executed_by(environ=None):
    """``user@host``, plus `` awx-job=<JOB_ID>`` when AWX/AAP runs the job."""
    environ = os.environ if environ is None else environ
    try:
        user = getpass.getuser()
    except Exception:  # pylint: disable=broad-except
        user = "unknown"
    who = "%s@%s" % (user, socket.gethostname())
    if environ.get("JOB_ID"):
        who += " awx-job=%s" % environ["JOB_ID"]
    return who


def _iso(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def _short(hexdigest):
    return (hexdigest or "")[:12] + "…"


def _pg_message(exc):
    text = (getattr(exc, "pgerror", None) or str(exc) or type(exc).__name__).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    code = getattr(exc, "pgcode", None)
    return "%s [SQLSTATE %s]" % (first, code) if code else first


def _ms(seconds):
    return "%dms" % int(round(seconds * 1000))


# -- scripts ---------------------------------------------------------------------------


class ScriptPlan(object):
    """A script split into statements (pglast), with how it will run."""

    def __init__(self, migration, direction, script, statements, transactional, notes):
        self.migration = migration
        self.direction = direction
        self.script = script
        self.statements = statements
        self.transactional = transactional
        self.notes = notes

    def as_dict(self):
        return {
            "migration": self.migration.id,
            "direction": self.direction,
            "phase": "schema",
            "script": self.script.relpath,
            "sha256": self.script.sha256,
            "transactional": self.transactional,
            "statements": len(self.statements),
            "non_transactional_statements": [
                "line %d: %s" % (s.line, s.kind) for s in self.statements if not s.is_transactional()
            ],
        }


def _kind_name(node):
    return getattr(node.kind, "name", str(node.kind))


def plan_script(migration, direction, server_version=None):
    """ScriptPlan of a migration's up or down script; MigrateError names the file and the statement."""
    script = migration.up if direction == "up" else migration.down
    where = "migration %s: %s" % (migration.id, script.relpath)
    try:
        statements = parse_sql(script.sql)
    except CompatError as exc:
        raise MigrateError("%s: %s" % (where, exc))
    notes = []
    kept = []
    last = len(statements) - 1
    for index, stmt in enumerate(statements):
        if stmt.kind != "TransactionStmt":
            kept.append(stmt)
            continue
        kind = _kind_name(stmt.node)
        if kind in _BEGIN_KINDS and index == 0 or kind in _COMMIT_KINDS and index == last:
            notes.append("line %d: %s ignored (the runner makes the transaction)" % (stmt.line, stmt.text.split()[0].upper()))
            continue
        if kind in _SAVEPOINT_KINDS:
            kept.append(stmt)
            continue
        raise MigrateError("%s: line %d: %s is not allowed in a migration script; the runner controls transactions "
                           "(a leading BEGIN and a trailing COMMIT are ignored)" % (where, stmt.line, stmt.text))
    if not kept:
        raise MigrateError("%s contains no SQL statement" % where)
    outside = [s for s in kept if not s.is_transactional(server_version)]
    if migration.transactional is True and outside:
        raise MigrateError(
            "%s: transactional is true but line %d (%s) cannot run inside a transaction block; "
            "set transactional: false or move it to its own migration" % (where, outside[0].line, outside[0].kind))
    transactional = (not outside) if migration.transactional is None else bool(migration.transactional)
    if not transactional:
        for stmt in kept:
            if stmt.kind == "IndexStmt" and stmt.node.concurrent and not stmt.node.idxname:
                notes.append("line %d: CREATE INDEX CONCURRENTLY without an index name: an invalid index left by an "
                             "interruption cannot be found and cleaned up; name the index" % stmt.line)
    return ScriptPlan(migration, direction, script, kept, transactional, notes)


# -- the run -----------------------------------------------------------------------------


class Runner(object):
    """One run of the module: connections, journal, options, results."""

    def __init__(self, params, release, check_mode=False, progress=None, sleep=time.sleep, rand=None):
        self.params = dict(DEFAULTS)
        self.params.update(dict((k, v) for k, v in params.items() if v is not None))
        self.release = release
        self.check_mode = check_mode
        self.emit = progress or _no_progress
        self.sleep = sleep
        self.rand = rand
        self.journal = jr.Journal(self.params["journal_schema"])
        self.executed_by = self.params.get("executed_by") or default_executed_by()
        self.conn_params = get_conn_params(dict((k, params.get(k)) for k in CONNECTION_KEYS))
        self.conn = None
        self.lock_conn = None
        self.steps = []
        self.changed = False
        self.started = time.monotonic()
        self.lock_wait_seconds = 0.0

    def has_backfill(self, migration):
        """Whether this run counts and runs the migration's backfill (option backfill=false: schema steps only)."""
        return migration.backfill is not None and self.params.get("backfill", True) is not False

    # -- connections -------------------------------------------------------------------
    def open(self):
        name = "stateful.rollback.migrate %s" % self.release.version
        self.conn = connect(self.conn_params, application_name=name, canonical=False)
        if fetch_one(self.conn, "SELECT pg_catalog.pg_is_in_recovery()")[0]:
            raise MigrateError("%s is in recovery (a standby): point login_host/login_port at the primary" % describe(self.conn_params))

    def close(self):
        for conn in (self.conn, self.lock_conn):
            if conn is not None and not conn.closed:
                try:
                    conn.close()
                except Exception:  # pylint: disable=broad-except
                    pass

    def lock_holder(self):
        namespace, key = jr.lock_key(self.journal.schema)
        rows = fetch_all(
            self.conn,
            "SELECT a.pid, a.application_name, host(a.client_addr), a.client_port, a.usename, a.backend_start "
            "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s "
            "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
            (namespace & 0xFFFFFFFF, key & 0xFFFFFFFF),
        )
        if not rows:
            return None
        pid, app, host, port, user, since = rows[0]
        return {"pid": pid, "application_name": app, "client": "%s:%s" % (host, port) if host else "local socket",
                "user": user, "backend_start": _iso(since)}

    def acquire_lock(self):
        namespace, key = jr.lock_key(self.journal.schema)
        self.lock_conn = connect(self.conn_params, application_name="stateful.rollback.migrate lock %s (%s)"
                                 % (self.release.version, self.executed_by), canonical=False)
        timeout = float(self.params["lock_wait_timeout"])
        started = time.monotonic()
        delay = 0.05
        while True:
            if fetch_one(self.lock_conn, "SELECT pg_try_advisory_lock(%s, %s)", (namespace, key))[0]:
                self.lock_wait_seconds = time.monotonic() - started
                return
            waited = time.monotonic() - started
            if waited >= timeout:
                holder = self.lock_holder()
                who = ("pid %(pid)s, application_name %(application_name)r, client %(client)s, user %(user)s, "
                       "connected since %(backend_start)s" % holder) if holder else "a session that just ended"
                raise MigrateError(
                    "another migration runner holds the lock of journal %s on %s (advisory lock %d/%d): %s; "
                    "waited lock_wait_timeout=%ss. Wait for it to finish, or stop it if it is stuck"
                    % (self.journal.schema, describe(self.conn_params), namespace, key, who, self.params["lock_wait_timeout"]))
            self.sleep(min(delay, max(timeout - waited, 0.01)))
            delay = min(delay * 2, 1.0)

    # -- journal -----------------------------------------------------------------------
    def journal_rows(self):
        """{migration id: [rows]} of this release's migrations ({} when the journal does not exist)."""
        out = dict((m.id, []) for m in self.release.migrations)
        if self.conn is None or not self.journal.exists(self.conn):
            return out
        for row in self.journal.rows(self.conn, list(out)):
            out[row["migration_id"]].append(row)
        return out

    def tamper_check(self, rows):
        """Refuse when a script (or backfill definition) changed since it took effect."""
        problems = self.tamper_problems(rows)
        if problems:
            raise MigrateError("; ".join(problems))

    def tamper_problems(self, rows):
        """One message per journaled step whose script or backfill definition differs from the manifest's now."""
        problems = []
        for migration in self.release.migrations:
            for row in jr.cycle_rows(rows[migration.id])[0]:
                effective = row["state"] == "done" or (row["transactional"] is False and (row["statements_done"] or 0) > 0) \
                    or (row["phase"] == "backfill" and (row["batches"] or 0) > 0)
                if not effective:
                    continue
                if row["phase"] == "backfill":
                    if migration.backfill is None:
                        continue
                    now = bf.spec_sha256(migration.backfill)
                    if now != row["script_sha256"]:
                        problems.append(
                            "migration %s: its backfill of %s changed since it started (journal sha256 %s, manifest now %s); "
                            "a migration is immutable once applied — write a new migration"
                            % (migration.id, migration.backfill.table, _short(row["script_sha256"]), _short(now)))
                    continue
                script = migration.up if row["direction"] == "up" else migration.down
                if script is None or script.sha256 == row["script_sha256"]:
                    continue
                problems.append(
                    "migration %s: %s changed since it was applied (journal sha256 %s, file now %s); "
                    "a migration is immutable once applied — write a new migration"
                    % (migration.id, script.relpath, _short(row["script_sha256"]), _short(script.sha256)))
        return problems

    def statuses(self, rows, estimate=True):
        return [self.status_entry(m, rows[m.id], estimate) for m in self.release.migrations]

    def status_entry(self, migration, rows, estimate=True):
        summary = jr.summarize(rows, self.has_backfill(migration))
        entry = {
            "id": migration.id,
            "applied": summary["applied"],
            "status": summary["status"],
            "irreversible": migration.irreversible,
            "applied_by": summary["applied_by"],
            "sha256": migration.up.sha256,
        }
        step = summary["down_step"] if summary["status"].startswith("revert_") else summary["schema_step"]
        if step is not None:
            entry["schema"] = {
                "direction": step["direction"], "state": step["state"], "release": step["release_version"],
                "sha256": step["script_sha256"], "transactional": step["transactional"],
                "statements_done": step["statements_done"], "attempts": step["attempts"],
                "started_at": _iso(step["started_at"]), "finished_at": _iso(step["finished_at"]),
                "seconds": _seconds_between(step["started_at"], step["finished_at"]),
                "executed_by": step["executed_by"], "error": step["error"], "note": step["note"],
            }
        if self.has_backfill(migration):
            entry["backfill"] = self.backfill_status(migration, summary, estimate)
        return entry

    def backfill_status(self, migration, summary, estimate):
        row = summary["backfill_step"]
        out = {"table": migration.backfill.table, "key": migration.backfill.key, "state": row["state"] if row else "pending",
               "rows_processed": 0, "batches": 0, "last_key": None}
        if row is not None:
            out.update({
                "rows_processed": row["rows_processed"], "batches": row["batches"], "last_key": row["last_key"],
                "key_type": row["last_key_type"], "attempts": row["attempts"], "started_at": _iso(row["started_at"]),
                "finished_at": _iso(row["finished_at"]), "active_seconds": round(row["elapsed_seconds"] or 0, 3),
                "error": row["error"], "note": row["note"],
            })
            if row["elapsed_seconds"]:
                out["rows_per_second"] = int(row["rows_processed"] / row["elapsed_seconds"])
        if row is not None and row["state"] == "done":
            out["rows_remaining"] = 0
            out["eta_seconds"] = 0
            return out
        if estimate and self.conn is not None:
            target = None
            try:
                target = bf.resolve(self.conn, migration.backfill)
                remaining, method = bf.estimate_remaining(self.conn, target, migration.backfill, row["last_key"] if row else None)
                out["rows_remaining"] = remaining
                out["rows_remaining_method"] = method
                if out.get("rows_per_second"):
                    out["eta_seconds"] = round(remaining / float(out["rows_per_second"]), 1)
            except (PostgresError, psycopg2.Error) as exc:
                # Typically the up script has not run yet: the table or the columns of where do not exist.
                out["rows_remaining"] = None
                out["rows_remaining_note"] = "cannot estimate yet: %s" % (
                    _pg_message(exc) if isinstance(exc, psycopg2.Error) else str(exc))
                if isinstance(exc, psycopg2.Error) and target is not None and migration.backfill.where:
                    try:
                        remaining, method = bf.estimate_remaining(self.conn, target, migration.backfill,
                                                                  row["last_key"] if row else None, use_where=False)
                        out["rows_remaining"] = remaining
                        out["rows_remaining_method"] = method
                        out["rows_remaining_note"] = "at most: where cannot be evaluated before the up script ran (%s)" % _pg_message(exc)
                    except psycopg2.Error:
                        pass
        return out

    # -- steps -------------------------------------------------------------------------
    def _start_row(self, migration, direction, phase, rows, sha256, script, transactional, extra=None):
        """(row id, previous row or None): continue the unfinished row of this step, or insert a new one."""
        previous = jr.unfinished(rows, direction, phase)
        values = {
            "release_version": self.release.version, "release_digest": self.release.digest,
            "executed_by": self.executed_by, "state": "running", "error": None,
        }
        with self.conn.cursor() as cur:
            if previous is not None:
                values["attempts"] = (previous["attempts"] or 0) + 1
                self.journal.update(cur, previous["id"], values)
                return previous["id"], previous
            values.update({
                "migration_id": migration.id, "direction": direction, "phase": phase, "script": script,
                "script_sha256": sha256, "transactional": transactional, "attempts": 1,
            })
            values.update(extra or {})
            return self.journal.insert(cur, values), None

    def _journal(self, row_id, values, finished=False):
        with self.conn.cursor() as cur:
            self.journal.update(cur, row_id, values, finished=finished)

    def _set_timeouts(self, cur, local):
        cur.execute("SELECT set_config('lock_timeout', %s, %s), set_config('statement_timeout', %s, %s)",
                    (_ms(float(self.params["lock_timeout"])), local, _ms(float(self.params["statement_timeout"])), local))

    def _rollback(self):
        if self.conn is not None and not self.conn.closed:
            try:
                with self.conn.cursor() as cur:
                    cur.execute("ROLLBACK")
            except psycopg2.Error:
                pass

    def _reset_session(self):
        """Undo session settings a script made (SET ...), so the next step starts clean."""
        with self.conn.cursor() as cur:
            cur.execute("RESET ALL")

    def _backoff(self, attempt):
        if self.rand is not None:
            return bf.backoff_delay(attempt, self.params["retry_base_delay"], self.params["retry_max_delay"], self.rand)
        return bf.backoff_delay(attempt, self.params["retry_base_delay"], self.params["retry_max_delay"])

    def _verify(self, cur, migration):
        cur.execute(migration.verify)
        row = cur.fetchone() if cur.description is not None else None
        return bool(row) and row[0] is True

    def run_schema_step(self, plan, rows):
        migration, direction = plan.migration, plan.direction
        started = time.monotonic()
        row_id, previous = self._start_row(migration, direction, "schema", rows, plan.script.sha256,
                                           plan.script.relpath, plan.transactional)
        step = {
            "migration": migration.id, "direction": direction, "phase": "schema", "script": plan.script.relpath,
            "sha256": plan.script.sha256, "transactional": plan.transactional, "statements": len(plan.statements),
            "resumed": previous is not None, "retries": 0, "notes": list(plan.notes),
        }
        self.steps.append(step)
        self.changed = True
        self.emit({"event": "step_start", "migration": migration.id, "direction": direction, "phase": "schema",
                   "transactional": plan.transactional, "resumed": previous is not None})
        try:
            if plan.transactional:
                self._run_transactional(plan, row_id, previous, step)
            else:
                self._run_autocommit(plan, row_id, previous, step)
        finally:
            step["seconds"] = round(time.monotonic() - started, 3)
            if self.conn is not None and not self.conn.closed:
                self._reset_session()
        step["state"] = "done"
        self.emit({"event": "step_done", "migration": migration.id, "direction": direction, "phase": "schema",
                   "seconds": step["seconds"]})

    def _where(self, plan, stmt=None):
        text = "migration %s: %s" % (plan.migration.id, plan.script.relpath)
        if stmt is not None:
            text += " line %d (%s)" % (stmt.line, stmt.kind)
        return text

    def _fail_step(self, row_id, step, message, values=None):
        step["state"] = "failed"
        step["error"] = message
        record = {"state": "failed", "error": message}
        record.update(values or {})
        if self.conn is not None and not self.conn.closed:
            self._journal(row_id, record, finished=True)
        raise StepFailed(message)

    def _retry_or_fail(self, exc, attempt, row_id, step, what, attempts_base, values=None):
        """After a failed attempt: sleep and return True to retry, or journal the failure and raise."""
        code = getattr(exc, "pgcode", None)
        if code in RETRYABLE and attempt < int(self.params["max_retries"]):
            delay = self._backoff(attempt)
            step["retries"] += 1
            note = "%s (%s), retry %d/%d in %.2fs" % (RETRYABLE[code], _pg_message(exc), attempt + 1, self.params["max_retries"], delay)
            record = {"error": "%s: %s" % (what, note)}
            if attempts_base is not None:
                record["attempts"] = attempts_base + attempt + 1
            self._journal(row_id, record)
            self.emit({"event": "retry", "migration": step["migration"], "phase": step["phase"], "attempt": attempt + 1,
                       "delay_seconds": round(delay, 3), "error": _pg_message(exc)})
            self.sleep(delay)
            return True
        if code in RETRYABLE:
            message = "%s failed after %d attempts: %s (%s); nothing of this attempt was kept" % (
                what, attempt + 1, RETRYABLE[code], _pg_message(exc))
        else:
            message = "%s failed: %s" % (what, _pg_message(exc))
        if self.conn is None or self.conn.closed:
            raise StepFailed(message + "; the connection was lost, so the journal could not record it (rerun to continue)")
        record = {"attempts": attempts_base + attempt} if attempts_base is not None else {}
        record.update(values or {})
        self._fail_step(row_id, step, message, record)
        return False  # not reached

    def _run_transactional(self, plan, row_id, previous, step):
        migration = plan.migration
        attempts_base = (previous["attempts"] + 1) if previous else 1
        attempt = 0
        while True:
            stmt = None
            try:
                with self.conn.cursor() as cur:
                    cur.execute("BEGIN")
                    self._set_timeouts(cur, True)
                    for stmt in plan.statements:
                        cur.execute(stmt.text)
                    stmt = None
                    if plan.direction == "up" and migration.verify and not self._verify(cur, migration):
                        cur.execute("ROLLBACK")
                        self._fail_step(row_id, step, "%s: verify returned false after the script; the transaction was rolled "
                                        "back, nothing of it was kept" % self._where(plan), {"attempts": attempts_base + attempt})
                    self.journal.update(cur, row_id, {"state": "done", "statements_done": len(plan.statements),
                                                      "attempts": attempts_base + attempt, "error": None}, finished=True)
                    cur.execute("COMMIT")
                return
            except psycopg2.Error as exc:
                self._rollback()
                what = self._where(plan, stmt) if stmt is not None else self._where(plan) + " (verify or commit)"
                if self._retry_or_fail(exc, attempt, row_id, step, what, attempts_base):
                    attempt += 1
                    continue

    def _index_state(self, relation, index_name):
        """(schema, valid) of an index named by a statement, on the statement's table; None when absent."""
        parts = (relation.schemaname, relation.relname) if relation.schemaname else (relation.relname,)
        return fetch_one(
            self.conn,
            "SELECT n.nspname, i.indisvalid FROM pg_catalog.pg_class t "
            "JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace "
            "JOIN pg_catalog.pg_class c ON c.relnamespace = t.relnamespace AND c.relname = %s AND c.relkind = 'i' "
            "JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid "
            "WHERE t.oid = " + _REGCLASS,
            (index_name, list(parts)),
        )

    def _recover(self, stmt, retry, step):
        """Before (re)running a non-transactional statement: True when it is already effective (skip it)."""
        node = stmt.node
        if stmt.kind == "IndexStmt" and node.concurrent and node.idxname:
            state = self._index_state(node.relation, node.idxname)
            if state is None:
                return False
            schema, valid = state
            if not valid:
                with self.conn.cursor() as cur:
                    cur.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, node.idxname)))
                step["notes"].append("line %d: dropped the invalid index %s left by an interrupted CREATE INDEX CONCURRENTLY; "
                                     "rebuilding it" % (stmt.line, qualified(schema, node.idxname)))
                return False
            if retry:
                step["notes"].append("line %d: index %s exists and is valid: already effective" % (stmt.line, qualified(schema, node.idxname)))
                return True
            return False
        if stmt.kind == "DropStmt" and retry and getattr(node, "concurrent", False) and not node.missing_ok:
            present = False
            for obj in node.objects or ():
                present = present or fetch_one(self.conn, "SELECT " + _REGCLASS + " IS NOT NULL", ([s.sval for s in obj],))[0]
            if not present:
                step["notes"].append("line %d: the index is already gone: already effective" % stmt.line)
                return True
        return False

    def _run_autocommit(self, plan, row_id, previous, step):
        migration = plan.migration
        attempts_base = (previous["attempts"] + 1) if previous else 1
        first = (previous["statements_done"] or 0) if previous else 0
        if previous is not None and first:
            step["notes"].append("continuing after statement %d of %d (journaled by the interrupted run)" % (first, len(plan.statements)))
        if previous is not None and plan.direction == "up" and migration.verify:
            with self.conn.cursor() as cur:
                try:
                    effective = self._verify(cur, migration)
                except psycopg2.Error:
                    effective = False
            if effective:
                step["notes"].append("verify returned true before re-running: the interrupted run had taken effect")
                self._journal(row_id, {"state": "done", "statements_done": len(plan.statements), "error": None,
                                       "note": "already effective (verify) after an interrupted run"}, finished=True)
                return
        for index in range(first, len(plan.statements)):
            stmt = plan.statements[index]
            attempt = 0
            while True:
                try:
                    retry = attempt > 0 or (previous is not None and index == first)
                    if not self._recover(stmt, retry, step):
                        with self.conn.cursor() as cur:
                            self._set_timeouts(cur, False)
                            cur.execute(stmt.text)
                    break
                except psycopg2.Error as exc:
                    self._rollback()
                    if self._retry_or_fail(exc, attempt, row_id, step, self._where(plan, stmt), attempts_base,
                                           {"statements_done": index}):
                        attempt += 1
                        continue
            self._journal(row_id, {"statements_done": index + 1})
        if plan.direction == "up" and migration.verify:
            with self.conn.cursor() as cur:
                try:
                    ok = self._verify(cur, migration)
                except psycopg2.Error as exc:
                    self._fail_step(row_id, step, "%s: verify failed: %s" % (self._where(plan), _pg_message(exc)))
            if not ok:
                self._fail_step(row_id, step, "%s: verify returned false after every statement ran (non-transactional: "
                                "the statements' effects stay; fix and rerun, or revert)" % self._where(plan))
        self._journal(row_id, {"state": "done", "error": None}, finished=True)

    # -- backfill ------------------------------------------------------------------------
    def pause_flag(self):
        requested, by, at = self.journal.pause_requested(self.conn, self.release.version)
        return requested, by, _iso(at)

    def wait_for_lag(self, migration, threshold):
        started = time.monotonic()
        last_event = None
        while True:
            worst, name = bf.max_lag(bf.replica_lag(self.conn))
            if worst is not None and worst <= threshold:
                return time.monotonic() - started
            waited = time.monotonic() - started
            lag_text = "unknown lag (the role needs pg_monitor to read it)" if worst is None else "%d bytes behind" % worst
            if waited >= float(self.params["lag_wait_timeout"]):
                raise Paused("replica_lag", "migration %s: replica %s is %s, over max_replica_lag_bytes=%d, for "
                             "lag_wait_timeout=%ss; the backfill stopped at a batch boundary and resumes where it stopped"
                             % (migration.id, name, lag_text, threshold, self.params["lag_wait_timeout"]))
            if last_event is None or time.monotonic() - last_event >= 1.0:
                self.emit({"event": "lag_wait", "migration": migration.id, "replica": name, "lag_bytes": worst,
                           "max_replica_lag_bytes": threshold, "waited_seconds": round(waited, 3)})
                last_event = time.monotonic()
            self.sleep(bf.sleep_for_lag(waited))

    def run_backfill(self, migration, rows):
        spec = migration.backfill
        target = bf.resolve(self.conn, spec)
        sha = bf.spec_sha256(spec)
        row_id, previous = self._start_row(
            migration, "up", "backfill", rows, sha, "backfill %s" % target.display, True,
            {"last_key_type": target.type_display})
        last_key = previous["last_key"] if previous else None
        total = previous["rows_processed"] if previous else 0
        step = {
            "migration": migration.id, "direction": "up", "phase": "backfill", "table": target.display,
            "key": target.key, "key_type": target.type_display, "batch_size": spec.batch_size,
            "resumed": previous is not None, "resumed_from_key": last_key, "rows_processed": 0, "batches": 0,
            "max_batch_ms": 0.0, "retries": 0, "lag_wait_seconds": 0.0, "notes": [],
        }
        if target.nullable:
            step["notes"].append("key %s is nullable: rows whose key is NULL are not visited" % target.key)
        self.steps.append(step)
        self.changed = True
        remaining, method = bf.estimate_remaining(self.conn, target, spec, last_key)
        step["rows_estimated"] = remaining
        step["rows_estimate_method"] = method
        self.emit({"event": "step_start", "migration": migration.id, "direction": "up", "phase": "backfill",
                   "table": target.display, "resumed_from_key": last_key, "rows_remaining": remaining})
        bucket = bf.TokenBucket(spec.max_rows_per_second, burst=min(spec.batch_size, spec.max_rows_per_second)) \
            if spec.max_rows_per_second else None
        update = {True: bf.update_query(target, spec, True), False: bf.update_query(target, spec, False)}
        bounds = {True: bf.bound_query(target, True), False: bf.bound_query(target, False)}
        started = time.monotonic()
        mark = started
        try:
            while True:
                requested, by, at = self.pause_flag()
                if requested:
                    raise Paused("requested", "paused at a batch boundary (pause requested by %s at %s)" % (by, at))
                if spec.max_replica_lag_bytes is not None:
                    step["lag_wait_seconds"] += self.wait_for_lag(migration, spec.max_replica_lag_bytes)
                attempt = 0
                while True:
                    first = last_key is None
                    try:
                        with self.conn.cursor() as cur:
                            began = time.monotonic()
                            cur.execute("BEGIN")
                            self._set_timeouts(cur, True)
                            cur.execute(bounds[first], ((spec.batch_size,) if first else (last_key, spec.batch_size)))
                            found = cur.fetchone()
                            upper, keys = found if found else (None, 0)
                            if not keys:
                                cur.execute("COMMIT")
                                break
                            cur.execute(update[first], ((upper,) if first else (last_key, upper)))
                            changed = cur.rowcount
                            now = time.monotonic()
                            self.journal.record_batch(cur, row_id, upper, changed, now - mark)
                            cur.execute("COMMIT")
                            ended = time.monotonic()
                        break
                    except psycopg2.Error as exc:
                        self._rollback()
                        what = "migration %s: backfill batch of %s after key %s" % (migration.id, target.display, last_key)
                        if self._retry_or_fail(exc, attempt, row_id, step, what, None):
                            attempt += 1
                            continue
                if not keys:
                    break
                mark = ended
                batch_ms = (ended - began) * 1000.0
                last_key = upper
                total += changed
                step["rows_processed"] += changed
                step["batches"] += 1
                step["max_batch_ms"] = max(step["max_batch_ms"], round(batch_ms, 2))
                elapsed = ended - started
                rate = step["rows_processed"] / elapsed if elapsed > 0 else None
                left = max(remaining - step["rows_processed"], 0)
                self.emit({"event": "batch", "migration": migration.id, "table": target.display, "rows": total,
                           "batch_rows": changed, "last_key": last_key, "batch_ms": round(batch_ms, 2),
                           "rows_per_second": int(rate) if rate else None, "rows_remaining": left,
                           "eta_seconds": round(left / rate, 1) if rate else None})
                if keys < spec.batch_size:
                    break
                if bucket is not None:
                    wait = bucket.consume(changed)
                    if wait > 0:
                        self.sleep(wait)
        except Paused as exc:
            step["state"] = "paused"
            step["last_key"] = last_key
            step["seconds"] = round(time.monotonic() - started, 3)
            step["pause_reason"] = exc.reason
            self._journal(row_id, {"state": "paused", "note": exc.msg, "error": exc.msg if exc.reason != "requested" else None})
            self.emit({"event": "paused", "migration": migration.id, "reason": exc.reason, "rows": total, "last_key": last_key})
            raise
        finally:
            step.setdefault("seconds", round(time.monotonic() - started, 3))
        self._journal(row_id, {"state": "done", "error": None, "note": None}, finished=True)
        step["state"] = "done"
        step["last_key"] = last_key
        step["rows_total"] = total
        self.emit({"event": "step_done", "migration": migration.id, "direction": "up", "phase": "backfill",
                   "seconds": step["seconds"], "rows": total, "max_batch_ms": step["max_batch_ms"]})

    # -- flows ---------------------------------------------------------------------------
    def select_up(self, rows):
        """Migrations to apply (in order), refusing out-of-order pending migrations."""
        migrations = list(self.release.migrations)
        target = self.params.get("target")
        if target:
            ids = [m.id for m in migrations]
            if target not in ids:
                raise MigrateError("target %r is not a migration of release %s (its migrations: %s)"
                                   % (target, self.release.version, ", ".join(ids) or "none"))
            migrations = migrations[:ids.index(target) + 1]
        summaries = [(m, jr.summarize(rows[m.id], self.has_backfill(m))) for m in self.release.migrations]
        pending = None
        for migration, summary in summaries:
            if not summary["applied"] and pending is None:
                pending = migration
            elif summary["applied"] and pending is not None:
                raise MigrateError(
                    "migration %s is not applied but the later migration %s is: migrations run in manifest order; "
                    "add new migrations at the end of the list" % (pending.id, migration.id))
        return [m for m in migrations if not jr.summarize(rows[m.id], self.has_backfill(m))["applied"]]

    def select_down(self, rows):
        """(migrations to revert in reverse order, irreversible ones) of this release."""
        migrations = list(self.release.migrations)
        ids = [m.id for m in migrations]
        to = self.params.get("to")
        only = self.params.get("migrations")
        if to:
            if to not in ids:
                raise MigrateError("to %r is not a migration of release %s (its migrations: %s)" % (to, self.release.version, ", ".join(ids)))
            migrations = migrations[ids.index(to) + 1:]
        if only:
            unknown = [m for m in only if m not in ids]
            if unknown:
                raise MigrateError("migrations %s are not migrations of release %s (its migrations: %s)"
                                   % (", ".join(unknown), self.release.version, ", ".join(ids)))
            migrations = [m for m in migrations if m.id in only]
        scope = []
        for migration in reversed(migrations):
            summary = jr.summarize(rows[migration.id], self.has_backfill(migration))
            step = summary["schema_step"]
            if summary["has_effects"] and step is not None and step["release_version"] == self.release.version:
                scope.append(migration)
        irreversible = [{"id": m.id, "reason": m.reason or "no down script"} for m in scope if m.irreversible or m.down is None]
        return scope, irreversible

    def plan_backfill(self, migration, rows):
        summary = jr.summarize(rows, True)
        row = summary["backfill_step"]
        entry = {"migration": migration.id, "direction": "up", "phase": "backfill", "table": migration.backfill.table,
                 "key": migration.backfill.key, "batch_size": migration.backfill.batch_size,
                 "sha256": bf.spec_sha256(migration.backfill), "resumes_from_key": row["last_key"] if row else None}
        entry.update(dict((k, v) for k, v in self.backfill_status(migration, summary, True).items()
                          if k in ("rows_remaining", "rows_remaining_method", "rows_remaining_note")))
        return entry


def _seconds_between(start, end):
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _diff(before, after):
    def compact(entries):
        out = {}
        for entry in entries:
            rows = (entry.get("backfill") or {}).get("rows_processed")
            out[entry["id"]] = entry["status"] + (" (rows %s)" % rows if rows else "")
        return out
    return {"before": compact(before), "after": compact(after)}


def run(params, release=None, check_mode=False, progress=None, sleep=time.sleep, diff=False, rand=None):
    """Run the module's flow; returns the result dict or raises MigrateFailure."""
    state = params.get("state") or "applied"
    if state not in STATES:
        raise MigrateFailure("state must be one of %s, got %r" % (", ".join(STATES), state), {})
    if release is None:
        from ansible_collections.stateful.rollback.plugins.module_utils.manifest import ManifestError, load_release

        try:
            release = load_release(params.get("manifest"))
        except ManifestError as exc:
            raise MigrateFailure("manifest: %s" % exc, {"manifest_errors": list(exc.errors)})
    try:
        runner = Runner(params, release, check_mode=check_mode, progress=progress, sleep=sleep, rand=rand)
    except PostgresError as exc:
        raise MigrateFailure(str(exc), {})
    result = {
        "changed": False, "state": state, "release": {"version": release.version, "digest": release.digest},
        "journal_schema": runner.journal.schema, "executed_by": runner.executed_by, "steps": runner.steps,
        "paused": False, "needs_restore": False, "irreversible": [],
    }
    failure = None
    before = None
    try:
        runner.open()
        result["connection"] = describe(runner.conn_params)
        server_version = runner.conn.server_version
        if state == "status":
            rows = runner.journal_rows()
            result["journal_exists"] = runner.journal.exists(runner.conn)
            if result["journal_exists"]:
                result["pause_requested"] = runner.pause_flag()[0]
            result["runner"] = runner.lock_holder()
            result["migrations"] = runner.statuses(rows)
            result["tampered"] = runner.tamper_problems(rows)
            return _finish(runner, result)
        if state == "paused":
            exists = runner.journal.exists(runner.conn)
            flag = runner.pause_flag()[0] if exists else False
            if check_mode:
                result["changed"] = not flag
            else:
                created = runner.journal.ensure(runner.conn)
                result["changed"] = runner.journal.set_pause(runner.conn, release.version, True, runner.executed_by) or created
            result["pause_requested"] = True
            result["migrations"] = runner.statuses(runner.journal_rows(), estimate=False)
            return _finish(runner, result)
        if check_mode:
            rows = runner.journal_rows()
            runner.tamper_check(rows)
            if state == "applied" and runner.journal.exists(runner.conn):
                _refuse_if_paused(runner)
            before = runner.statuses(rows, estimate=False)
            result["plan"] = _plan(runner, state, rows, server_version, result)
            result["changed"] = bool(result["plan"]) or (state == "resumed" and runner.journal.exists(runner.conn)
                                                         and runner.pause_flag()[0])
            result["migrations"] = before
            if diff:
                result["diff"] = _diff(before, before)
                for entry in result["plan"]:
                    result["diff"]["after"][entry["migration"]] = "would run %s %s" % (entry["direction"], entry["phase"])
            return _finish(runner, result)
        # Every script of the direction (and every backfill's set/where) parses and is allowed before the journal
        # is created or locked: bad release content changes nothing.
        for migration in release.migrations:
            if (migration.down if state == "reverted" else migration.up) is not None:
                plan_script(migration, "down" if state == "reverted" else "up", server_version)
            if state != "reverted" and runner.has_backfill(migration):
                bf.check_fragments(migration.backfill)
        runner.acquire_lock()
        created = runner.journal.ensure(runner.conn)
        runner.changed = runner.changed or created
        rows = runner.journal_rows()
        before = runner.statuses(rows, estimate=False)
        runner.tamper_check(rows)
        if state == "resumed":
            if runner.journal.set_pause(runner.conn, release.version, False, runner.executed_by):
                runner.changed = True
                result["resumed"] = True
        elif state == "applied":
            _refuse_if_paused(runner)
        if state in ("applied", "resumed"):
            _apply(runner, rows, server_version, result)
        else:
            _revert(runner, rows, server_version, result)
    except Paused as exc:
        result["paused"] = True
        result["pause_reason"] = exc.reason
        result["msg"] = exc.msg
        if exc.reason != "requested":
            failure = exc.msg
    except (MigrateError, PostgresError) as exc:
        failure = str(exc)
    except psycopg2.Error as exc:
        failure = "database error: %s" % _pg_message(exc)
    if failure is None and result.get("needs_restore") and runner.params.get("fail_on_irreversible"):
        failure = result["msg"]
    if failure is not None:
        # A step the failure interrupted before it could note its outcome (the connection was lost): every step
        # returned has a state (the module's documented return), so the playbook can read what ran.
        for step in runner.steps:
            if "state" not in step:
                step.update(state="failed", error=failure)
    try:
        if runner.conn is not None and not runner.conn.closed:
            rows = runner.journal_rows()
            result["migrations"] = runner.statuses(rows, estimate=bool(result.get("paused")))
            if diff and before is not None:
                result["diff"] = _diff(before, result["migrations"])
    except (PostgresError, psycopg2.Error):
        pass
    result = _finish(runner, result)
    if failure is not None:
        raise MigrateFailure(failure, result)
    return result


def _refuse_if_paused(runner):
    requested, by, at = runner.pause_flag()
    if requested:
        raise MigrateError("release %s is paused (requested by %s at %s): state=applied does not override a pause; "
                           "run state=resumed to continue" % (runner.release.version, by, at))


def _finish(runner, result):
    result["changed"] = bool(result.get("changed") or runner.changed)
    steps = [s for s in runner.steps if s["phase"] == "backfill"]
    result["rows_processed"] = sum(s["rows_processed"] for s in steps)
    result["batches"] = sum(s["batches"] for s in steps)
    result["max_batch_ms"] = max([s["max_batch_ms"] for s in steps] or [0.0])
    result["timings"] = {"total_seconds": round(time.monotonic() - runner.started, 3),
                         "lock_wait_seconds": round(runner.lock_wait_seconds, 3)}
    runner.close()
    return result


def _plan(runner, state, rows, server_version, result):
    plan = []
    if state in ("applied", "resumed"):
        for migration in runner.select_up(rows):
            summary = jr.summarize(rows[migration.id], runner.has_backfill(migration))
            step = summary["schema_step"]
            if step is None or step["state"] != "done":
                entry = plan_script(migration, "up", server_version).as_dict()
                entry["resumes"] = step is not None
                plan.append(entry)
            if runner.has_backfill(migration):
                bf.check_fragments(migration.backfill)
                plan.append(runner.plan_backfill(migration, rows[migration.id]))
        return plan
    scope, irreversible = runner.select_down(rows)
    if irreversible:
        result["needs_restore"] = True
        result["irreversible"] = irreversible
        result["msg"] = _irreversible_message(runner.release, irreversible)
        return []
    for migration in scope:
        plan.append(plan_script(migration, "down", server_version).as_dict())
    return plan


def _irreversible_message(release, irreversible):
    return ("release %s cannot be reverted by down scripts: %s; nothing was run — restore the database from the "
            "snapshot taken before the release" % (
                release.version, "; ".join("%s is irreversible (%s)" % (i["id"], i["reason"]) for i in irreversible)))


def _apply(runner, rows, server_version, result):
    todo = runner.select_up(rows)
    plans = {}
    for migration in todo:
        step = jr.summarize(rows[migration.id], runner.has_backfill(migration))["schema_step"]
        if step is None or step["state"] != "done":
            plans[migration.id] = plan_script(migration, "up", server_version)
        if runner.has_backfill(migration):
            bf.check_fragments(migration.backfill)
    for migration in todo:
        requested, by, at = runner.pause_flag()
        if requested:
            raise Paused("requested", "paused before migration %s (pause requested by %s at %s)" % (migration.id, by, at))
        if migration.id in plans:
            runner.run_schema_step(plans[migration.id], runner.journal_rows()[migration.id])
        if runner.has_backfill(migration):
            current = runner.journal_rows()[migration.id]
            backfill_row = jr.summarize(current, True)["backfill_step"]
            if backfill_row is None or backfill_row["state"] != "done":
                runner.run_backfill(migration, current)


def _revert(runner, rows, server_version, result):
    scope, irreversible = runner.select_down(rows)
    if irreversible:
        result["needs_restore"] = True
        result["irreversible"] = irreversible
        result["msg"] = _irreversible_message(runner.release, irreversible)
        return
    plans = [plan_script(m, "down", server_version) for m in scope]
    for plan in plans:
        runner.run_schema_step(plan, runner.journal_rows()[plan.migration.id])
