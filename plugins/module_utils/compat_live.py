# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live half of schema_compat_check: measure a migration on a real PostgreSQL without changing it.

``analyze_live()`` answers, on the server itself, what the static analyzer
can only guess: which locks each statement takes, which tables it rewrites
or scans, whether the queries the running (old) app version issues still
work afterwards, and whether the rollback script gives back the original
schema without dropping data.

Where the migration runs (``mode``)
-----------------------------------
``transaction``: on the target, inside one transaction that is always
rolled back (each statement under its own savepoint). Chosen by
``scratch="auto"`` when every statement can run in a transaction block and
none calls ``setval()``/``nextval()`` (sequence changes survive ROLLBACK).

``scratch``: in a scratch database ``stateful_rollback_scratch_<random>``
created on the same server from ``pg_dump --schema-only`` of the target and
dropped (WITH FORCE) afterwards, whatever happens. Used when a statement is
non-transactional (CREATE INDEX CONCURRENTLY, VACUUM, ...), for
``scratch="always"``, and always for the rollback round trip. Each
statement runs in its own committed transaction there (or outside any,
when it must), as a migration tool runs a non-transactional migration.
Creating it needs CREATEDB (or superuser); without it LiveError says so.

The target is never changed: nothing is committed on it (statements that
would end the analysis transaction - BEGIN, COMMIT, ROLLBACK, SAVEPOINT,
... - are not run, and a text holding more than one statement is refused
up front), and in a scratch database statements that change the whole
server (roles, tablespaces, databases, subscriptions, ALTER SYSTEM,
GRANT of roles or on databases) are not run either, since the scratch
database shares them with the target.

Cost: catalog work only, except what the migration itself does
--------------------------------------------------------------------
The analysis itself never reads table data: row counts come from
``pg_class.reltuples`` of the target (or the planner's estimate when a table
was never analyzed), locks from ``pg_locks``, rewrites from
``pg_class.relfilenode``, scans from the transaction's own statistics
counters, old queries are only PREPAREd (EXPLAIN (GENERIC_PLAN) on 16+),
never executed. A scratch database holds no rows, so there every statement
is catalog work and the time does not grow with table sizes. In
``transaction`` mode the statements run for real on the target's rows: a
catalog-only change (ADD COLUMN with a constant default, RENAME, DROP, ...)
costs milliseconds, but a statement that rewrites, indexes, validates or
updates an existing table does that work (then rolls it back) and holds its
lock meanwhile - bounded by ``timeout`` - and leaves what any rolled-back
transaction leaves: dead row versions, sequence values consumed by inserts.
Use ``scratch="always"`` for a run that is catalog-only whatever the
migration holds.

Measurements per statement
--------------------------
- ``locks``: relation locks of the own backend (``pg_locks``, ``pid =
  pg_backend_pid()``) in the user schemas after the statement, each with
  ``preexisting`` (the relation existed before the migration; an index
  rebuilt under its old name counts). In ``transaction`` mode a lock the
  statement takes again after an earlier statement took it cannot be seen
  (the lock manager only counts it): the blocking locks on pre-existing
  tables still held from earlier statements are listed with
  ``held_since`` (that statement's index), and they count against this
  statement when it does long work (below).
  ``locks_measured`` is false for a statement run outside a transaction
  block (its locks are gone when it returns).
- ``rewritten``: pre-existing tables and indexes whose relfilenode changed
  (a rewrite, or a rebuild under the same name).
- ``scanned``: pre-existing tables the statement read in full (sequential
  scan count of the transaction grew: CREATE INDEX, constraint validation,
  SET NOT NULL, UPDATE without a usable index, the copy of a rewrite).
- ``duration_ms``, ``error`` and ``sqlstate``; ``skipped`` with the reason
  for a statement that was not run.

The migration stops at the first failing statement, as it would in
production; the old queries are then not checked.

Decision rules of the live findings (``source: live``)
-------------------------------------------------------
Sizes are the target's row estimates; "large" means at least
``large_table_rows`` rows or unknown. A statement does *long work* when it
rewrote or scanned a pre-existing table; its duration grows with the
largest such table. Blocking lock modes are ACCESS EXCLUSIVE (blocks reads
and writes) and EXCLUSIVE, SHARE ROW EXCLUSIVE and SHARE (block writes).

- ``live-blocking-lock`` (blocking_lock), per statement and pre-existing
  table on which the statement itself takes a blocking lock: with long
  work, error when the work's table is large, else warning (the lock lasts
  as long as the work); without long work, ACCESS EXCLUSIVE is a warning on
  a large table (brief, but the request queues behind running transactions
  and everything queues behind it: set lock_timeout) and info on a small
  one; other modes are info. When ``track_counts`` is off scans cannot be
  seen, and every blocking lock counts as long work.
- ``live-lock-held-during-long-work`` (blocking_lock, warning), transaction
  mode: the statement does long work while a stronger blocking lock taken
  by an earlier statement is still held - harmless when each statement is
  committed on its own, an outage when the file runs as one transaction
  (as most migration tools run it), e.g. ADD CONSTRAINT ... NOT VALID then
  VALIDATE CONSTRAINT in the same transaction.
- ``live-table-rewrite`` (table_rewrite): a pre-existing table rewritten;
  error when large, else warning.
- ``live-lock-timeout`` / ``live-statement-timeout`` (blocking_lock,
  error): the statement could not get its lock within the lock timeout
  (min(5 s, timeout / 2)) or ran past ``timeout``.
- ``live-statement-error`` (STATEMENT_ERROR_CATEGORY, error): the statement
  fails on the server; the message is the server's.
- ``live-old-query-fails`` (breaks_old_app, error): an old query that
  prepares on the original schema fails after the migration; attributed to
  the statement after which it fails for good.
- ``live-statement-skipped`` (non_transactional, info): a statement not run
  (transaction control, or server-wide in a scratch database).
- Rollback (``script: rollback``), from the round trip up + down in a
  scratch database, tracking tables and columns by identity (OID, attnum),
  so a rename back and forth is not a drop:
  ``live-rollback-drops-existing-data`` (data_loss, error): the rollback
  drops a table or column that existed before the migration;
  ``live-rollback-drops-backfilled-data`` (data_loss, warning): it drops a
  table or column the migration created and filled with INSERT/UPDATE
  (a statement that took ROW EXCLUSIVE on the table and, for a column,
  names it); ``live-rollback-drops-new-data`` (data_loss, info): it drops a
  table or column the migration created (what the new version writes
  there is lost); ``live-migration-data-not-restorable`` (data_loss, error,
  on the migration's statement): the migration drops a table or column and
  the rollback recreates it empty; ``live-migration-values-not-restorable``
  (data_loss, error): the migration converts a column to a type that
  silently rounds or truncates its values and the rollback converts it
  back; ``live-rollback-statement-error``
  (STATEMENT_ERROR_CATEGORY, error): the rollback fails after the migration.

``reversible`` is true when the schema fingerprint after up + down equals
the original (``schema_diff`` empty), the rollback ran without error, and
no data the migration touched is lost for good (neither of the two
``live-migration-*-not-restorable`` findings).

Why the round trip always runs in a scratch database: it must commit
between up and down to be exact. In one transaction, ALTER TABLE fails on a
table with pending deferred trigger events (an UPDATE backfill on a table
with deferred foreign keys), an enum value added by ALTER TYPE ... ADD
VALUE cannot be used before commit, non-transactional statements cannot run
at all, and the target would keep the migration's locks for the whole up +
down + comparison.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import glob
import os
import re
import shutil
import subprocess
import time
import uuid

from ansible_collections.stateful.rollback.plugins.module_utils.catalog import SYSTEM_SCHEMAS
from ansible_collections.stateful.rollback.plugins.module_utils.fingerprint import schema_objects
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    connect,
    fetch_all,
    fetch_one,
    qualified,
    redact,
    sql,
)

try:
    import psycopg2
except ImportError:  # pragma: no cover - connect() reports the missing library
    psycopg2 = None

SCRATCH_CHOICES = ("auto", "always")
SCRATCH_PREFIX = "stateful_rollback_scratch_"
APPLICATION_NAME = "stateful.rollback schema_compat_check (live)"

# A statement that fails on the server: the migration cannot be deployed as
# written. One of the module's five categories, so that policy and summary
# code keyed on them keeps working.
STATEMENT_ERROR_CATEGORY = "breaks_old_app"

# How long a statement may wait for a lock before it is reported as blocked:
# long enough for a brief catalog lock, short enough not to queue the
# target's traffic behind the analysis.
LOCK_TIMEOUT_CAP_MS = 5000
# Old-query checks after every statement (to name the statement that breaks
# a query) are skipped beyond this many PREPAREs in a scratch database; in
# transaction mode the culprit is found by walking back the savepoints.
QUERY_CHECK_BUDGET = 2000

LOCK_STRENGTH = {
    "AccessShareLock": 1,
    "RowShareLock": 2,
    "RowExclusiveLock": 3,
    "ShareUpdateExclusiveLock": 4,
    "ShareLock": 5,
    "ShareRowExclusiveLock": 6,
    "ExclusiveLock": 7,
    "AccessExclusiveLock": 8,
}
BLOCKING_MODES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
LOCK_LABELS = {
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}
TABLE_KINDS = ("r", "p", "m")
KIND_NAMES = {
    "r": "table",
    "p": "partitioned table",
    "m": "materialized view",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "v": "view",
    "f": "foreign table",
}

_SQLSTATE_LOCK_TIMEOUT = "55P03"
_SQLSTATE_CANCELED = "57014"
_SQLSTATE_IN_TRANSACTION = "25001"

_RELATIONS_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relfilenode, c.reltuples,
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_stat_get_xact_numscans(c.oid) ELSE 0 END
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I', 'S', 'v', 'f')
   AND n.nspname <> ALL (%s)
   AND n.nspname !~ '^pg_(toast_)?temp_'
"""

_COLUMNS_SQL = """
SELECT c.oid, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname <> ALL (%s)
   AND n.nspname !~ '^pg_(toast_)?temp_'
"""

_LOCKS_SQL = """
SELECT l.relation, l.mode
  FROM pg_catalog.pg_locks l
 WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.granted
   AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
"""

_SESSION_SQL = """
SELECT pg_catalog.set_config('lock_timeout', %s, false),
       pg_catalog.set_config('statement_timeout', %s, false),
       pg_catalog.set_config('idle_in_transaction_session_timeout', %s, false)
"""

# A migration may SET its own timeouts; the analysis keeps the stricter one.
_REASSERT_SQL = """
SELECT pg_catalog.set_config(s.name, v.value, false)
  FROM pg_catalog.pg_settings s
  JOIN (VALUES ('lock_timeout', %s, %s::bigint), ('statement_timeout', %s, %s::bigint)) AS v (name, value, ms)
    ON v.name = s.name
 WHERE s.setting::bigint = 0 OR s.setting::bigint > v.ms
"""

_TARGET_SQL = """
SELECT current_user, r.rolsuper, r.rolcreatedb, pg_catalog.current_database(),
       pg_catalog.current_setting('search_path'), pg_catalog.current_setting('track_counts')
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user
"""

_TX_CONTROL = re.compile(
    r"(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|PREPARE\s+TRANSACTION)\b", re.I
)
_CLUSTER_WIDE = re.compile(
    r"((CREATE|ALTER|DROP)\s+(ROLE|GROUP|TABLESPACE|DATABASE|SUBSCRIPTION)\b"
    r"|(CREATE|ALTER|DROP)\s+USER\b(?!\s+MAPPING)"
    r"|ALTER\s+SYSTEM\b|REASSIGN\s+OWNED\b"
    r"|(COMMENT|SECURITY\s+LABEL(\s+FOR\s+\S+)?)\s+ON\s+(ROLE|DATABASE|TABLESPACE)\b)",
    re.I,
)
_GRANT = re.compile(r"(GRANT|REVOKE)\b", re.I)
_GRANT_ON = re.compile(r"\bON\s+(\w+)", re.I)
_SEQUENCE_CALL = re.compile(r"\b(setval|nextval)\s*\(", re.I)
_DEFINES_ONLY = re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|TRIGGER|CONSTRAINT\s+TRIGGER|VIEW|RULE|SEQUENCE)\b", re.I)
_CREATE_TABLE = re.compile(r"CREATE\s+((GLOBAL|LOCAL)\s+)?((TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\b", re.I)
_AS_QUERY = re.compile(r"\bAS\s*\(?\s*(SELECT|WITH|VALUES|TABLE|EXECUTE)\b", re.I)
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")

_Rel = collections.namedtuple("_Rel", "oid schema name kind filenode reltuples scans")


class LiveError(PostgresError):
    """The live analysis cannot run; the message says what is needed."""


# --- SQL text ------------------------------------------------------------------


def _skeleton(text):
    """(text without comments, literals as '' and $$, True when it holds more than one statement).

    A small lexer, enough to find a ``;`` outside strings, quoted identifiers,
    dollar quotes and comments: such a text could end the analysis
    transaction, so it is refused before anything runs.
    """
    out = []
    i, n = 0, len(text)
    ended = more = False
    while i < n:
        ch = text[i]
        pair = text[i:i + 2]
        if pair == "--":
            j = text.find("\n", i)
            i = n if j < 0 else j
            out.append(" ")
            continue
        if pair == "/*":
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
            continue
        if ch.isspace():
            out.append(ch)
            i += 1
            continue
        if ch == ";":
            ended = True
            out.append(ch)
            i += 1
            continue
        more = more or ended
        prev = text[i - 1] if i else ""
        if ch == "'":
            backslash = prev in ("e", "E") and not (i >= 2 and _IDENT_CHAR.match(text[i - 2]))
            j = i + 1
            while j < n:
                if backslash and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    if text.startswith("''", j):
                        j += 2
                        continue
                    break
                j += 1
            out.append("''")
            i = j + 1
            continue
        if ch == '"':
            j = i + 1
            while j < n:
                if text[j] == '"':
                    if text.startswith('""', j):
                        j += 2
                        continue
                    break
                j += 1
            out.append(text[i:j + 1])
            i = j + 1
            continue
        if ch == "$" and not (prev and _IDENT_CHAR.match(prev)):
            match = _DOLLAR_TAG.match(text, i)
            if match:
                end = text.find(match.group(0), match.end())
                i = n if end < 0 else end + len(match.group(0))
                out.append("$$")
                continue
        out.append(ch)
        i += 1
    return "".join(out), more


def _strip_sql(text):
    text = text.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def _is_cluster_wide(skeleton):
    if _CLUSTER_WIDE.match(skeleton):
        return True
    if _GRANT.match(skeleton):
        target = _GRANT_ON.search(skeleton)
        return target is None or target.group(1).upper() in ("DATABASE", "TABLESPACE", "PARAMETER")
    return False


def _calls_sequence(skeleton):
    """True when running the statement calls setval()/nextval() (not just defines a default)."""
    if not _SEQUENCE_CALL.search(skeleton) or _DEFINES_ONLY.match(skeleton):
        return False
    if _CREATE_TABLE.match(skeleton) and not _AS_QUERY.search(skeleton):
        return False
    if re.match(r"ALTER\s+TABLE\b", skeleton, re.I) and not re.search(r"\bADD\b", skeleton, re.I):
        return False
    return True


def _mentions(skeleton, column):
    """Whether the statement names the column (outside literals and comments)."""
    quoted = '"%s"' % column.replace('"', '""')
    if quoted in skeleton:
        return True
    if _PLAIN_NAME.match(column):
        return re.search(r'(?<![\w$"])%s(?![\w$"])' % re.escape(column), skeleton, re.I) is not None
    return False


def _field(item, key, default=None):
    if isinstance(item, dict):
        return item.get(key, default)
    return getattr(item, key, default)


class _Statement(object):
    """One statement of the migration or of the rollback, as given by the static analyzer."""

    def __init__(self, item, position, script):
        text = _field(item, "text")
        if not isinstance(text, str):
            raise LiveError("%s statement %d has no SQL text (expected a dict or object with 'text')" % (script, position))
        index = _field(item, "index")
        self.index = position if index is None else index
        self.position = position
        self.line = _field(item, "line")
        self.script = script
        self.text = _strip_sql(text)
        self.transactional = _field(item, "transactional", True) is not False
        self.tables = [t for t in (_field(item, "tables") or []) if isinstance(t, str)]
        skeleton, more = _skeleton(self.text)
        if more:
            raise LiveError(
                "%s holds more than one SQL statement; give one statement per entry (a second one could end the "
                "analysis transaction)" % self.where()
            )
        self.skeleton = skeleton.strip()
        if not self.skeleton:
            self.kind = "empty"
        elif _TX_CONTROL.match(self.skeleton):
            self.kind = "transaction_control"
        elif _is_cluster_wide(self.skeleton):
            self.kind = "cluster_wide"
        else:
            self.kind = None
        self.calls_sequence = self.kind is None and _calls_sequence(self.skeleton)

    def where(self):
        return "%s statement %s (line %s)" % (self.script, self.index, self.line if self.line is not None else "?")

    def skip_reason(self, scratch):
        if self.kind == "empty":
            return "no SQL (comments only)"
        if self.kind == "transaction_control":
            return "transaction control: the analysis runs its own transactions, so it is not run"
        if self.kind == "cluster_wide" and scratch:
            return (
                "changes the whole server (roles, tablespaces, databases, subscriptions or server settings), which a "
                "scratch database shares with the target: not run"
            )
        return None


def _statements(items, script):
    if items is None:
        return None
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise LiveError("%s statements must be a list of statements" % script)
    return [_Statement(item, position, script) for position, item in enumerate(items)]


def _queries(items):
    out, refused = [], []
    for query in items or []:
        if not isinstance(query, str):
            raise LiveError("old_queries must be SQL strings, got %r" % (query,))
        text = _strip_sql(query)
        if not text:
            continue
        skeleton, more = _skeleton(text)
        if more:
            refused.append({"query": text, "error": "holds more than one SQL statement", "sqlstate": None})
        elif _TX_CONTROL.match(skeleton.strip()):
            refused.append({"query": text, "error": "transaction control, not a query", "sqlstate": None})
        else:
            out.append(text)
    return out, refused


# --- server ----------------------------------------------------------------------


class _Settings(object):
    def __init__(self, timeout):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise LiveError("timeout must be a positive number of seconds, got %r" % (timeout,))
        self.timeout = timeout
        self.statement_timeout_ms = max(1, int(timeout * 1000))
        # Waiting for a lock must give up before the statement's own budget does.
        self.lock_timeout_ms = max(1, min(self.statement_timeout_ms // 2, LOCK_TIMEOUT_CAP_MS))
        self.idle_timeout_ms = max(60000, self.statement_timeout_ms)


def _message(exc):
    """The server's own message (primary text, and the detail when there is one)."""
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) if diag is not None else None
    if not text:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else exc.__class__.__name__
    detail = getattr(diag, "message_detail", None) if diag is not None else None
    if detail:
        text = "%s (%s)" % (text, detail)
    return text


def _open(params, settings, search_path=None):
    conn = connect(params, application_name=APPLICATION_NAME)
    try:
        with conn.cursor() as cur:
            cur.execute(
                _SESSION_SQL,
                ("%dms" % settings.lock_timeout_ms, "%dms" % settings.statement_timeout_ms, "%dms" % settings.idle_timeout_ms),
            )
            if search_path is not None:
                cur.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (search_path,))
    except psycopg2.Error as exc:
        conn.close()
        raise LiveError("cannot configure the session: %s" % _message(exc))
    return conn


def _execute(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)


def _relations(conn):
    out = {}
    for oid, schema, name, kind, filenode, reltuples, scans in fetch_all(conn, _RELATIONS_SQL, (list(SYSTEM_SCHEMAS),)):
        out[oid] = _Rel(oid, schema, name, kind, filenode, reltuples, scans or 0)
    return out


def _locks(conn):
    return set((oid, mode) for oid, mode in fetch_all(conn, _LOCKS_SQL))


def _objects(conn, relations):
    """Tables and columns by identity, ("t", oid) / ("c", oid, attnum), -> (table display name, column or None, type or None).

    Identity, not name: a column renamed by the migration and back by the
    rollback is the same column, not a drop.
    """
    out = {}
    for rel in relations.values():
        if rel.kind in ("r", "p"):
            out[("t", rel.oid)] = (qualified(rel.schema, rel.name), None, None)
    for oid, attnum, attname, type_name in fetch_all(conn, _COLUMNS_SQL, (list(SYSTEM_SCHEMAS),)):
        table = out.get(("t", oid))
        if table is not None:
            out[("c", oid, attnum)] = (table[0], attname, type_name)
    return out


def _object_name(value):
    return value[0] if value[1] is None else "%s.%s" % (value[0], _quote_part(value[1]))


_INTEGERS = ("smallint", "integer", "bigint")
_FLOATS = ("real", "double precision")
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_TIMESTAMP = re.compile(r"^timestamp(\((\d)\))? with(out)? time zone$")
_TIME = re.compile(r"^time(\((\d)\))? with(out)? time zone$")


def silently_lossy(old, new):
    """Whether converting a column from type ``old`` to ``new`` changes values without an error.

    Rounding and truncation do (numeric to integer, a smaller numeric scale,
    double to real, timestamp to date or to a lower precision, json to
    jsonb); a conversion that fails on a value that does not fit (varchar
    narrowing, text to integer, an enum without the value) is loud, not
    lossy: the migration stops instead. Types as pg_catalog.format_type()
    spells them; anything not listed counts as not lossy.
    """
    if old == new:
        return False
    numeric_old = old == "numeric" or old in _FLOATS or _NUMERIC.match(old) is not None
    if new in _INTEGERS:
        return numeric_old
    new_numeric = _NUMERIC.match(new)
    if new_numeric:
        old_numeric = _NUMERIC.match(old)
        if old_numeric:
            return int(old_numeric.group(2)) > int(new_numeric.group(2))
        return old == "numeric" or old in _FLOATS
    if (old, new) in (("double precision", "real"), ("json", "jsonb")):
        return True
    old_ts = _TIMESTAMP.match(old)
    if old_ts:
        new_ts = _TIMESTAMP.match(new)
        if new_ts:
            return int(new_ts.group(2) or 6) < int(old_ts.group(2) or 6)
        return new == "date" or _TIME.match(new) is not None
    old_time, new_time = _TIME.match(old), _TIME.match(new)
    if old_time and new_time:
        return int(new_time.group(2) or 6) < int(old_time.group(2) or 6)
    return False


def _quote_part(part):
    if _PLAIN_NAME.match(part):
        return part
    return '"%s"' % part.replace('"', '""')


def _display(rel):
    return qualified(rel.schema, rel.name)


# --- applying statements -------------------------------------------------------------


class _Measured(object):
    """What one statement did."""

    def __init__(self, stmt, skipped=None):
        self.stmt = stmt
        self.skipped = skipped
        self.error = None
        self.sqlstate = None
        self.duration_ms = None
        self.locks = []
        self.locks_measured = False
        self.rewritten = []  # display names, tables and indexes
        self.rewritten_tables = []
        self.scanned_tables = []
        self.blocking = {}  # table display -> strongest blocking mode this statement took
        self.held_blocking = {}  # table display -> (mode, statement index) still held from earlier statements
        self.touched = set()  # pre-existing table display names
        self.written_oids = set()
        self.vanished = {}
        self.retyped = {}  # column key -> (type before, type after)
        self.savepoint = None

    def entry(self):
        return {
            "index": self.stmt.index,
            "line": self.stmt.line,
            "locks": self.locks,
            "locks_measured": self.locks_measured,
            "rewritten": self.rewritten,
            "scanned": self.scanned_tables,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "sqlstate": self.sqlstate,
            "skipped": self.skipped,
        }


class _Run(object):
    """Applies statements on one connection, measuring each.

    ``committed=False``: the caller opened a transaction (the target); each
    statement runs under a savepoint that is kept, so the state before any
    statement can be restored later. ``committed=True`` (a scratch
    database): each statement runs in its own committed transaction, or
    outside any when it cannot run in one.
    """

    def __init__(self, conn, settings, committed, track_objects):
        self.conn = conn
        self.settings = settings
        self.committed = committed
        self.initial = _relations(conn)
        self.initial_index_names = set((r.schema, r.name) for r in self.initial.values() if r.kind in ("i", "I"))
        self.track_objects = track_objects
        self.objects = _objects(conn, self.initial) if track_objects else None
        self.initial_objects = dict(self.objects) if track_objects else None
        self.held = {}
        self.measured = []
        self.failed = None
        self.needs_scratch = None

    def apply(self, statements, after_each=None):
        for stmt in statements:
            if self.failed is not None or self.needs_scratch is not None:
                self.measured.append(_Measured(stmt, skipped="not run: an earlier statement failed"))
                continue
            measured = self._one(stmt)
            self.measured.append(measured)
            if measured.error is not None:
                self.failed = measured
            elif after_each is not None and measured.skipped is None:
                after_each(measured)
        return self.measured

    @property
    def ok(self):
        return self.failed is None and self.needs_scratch is None

    def _preexisting(self, oid, rel):
        if oid in self.initial:
            return True
        return rel.kind in ("i", "I") and (rel.schema, rel.name) in self.initial_index_names

    def _one(self, stmt):
        reason = stmt.skip_reason(scratch=self.committed)
        if reason is not None:
            return _Measured(stmt, skipped=reason)
        measured = _Measured(stmt)
        in_block = stmt.transactional or not self.committed
        try:
            if self.committed and stmt.transactional:
                _execute(self.conn, "BEGIN")
            elif not self.committed:
                measured.savepoint = "stateful_rollback_s%d" % stmt.position
                _execute(self.conn, sql.SQL("SAVEPOINT {}").format(sql.Identifier(measured.savepoint)))
            before = _relations(self.conn)
            held = _locks(self.conn) if not self.committed else set()
        except psycopg2.Error as exc:
            raise LiveError("measuring %s failed: %s" % (stmt.where(), _message(exc)))
        started = time.monotonic()
        try:
            _execute(self.conn, stmt.text)
        except psycopg2.Error as exc:
            measured.duration_ms = round((time.monotonic() - started) * 1000.0, 3)
            return self._failed(stmt, measured, exc)
        measured.duration_ms = round((time.monotonic() - started) * 1000.0, 3)
        try:
            after = _relations(self.conn)
            locks = _locks(self.conn) if in_block else None
            self._measure(measured, before, after, held, locks, in_block)
            if self.committed and stmt.transactional:
                _execute(self.conn, "COMMIT")
            _execute(
                self.conn,
                _REASSERT_SQL,
                (
                    "%dms" % self.settings.lock_timeout_ms, self.settings.lock_timeout_ms,
                    "%dms" % self.settings.statement_timeout_ms, self.settings.statement_timeout_ms,
                ),
            )
            if self.track_objects:
                now = _objects(self.conn, after)
                measured.vanished = dict((k, v) for k, v in self.objects.items() if k not in now)
                measured.retyped = dict((k, (v[2], now[k][2])) for k, v in self.objects.items() if k in now and v[2] != now[k][2])
                self.objects = now
        except psycopg2.Error as exc:
            raise LiveError("measuring %s failed: %s" % (stmt.where(), _message(exc)))
        return measured

    def _failed(self, stmt, measured, exc):
        if self.conn.closed:
            raise LiveError("the connection was lost while running %s: %s" % (stmt.where(), _message(exc)))
        measured.error = _message(exc)
        measured.sqlstate = exc.pgcode
        try:
            if self.committed and stmt.transactional:
                _execute(self.conn, "ROLLBACK")
            elif not self.committed:
                _execute(self.conn, sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(measured.savepoint)))
        except psycopg2.Error as again:
            raise LiveError("cannot roll back %s: %s" % (stmt.where(), _message(again)))
        if exc.pgcode == _SQLSTATE_IN_TRANSACTION:
            if self.committed:
                # Marked transactional but it is not: run it as the migration tool would.
                stmt.transactional = False
                return self._one(stmt)
            self.needs_scratch = "%s cannot run inside a transaction block (%s)" % (stmt.where(), measured.error)
            measured.error = None
            measured.sqlstate = None
            measured.skipped = "cannot run inside a transaction block: measured in a scratch database instead"
        return measured

    def _resolve(self, oid, after):
        return after.get(oid) or self.initial.get(oid)

    def _measure(self, measured, before, after, held, locks, in_block):
        stmt = measured.stmt
        rewritten, rewritten_tables, scanned = [], [], []
        after_by_name = dict(((r.schema, r.name, r.kind), r) for r in after.values())
        for oid, old in before.items():
            if old.kind not in ("r", "m", "i") or not self._preexisting(oid, old) or not old.filenode:
                continue
            new = after.get(oid)
            if new is None and old.kind == "i":
                new = after_by_name.get((old.schema, old.name, old.kind))
            if new is not None and new.filenode and new.filenode != old.filenode:
                rewritten.append(_display(old))
                if old.kind in TABLE_KINDS:
                    rewritten_tables.append(_display(old))
            if in_block and new is not None and new.oid == oid and old.kind in ("r", "m") and new.scans > old.scans:
                scanned.append(_display(old))
        measured.rewritten = sorted(rewritten)
        measured.rewritten_tables = sorted(rewritten_tables)
        measured.scanned_tables = sorted(set(scanned) - set(rewritten_tables))
        measured.touched.update(rewritten_tables)
        measured.touched.update(scanned)
        if locks is None:
            return
        measured.locks_measured = True
        acquired = locks - held
        long_work = bool(rewritten_tables or scanned)
        entries = []
        for oid, mode in sorted(acquired, key=lambda pair: (pair[0], -LOCK_STRENGTH.get(pair[1], 0))):
            rel = self._resolve(oid, after)
            if rel is None:
                continue  # a transient relation (the new heap of a rewrite)
            self.held[(oid, mode)] = stmt.index
            entries.append(self._lock_entry(measured, oid, rel, mode, None, True))
        # A lock an earlier statement of the transaction took is invisible when this one takes it again:
        # list the blocking ones still held, and count them against this statement when it does long work.
        for oid, mode in held & locks:
            rel = self._resolve(oid, after)
            if rel is not None and mode in BLOCKING_MODES and rel.kind in TABLE_KINDS and self._preexisting(oid, rel):
                entries.append(self._lock_entry(measured, oid, rel, mode, self.held.get((oid, mode), -1), long_work))
        # An index rebuilt under its old name shows twice (old and new OID): one entry is enough.
        unique = dict(((e["relation"], e["mode"], e.get("held_since")), e) for e in entries)
        measured.locks = sorted(unique.values(), key=lambda e: (e["relation"], -LOCK_STRENGTH.get(e["mode"], 0)))

    def _lock_entry(self, measured, oid, rel, mode, held_since, counts):
        preexisting = self._preexisting(oid, rel)
        entry = {"relation": _display(rel), "mode": mode, "preexisting": preexisting, "kind": KIND_NAMES.get(rel.kind, rel.kind)}
        if held_since is not None:
            entry["held_since"] = held_since
        if rel.kind in TABLE_KINDS and preexisting and counts:
            measured.touched.add(_display(rel))
            if mode == "RowExclusiveLock" and held_since is None:
                measured.written_oids.add(oid)
            if mode in BLOCKING_MODES:
                target = measured.blocking if held_since is None else measured.held_blocking
                current = target.get(_display(rel))
                current_mode = current if held_since is None else (current[0] if current else None)
                if current_mode is None or LOCK_STRENGTH[mode] > LOCK_STRENGTH[current_mode]:
                    target[_display(rel)] = mode if held_since is None else (mode, held_since)
        elif rel.kind in TABLE_KINDS and mode == "RowExclusiveLock":
            measured.written_oids.add(oid)
        return entry


# --- old queries -------------------------------------------------------------------


def _check_queries(conn, queries, version, in_transaction):
    """{position: None (prepares) or (error, sqlstate)} for [(position, text)]."""
    results = {}
    if not queries:
        return results
    with conn.cursor() as cur:
        try:
            if not in_transaction:
                cur.execute("BEGIN")
            for position, text in queries:
                name = sql.Identifier("stateful_rollback_q%d" % position)
                cur.execute("SAVEPOINT stateful_rollback_query")
                prepared = False
                try:
                    cur.execute(sql.Composed([sql.SQL("PREPARE "), name, sql.SQL(" AS "), sql.SQL(text)]))
                    prepared = True
                    if version >= 160000:
                        cur.execute(sql.Composed([sql.SQL("EXPLAIN (GENERIC_PLAN) "), sql.SQL(text)]))
                    results[position] = None
                except psycopg2.Error as exc:
                    if conn.closed:
                        raise LiveError("the connection was lost while preparing an old query: %s" % _message(exc))
                    results[position] = (_message(exc), exc.pgcode)
                cur.execute("ROLLBACK TO SAVEPOINT stateful_rollback_query")
                cur.execute("RELEASE SAVEPOINT stateful_rollback_query")
                if prepared:
                    cur.execute(sql.SQL("DEALLOCATE {}").format(name))
        except psycopg2.Error as exc:
            raise LiveError("checking the old queries failed: %s" % _message(exc))
        finally:
            if not in_transaction and not conn.closed:
                cur.execute("ROLLBACK")
    return results


class _QueryTracker(object):
    """Old queries: which fail on the original schema, which after the migration, and after which statement."""

    def __init__(self, queries, version):
        self.queries = queries
        self.version = version
        self.invalid = []
        self.unchecked = []
        self.valid = []  # positions
        self.history = {}  # position -> [(statement measured, passes)]
        self.per_statement = False

    def check_original(self, conn, in_transaction):
        results = _check_queries(conn, list(enumerate(self.queries)), self.version, in_transaction)
        for position, text in enumerate(self.queries):
            outcome = results.get(position)
            if outcome is None:
                self.valid.append(position)
            elif outcome[1] in (_SQLSTATE_LOCK_TIMEOUT, _SQLSTATE_CANCELED):
                self.unchecked.append({"query": text, "error": outcome[0], "sqlstate": outcome[1]})
            else:
                self.invalid.append({"query": text, "error": outcome[0], "sqlstate": outcome[1]})

    def check(self, conn, positions, in_transaction):
        return _check_queries(conn, [(p, self.queries[p]) for p in positions], self.version, in_transaction)

    def after_statement(self, conn):
        def record(measured):
            results = self.check(conn, self.valid, in_transaction=False)
            for position in self.valid:
                self.history.setdefault(position, []).append((measured, results.get(position)))
        return record

    def culprits_from_history(self, final):
        culprits = {}
        for position, outcome in final.items():
            if outcome is None:
                continue
            culprit = None
            for measured, result in self.history.get(position, []):
                if result is None:
                    culprit = None
                elif culprit is None:
                    culprit = measured
            culprits[position] = culprit
        return culprits


# --- scratch database ------------------------------------------------------------------


def _major(version):
    return (version // 10000,) if version >= 100000 else (version // 10000, version // 100 % 100)


def _binary_major(path):
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\s(\d+)(?:\.(\d+))?", out or "")
    if not match:
        return None
    first = int(match.group(1))
    return (first,) if first >= 10 else (first, int(match.group(2) or 0))


def _candidate_dirs():
    dirs = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=20, check=False)
            if out.returncode == 0 and out.stdout.strip():
                dirs.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin",
                    "/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin"):
        dirs.extend(sorted(glob.glob(pattern)))
    for path in os.environ.get("PATH", "").split(os.pathsep):
        if path:
            dirs.append(path)
    seen, out = set(), []
    for path in dirs:
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def find_client(name, server_version):
    """Path of pg_dump or psql for the server: the same major version, else the nearest newer one."""
    want = _major(server_version)
    found = {}
    for directory in _candidate_dirs():
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            major = _binary_major(path)
            if major is not None:
                found.setdefault(major, path)
    if want in found:
        return found[want]
    newer = sorted(m for m in found if m > want)
    if newer:
        return found[newer[0]]
    wanted = ".".join(str(p) for p in want)
    if found:
        have = ", ".join("%s (%s)" % (path, ".".join(str(p) for p in major)) for major, path in sorted(found.items()))
        raise LiveError(
            "%s for PostgreSQL %s or newer is needed for a scratch database; only older ones were found: %s. "
            "Install the PostgreSQL %s client (e.g. apt-get install postgresql-client-%s)" % (name, wanted, have, wanted, wanted)
        )
    raise LiveError(
        "%s is needed for a scratch database and was not found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH). "
        "Install the PostgreSQL %s client (e.g. apt-get install postgresql-client-%s)" % (name, wanted, wanted)
    )


def _conninfo(params, dbname):
    parts = []
    for key, value in sorted(dict(params, dbname=dbname).items()):
        if key == "password" or value is None or value == "":
            continue
        parts.append("%s='%s'" % (key, str(value).replace("\\", "\\\\").replace("'", "\\'")))
    return " ".join(parts)


def _client_env(params):
    env = dict(os.environ)
    for key in ("PGPASSWORD", "PGSERVICE", "PGOPTIONS"):
        env.pop(key, None)
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    env["PGAPPNAME"] = APPLICATION_NAME
    return env


def clean_dump(text):
    """A schema-only dump ready for psql: without PostgreSQL 15.14+'s \\restrict / \\unrestrict lines."""
    return "\n".join(line for line in text.splitlines() if not re.match(r"\\(un)?restrict\b", line)) + "\n"


class _Scratch(object):
    """A scratch database with the target's schema, on the target's server; drop() always."""

    def __init__(self, analysis, why):
        self.analysis = analysis
        self.why = why
        self.name = None
        self.created = False
        self.conn = None

    def open(self):
        info = self.analysis.info
        user = info["user"]
        if not (info["superuser"] or info["createdb"]):
            raise LiveError(
                "a scratch database is needed (%s), but role %s may not create databases: grant it with "
                "ALTER ROLE %s CREATEDB, or connect as a role that has CREATEDB" % (self.why, user, _quote_part(user))
            )
        version = self.analysis.version
        params = self.analysis.params
        settings = self.analysis.settings
        pg_dump = find_client("pg_dump", version)
        psql = find_client("psql", version)
        command = [pg_dump, "--schema-only", "--no-publications", "--no-subscriptions",
                   "--lock-wait-timeout=%d" % settings.lock_timeout_ms]
        if not info["superuser"]:
            # Objects end up owned by the connecting role, which may not SET ROLE to their owners.
            command += ["--no-owner", "--no-privileges", "--no-security-labels"]
        command += ["--dbname", _conninfo(params, info["database"])]
        dump = clean_dump(self._run(command, None, "pg_dump --schema-only of %s" % info["database"]))
        self.name = SCRATCH_PREFIX + uuid.uuid4().hex[:12]
        self._create()
        self._run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--dbname", _conninfo(params, self.name), "-f", "-"],
            dump,
            "restoring the schema of %s into scratch database %s" % (info["database"], self.name),
        )
        self.conn = _open(dict(params, dbname=self.name), settings, search_path=info["search_path"])
        return self.conn

    def _run(self, command, stdin, what):
        params = self.analysis.params
        limit = max(60, self.analysis.settings.timeout)
        try:
            proc = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=limit,
                                  env=_client_env(params), check=False)
        except subprocess.TimeoutExpired:
            raise LiveError("%s did not finish within %ss" % (what, limit))
        except OSError as exc:
            raise LiveError("%s: cannot run %s: %s" % (what, command[0], exc))
        if proc.returncode != 0:
            detail = redact((proc.stderr or proc.stdout or "").strip(), params)
            raise LiveError("%s failed (exit %d): %s" % (what, proc.returncode, detail[-2000:]))
        return proc.stdout

    def _create(self):
        target = self.analysis.target
        version = self.analysis.version
        encoding, collate, ctype = fetch_one(
            target,
            "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype FROM pg_catalog.pg_database "
            "WHERE datname = pg_catalog.current_database()",
        )
        query = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(self.name), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
        )
        if version >= 150000:
            column = "datlocale" if version >= 170000 else "daticulocale"
            provider, locale = fetch_one(
                target,
                sql.SQL("SELECT datlocprovider, {} FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()").format(
                    sql.Identifier(column)
                ),
            )
            if provider == "i" and locale:
                query = query + sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale))
            elif provider == "b" and locale:
                query = query + sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(locale))
        try:
            _execute(target, query)
        except psycopg2.Error as exc:
            if exc.pgcode == "42501":
                raise LiveError(
                    "a scratch database is needed (%s), but CREATE DATABASE was refused: %s; grant CREATEDB to role %s"
                    % (self.why, _message(exc), self.analysis.info["user"])
                )
            raise LiveError("cannot create scratch database %s: %s" % (self.name, _message(exc)))
        self.created = True

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if not self.created:
            return
        conn = self.analysis.target
        own = None
        try:
            if conn.closed:
                own = conn = _open(self.analysis.params, self.analysis.settings)
            if self.analysis.version >= 130000:
                _execute(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
            else:
                _execute(conn, "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = %s",
                         (self.name,))
                _execute(conn, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.name)))
        except (psycopg2.Error, PostgresError) as exc:
            raise LiveError("cannot drop scratch database %s: %s; drop it by hand (DROP DATABASE %s)" % (self.name, _message(exc), self.name))
        finally:
            if own is not None:
                own.close()
        self.created = False


# --- the analysis ------------------------------------------------------------------------


def _finding(rule, category, severity, stmt, message, table=None, **extra):
    finding = {
        "rule": rule,
        "category": category,
        "severity": severity,
        "statement": stmt.text if stmt is not None else None,
        "statement_index": stmt.index if stmt is not None else None,
        "line": stmt.line if stmt is not None else None,
        "message": message,
        "table": table,
        "source": "live",
        "script": stmt.script if stmt is not None else "migration",
    }
    finding.update(extra)
    return finding


_INDEX_BUILD = re.compile(r"(CREATE\s+(UNIQUE\s+)?INDEX|REINDEX)\b", re.I)
_DML = re.compile(r"(UPDATE|INSERT|DELETE|MERGE|COPY|WITH|SELECT)\b", re.I)


def _alternative(measured):
    """The safe way to do what a statement with long work did."""
    skeleton = measured.stmt.skeleton
    if measured.rewritten_tables:
        return "avoid the rewrite: add a new column, backfill it in batches, switch the app over, then drop the old one"
    if _INDEX_BUILD.match(skeleton):
        return "build it with CREATE INDEX CONCURRENTLY (or REINDEX CONCURRENTLY), outside a transaction block"
    if _DML.match(skeleton):
        return "run the backfill in small batches, each in its own short transaction, outside the migration's DDL transaction"
    return ("add the constraint NOT VALID, then VALIDATE CONSTRAINT in a later transaction (SHARE UPDATE EXCLUSIVE: reads "
            "and writes go on); for SET NOT NULL, validate a CHECK (col IS NOT NULL) constraint first")


def _rows_text(rows):
    return "unknown size" if rows is None else "~{:,} rows".format(int(rows))


def _diff(before, after):
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


class _Analysis(object):
    def __init__(self, params, target, settings, up, down, queries, refused, large_table_rows, scratch):
        self.params = params
        self.target = target
        self.settings = settings
        self.up = up
        self.down = down
        self.queries = queries
        self.refused = refused
        self.large_table_rows = large_table_rows
        self.scratch = scratch
        self.version = target.server_version
        self.info = None
        self.notes = []
        self.findings = []
        self.reversible = None
        self.schema_diff = None
        self.rollback_measured = None
        self.tracker = _QueryTracker(queries, self.version)
        self.incompatible = []
        self.query_failures = []  # (incompatible entry, measured statement or None)
        self.target_relations = None

    # -- flow --
    def run(self):
        started = time.monotonic()
        user, superuser, createdb, database, search_path, track_counts = fetch_one(self.target, _TARGET_SQL)
        self.info = {
            "user": user, "superuser": superuser, "createdb": createdb, "database": database,
            "search_path": search_path, "track_counts": track_counts == "on",
        }
        if not self.info["track_counts"]:
            self.notes.append("track_counts is off: table scans cannot be seen, every blocking lock counts as held for long work")
        self.target_relations = _relations(self.target)
        reason = self._scratch_reason()
        forward = None
        if reason is None:
            forward = self._forward_transaction()
            if forward.needs_scratch is not None:
                reason = forward.needs_scratch
                forward = None
                self.tracker = _QueryTracker(self.queries, self.version)
                self.incompatible, self.query_failures = [], []
        if reason is not None:
            mode = "scratch"
            self.notes.append("applied in a scratch database: %s" % reason)
            forward = self._in_scratch(reason, forward=True)
        else:
            mode = "transaction"
            if self.down is not None and forward.ok:
                self._in_scratch("the rollback round trip commits between the migration and its rollback", forward=False)
            elif self.down is not None:
                self.notes.append("reversibility not checked: the migration fails")
        table_rows = self._table_rows(forward)
        if mode == "transaction":
            worked = sorted(set(t for m in forward.measured for t in m.rewritten_tables + m.scanned_tables))
            if worked:
                self.notes.append(
                    "transaction mode: the migration read or rewrote %s on the target (then rolled back), as it would in "
                    "production; scratch='always' keeps the analysis to catalog work" % ", ".join(
                        "%s (%s)" % (t, _rows_text(table_rows.get(t))) for t in worked)
                )
        self._forward_findings(forward, table_rows, mode)
        return {
            "mode": mode,
            "server_version": self.version,
            "statements": [m.entry() for m in forward.measured],
            "rollback_statements": [m.entry() for m in self.rollback_measured] if self.rollback_measured is not None else None,
            "applied": forward.ok,
            "incompatible_queries": self.incompatible,
            "invalid_old_queries": self.refused + self.tracker.invalid,
            "unchecked_old_queries": self.tracker.unchecked,
            "reversible": self.reversible,
            "schema_diff": self.schema_diff,
            "findings": self.findings,
            "table_rows": table_rows,
            "notes": self.notes,
            "seconds": round(time.monotonic() - started, 3),
        }

    def _scratch_reason(self):
        if self.scratch == "always":
            return "scratch='always'"
        for stmt in self.up:
            if not stmt.transactional and stmt.kind is None:
                return "%s cannot run inside a transaction block" % stmt.where()
        for stmt in self.up:
            if stmt.calls_sequence:
                return "%s calls setval() or nextval(), whose effect on a sequence survives ROLLBACK" % stmt.where()
        return None

    def _forward_transaction(self):
        conn = self.target
        try:
            _execute(conn, "BEGIN")
            run = _Run(conn, self.settings, committed=False, track_objects=False)
            if self.queries:
                self.tracker.check_original(conn, in_transaction=True)
            run.apply(self.up)
            if run.ok and self.tracker.valid:
                self._queries_after(conn, run, in_transaction=True)
            return run
        except psycopg2.Error as exc:
            raise LiveError("the analysis transaction failed: %s" % _message(exc))
        finally:
            if not conn.closed:
                _execute(conn, "ROLLBACK")

    def _queries_after(self, conn, run, in_transaction):
        final = self.tracker.check(conn, self.tracker.valid, in_transaction=in_transaction)
        failing = [p for p, outcome in final.items() if outcome is not None]
        if in_transaction:
            culprits = self._walk_back(conn, run, failing)
        elif self.tracker.history:
            culprits = self.tracker.culprits_from_history(final)
        else:
            culprits = {}
        for position in sorted(failing):
            error, sqlstate = final[position]
            if sqlstate in (_SQLSTATE_LOCK_TIMEOUT, _SQLSTATE_CANCELED):
                self.tracker.unchecked.append({"query": self.queries[position], "error": error, "sqlstate": sqlstate})
                continue
            culprit = culprits.get(position)
            entry = {
                "query": self.queries[position],
                "error": error,
                "sqlstate": sqlstate,
                "statement_index": culprit.stmt.index if culprit is not None else None,
                "line": culprit.stmt.line if culprit is not None else None,
            }
            self.incompatible.append(entry)
            self.query_failures.append((entry, culprit))

    def _walk_back(self, conn, run, failing):
        """Restore the state before each statement, last first: a failing query that prepares there broke on that statement."""
        culprits = {}
        remaining = set(failing)
        for measured in reversed(run.measured):
            if not remaining:
                break
            if measured.savepoint is None or measured.error is not None:
                continue
            _execute(conn, sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(measured.savepoint)))
            results = self.tracker.check(conn, sorted(remaining), in_transaction=True)
            for position in sorted(remaining):
                if results.get(position) is None:
                    culprits[position] = measured
                    remaining.discard(position)
        return culprits

    def _in_scratch(self, why, forward):
        scratch = _Scratch(self, why)
        try:
            conn = scratch.open()
            result = self._scratch_session(conn, forward)
        except BaseException:
            try:
                scratch.drop()
            except LiveError as exc:
                self.notes.append(str(exc))
            raise
        scratch.drop()
        return result

    def _scratch_session(self, conn, forward):
        before = schema_objects(conn) if self.down is not None else None
        if forward and self.queries:
            self.tracker.check_original(conn, in_transaction=False)
        run = _Run(conn, self.settings, committed=True, track_objects=self.down is not None)
        after_each = None
        if forward and self.tracker.valid and len(self.tracker.valid) * len(self.up) <= QUERY_CHECK_BUDGET:
            after_each = self.tracker.after_statement(conn)
        run.apply(self.up, after_each=after_each)
        if forward and run.ok and self.tracker.valid:
            self._queries_after(conn, run, in_transaction=False)
        if self.down is None:
            return run
        if not run.ok:
            failed = run.failed.stmt if run.failed is not None else None
            self.notes.append("reversibility not checked: the migration fails in the scratch database%s"
                              % (" at %s: %s" % (failed.where(), run.failed.error) if failed is not None else ""))
            if not forward:
                self.findings.append(_finding(
                    "live-statement-error", STATEMENT_ERROR_CATEGORY, "error", failed,
                    "fails in a scratch database made from the target's schema (no rows): %s. The rollback round trip "
                    "could not run." % run.failed.error,
                    sqlstate=run.failed.sqlstate,
                ))
            return run
        down = _Run(conn, self.settings, committed=True, track_objects=True)
        down.apply(self.down)
        self.rollback_measured = down.measured
        after = schema_objects(conn)
        self.schema_diff = _diff(before, after)
        if down.failed is not None:
            self.findings.append(_finding(
                "live-rollback-statement-error", STATEMENT_ERROR_CATEGORY, "error", down.failed.stmt,
                "the rollback fails after the migration: %s. As written it cannot undo this migration; the statements "
                "after it were not run." % down.failed.error,
                sqlstate=down.failed.sqlstate,
            ))
        lost = self._data_loss(run, down)
        # Reversible: the schema comes back, and so does the data the migration touched.
        self.reversible = down.ok and not any(self.schema_diff.values()) and not lost
        return run

    # -- rollback data loss --
    def _data_loss(self, up, down):
        original = up.initial_objects
        after_up = up.objects
        after_down = down.objects
        created = set(after_up) - set(original)
        writers = {}
        for measured in up.measured:
            for oid in measured.written_oids:
                writers.setdefault(oid, []).append(measured)
        for measured in down.measured:
            for key, value in self._vanished(measured):
                what, name, table = ("table" if value[1] is None else "column"), _object_name(value), value[0]
                if key in original:
                    self.findings.append(_finding(
                        "live-rollback-drops-existing-data", "data_loss", "error", measured.stmt,
                        "the rollback drops %s %s, which existed before the migration: its data is lost. A rollback "
                        "should only undo what the migration added." % (what, name),
                        table=table,
                    ))
                elif key in created:
                    filled = writers.get(key[1], [])
                    if value[1] is not None:
                        filled = [w for w in filled if _mentions(w.stmt.skeleton, value[1])]
                    if filled:
                        self.findings.append(_finding(
                            "live-rollback-drops-backfilled-data", "data_loss", "warning", measured.stmt,
                            "the rollback drops %s %s, which the migration created and filled (%s): that data, and "
                            "whatever the new version wrote there, is lost on rollback. Keep it until the rollback "
                            "window is over, or copy it aside first." % (what, name, ", ".join(w.stmt.where() for w in filled)),
                            table=table,
                        ))
                    else:
                        self.findings.append(_finding(
                            "live-rollback-drops-new-data", "data_loss", "info", measured.stmt,
                            "the rollback drops %s %s, which the migration created: what the new version writes there "
                            "is lost on rollback." % (what, name),
                            table=table,
                        ))
        lost = False
        names_after_down = set(_object_name(v) for v in after_down.values())
        for measured in up.measured:
            for key, value in self._vanished(measured):
                if key in original and key not in after_down and _object_name(value) in names_after_down:
                    lost = True
                    self.findings.append(_finding(
                        "live-migration-data-not-restorable", "data_loss", "error", measured.stmt,
                        "the migration drops %s %s and the rollback recreates it empty: its data cannot come back. "
                        "Keep it until the release after (expand/contract), or copy it aside first."
                        % ("table" if value[1] is None else "column", _object_name(value)),
                        table=value[0],
                    ))
            for key, (old_type, new_type) in sorted(measured.retyped.items()):
                if key not in original or key not in after_down or after_down[key][2] != original[key][2]:
                    continue  # not a round trip: the schema diff shows it
                if silently_lossy(old_type, new_type):
                    lost = True
                    self.findings.append(_finding(
                        "live-migration-values-not-restorable", "data_loss", "error", measured.stmt,
                        "the migration converts column %s from %s to %s and the rollback converts it back: values %s "
                        "cannot hold exactly are rounded or truncated, without an error, for good. Add a new column of "
                        "the new type instead, and drop the old one once no rollback can need it."
                        % (_object_name(original[key]), old_type, new_type, new_type),
                        table=original[key][0],
                    ))
        return lost

    @staticmethod
    def _vanished(measured):
        """Tables and columns gone after the statement; the columns of a dropped table are not listed again."""
        dropped_tables = set(k[1] for k in measured.vanished if k[0] == "t")
        out = [(k, v) for k, v in measured.vanished.items() if k[0] == "t" or k[1] not in dropped_tables]
        return sorted(out, key=lambda item: _object_name(item[1]))

    # -- sizes and findings --
    def _table_rows(self, run):
        touched = set()
        for measured in run.measured:
            touched.update(measured.touched)
        by_name = dict((_display(r), r) for r in self.target_relations.values() if r.kind in TABLE_KINDS)
        rows = {}
        for name in sorted(touched):
            rel = by_name.get(name)
            if rel is None:
                continue
            estimate = rel.reltuples
            if estimate is None or estimate < 0:
                estimate = self._planner_rows(rel)
            rows[name] = int(estimate) if estimate is not None else None
        return rows

    def _planner_rows(self, rel):
        """The planner's estimate for a never-analyzed table (from its size on disk; no rows read)."""
        try:
            plan = fetch_one(
                self.target,
                sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(sql.Identifier(rel.schema, rel.name)),
            )[0]
            return plan[0]["Plan"]["Plan Rows"]
        except (psycopg2.Error, LookupError, TypeError, ValueError):
            return None

    def _large(self, rows):
        return rows is None or rows >= self.large_table_rows

    def _forward_findings(self, run, table_rows, mode):
        def rows_of(name):
            return table_rows.get(name)

        for measured in run.measured:
            stmt = measured.stmt
            if measured.skipped is not None and stmt.kind in ("transaction_control", "cluster_wide"):
                self.findings.append(_finding(
                    "live-statement-skipped", "non_transactional", "info", stmt, "not measured: %s." % measured.skipped,
                ))
            if measured.error is not None:
                self.findings.append(self._error_finding(measured, mode))
                continue
            if measured.skipped is not None:
                continue
            work = measured.rewritten_tables + measured.scanned_tables
            long_work = bool(work) or (measured.locks_measured and not self.info["track_counts"])
            work_rows = None
            if work:
                sizes = [rows_of(t) for t in work]
                work_rows = None if any(s is None for s in sizes) else max(sizes)
            for table, lock_mode in sorted(measured.blocking.items()):
                self.findings.append(self._lock_finding(measured, table, lock_mode, long_work, work, work_rows, rows_of(table)))
            for table, (lock_mode, held_since) in sorted(measured.held_blocking.items()):
                if table not in measured.blocking or LOCK_STRENGTH[lock_mode] > LOCK_STRENGTH[measured.blocking[table]]:
                    self.findings.append(self._held_lock_finding(measured, table, lock_mode, held_since, work, work_rows))
            for table in measured.rewritten_tables:
                rows = rows_of(table)
                self.findings.append(_finding(
                    "live-table-rewrite", "table_rewrite", "error" if self._large(rows) else "warning", stmt,
                    "rewrites %s (%s) under an ACCESS EXCLUSIVE lock: reads and writes wait for the whole copy, and "
                    "the table's size is needed again on disk meanwhile. Avoid the rewrite: add a new column, backfill "
                    "it in batches, switch the app over, then drop the old one (or choose a change PostgreSQL makes in "
                    "place, e.g. a larger varchar(n) or text)." % (table, _rows_text(rows)),
                    table=table, rows=rows,
                ))
        for entry, culprit in self.query_failures:
            stmt = culprit.stmt if culprit is not None else None
            when = "once this statement has run" if stmt is not None else "after the migration"
            self.findings.append(_finding(
                "live-old-query-fails", "breaks_old_app", "error", stmt,
                "the running (old) app's query fails %s: %s. Query: %s. Keep what the old version uses until it is "
                "gone (expand/contract): add new columns or tables alongside, backfill, switch the app, and rename or "
                "drop in a later release." % (when, entry["error"], entry["query"]),
                table=stmt.tables[0] if stmt is not None and stmt.tables else None,
                query=entry["query"],
            ))

    def _error_finding(self, measured, mode):
        stmt = measured.stmt
        table = stmt.tables[0] if stmt.tables else None
        if measured.sqlstate == _SQLSTATE_LOCK_TIMEOUT:
            return _finding(
                "live-lock-timeout", "blocking_lock", "error", stmt,
                "could not get its lock within %d ms (%s): another session holds a conflicting lock%s. In production "
                "this statement would wait behind that session, and every query on the table would queue behind it. "
                "Run it with a short lock_timeout (SET lock_timeout = '2s') and retry, at a quiet moment."
                % (self.settings.lock_timeout_ms, measured.error, " on %s" % table if table else ""),
                table=table, sqlstate=measured.sqlstate,
            )
        if measured.sqlstate == _SQLSTATE_CANCELED:
            return _finding(
                "live-statement-timeout", "blocking_lock", "error", stmt,
                "did not finish within %ss (%s): it holds its locks for at least that long. Split the work (batches, "
                "CONCURRENTLY, NOT VALID + VALIDATE) or raise timeout if this is expected." % (self.settings.timeout, measured.error),
                table=table, sqlstate=measured.sqlstate,
            )
        partial = " (statements before it that ran outside a transaction stay applied)" if mode == "scratch" else ""
        return _finding(
            "live-statement-error", STATEMENT_ERROR_CATEGORY, "error", stmt,
            "fails on the server: %s. The migration stops here%s; the statements after it were not measured."
            % (measured.error, partial),
            table=table, sqlstate=measured.sqlstate,
        )

    def _lock_finding(self, measured, table, mode, long_work, work, work_rows, rows):
        label = LOCK_LABELS[mode]
        blocked = "reads and writes" if mode == "AccessExclusiveLock" else "writes"
        if long_work:
            severity = "error" if self._large(work_rows) else "warning"
            what = ", ".join(work) if work else "the table (scans cannot be seen: track_counts is off)"
            message = ("holds %s on %s while it %s %s (%s): %s on %s wait until it finishes. Safe alternative: %s."
                       % (label, table, "rewrites" if measured.rewritten_tables else "scans", what, _rows_text(work_rows),
                          blocked, table, _alternative(measured)))
        elif mode == "AccessExclusiveLock":
            severity = "warning" if self._large(rows) else "info"
            message = ("takes ACCESS EXCLUSIVE on %s (%s) for a catalog change only, so it is brief, but the request "
                       "waits behind every running transaction on the table and blocks all queries on it meanwhile: set a "
                       "short lock_timeout (SET lock_timeout = '2s') and retry." % (table, _rows_text(rows)))
        else:
            severity = "info"
            message = "takes %s on %s (%s) briefly, without scanning it: %s wait for that moment." % (label, table, _rows_text(rows), blocked)
        return _finding("live-blocking-lock", "blocking_lock", severity, measured.stmt, message, table=table, mode=mode, rows=rows)

    def _held_lock_finding(self, measured, table, mode, held_since, work, work_rows):
        blocked = "reads and writes" if mode == "AccessExclusiveLock" else "writes"
        taken = "statement %s" % held_since if held_since >= 0 else "an earlier statement"
        doing = "rewrites" if measured.rewritten_tables else "scans"
        return _finding(
            "live-lock-held-during-long-work", "blocking_lock", "warning", measured.stmt,
            "%s %s (%s) while %s's %s lock on %s is still held: when the migration runs as one transaction (as Flyway, "
            "Rails, Django and Alembic run a migration file), %s on %s wait for all of it. Commit after %s, or run this "
            "statement in a migration step of its own."
            % (doing, ", ".join(work), _rows_text(work_rows), taken, LOCK_LABELS[mode], table, blocked, table, taken),
            table=table, mode=mode, held_since=held_since,
        )


def analyze_live(conn_params, statements, rollback_statements=None, old_queries=None, large_table_rows=100000,
                 scratch="auto", timeout=300):
    """Measure a migration on the server of ``conn_params`` (libpq keywords) without changing it.

    ``statements`` / ``rollback_statements``: lists of dicts or objects with
    ``index``, ``line``, ``text`` (one statement), ``transactional`` and
    optionally ``tables``. ``old_queries``: SQL strings the running app
    issues (``$1`` parameters allowed). Returns the result described in the
    module docstring; raises LiveError when the analysis cannot run.
    Catalog work only (see the module docstring for what transaction mode
    runs on the target's rows).
    """
    if scratch not in SCRATCH_CHOICES:
        raise LiveError("scratch must be one of %s, got %r" % (", ".join(SCRATCH_CHOICES), scratch))
    if isinstance(large_table_rows, bool) or not isinstance(large_table_rows, int) or large_table_rows < 0:
        raise LiveError("large_table_rows must be a non-negative integer, got %r" % (large_table_rows,))
    settings = _Settings(timeout)
    up = _statements(statements, "migration")
    if not up:
        raise LiveError("the migration holds no statement")
    down = _statements(rollback_statements, "rollback")
    queries, refused = _queries(old_queries)
    target = _open(conn_params, settings)
    try:
        return _Analysis(conn_params, target, settings, up, down, queries, refused, large_table_rows, scratch).run()
    except psycopg2.Error as exc:
        raise LiveError("live analysis failed: %s" % redact(_message(exc), conn_params))
    finally:
        target.close()
