# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Catalog introspection: which tables to look at, their columns and keys.

Every name given by a user is looked up in pg_catalog with bound parameters;
nothing a user typed is ever placed in SQL text.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    fetch_all,
    qualified,
    split_qualified_name,
)

# Schemas that never hold application data, plus our own bookkeeping schema.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "stateful_rollback")

INTEGER_TYPES = ("int2", "int4", "int8")

ON_MISSING_KEY = ("fail", "skip", "table_hash")


class Column(object):
    __slots__ = ("name", "type_schema", "type_name", "type_display", "not_null")

    def __init__(self, name, type_schema, type_name, type_display, not_null):
        self.name = name
        self.type_schema = type_schema
        self.type_name = type_name
        self.type_display = type_display
        self.not_null = not_null

    def signature(self):
        return (self.name, self.type_display)

    @property
    def is_integer(self):
        return self.type_schema == "pg_catalog" and self.type_name in INTEGER_TYPES


class Table(object):
    """One table as the comparison sees it."""

    def __init__(self, schema, name, columns, key, key_source, estimated_rows):
        self.schema = schema
        self.name = name
        self.columns = columns
        self.key = key  # list of Column, empty when the table has no usable key
        self.key_source = key_source
        self.estimated_rows = estimated_rows

    @property
    def display(self):
        return qualified(self.schema, self.name)

    @property
    def column_names(self):
        return [c.name for c in self.columns]

    def column(self, name):
        for col in self.columns:
            if col.name == name:
                return col
        return None


_TABLES_SQL = """
SELECT n.nspname, c.relname
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND NOT c.relispartition
   AND n.nspname <> ALL (%s)
   AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
   AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1, 2
"""

_TABLE_SQL = """
SELECT c.oid, c.relkind, c.reltuples::bigint
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relname = %s
"""

_COLUMNS_SQL = """
SELECT a.attname, tn.nspname, t.typname,
       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
 WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

# The primary key first, then unique indexes whose columns are all NOT NULL
# (a documented fallback for tables without a primary key).
_KEYS_SQL = """
SELECT i.indisprimary, ic.relname,
       ARRAY(SELECT a.attname
               FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              ORDER BY k.ord)::text[] AS cols,
       bool_and(a2.attnotnull) AS all_not_null
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_attribute a2 ON a2.attrelid = i.indrelid AND a2.attnum = ANY (i.indkey)
 WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid
   AND i.indpred IS NULL AND i.indexprs IS NULL AND NOT (0 = ANY (i.indkey))
 GROUP BY i.indisprimary, ic.relname, i.indkey, i.indrelid
 ORDER BY i.indisprimary DESC, array_length(i.indkey, 1), ic.relname
"""


def list_user_tables(conn, exclude_schemas=()):
    excluded = list(SYSTEM_SCHEMAS) + list(exclude_schemas or ())
    return [(r[0], r[1]) for r in fetch_all(conn, _TABLES_SQL, (excluded,))]


def table_exists(conn, schema, name):
    return bool(fetch_all(conn, _TABLE_SQL, (schema, name)))


def describe_table(conn, schema, name, key_columns=None, where=""):
    """Columns, key and size estimate of one table; None when it does not exist."""
    rows = fetch_all(conn, _TABLE_SQL, (schema, name))
    if not rows:
        return None
    oid, relkind, reltuples = rows[0]
    if relkind not in ("r", "p"):
        raise PostgresError("%s%s is not a table" % (qualified(schema, name), where))
    columns = [Column(*r) for r in fetch_all(conn, _COLUMNS_SQL, (oid,))]
    by_name = dict((c.name, c) for c in columns)
    key, source = [], None
    if key_columns:
        missing = [k for k in key_columns if k not in by_name]
        if missing:
            raise PostgresError(
                "key_columns for %s name columns that do not exist%s: %s"
                % (qualified(schema, name), where, ", ".join(missing))
            )
        key, source = [by_name[k] for k in key_columns], "key_columns"
    else:
        for primary, index, cols, all_not_null in fetch_all(conn, _KEYS_SQL, (oid,)):
            if primary or all_not_null:
                key = [by_name[c] for c in cols]
                source = "primary key" if primary else "unique index %s" % index
                break
    return Table(schema, name, columns, key, source, max(int(reltuples), -1))


def resolve_tables(conn, tables=None, exclude_tables=None, exclude_schemas=None, key_columns=None):
    """The tables to compare, described from ``conn`` (the primary).

    ``tables`` entries are ``table`` or ``schema.table``; an unknown or
    malformed name raises PostgresError naming it.
    """
    key_columns = key_columns or {}
    normalized_keys = {}
    for name, cols in key_columns.items():
        normalized_keys[split_qualified_name(name)] = list(cols)
    excluded = set(split_qualified_name(n) for n in (exclude_tables or []))
    if tables:
        wanted, seen = [], set()
        for name in tables:
            pair = split_qualified_name(name)
            if pair not in seen:
                seen.add(pair)
                wanted.append(pair)
    else:
        wanted = list_user_tables(conn, exclude_schemas)
    result = []
    for schema, name in wanted:
        if (schema, name) in excluded:
            continue
        table = describe_table(conn, schema, name, normalized_keys.get((schema, name)))
        if table is None:
            raise PostgresError("table %s does not exist on the primary" % qualified(schema, name))
        result.append(table)
    unknown_keys = set(normalized_keys) - set((t.schema, t.name) for t in result)
    if unknown_keys:
        raise PostgresError(
            "key_columns names tables that are not compared: %s"
            % ", ".join(sorted(qualified(*k) for k in unknown_keys))
        )
    return result
