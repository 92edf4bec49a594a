# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release ledger: which releases ran on a database, how they ended, which are known good.

One row per release version in ``<journal_schema>.release_ledger`` of the
application's own database, so the record travels with the data (streaming
standbys carry it; a restored snapshot carries the ledger of its time).

Outcomes, in the order a release normally goes through them:

``pending``      recorded, rollout not finished (the default of a new record)
``deployed``     rolled out, not verified yet
``verified``     health checks and invariants passed
``failed``       rollout or verification failed
``rolled_back``  undone: the previous release runs again

``known_good`` is set by a promotion (outcome ``verified``) and cleared when
the release later ends ``failed`` or ``rolled_back``: a known-good release is
a safe rollback target. ``history`` lists every event of the row
(``recorded``, ``outcome``, ``snapshots``, ``baseline``, ``promoted``) with
its outcome, time (UTC), author and note.

A release is immutable: recording a version again with a manifest that hashes
differently is refused. Writers serialize on a transaction-level advisory
lock (LOCK_CLASS, hashtext(schema)) and lock the row FOR UPDATE, so
concurrent recordings of one version never duplicate it or lose an event.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import getpass
import os
import socket

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    journal_schema_problem,
    sql,
    table_exists,
)

try:
    from psycopg2 import errors as pg_errors
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover - exercised only without psycopg2 (the module reports it)
    pg_errors = None
    Json = None

TABLE = "release_ledger"
DEFAULT_SCHEMA = "stateful_rollback"
OUTCOMES = ("pending", "deployed", "verified", "failed", "rolled_back")
ENDED_BADLY = ("failed", "rolled_back")
RUNNING = ("deployed", "verified")
# pg_advisory_xact_lock(LOCK_CLASS, hashtext(schema)): 'SRLG' (stateful rollback ledger).
LOCK_CLASS = 0x53524C47

COLUMNS = (
    "id",
    "version",
    "manifest_digest",
    "manifest_path",
    "manifest",
    "image_digests",
    "migration_checksums",
    "snapshots",
    "baseline_path",
    "outcome",
    "known_good",
    "recorded_at",
    "recorded_by",
    "updated_at",
    "promoted_at",
    "promoted_by",
    "history",
)

DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    version text NOT NULL UNIQUE,
    manifest_digest text NOT NULL CHECK (manifest_digest ~ '^sha256:[0-9a-f]{{64}}$'),
    manifest_path text,
    manifest jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    image_digests jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    migration_checksums jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    snapshots jsonb NOT NULL DEFAULT '[]'::jsonb,
    baseline_path text,
    outcome text NOT NULL DEFAULT 'pending'
        CHECK (outcome IN ('pending', 'deployed', 'verified', 'failed', 'rolled_back')),
    known_good boolean NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    recorded_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    promoted_at timestamptz,
    promoted_by text,
    history jsonb NOT NULL DEFAULT '[]'::jsonb
)
"""


class LedgerError(Exception):
    """A refusal or failure whose message is meant for the operator as it is."""


def check_schema_name(name):
    """Return ``name`` when it can be the ledger's schema (postgres.journal_schema_problem); LedgerError otherwise."""
    problem = journal_schema_problem(name)
    if problem:
        raise LedgerError(problem)
    return name


def default_recorded_by(environ=None, hostname=None):
    """``user@host``, plus the AWX/AAP job id when the run is an AWX job (``AWX_JOB_ID`` or ``JOB_ID``)."""
    environ = os.environ if environ is None else environ
    user = environ.get("USER") or environ.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for the uid (containers)
            user = "uid%d" % os.getuid()
    who = "%s@%s" % (user, hostname or socket.gethostname())
    job = environ.get("AWX_JOB_ID") or environ.get("JOB_ID")
    if job:
        who += " (AWX job %s)" % job if (environ.get("AWX_JOB_ID") or environ.get("AWX_HOST")) else " (job %s)" % job
    return who


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    return value


def row_dict(row):
    """A ledger row as a JSON-able dict (timestamps as ISO 8601 UTC strings)."""
    if row is None:
        return None
    out = dict(zip(COLUMNS, row))
    for key in ("recorded_at", "updated_at", "promoted_at"):
        out[key] = _iso(out[key])
    return out


class Ledger:
    """The release ledger of one database (``conn``: an autocommit psycopg2 connection)."""

    def __init__(self, conn, schema=DEFAULT_SCHEMA):
        self.conn = conn
        self.schema = check_schema_name(schema)
        self.table = sql.Identifier(self.schema, TABLE)
        self.name = "%s.%s" % (self.schema, TABLE)

    # -- plumbing ------------------------------------------------------------------
    def _run(self, work, read_only=False):
        """Call ``work(cur)`` in one transaction; commit on success, roll back on any error."""
        with self.conn.cursor() as cur:
            cur.execute("BEGIN READ ONLY" if read_only else "BEGIN")
            try:
                result = work(cur)
            except BaseException:
                if not self.conn.closed:
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            return result

    def _exists(self, cur):
        return table_exists(cur, self.schema, TABLE)

    def _lock_and_ensure(self, cur):
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, self.schema))
        if self._exists(cur):
            return False
        cur.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (self.schema,))
        if cur.fetchone() is None:
            # Other writers of the schema (the migration journal) do not take our lock: a concurrent
            # CREATE SCHEMA makes ours fail with a unique violation; then the schema exists.
            cur.execute("SAVEPOINT ledger_schema")
            try:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            except pg_errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT ledger_schema")
            cur.execute("RELEASE SAVEPOINT ledger_schema")
        cur.execute(sql.SQL(DDL).format(table=self.table))
        cur.execute(
            sql.SQL("COMMENT ON TABLE {} IS %s").format(self.table),
            ("stateful.rollback release ledger (format 1): one row per release version",),
        )
        return True

    def _select(self, where=None, order=None, limit=None, lock=False):
        query = sql.SQL("SELECT {cols} FROM {table} WHERE {where}").format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS), table=self.table,
            where=sql.SQL("true") if where is None else where,
        )
        if order is not None:
            query += sql.SQL(" ORDER BY ") + order
        if limit is not None:
            query += sql.SQL(" LIMIT {}").format(sql.Literal(int(limit)))
        if lock:
            query += sql.SQL(" FOR UPDATE")
        return query

    def _fetch(self, cur, version, lock=False):
        cur.execute(self._select(sql.SQL("version = %s"), lock=lock), (version,))
        return row_dict(cur.fetchone())

    def _write(self, cur, before, after):
        values = [Json(after[c]) if c in _JSON_COLUMNS else after[c] for c in _WRITABLE]
        if before is None:
            cur.execute(
                sql.SQL("INSERT INTO {table} ({cols}) VALUES ({vals}) RETURNING id").format(
                    table=self.table,
                    cols=sql.SQL(", ").join(sql.Identifier(c) for c in _WRITABLE),
                    vals=sql.SQL(", ").join(sql.Placeholder() for dummy in _WRITABLE),
                ),
                values,
            )
        else:
            cur.execute(
                sql.SQL("UPDATE {table} SET {sets} WHERE id = %s RETURNING id").format(
                    table=self.table,
                    sets=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in _WRITABLE),
                ),
                values + [before["id"]],
            )
        return cur.fetchone()[0]

    def _now(self, cur, check_mode):
        if check_mode:
            return utc_now()
        cur.execute("SELECT now()")
        return cur.fetchone()[0]

    # -- reads ---------------------------------------------------------------------
    def exists(self):
        return self._run(self._exists, read_only=True)

    def get(self, version):
        """The row of ``version`` or None (also when the ledger does not exist yet)."""
        return self._run(lambda cur: self._fetch(cur, version) if self._exists(cur) else None, read_only=True)

    def info(self, version=None, history_limit=20):
        """current, last_known_good, history (newest first) and the release named ``version``."""

        def work(cur):
            result = {"exists": self._exists(cur), "current": None, "last_known_good": None, "history": [], "release": None}
            if not result["exists"]:
                return result
            newest = sql.SQL("recorded_at DESC, id DESC")
            cur.execute(self._select(sql.SQL("outcome = ANY(%s)"), newest, 1), (list(RUNNING),))
            result["current"] = row_dict(cur.fetchone())
            cur.execute(self._select(sql.SQL("known_good"), newest, 1))
            result["last_known_good"] = row_dict(cur.fetchone())
            cur.execute(self._select(order=newest, limit=history_limit))
            result["history"] = [row_dict(r) for r in cur.fetchall()]
            if version is not None:
                result["release"] = self._fetch(cur, version)
            return result

        return self._run(work, read_only=True)

    # -- writes --------------------------------------------------------------------
    def record(self, version, recorded_by, release=None, outcome=None, snapshots=None, baseline_path=None,
               note=None, check_mode=False):
        """Insert or update the row of ``version``; returns a Change.

        ``release`` (a manifest.Release) is required to record a new version
        and, when given for a recorded one, must hash as recorded.
        """
        if outcome is not None and outcome not in OUTCOMES:
            raise LedgerError("outcome %r is not one of %s" % (outcome, ", ".join(OUTCOMES)))

        if release is not None and release.version != version:
            raise LedgerError("version %s does not match the manifest's version %s (%s)" % (version, release.version, release.path))

        def work(cur):
            before = self._current(cur, version, check_mode)
            now = self._now(cur, check_mode)
            by = recorded_by
            if before is None:
                if release is None:
                    raise LedgerError(
                        "release %s is not recorded in %s; give its manifest to record it" % (version, self.name)
                    )
                after = _new_row(version, release, by, now)
                events = [_event("recorded", after["outcome"], now, by, note)]
                changes = ["recorded %s (%s)" % (version, release.digest)]
            else:
                if release is not None and release.digest != before["manifest_digest"]:
                    raise LedgerError(
                        "release %s is already recorded with digest %s, the manifest now hashes to %s; a release is "
                        "immutable - bump the version" % (version, before["manifest_digest"], release.digest)
                    )
                after = dict(before)
                events, changes = [], []
            if outcome is not None and outcome != after["outcome"]:
                changes.append("outcome %s -> %s" % (after["outcome"], outcome))
                if before is None:
                    events[0]["outcome"] = outcome
                else:
                    events.append(_event("outcome", outcome, now, by, note))
                after["outcome"] = outcome
                if outcome in ENDED_BADLY and after["known_good"]:
                    after["known_good"] = False
                    changes.append("known_good true -> false")
            added = [s for s in _unique(snapshots or []) if s not in after["snapshots"]]
            if added:
                after["snapshots"] = list(after["snapshots"]) + added
                changes.append("snapshots + %s" % ", ".join(added))
                if before is not None:
                    events.append(dict(_event("snapshots", after["outcome"], now, by, note), snapshots=added))
            if baseline_path is not None and baseline_path != after["baseline_path"]:
                changes.append("baseline_path %s -> %s" % (after["baseline_path"], baseline_path))
                after["baseline_path"] = baseline_path
                if before is not None:
                    events.append(dict(_event("baseline", after["outcome"], now, by, note), baseline_path=baseline_path))
            return self._finish(cur, before, after, events, changes, now, check_mode)

        return self._run(work, read_only=check_mode)

    def promote(self, version, promoted_by, release=None, note=None, check_mode=False):
        """Mark ``version`` known good (outcome verified); returns a Change."""
        if release is not None and release.version != version:
            raise LedgerError("version %s does not match the manifest's version %s (%s)" % (version, release.version, release.path))

        def work(cur):
            before = self._current(cur, version, check_mode)
            if before is None:
                raise LedgerError(
                    "cannot promote %s: it is not recorded in %s (record it with state=recorded first)" % (version, self.name)
                )
            if release is not None and release.digest != before["manifest_digest"]:
                raise LedgerError(
                    "cannot promote %s: it is recorded with digest %s, the manifest now hashes to %s"
                    % (version, before["manifest_digest"], release.digest)
                )
            if before["outcome"] in ENDED_BADLY:
                raise LedgerError("cannot promote %s: its outcome is %s" % (version, before["outcome"]))
            after = dict(before)
            if before["known_good"] and before["outcome"] == "verified":
                return self._finish(cur, before, after, [], [], None, check_mode)
            now = self._now(cur, check_mode)
            changes = []
            if before["outcome"] != "verified":
                changes.append("outcome %s -> verified" % before["outcome"])
            changes.append("known_good %s -> true" % str(before["known_good"]).lower())
            after.update(outcome="verified", known_good=True, promoted_at=_iso(now), promoted_by=promoted_by)
            return self._finish(cur, before, after, [_event("promoted", "verified", now, promoted_by, note)], changes, now, check_mode)

        return self._run(work, read_only=check_mode)

    def _current(self, cur, version, check_mode):
        if check_mode:
            return self._fetch(cur, version) if self._exists(cur) else None
        self._lock_and_ensure(cur)
        return self._fetch(cur, version, lock=True)

    def _finish(self, cur, before, after, events, changes, now, check_mode):
        if not changes:
            return Change(False, before, before, [])
        after["history"] = list(after["history"]) + events
        after["updated_at"] = _iso(now)
        if not check_mode:
            after["id"] = self._write(cur, before, after)
            after = self._fetch(cur, after["version"])
        return Change(True, before, after, changes)


_JSON_COLUMNS = ("manifest", "image_digests", "migration_checksums", "snapshots", "history")
_WRITABLE = tuple(c for c in COLUMNS if c != "id")


class Change:
    """Outcome of a write: changed, before/after rows (None before a first record), readable changes."""

    def __init__(self, changed, before, after, changes):
        self.changed = changed
        self.before = before
        self.after = after
        self.changes = changes

    def diff(self):
        return {"before": self.before or {}, "after": self.after or {}}


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _event(kind, outcome, at, by, note):
    return {"event": kind, "outcome": outcome, "at": _iso(at), "by": by, "note": note}


def _new_row(version, release, by, now):
    manifest = release.summary()
    for key in ("path", "base_dir"):
        manifest.pop(key, None)
    return {
        "id": None,
        "version": version,
        "manifest_digest": release.digest,
        "manifest_path": release.path,
        "manifest": manifest,
        "image_digests": release.image_digests(),
        "migration_checksums": release.checksums(),
        "snapshots": [],
        "baseline_path": None,
        "outcome": "pending",
        "known_good": False,
        "recorded_at": _iso(now),
        "recorded_by": by,
        "updated_at": _iso(now),
        "promoted_at": None,
        "promoted_by": None,
        "history": [],
    }


__all__ = [
    "Change",
    "DEFAULT_SCHEMA",
    "ENDED_BADLY",
    "Ledger",
    "LedgerError",
    "OUTCOMES",
    "PostgresError",
    "RUNNING",
    "check_schema_name",
    "default_recorded_by",
]
