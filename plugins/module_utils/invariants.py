# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data invariants that must hold before and after any change.

- ``unique_keys``: no two rows share a key (primary key, the unique index
  used as key, or the given key_columns - the last is where it can fail);
- ``sequences``: every sequence feeding a column (serial, identity, or a
  ``DEFAULT nextval(...)``) would hand out a value above the column's
  maximum (below its minimum for descending sequences);
- ``foreign_keys``: no orphans, for validated and NOT VALID constraints
  alike (MATCH SIMPLE: a row with a NULL in the referencing columns is
  not an orphan);
- ``row_counts``: the exact row count of each table (informational; a
  baseline comparison judges it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.stateful.rollback.plugins.module_utils.catalog import SYSTEM_SCHEMAS
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    fetch_all,
    fetch_value,
    qualified,
    sql,
)

CHECKS = ("unique_keys", "sequences", "foreign_keys", "row_counts")
SAMPLE = 10

_SEQUENCES_SQL = """
WITH feeds AS (
    SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS att
      FROM pg_catalog.pg_depend d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
       AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION
    SELECT d.refobjid, ad.adrelid, ad.adnum
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
)
SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname,
       ps.last_value, ps.start_value, ps.increment_by
  FROM feeds f
  JOIN pg_catalog.pg_class s ON s.oid = f.seq AND s.relkind = 'S'
  JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_catalog.pg_class t ON t.oid = f.rel
  JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = f.rel AND a.attnum = f.att
  JOIN pg_catalog.pg_sequences ps ON ps.schemaname = sn.nspname AND ps.sequencename = s.relname
 WHERE tn.nspname <> ALL (%s)
 ORDER BY 1, 2, 3, 4, 5
"""

_FOREIGN_KEYS_SQL = """
SELECT con.conname, cn.nspname, c.relname, pn.nspname, p.relname, con.convalidated,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o)::text[],
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o)::text[]
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
  JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
  JOIN pg_catalog.pg_class p ON p.oid = con.confrelid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
 WHERE con.contype = 'f' AND cn.nspname <> ALL (%s)
 ORDER BY 2, 3, 1
"""


def _in_scope(scope, schema, name):
    return scope is None or (schema, name) in scope


def check_unique_keys(conn, tables):
    results = []
    for table in tables:
        if not table.key:
            results.append({"table": table.display, "ok": True, "note": "no key to check"})
            continue
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.key)
        query = sql.SQL(
            "SELECT {text}, count(*) FROM {t} GROUP BY {cols} HAVING count(*) > 1 ORDER BY {cols} LIMIT %s"
        ).format(
            text=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in table.key),
            t=sql.Identifier(table.schema, table.name),
            cols=cols,
        )
        rows = fetch_all(conn, query, (SAMPLE,))
        duplicates = [dict(zip([c.name for c in table.key] + ["count"], list(r[:-1]) + [int(r[-1])])) for r in rows]
        results.append({"table": table.display, "key": [c.name for c in table.key], "ok": not duplicates, "duplicates": duplicates})
    return results


def check_sequences(conn, scope, exclude_schemas=()):
    results = []
    excluded = list(SYSTEM_SCHEMAS) + list(exclude_schemas or ())
    for seq_schema, seq, schema, table, column, last_value, start, increment in fetch_all(conn, _SEQUENCES_SQL, (excluded,)):
        if not _in_scope(scope, schema, table):
            continue
        next_value = start if last_value is None else last_value + increment
        query = sql.SQL("SELECT {agg}({c}) FROM {t}").format(
            agg=sql.SQL("max" if increment > 0 else "min"), c=sql.Identifier(column), t=sql.Identifier(schema, table)
        )
        extreme = fetch_value(conn, query)
        ok = extreme is None or (next_value > extreme if increment > 0 else next_value < extreme)
        results.append(
            {
                "sequence": qualified(seq_schema, seq),
                "table": qualified(schema, table),
                "column": column,
                "next_value": int(next_value),
                "column_max" if increment > 0 else "column_min": None if extreme is None else int(extreme),
                "ok": ok,
            }
        )
    return results


def check_foreign_keys(conn, scope, exclude_schemas=()):
    results = []
    excluded = list(SYSTEM_SCHEMAS) + list(exclude_schemas or ())
    for name, c_schema, c_table, p_schema, p_table, validated, c_cols, p_cols in fetch_all(conn, _FOREIGN_KEYS_SQL, (excluded,)):
        if not _in_scope(scope, c_schema, c_table):
            continue
        not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(col)) for col in c_cols)
        match = sql.SQL(" AND ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc)) for pc, cc in zip(p_cols, c_cols)
        )
        orphans = sql.SQL(
            "SELECT {cols} FROM {child} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
        ).format(
            cols=sql.SQL(", ").join(sql.SQL("c.{}::text").format(sql.Identifier(col)) for col in c_cols),
            child=sql.Identifier(c_schema, c_table),
            parent=sql.Identifier(p_schema, p_table),
            not_null=not_null,
            match=match,
        )
        count = fetch_value(conn, sql.SQL("SELECT count(*) FROM ({}) o").format(orphans))
        sample = fetch_all(conn, sql.SQL("{} LIMIT %s").format(orphans), (SAMPLE,)) if count else []
        results.append(
            {
                "constraint": name,
                "table": qualified(c_schema, c_table),
                "references": qualified(p_schema, p_table),
                "validated": bool(validated),
                "orphans": int(count),
                "sample": [dict(zip(c_cols, r)) for r in sample],
                "ok": not count,
            }
        )
    return results


def row_counts(conn, tables):
    return [
        {
            "table": t.display,
            "rows": int(fetch_value(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.schema, t.name)))),
            "ok": True,
        }
        for t in tables
    ]


def run(conn, checks, tables, exclude_schemas=()):
    """Run the selected checks over ``tables``; returns (report, violations)."""
    if "all" in checks:
        checks = list(CHECKS)
    scope = set((t.schema, t.name) for t in tables)
    report = {}
    if "unique_keys" in checks:
        report["unique_keys"] = check_unique_keys(conn, tables)
    if "sequences" in checks:
        report["sequences"] = check_sequences(conn, scope, exclude_schemas)
    if "foreign_keys" in checks:
        report["foreign_keys"] = check_foreign_keys(conn, scope, exclude_schemas)
    if "row_counts" in checks:
        report["row_counts"] = row_counts(conn, tables)
    violations = []
    for item in report.get("unique_keys", []):
        if not item["ok"]:
            violations.append("duplicate keys in %s (%d shown)" % (item["table"], len(item["duplicates"])))
    for item in report.get("sequences", []):
        if not item["ok"]:
            violations.append(
                "sequence %s is behind %s.%s: next value %s, column max %s"
                % (item["sequence"], item["table"], item["column"], item["next_value"], item.get("column_max", item.get("column_min")))
            )
    for item in report.get("foreign_keys", []):
        if not item["ok"]:
            violations.append(
                "%d orphan row(s) in %s violate foreign key %s%s"
                % (item["orphans"], item["table"], item["constraint"], "" if item["validated"] else " (NOT VALID)")
            )
    report["ok"] = not violations
    report["violations"] = violations
    return report, violations
