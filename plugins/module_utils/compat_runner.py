# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schema_compat_check flow, shared by the module and the command line.

``run(params)`` reads the migration (and its rollback and the old app's
queries), analyzes it statically with pglast, measures it on a real server
when a connection is given (compat_live: never changing the target), merges
both - a live measurement overrides a static guess, and each finding says
which it was - and applies the ``fail_on`` policy. Operator-facing failures
raise CompatFailure(msg, result).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.stateful.rollback.plugins.module_utils.compat_static import (
    CATEGORIES,
    CompatError,
    analyze_static,
    column_types_from_sql,
    parse_sql,
)
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    connect,
    describe,
    fetch_all,
    fetch_value,
    get_conn_params,
    sql,
    CONNECTION_KEYS,
)

SEVERITIES = ("error", "warning", "info")
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}
# An error in one of these makes the migration not compatible with the old app running.
COMPATIBILITY_CATEGORIES = ("breaks_old_app", "blocking_lock", "table_rewrite", "data_loss")
# What a live measurement can settle for a statement.
MEASURED_CATEGORIES = ("table_rewrite", "blocking_lock")
BLOCKING_MODES = ("AccessExclusiveLock", "ExclusiveLock", "ShareRowExclusiveLock", "ShareLock")
MAX_FILE_BYTES = 16 * 1024 * 1024


class CompatFailure(Exception):
    def __init__(self, msg, result):
        Exception.__init__(self, msg)
        self.msg = msg
        self.result = result


def read_sql_file(path, what):
    """Text of an SQL file, or CompatError naming the option and the problem."""
    if not path:
        return None
    if not os.path.exists(path):
        raise CompatError("%s file %s does not exist" % (what, path))
    if os.path.isdir(path):
        raise CompatError("%s %s is a directory, expected an SQL file" % (what, path))
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise CompatError("%s file %s is larger than %d MiB" % (what, path, MAX_FILE_BYTES // (1024 * 1024)))
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise CompatError("cannot read %s file %s: %s" % (what, path, exc.strerror or exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CompatError("%s file %s is not UTF-8 text (byte %d)" % (what, path, exc.start))


def _source(params, path_key, sql_key, what):
    text = params.get(sql_key)
    path = params.get(path_key)
    if text is not None and path:
        raise CompatError("give either %s or %s, not both" % (path_key, sql_key))
    if text is None:
        text = read_sql_file(path, what)
    return text, path or "<%s>" % sql_key


def _parse(text, origin, what):
    try:
        return parse_sql(text)
    except CompatError as exc:
        raise CompatError("%s %s: %s" % (what, origin, exc))


def _without_meta_commands(text):
    """A pg_dump file without psql meta-commands (``\\restrict``, ``\\connect``, ...)."""
    return "\n".join("" if line.startswith("\\") else line for line in text.split("\n"))


_TABLE_FACTS_SQL = """
SELECT n.nspname || '.' || c.relname, c.reltuples::bigint, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname || '.' || c.relname = ANY (%s)
"""


def table_facts(conn, tables):
    """({'schema.table': estimated rows}, {'schema.table': {column: type}}) of existing tables."""
    rows, types = {}, {}
    for name, reltuples, column, type_name in fetch_all(conn, _TABLE_FACTS_SQL, (sorted(set(tables)),)):
        rows[name] = None if reltuples < 0 else int(reltuples)
        types.setdefault(name, {})[column] = type_name
    return rows, types


def pg_stat_statements_queries(conn, limit=500):
    """The old app's statements as the target recorded them (normalized, with $n parameters)."""
    if not fetch_value(conn, "SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'pg_stat_statements'"):
        raise CompatError(
            "old_queries_from=pg_stat_statements: the extension pg_stat_statements is not installed in this database "
            "(CREATE EXTENSION pg_stat_statements, with shared_preload_libraries = 'pg_stat_statements')"
        )
    schema = fetch_value(
        conn,
        "SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'",
    )
    rows = fetch_all(
        conn,
        sql.SQL(
            "SELECT query FROM {}.pg_stat_statements WHERE dbid = (SELECT oid FROM pg_catalog.pg_database "
            "WHERE datname = current_database()) AND query ~* '^\\s*(select|insert|update|delete|with)\\M' "
            "AND query !~* 'pg_catalog|pg_stat_statements|information_schema' ORDER BY calls DESC LIMIT %s"
        ).format(sql.Identifier(schema)),
        (limit,),
    )
    return [r[0] for r in rows]


def _statement_view(statement):
    return {
        "index": statement.index,
        "line": statement.line,
        "text": statement.text,
        "kind": statement.kind,
        "transactional": statement.transactional,
        "tables": list(statement.tables),
    }


def merge(static_findings, live):
    """Static and live findings as one list; a measurement overrides a guess.

    Returns (findings, overridden). A static table_rewrite or blocking_lock
    finding on a statement the live run measured without a rewrite, or
    without a blocking lock on that table, moves to ``overridden`` with the
    measurement; one the measurement confirms becomes ``static+live``.
    """
    if not live:
        return list(static_findings), []
    measured = dict((s["index"], s) for s in live.get("statements", []) if not s.get("error"))
    live_findings = list(live.get("findings", []))
    findings, overridden = [], []
    for finding in static_findings:
        stmt = measured.get(finding["statement_index"])
        if stmt is None or finding["category"] not in MEASURED_CATEGORIES:
            findings.append(finding)
            continue
        table = finding.get("table")
        if finding["category"] == "table_rewrite":
            confirmed = bool(stmt.get("rewritten")) if not table else table in stmt.get("rewritten", [])
            measurement = "rewritten: %s" % (", ".join(stmt.get("rewritten") or []) or "nothing")
        else:
            modes = [
                lock["mode"] for lock in stmt.get("locks", [])
                if lock.get("preexisting") and (not table or lock["relation"] == table) and lock["mode"] in BLOCKING_MODES
            ]
            confirmed = bool(modes)
            measurement = "locks held: %s" % (", ".join(sorted(set(modes))) or "none that block reads or writes")
        twin = _live_twin(live_findings, finding)
        if confirmed:
            merged = dict(finding, source="static+live", measured=measurement)
            if twin is not None:
                live_findings.remove(twin)
                if SEVERITY_RANK[twin["severity"]] > SEVERITY_RANK[merged["severity"]]:
                    merged["severity"] = twin["severity"]
            findings.append(merged)
        elif finding["rule"] == "missing-lock-timeout" or (finding["category"] == "blocking_lock" and _lock_wait_rule(finding)):
            findings.append(finding)
        else:
            overridden.append(dict(finding, measured=measurement, overridden_by="live"))
    findings.extend(_brief_locks_under_lock_timeout(live_findings, static_findings, measured))
    findings.sort(key=lambda f: (f["statement_index"] if f.get("statement_index") is not None else -1, -SEVERITY_RANK[f["severity"]], f["rule"]))
    return findings, overridden


def _brief_locks_under_lock_timeout(live_findings, static_findings, measured):
    """A brief (catalog-only) blocking lock is harmless when the file set lock_timeout before it.

    The live run cannot see the migration's own ``SET lock_timeout`` (it runs
    with its own, stricter limits); the static analysis tracks it and reports
    ``missing-lock-timeout`` where it is missing. Where it is not missing, a
    live blocking lock without a rewrite or a scan is downgraded to info.
    """
    unprotected = set(f["statement_index"] for f in static_findings if f["rule"] == "missing-lock-timeout")
    out = []
    for finding in live_findings:
        stmt = measured.get(finding.get("statement_index"))
        brief = stmt is not None and not stmt.get("rewritten") and not stmt.get("scanned")
        if finding["rule"] == "live-blocking-lock" and brief and finding["statement_index"] not in unprotected and finding["severity"] != "info":
            finding = dict(finding, severity="info", message=finding["message"] + " (the migration sets lock_timeout before it)")
        out.append(finding)
    return out


def _lock_wait_rule(finding):
    # A rule about waiting for a lock (not about holding it long) stays whatever was measured.
    return "lock-timeout" in finding["rule"]


def _live_twin(live_findings, finding):
    for candidate in live_findings:
        if (candidate.get("statement_index") == finding["statement_index"] and candidate["category"] == finding["category"]
                and (not finding.get("table") or candidate.get("table") in (None, finding.get("table")))):
            return candidate
    return None


def policy_failures(findings, fail_on):
    """Findings that the fail_on policy (severities and/or categories) turns into a failure."""
    fail_on = set(["error"] if fail_on is None else fail_on)
    severities = set(s for s in fail_on if s in SEVERITIES)
    categories = set(c for c in fail_on if c in CATEGORIES)
    unknown = fail_on - severities - categories
    if unknown:
        raise CompatError(
            "fail_on has unknown entries: %s (use severities %s and/or categories %s)"
            % (", ".join(sorted(unknown)), ", ".join(SEVERITIES), ", ".join(CATEGORIES))
        )
    out = []
    for finding in findings:
        if finding["severity"] == "info":
            continue
        if finding["severity"] in severities or finding["category"] in categories:
            out.append(finding)
    return out


def wants_live(params):
    mode = params.get("mode")
    if mode:
        return mode == "live"
    return bool(params.get("login_host") or params.get("login_unix_socket") or params.get("login_db"))


def run(params, check_mode=False, live_analyzer=None):
    """Analyze the migration described by the module's parameters; see the module docs."""
    started = time.monotonic()
    result = {"changed": False}
    try:
        migration_text, migration_origin = _source(params, "migration", "migration_sql", "migration")
        if migration_text is None:
            raise CompatError("give migration (a file) or migration_sql")
        statements = _parse(migration_text, migration_origin, "migration")
        if not statements:
            raise CompatError("migration %s holds no SQL statement" % migration_origin)
        rollback_text, rollback_origin = _source(params, "rollback", "rollback_sql", "rollback")
        rollback = _parse(rollback_text, rollback_origin, "rollback") if rollback_text is not None else None
        old_text, old_origin = _source(params, "old_queries", "old_queries_sql", "old_queries")
        old_queries = [s.text for s in _parse(old_text, old_origin, "old_queries")] if old_text is not None else None
        live = None
        server_version = params.get("server_version") or 150000
        table_rows = None
        column_types = None
        schema_text, schema_origin = _source(params, "schema", "schema_sql", "schema")
        if schema_text is not None:
            column_types = column_types_from_sql(_parse(_without_meta_commands(schema_text), schema_origin, "schema"))
        result["mode"] = "live" if wants_live(params) else "static"
        if result["mode"] == "live":
            live, server_version, table_rows, column_types, pss = _live(params, statements, rollback, old_queries, live_analyzer)
            if pss is not None:
                old_queries = pss
                result["old_queries_from_pg_stat_statements"] = len(pss)
        elif params.get("old_queries_from") == "pg_stat_statements":
            raise CompatError("old_queries_from=pg_stat_statements needs a connection (mode live)")
        static = analyze_static(
            statements,
            server_version=server_version,
            table_rows=table_rows,
            large_table_rows=params.get("large_table_rows") or 100000,
            old_queries=old_queries,
            ignore_rules=params.get("ignore_rules") or (),
            column_types=column_types,
        )
        ignored = set(params.get("ignore_rules") or ())
        if live:
            live = dict(live, findings=[f for f in live.get("findings", []) if f["rule"] not in ignored])
        findings, overridden = merge(static["findings"], live)
        result["server_version"] = server_version
        result["findings"] = findings
        result["overridden_findings"] = overridden
        result["statements"] = _statements(statements, static, live)
        result["incompatible_queries"] = (live or {}).get("incompatible_queries", [])
        if live and live.get("invalid_old_queries"):
            result["invalid_old_queries"] = live["invalid_old_queries"]
        result["reversible"] = (live or {}).get("reversible") if rollback is not None else None
        result["schema_diff"] = (live or {}).get("schema_diff")
        result["live_mode"] = (live or {}).get("mode")
        result["compatible"] = not any(
            f["severity"] == "error" and f["category"] in COMPATIBILITY_CATEGORIES for f in findings
        )
        result["summary"] = _summary(findings)
        result["seconds"] = round(time.monotonic() - started, 4)
        failing = policy_failures(findings, params.get("fail_on"))
    except (CompatError, PostgresError) as exc:
        raise CompatFailure(str(exc), result)
    if failing:
        shown = "; ".join(
            "line %s %s [%s/%s]: %s" % (f.get("line"), f["rule"], f["category"], f["severity"], f["message"]) for f in failing[:5]
        )
        more = " (and %d more)" % (len(failing) - 5) if len(failing) > 5 else ""
        raise CompatFailure("migration is not safe by the fail_on policy: %s%s" % (shown, more), result)
    return result


def _summary(findings):
    out = dict((c, 0) for c in CATEGORIES)
    for finding in findings:
        if finding["severity"] != "info":
            out[finding["category"]] += 1
    return out


def _statements(statements, static, live):
    measured = dict((s["index"], s) for s in (live or {}).get("statements", []))
    out = []
    for view in static.get("statements") or [_statement_view(s) for s in statements]:
        item = dict(view)
        stmt = measured.get(item["index"])
        if stmt is not None:
            for key in ("locks", "rewritten", "duration_ms", "error"):
                if key in stmt:
                    item[key] = stmt[key]
        out.append(item)
    return out


def _live(params, statements, rollback, old_queries, live_analyzer):
    conn_params = get_conn_params(dict((k, params.get(k)) for k in CONNECTION_KEYS))
    conn = connect(conn_params, application_name="stateful.rollback schema_compat_check")
    try:
        server_version = conn.server_version
        table_rows, column_types = table_facts(conn, [t for s in statements for t in s.tables])
        pss = None
        if params.get("old_queries_from") == "pg_stat_statements":
            if old_queries is not None:
                raise CompatError("give either old_queries or old_queries_from=pg_stat_statements, not both")
            pss = pg_stat_statements_queries(conn)
            old_queries = pss
    finally:
        conn.close()
    if live_analyzer is None:
        from ansible_collections.stateful.rollback.plugins.module_utils.compat_live import (  # pylint: disable=import-outside-toplevel
            LiveError,
            analyze_live,
        )
    else:
        analyze_live, LiveError = live_analyzer
    try:
        live = analyze_live(
            conn_params,
            [_statement_view(s) for s in statements],
            rollback_statements=[_statement_view(s) for s in rollback] if rollback is not None else None,
            old_queries=old_queries,
            large_table_rows=params.get("large_table_rows") or 100000,
            scratch=params.get("scratch") or "always",
            timeout=params.get("timeout") or 300,
        )
    except LiveError as exc:
        raise CompatError("live analysis on %s: %s" % (describe(conn_params), exc))
    table_rows.update(live.get("table_rows") or {})
    return live, live.get("server_version") or server_version, table_rows, column_types, pss
