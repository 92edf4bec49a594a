# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Batched, resumable backfills: the pieces that need no runner around them.

A backfill walks the table in key order, one key range per transaction::

    SELECT k::text, count(*) OVER () FROM (SELECT key AS k FROM t WHERE key > $last
        ORDER BY key LIMIT $batch_size) s ORDER BY k DESC LIMIT 1            -- the range's upper bound
    UPDATE t SET <set> WHERE key > $last AND key <= $upper AND (<where>)      -- the batch
    UPDATE journal SET last_key = $upper, rows_processed = rows_processed + n -- same transaction

The bound query reads the key index only; the UPDATE touches the rows of one
range through the same index and holds their row locks until the batch
commits, together with the journal's new position. A crash at any point
leaves the journal at the last committed range: the next run starts right
after it, so no row is updated twice and none is skipped. Keys need not be
unique (a range always takes every row of its upper key); rows with a NULL
key are never visited.

The key's last value is stored as text (``last_key``) and cast back with the
column's own type, named by identifiers (``CAST(%s AS "pg_catalog"."int8")``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import random
import time

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    fetch_all,
    fetch_one,
    fetch_value,
    psycopg2,
    qualified,
    split_qualified_name,
    sql,
)

# Key types whose text form casts back to the same value whatever the session settings.
KEY_TYPES = {
    "int2": "integer", "int4": "integer", "int8": "integer", "numeric": "numeric",
    "text": "text", "varchar": "text", "bpchar": "text", "uuid": "uuid",
}
# Tables with at most this many rows (pg_class.reltuples) get an exact count of the rows left.
EXACT_COUNT_MAX_ROWS = 1000000


class BackfillError(PostgresError):
    """A backfill that cannot run as declared; the message names the migration and what to fix."""


# -- pure helpers ------------------------------------------------------------------


def backoff_delay(attempt, base, cap, rand=random.random):
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt from 0)."""
    if attempt < 0:
        attempt = 0
    ceiling = min(float(cap), float(base) * (2 ** min(attempt, 62)))
    return rand() * ceiling


class TokenBucket(object):
    """Rows-per-second limit across batches.

    ``consume(n)`` after a batch of n rows returns how long to sleep before the next one, so that over any
    window of T seconds at most ``burst + rate * T`` rows are written (burst defaults to one batch).
    """

    def __init__(self, rate, burst=None, clock=time.monotonic):
        if rate is None or rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst else rate)
        self.tokens = self.burst
        self.clock = clock
        self.stamp = clock()

    def _refill(self):
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def consume(self, rows):
        self._refill()
        self.tokens -= rows
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate


def parse_column(name, what="key"):
    """A column name: unquoted folded to lower case, "quoted" taken literally; JournalError-like failure."""
    try:
        schema, column = split_qualified_name(name, default_schema=None)
    except PostgresError as exc:
        raise BackfillError(str(exc).replace("table name", "%s column name" % what))
    if schema is not None:
        raise BackfillError("%s %r must be a single column name, not a qualified name" % (what, name))
    return column


def fragment(text):
    """A manifest SQL fragment (trusted, checksummed) as sql.SQL, with % escaped for parameter binding."""
    return sql.SQL(text.replace("%", "%%"))


def spec_sha256(backfill):
    """Checksum of a backfill's definition (table, key, set, where), journaled like a script's."""
    canonical = json.dumps({"table": backfill.table, "key": backfill.key, "set": backfill.set, "where": backfill.where},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_fragments(backfill):
    """Parse ``set``/``where`` with pglast: each must fit one UPDATE statement (clear error otherwise); the
    table and key must be well-formed names (their existence is checked after the up script ran)."""
    from ansible_collections.stateful.rollback.plugins.module_utils import compat_static

    try:
        split_qualified_name(backfill.table)
    except PostgresError as exc:
        raise BackfillError("backfill table: %s" % exc)
    parse_column(backfill.key)
    if not compat_static.HAS_PGLAST:
        return
    # The batch UPDATE with sentinels for its key range: a fragment that ends in a comment, closes a parenthesis
    # it did not open or carries its own WHERE cannot keep both sentinels AND-ed around itself.
    text = "UPDATE t SET %s\nWHERE __batch_lower AND (%s\n) AND __batch_upper" % (backfill.set, backfill.where or "true")
    try:
        raws = compat_static.pglast.parse_sql(text)
    except compat_static.pglast.parser.ParseError as exc:
        raise BackfillError("backfill set/where do not parse as 'UPDATE %s SET <set> WHERE <where>': %s"
                            % (backfill.table, exc.args[0]))
    if len(raws) != 1 or type(raws[0].stmt).__name__ != "UpdateStmt":
        raise BackfillError("backfill set/where must be fragments of one UPDATE statement, found %d statements" % len(raws))
    if not _keeps_batch_range(raws[0].stmt.whereClause):
        raise BackfillError("backfill set/where must not reach outside their place in 'UPDATE %s SET <set> WHERE <key range> "
                            "AND (<where>)': an unbalanced parenthesis or an OR at their top level would drop the key range "
                            "of every batch" % backfill.table)


def _keeps_batch_range(where):
    """Whether the parsed WHERE of check_fragments' text is ``__batch_lower AND (...) AND __batch_upper``."""
    def sentinel(node):
        fields = getattr(node, "fields", None) or ()
        return type(node).__name__ == "ColumnRef" and len(fields) == 1 and getattr(fields[0], "sval", None)

    if type(where).__name__ != "BoolExpr" or getattr(where.boolop, "name", where.boolop) not in ("AND_EXPR", 0):
        return False
    args = where.args or ()
    return len(args) >= 3 and sentinel(args[0]) == "__batch_lower" and sentinel(args[-1]) == "__batch_upper"


# -- the table -------------------------------------------------------------------------


class Target(object):
    """The table, key column and key type of a backfill, resolved in the catalog."""

    def __init__(self, schema, table, key, type_schema, type_name, type_display, reltuples, nullable=False):
        self.schema = schema
        self.nullable = nullable
        self.table = table
        self.key = key
        self.type_schema = type_schema
        self.type_name = type_name
        self.type_display = type_display
        self.reltuples = reltuples
        self.display = qualified(schema, table)

    @property
    def rel(self):
        return sql.Identifier(self.schema, self.table)

    @property
    def key_ident(self):
        return sql.Identifier(self.key)

    def cast(self):
        """CAST(%s AS <the key's type>) with the type named by identifiers."""
        return sql.SQL("CAST(%s AS {})").format(sql.Identifier(self.type_schema, self.type_name))


def resolve(conn, backfill):
    """Target of a backfill, or BackfillError naming what is missing (table, key, index, key type)."""
    schema, table = split_qualified_name(backfill.table)
    key = parse_column(backfill.key)
    found = fetch_one(
        conn,
        "SELECT c.oid, c.relkind, c.reltuples FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    )
    if not found or found[1] not in ("r", "p"):
        raise BackfillError("backfill table %s does not exist (after the up script ran)" % qualified(schema, table))
    oid, reltuples = found[0], found[2]
    column = fetch_one(
        conn,
        "SELECT a.attnum, tn.nspname, t.typname, pg_catalog.format_type(a.atttypid, a.atttypmod), "
        "       CASE WHEN t.typtype = 'd' THEN bt.typname END, a.attnotnull "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace "
        "LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype "
        "WHERE a.attrelid = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (oid, key),
    )
    if not column:
        raise BackfillError("backfill key column %s does not exist in %s" % (key, qualified(schema, table)))
    attnum, type_schema, type_name, display, base, notnull = column
    if (base or type_name) not in KEY_TYPES:
        raise BackfillError(
            "backfill key %s.%s has type %s; supported key types: smallint, integer, bigint, numeric, text, varchar, char, uuid"
            % (qualified(schema, table), key, display))
    indexed = fetch_value(
        conn,
        "SELECT count(*) FROM pg_catalog.pg_index i WHERE i.indrelid = %s AND i.indisvalid AND i.indkey[0] = %s "
        "AND i.indpred IS NULL",
        (oid, attnum),
    )
    if not indexed:
        raise BackfillError(
            "backfill key %s.%s has no valid index starting with it: every batch would scan the whole table; "
            "add an index (or use the primary key as key)" % (qualified(schema, table), key))
    return Target(schema, table, key, type_schema, type_name, display, max(float(reltuples or 0), 0.0), not notnull)


# -- statements ---------------------------------------------------------------------------


def bound_query(target, first):
    """(upper key as text, keys) of the next range of at most batch_size keys after the last key."""
    after = sql.SQL("{} IS NOT NULL").format(target.key_ident) if first else \
        sql.SQL("{} > {}").format(target.key_ident, target.cast())
    # Not max(k): PostgreSQL before 16 has no max(uuid). A top-1 sort of at most batch_size keys is cheap.
    # ORDER BY s.k, not k: an unqualified k would name the text output column and sort '999' after '1000'.
    return sql.SQL("SELECT s.k::text AS upper_key, count(*) OVER () AS keys FROM (SELECT {key} AS k FROM {rel} WHERE {after} "
                   "ORDER BY {key} LIMIT %s) s ORDER BY s.k DESC LIMIT 1").format(key=target.key_ident, rel=target.rel, after=after)


def update_query(target, backfill, first):
    """The batch: UPDATE of one key range, rows matching ``where`` only."""
    lower = sql.SQL("{} IS NOT NULL").format(target.key_ident) if first else \
        sql.SQL("{} > {}").format(target.key_ident, target.cast())
    # Each fragment ends a line: a trailing "-- comment" in it cannot comment out the key range (check_fragments).
    return sql.SQL("UPDATE {rel} SET {set}\nWHERE {lower} AND {key} <= {cast} AND ({where}\n)").format(
        rel=target.rel, set=fragment(backfill.set), lower=lower, key=target.key_ident, cast=target.cast(),
        where=fragment(backfill.where) if backfill.where else sql.SQL("true"),
    )


def remaining_query(target, backfill, first, use_where=True):
    after = sql.SQL("{} IS NOT NULL").format(target.key_ident) if first else \
        sql.SQL("{} > {}").format(target.key_ident, target.cast())
    return sql.SQL("SELECT 1 FROM {rel} WHERE {after} AND ({where}\n)").format(
        rel=target.rel, after=after, where=fragment(backfill.where) if backfill.where and use_where else sql.SQL("true"))


def estimate_remaining(conn, target, backfill, last_key, statement_timeout_ms=30000, use_where=True):
    """(rows left to update, method): an exact count for tables up to EXACT_COUNT_MAX_ROWS, else the planner's estimate.

    ``use_where=False`` counts every row after the last key: an upper bound, for when ``where`` names a column the
    up script has not added yet.
    """
    first = last_key is None
    query = remaining_query(target, backfill, first, use_where)
    params = None if first else (last_key,)
    if target.reltuples <= EXACT_COUNT_MAX_ROWS:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute("SELECT set_config('statement_timeout', %s, true)", ("%dms" % statement_timeout_ms,))
                cur.execute(sql.SQL("SELECT count(*) FROM ({}) s").format(query), params)
                count = cur.fetchone()[0]
                cur.execute("COMMIT")
                return int(count), "exact"
            except psycopg2.Error:
                # Too slow (statement_timeout) or not countable: fall back to the planner's estimate.
                if conn.closed:
                    raise
                cur.execute("ROLLBACK")
    plan = fetch_value(conn, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params)
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]), "planner"


# -- replica lag ------------------------------------------------------------------------------

LAG_QUERY = """
SELECT kind, name, lag FROM (
  SELECT 'physical' AS kind, coalesce(application_name, client_addr::text, pid::text) AS name,
         pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), replay_lsn) AS lag
    FROM pg_catalog.pg_stat_replication
   WHERE pid NOT IN (SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical' AND active_pid IS NOT NULL)
  UNION ALL
  SELECT 'logical', slot_name::text,
         pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)
    FROM pg_catalog.pg_replication_slots
   WHERE slot_type = 'logical' AND active AND database = current_database()
) r ORDER BY lag DESC NULLS FIRST
"""


def replica_lag(conn):
    """[(kind, name, lag bytes or None)] of the primary's streaming standbys and active logical slots, worst first."""
    return [(k, n, None if lag is None else int(lag)) for k, n, lag in fetch_all(conn, LAG_QUERY)]


def max_lag(lags):
    """(worst lag in bytes, name) over replicas; a replica whose position cannot be read counts as unknown (None)."""
    worst, name = 0, None
    for dummy, who, lag in lags:
        if lag is None:
            return None, who
        if lag > worst:
            worst, name = lag, who
    return worst, name


def sleep_for_lag(elapsed, base=0.1, cap=5.0):
    """Back-off while replicas catch up: grows with the time already waited."""
    return min(cap, base * (1.0 + elapsed))


def now():
    return time.monotonic()
