# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replication_parity module's flow, importable without Ansible.

``run(params)`` takes the module's validated parameters and returns the
result dict; an operator-facing failure raises ParityFailure(msg, result).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.stateful.rollback.plugins.module_utils import (
    fingerprint,
    invariants,
    parity,
    replication,
)
from ansible_collections.stateful.rollback.plugins.module_utils.catalog import resolve_tables
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    CONNECTION_KEYS,
    psycopg2,
    PostgresError,
    connect,
    describe,
    get_conn_params,
    int_to_lsn,
)

MODES = ("health", "parity", "baseline_capture", "baseline_compare")


class ParityFailure(Exception):
    def __init__(self, msg, result):
        Exception.__init__(self, msg)
        self.msg = msg
        self.result = result


def _primary_options(params):
    return dict((k, params.get(k)) for k in CONNECTION_KEYS)


def _replica_name(entry, params, index):
    if entry.get("name"):
        return entry["name"]
    return "%s:%s" % (entry.get("login_host") or entry.get("login_unix_socket") or "local", entry.get("login_port") or params.get("login_port"))


class Session(object):
    """Connections opened for one run, closed at the end whatever happens."""

    def __init__(self):
        self.conns = []

    def open(self, conn_params, name):
        try:
            conn = connect(conn_params, application_name="stateful.rollback replication_parity")
        except PostgresError as exc:
            raise PostgresError("%s: %s" % (name, exc))
        self.conns.append(conn)
        return conn

    def close(self):
        for conn in self.conns:
            try:
                conn.close()
            except Exception:  # pylint: disable=broad-except
                pass


def _replicas(session, params, primary_options):
    nodes = []
    names = set()
    for index, entry in enumerate(params.get("replicas") or []):
        entry = dict((k, v) for k, v in (entry or {}).items() if v is not None)
        name = _replica_name(entry, params, index)
        if name in names:
            raise PostgresError("two replicas are named %r: give each a distinct name" % name)
        names.add(name)
        conn_params = get_conn_params(dict((k, v) for k, v in entry.items() if k in CONNECTION_KEYS), primary_options)
        conn = session.open(conn_params, "replica %s" % name)
        kind = replication.detect_kind(conn, entry.get("subscription"))
        nodes.append((parity.Node(name, conn, kind, entry.get("subscription")), conn_params))
    return nodes


def _health(primary, replicas, params):
    failures = []
    report = []
    for node, conn_params in replicas:
        if node.kind == replication.PHYSICAL:
            item = replication.physical_health(primary.conn, node.conn, node.name)
        elif node.kind == replication.LOGICAL:
            item = replication.logical_health(primary.conn, node.conn, node.name, node.subscription)
        else:
            item = {"name": node.name, "kind": replication.STANDALONE, "state": "not replicating", "streaming": False,
                    "lag_bytes": None, "lag_seconds": None}
        item["connection"] = describe(conn_params)
        reasons = []
        if not item["streaming"]:
            reasons.append("not streaming (%s)" % item["state"])
        if params.get("max_lag_bytes") is not None and item.get("lag_bytes") is not None and item["lag_bytes"] > params["max_lag_bytes"]:
            reasons.append("replay lag %d bytes exceeds max_lag_bytes=%d" % (item["lag_bytes"], params["max_lag_bytes"]))
        if params.get("max_lag_seconds") is not None and item.get("lag_seconds") is not None and item["lag_seconds"] > params["max_lag_seconds"]:
            reasons.append("replay lag %.1f s exceeds max_lag_seconds=%s" % (item["lag_seconds"], params["max_lag_seconds"]))
        item["healthy"] = not reasons
        item["problems"] = reasons
        if reasons:
            failures.append("replica %s: %s" % (node.name, "; ".join(reasons)))
        report.append(item)
    slots = replication.slots(primary.conn)
    limit = params.get("max_slot_retained_bytes")
    for slot in slots:
        problems = []
        if limit is not None and slot["retained_bytes"] is not None and slot["retained_bytes"] > limit:
            problems.append("retains %d bytes of WAL, above max_slot_retained_bytes=%d" % (slot["retained_bytes"], limit))
        if slot["wal_status"] == "lost":
            problems.append("has lost required WAL")
        slot["problems"] = problems
        if problems:
            failures.append("replication slot %s %s" % (slot["name"], "; ".join(problems)))
    return report, slots, failures


def _parity(primary, replicas, tables, params, progress):
    settings = parity.Settings(**dict((k, params.get(k)) for k in list(parity.DEFAULTS) + ["on_missing_key"]))
    nodes = [entry[0] for entry in replicas]
    budgets = dict((node.name, {"left": settings.max_differences}) for node in nodes)
    per_replica = dict((node.name, []) for node in nodes)
    rows = 0
    with ThreadPoolExecutor(max_workers=len(nodes) + 1) as pool:
        for index, table in enumerate(tables):
            outcome = parity.compare_table(primary, nodes, table, settings, budgets, pool, progress)
            for name, item in outcome.items():
                per_replica[name].append(item)
            rows += max([o.get("rows_primary") or 0 for o in outcome.values()] or [0])
            if progress:
                progress({"event": "progress", "tables_done": index + 1, "tables": len(tables), "rows": rows})
    report, failures = [], []
    for node, conn_params in replicas:
        items = per_replica[node.name]
        unconfirmed = [i for i in items if i.get("status") == "not_confirmed"]
        differing = [i for i in items if i.get("in_sync") is False]
        entry = {
            "name": node.name,
            "kind": node.kind,
            "connection": describe(conn_params),
            "in_sync": None if unconfirmed else not differing,
            "tables": items,
            "difference_count": sum(i.get("difference_count", 0) for i in items),
            "tables_differing": [i["table"] for i in differing],
        }
        if unconfirmed:
            failures.append(unconfirmed[0]["error"])
        report.append(entry)
    return report, rows, failures


def _write_baseline(path, baseline, check_mode):
    """Write atomically; unchanged content (captured_at aside) is not rewritten."""
    stable = dict(baseline)
    stable.pop("captured_at", None)
    if os.path.exists(path):
        try:
            with open(path) as handle:
                old = json.load(handle)
            old.pop("captured_at", None)
            if old == json.loads(json.dumps(stable)):
                return False
        except (ValueError, OSError):
            pass
    if check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PostgresError("baseline_path %s: directory %s does not exist" % (path, directory))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".baseline-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(baseline, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise PostgresError("cannot write baseline_path %s: %s" % (path, exc))
    return True


def _load_baseline(params):
    if params.get("baseline") is not None:
        return fingerprint.validate(params["baseline"])
    path = params.get("baseline_path")
    if not path:
        raise PostgresError("mode baseline_compare needs baseline_path or baseline")
    try:
        with open(path) as handle:
            return fingerprint.validate(json.load(handle))
    except OSError as exc:
        raise PostgresError("cannot read baseline_path %s: %s" % (path, exc.strerror or exc))
    except ValueError as exc:
        raise PostgresError("baseline_path %s is not valid JSON: %s" % (path, exc))


def run(params, check_mode=False, progress=None):
    started = time.monotonic()
    mode = params.get("mode") or "parity"
    if mode not in MODES:
        raise PostgresError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
    primary_options = _primary_options(params)
    primary_params = get_conn_params(primary_options)
    result = {"changed": False, "mode": mode, "primary": {"connection": describe(primary_params)}}
    failures = []
    session = Session()
    try:
        pconn = session.open(primary_params, "primary")
        primary = parity.Node("primary", pconn, replication.STANDALONE)
        result["primary"]["server_version"] = pconn.server_version
        result["primary"]["in_recovery"] = replication.is_in_recovery(pconn)
        if not result["primary"]["in_recovery"]:
            result["primary"]["lsn"] = int_to_lsn(replication.primary_lsn(pconn))
        needs_tables = mode in ("parity", "baseline_capture") or params.get("invariants")
        tables = []
        if needs_tables:
            tables = resolve_tables(
                pconn,
                params.get("tables"),
                params.get("exclude_tables"),
                params.get("exclude_schemas"),
                params.get("key_columns"),
            )
            result["tables"] = [t.display for t in tables]
        rows = 0
        if mode in ("health", "parity"):
            if result["primary"]["in_recovery"]:
                raise PostgresError("%s is in recovery: point login_host/port at the primary" % describe(primary_params))
            if not params.get("replicas"):
                raise PostgresError("mode %s needs at least one entry in replicas" % mode)
            replicas = _replicas(session, params, primary_options)
            if mode == "health":
                result["replicas"], result["slots"], failures = _health(primary, replicas, params)
                result["healthy"] = not failures
            else:
                result["replicas"], rows, failures = _parity(primary, replicas, tables, params, progress)
                states = [r["in_sync"] for r in result["replicas"]]
                result["in_sync"] = None if None in states else all(states)
                result["difference_count"] = sum(r["difference_count"] for r in result["replicas"])
                if result["in_sync"] is False and params.get("fail_on_difference", True):
                    failures.append(_difference_message(result["replicas"]))
        elif mode == "baseline_capture":
            settings = parity.Settings(chunk_size=params.get("chunk_size"))
            baseline = fingerprint.capture(pconn, tables, settings, params.get("baseline_row_limit") or 100000, params.get("exclude_schemas") or (), progress)
            rows = sum(t["rows"] for t in baseline["tables"])
            result["fingerprint"] = {
                "schema_sha256": baseline["schema"]["sha256"],
                "tables": dict((t["table"], t["rows"]) for t in baseline["tables"]),
            }
            if params.get("baseline_path"):
                result["changed"] = _write_baseline(params["baseline_path"], baseline, check_mode)
                result["baseline_path"] = params["baseline_path"]
            if params.get("return_baseline", not params.get("baseline_path")):
                result["baseline"] = baseline
        elif mode == "baseline_compare":
            baseline = _load_baseline(params)
            comparison = fingerprint.compare(
                pconn, baseline, [t.display for t in tables] if params.get("tables") else None,
                params.get("max_differences") or 100, params.get("exclude_schemas") or (), progress,
            )
            result["comparison"] = comparison
            result["in_sync"] = comparison["same"]
            rows = sum(t.get("rows_now") or 0 for t in comparison["tables"])
            if not comparison["same"] and params.get("fail_on_difference", True):
                failures.append(_baseline_message(comparison))
        if params.get("invariants"):
            report, violations = invariants.run(pconn, params["invariants"], tables, params.get("exclude_schemas") or ())
            result["invariants"] = report
            failures.extend("invariant violated: %s" % v for v in violations)
        elapsed = time.monotonic() - started
        result["rows_compared"] = rows
        result["timings"] = {"total_seconds": round(elapsed, 3)}
        result["rows_per_second"] = int(rows / elapsed) if elapsed > 0 else None
    except PostgresError as exc:
        raise ParityFailure(str(exc), result)
    except psycopg2.Error as exc:
        raise ParityFailure("database error: %s" % str(exc).strip(), result)
    finally:
        session.close()
    if failures:
        raise ParityFailure("; ".join(failures), result)
    return result


def _difference_message(replicas):
    parts = []
    for rep in replicas:
        for item in rep["tables"]:
            if item.get("in_sync") is False:
                diffs = item.get("differences") or {}
                shown = []
                for kind in ("missing_on_replica", "extra_on_replica", "different"):
                    keys = diffs.get(kind) or []
                    if keys:
                        shown.append("%d %s (first: %s)" % (len(keys), kind.replace("_", " "), json.dumps(keys[0], sort_keys=True)))
                if item.get("status") == "missing_on_replica":
                    shown.append("table missing on replica")
                if item.get("columns_not_compared"):
                    shown.append("columns differ: %s" % ", ".join(item["columns_not_compared"]))
                parts.append("%s on %s: %s" % (item["table"], rep["name"], ", ".join(shown) or "content differs"))
    return "replicas differ from the primary: " + "; ".join(parts)


def _baseline_message(comparison):
    parts = []
    schema = comparison["schema"]
    if not schema["same"]:
        parts.append(
            "schema differs (%d added, %d removed, %d changed objects)"
            % (len(schema["added"]), len(schema["removed"]), len(schema["changed"]))
        )
    for item in comparison["tables"]:
        if not item["same"]:
            diffs = item.get("differences") or {}
            counts = ", ".join("%d %s" % (len(v), k) for k, v in sorted(diffs.items()) if v)
            parts.append(
                "%s: %s (rows %s -> %s)%s"
                % (item["table"], item["status"], item["rows_baseline"], item.get("rows_now"), " " + counts if counts else "")
            )
    return "database differs from the baseline: " + "; ".join(parts)
