# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration journal: what ran, when, by whom, and how far a backfill got.

It lives in a dedicated schema of the target database (``journal_schema``,
default ``stateful_rollback``), made on first use by the runner:

``migration_journal``  one row per step execution. A step is one phase
    (``schema``: the up or down script; ``backfill``: the batched update
    after an up script) of one migration in one direction. A step that did
    not finish (running after a crash, failed, paused) is continued on its
    own row (``attempts`` + 1); a finished (``done``) row is never touched
    again: applying a migration again after a revert makes a new row.
``migration_control``  one row per release version: ``pause_requested``,
    set by ``state=paused`` and read by a running backfill at each batch.

The state of a migration is computed from its rows (``summarize``):
*applied* iff its latest ``up`` schema step is ``done`` (and its backfill
step, when it has one) and no ``down`` step finished after it.

Identifiers are only ever composed with psycopg2.sql.Identifier.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    fetch_all,
    journal_schema_problem,
    fetch_value,
    sql,
)

DEFAULT_SCHEMA = "stateful_rollback"
JOURNAL_TABLE = "migration_journal"
CONTROL_TABLE = "migration_control"
JOURNAL_FORMAT = "stateful.rollback migration journal v1"

# Advisory locks use the two-int4-key form pg_advisory_lock(LOCK_NAMESPACE, key):
# pg_locks shows them as locktype 'advisory', classid = LOCK_NAMESPACE,
# objid = key (as unsigned), objsubid = 2. LOCK_NAMESPACE is 'SRMG' in ASCII.
LOCK_NAMESPACE = 0x53524D47

STATES = ("running", "done", "failed", "paused")
DIRECTIONS = ("up", "down")
PHASES = ("schema", "backfill")

COLUMNS = (
    "id", "release_version", "release_digest", "migration_id", "direction", "phase", "script",
    "script_sha256", "transactional", "state", "started_at", "finished_at", "last_key", "last_key_type",
    "rows_processed", "batches", "statements_done", "elapsed_seconds", "attempts", "executed_by", "error", "note",
)

_DDL = (
    """CREATE TABLE IF NOT EXISTS {journal} (
    id bigserial PRIMARY KEY,
    release_version text NOT NULL,
    release_digest text NOT NULL,
    migration_id text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('up', 'down')),
    phase text NOT NULL CHECK (phase IN ('schema', 'backfill')),
    script text,
    script_sha256 text NOT NULL,
    transactional boolean,
    state text NOT NULL CHECK (state IN ('running', 'done', 'failed', 'paused')),
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    last_key text,
    last_key_type text,
    rows_processed bigint NOT NULL DEFAULT 0,
    batches integer NOT NULL DEFAULT 0,
    statements_done integer NOT NULL DEFAULT 0,
    elapsed_seconds double precision NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 1,
    executed_by text NOT NULL,
    error text,
    note text)""",
    "CREATE INDEX IF NOT EXISTS {journal_index} ON {journal} (migration_id, id)",
    """CREATE TABLE IF NOT EXISTS {control} (
    release_version text PRIMARY KEY,
    pause_requested boolean NOT NULL DEFAULT false,
    requested_by text,
    requested_at timestamptz)""",
)


class JournalError(PostgresError):
    """A journal problem whose message is meant for the operator."""


def check_schema_name(name):
    """The journal schema name as given (an identifier, never SQL text), or JournalError."""
    problem = journal_schema_problem(name, DEFAULT_SCHEMA)
    if problem:
        raise JournalError(problem)
    return name


def _int4(value):
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def lock_key(schema):
    """(namespace, key) of the runner's advisory lock for a journal schema.

    key = first 4 bytes (big endian, signed) of SHA-256("stateful.rollback.migrate:" + schema).
    """
    digest = hashlib.sha256(("stateful.rollback.migrate:" + schema).encode("utf-8")).digest()
    return LOCK_NAMESPACE, _int4(int.from_bytes(digest[:4], "big"))


def ddl_lock_key(schema):
    """Transaction-level advisory lock serializing the journal's CREATE ... IF NOT EXISTS."""
    namespace, key = lock_key(schema)
    return namespace, _int4(key + 1)


class Journal(object):
    """Journal tables of one schema, read and written over a given connection."""

    def __init__(self, schema=DEFAULT_SCHEMA):
        self.schema = check_schema_name(schema)
        self.table = sql.Identifier(self.schema, JOURNAL_TABLE)
        self.control = sql.Identifier(self.schema, CONTROL_TABLE)

    # -- existence and creation -------------------------------------------------
    def exists(self, conn):
        return bool(fetch_value(
            conn,
            "SELECT to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) IS NOT NULL "
            "AND to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) IS NOT NULL",
            (self.schema, JOURNAL_TABLE, self.schema, CONTROL_TABLE),
        ))

    def ensure(self, conn):
        """Create the schema and tables if missing (serialized by a transaction advisory lock). True if created."""
        if self.exists(conn):
            return False
        namespace, key = ddl_lock_key(self.schema)
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (namespace, key))
                # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
                # schema exists (pre-created for a least-privilege migrator): ask first.
                cur.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (self.schema,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
                for statement in _DDL:
                    cur.execute(sql.SQL(statement).format(
                        journal=self.table, control=self.control,
                        journal_index=sql.Identifier(JOURNAL_TABLE + "_migration_idx"),
                    ))
                cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(self.table), (JOURNAL_FORMAT,))
            except BaseException:
                if not conn.closed:
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        return True

    # -- reading ------------------------------------------------------------------
    def rows(self, conn, migration_ids=None):
        """Journal rows (dicts, oldest first), of the given migrations only when migration_ids is given."""
        query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS), self.table)
        params = None
        if migration_ids is not None:
            query = query + sql.SQL(" WHERE migration_id = ANY(%s)")
            params = (list(migration_ids),)
        query = query + sql.SQL(" ORDER BY id")
        return [dict(zip(COLUMNS, row)) for row in fetch_all(conn, query, params)]

    def row(self, conn, row_id):
        query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS), self.table)
        found = fetch_all(conn, query, (row_id,))
        return dict(zip(COLUMNS, found[0])) if found else None

    def pause_requested(self, conn, release_version):
        """(requested, requested_by, requested_at) for a release; (False, None, None) when no row."""
        found = fetch_all(
            conn,
            sql.SQL("SELECT pause_requested, requested_by, requested_at FROM {} WHERE release_version = %s").format(self.control),
            (release_version,),
        )
        if not found:
            return False, None, None
        return bool(found[0][0]), found[0][1], found[0][2]

    # -- writing (on the caller's connection and transaction) ---------------------
    def insert(self, cur, values):
        """Insert a step row; returns its id. ``values`` maps column names to values."""
        names = [n for n in COLUMNS if n in values and n != "id"]
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
                self.table,
                sql.SQL(", ").join(sql.Identifier(n) for n in names),
                sql.SQL(", ").join(sql.Placeholder() for dummy in names),
            ),
            [values[n] for n in names],
        )
        return cur.fetchone()[0]

    def update(self, cur, row_id, values, finished=False):
        """Set columns of one row; ``finished`` also sets finished_at to the clock."""
        names = sorted(values)
        parts = [sql.SQL("{} = %s").format(sql.Identifier(n)) for n in names]
        if finished:
            parts.append(sql.SQL("finished_at = clock_timestamp()"))
        cur.execute(
            sql.SQL("UPDATE {} SET {} WHERE id = %s").format(self.table, sql.SQL(", ").join(parts)),
            [values[n] for n in names] + [row_id],
        )

    def record_batch(self, cur, row_id, last_key, rows, seconds):
        """One backfill batch: advance last_key, add its rows, count it (inside the batch's transaction)."""
        cur.execute(
            sql.SQL("UPDATE {} SET last_key = %s, rows_processed = rows_processed + %s, batches = batches + 1, "
                    "elapsed_seconds = elapsed_seconds + %s WHERE id = %s").format(self.table),
            (last_key, rows, seconds, row_id),
        )

    def set_pause(self, conn, release_version, requested, requested_by):
        """Set or clear the pause flag of a release; True when it changed."""
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {control} AS c (release_version, pause_requested, requested_by, requested_at) "
                    "VALUES (%s, %s, %s, clock_timestamp()) "
                    "ON CONFLICT (release_version) DO UPDATE SET pause_requested = EXCLUDED.pause_requested, "
                    "requested_by = EXCLUDED.requested_by, requested_at = EXCLUDED.requested_at "
                    "WHERE c.pause_requested IS DISTINCT FROM EXCLUDED.pause_requested "
                    "RETURNING (xmax = 0) AS inserted"
                ).format(control=self.control),
                (release_version, requested, requested_by),
            )
            changed = cur.fetchone()
        # A new row that clears a flag never set changes nothing an operator sees.
        if changed is None:
            return False
        return bool(requested) or not changed[0]


# -- the state of a migration ----------------------------------------------------


def _latest(rows, **match):
    found = None
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            found = row
    return found


def cycle_rows(rows):
    """Rows of a migration since its last finished revert (the current apply cycle), oldest first."""
    last_down = _latest(rows, direction="down", phase="schema", state="done")
    start = last_down["id"] if last_down else 0
    return [r for r in rows if r["id"] > start], last_down


def summarize(rows, has_backfill):
    """State of one migration from its journal rows (oldest first).

    ``applied``: the latest up schema step (since the last finished revert) is done, its backfill too when
    the migration has one. ``status`` is one of pending, reverted, applied, running, failed, paused,
    backfill_pending (schema done, backfill not started), revert_running, revert_failed.
    ``has_effects``: something of the current cycle may be in the database (a done schema step, or a
    statement of a non-transactional step), so a revert must run the down script.
    """
    cycle, last_down = cycle_rows(rows)
    up_schema = _latest(cycle, direction="up", phase="schema")
    backfill = _latest(cycle, direction="up", phase="backfill")
    down = _latest(cycle, direction="down", phase="schema")
    out = {
        "applied": False,
        "status": "reverted" if last_down else "pending",
        "schema_step": up_schema,
        "backfill_step": backfill,
        "down_step": down,
        "has_effects": False,
        "applied_by": None,
    }
    if up_schema is None:
        return out
    schema_done = up_schema["state"] == "done"
    out["applied_by"] = up_schema["release_version"] if schema_done else None
    out["has_effects"] = schema_done or (up_schema["transactional"] is False and (up_schema["statements_done"] or 0) > 0)
    if not schema_done:
        out["status"] = up_schema["state"]
    elif has_backfill and backfill is None:
        out["status"] = "backfill_pending"
    elif has_backfill and backfill["state"] != "done":
        out["status"] = backfill["state"]
    else:
        out["applied"] = True
        out["status"] = "applied"
    if down is not None and down["id"] > up_schema["id"]:
        # A revert that did not finish (a finished one starts a new cycle).
        out["status"] = "revert_failed" if down["state"] in ("failed", "paused") else "revert_running"
    return out


def unfinished(rows, direction, phase):
    """The row to continue for a step: the latest of the current cycle when it is not done, else None."""
    cycle = cycle_rows(rows)[0]
    row = _latest(cycle, direction=direction, phase=phase)
    if row is not None and row["state"] != "done":
        return row
    return None
