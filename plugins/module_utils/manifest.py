# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release manifests (``release.yml``): read, validate, content-address.

A release manifest is the single source of truth of a release in both
directions: the images (pinned by digest), the ordered migrations with their
rollback scripts, feature flags, invariants and health checks.

``load_release(path)`` reads and validates one and returns a frozen
``Release``; every problem raises ``ManifestError`` whose ``errors`` list
holds one ``"<field path>: <message>"`` per problem, sorted by path, e.g.
``app.workloads[0].containers.web: image 'demo:2.0' is not pinned by digest``.

Validation is the JSON Schema of manifest_schema.py (published as
meta/release.schema.json) plus what a schema cannot say: unique migration
ids and workloads, and the SQL files a migration names (relative, inside the
manifest's directory after symlinks are resolved, regular, at most 10 MiB,
UTF-8, and SQL that PostgreSQL's parser accepts when pglast is installed).

The manifest digest is ``sha256:`` + SHA-256 of the canonical JSON (sorted
keys, no spaces) of the parsed manifest in which every file reference is
replaced by ``{"path": <as written>, "sha256": <hex of the file's bytes>}``:
editing a referenced SQL file changes the digest, moving the release
directory does not.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re
import stat
import traceback
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.stateful.rollback.plugins.module_utils.manifest_schema import SCHEMA

YAML_IMP_ERR = None
try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - exercised only without the library
    yaml = None
    HAS_YAML = False
    YAML_IMP_ERR = traceback.format_exc()

JSONSCHEMA_IMP_ERR = None
try:
    import jsonschema

    HAS_JSONSCHEMA = True
except ImportError:  # pragma: no cover - exercised only without the library
    jsonschema = None
    HAS_JSONSCHEMA = False
    JSONSCHEMA_IMP_ERR = traceback.format_exc()

MAX_FILE_BYTES = 10 * 1024 * 1024
SCRIPT_FIELDS = ("up", "down")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_JSON_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


class ManifestError(Exception):
    """A release manifest that cannot be used; ``errors`` lists every problem."""

    def __init__(self, message, errors=None):
        self.message = message
        self.errors = list(errors or [])
        super(ManifestError, self).__init__(self.__str__())

    def __str__(self):
        if not self.errors:
            return self.message
        return "%s: %s" % (self.message, "; ".join(self.errors))


@dataclass(frozen=True)
class Script:
    path: str  # absolute real path
    relpath: str  # as written in the manifest
    sql: str
    sha256: str  # hex of the file's bytes

    def summary(self):
        return {"path": self.relpath, "sha256": self.sha256}


@dataclass(frozen=True)
class Backfill:
    table: str
    key: str
    set: str
    where: Optional[str]
    batch_size: int
    max_rows_per_second: Optional[float]
    max_replica_lag_bytes: Optional[int]

    def summary(self):
        return {
            "table": self.table,
            "key": self.key,
            "set": self.set,
            "where": self.where,
            "batch_size": self.batch_size,
            "max_rows_per_second": self.max_rows_per_second,
            "max_replica_lag_bytes": self.max_replica_lag_bytes,
        }


@dataclass(frozen=True)
class Migration:
    id: str
    up: Script
    down: Optional[Script]
    irreversible: bool
    reason: Optional[str]
    verify: Optional[str]
    transactional: Optional[bool]
    backfill: Optional[Backfill]

    def summary(self):
        return {
            "id": self.id,
            "up": self.up.summary(),
            "down": self.down.summary() if self.down else None,
            "irreversible": self.irreversible,
            "reason": self.reason,
            "verify": self.verify,
            "transactional": self.transactional,
            "backfill": self.backfill.summary() if self.backfill else None,
        }


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    namespace: Optional[str]
    containers: Dict[str, str]  # container name -> image@sha256:<hex>

    def summary(self):
        return {"kind": self.kind, "name": self.name, "namespace": self.namespace, "containers": dict(self.containers)}


@dataclass(frozen=True)
class Release:
    version: str
    path: str
    base_dir: str
    digest: str  # "sha256:<hex>"
    workloads: Tuple[Workload, ...]
    pvcs: Tuple[str, ...]
    namespace: Optional[str]
    migrations: Tuple[Migration, ...]
    feature_flags: Dict[str, Any]
    invariants: List[dict]
    health_checks: List[dict]
    data: dict  # the parsed YAML as written

    def migration(self, migration_id):
        """The migration named ``migration_id``; ManifestError when the release has none by that name."""
        for item in self.migrations:
            if item.id == migration_id:
                return item
        known = ", ".join(m.id for m in self.migrations) or "none"
        raise ManifestError("release %s has no migration %r (its migrations: %s)" % (self.version, migration_id, known))

    def image_digests(self):
        """``{"<kind>/<name>/<container>": "sha256:<hex>"}`` of every container image."""
        out = {}
        for workload in self.workloads:
            for container, image in workload.containers.items():
                out["%s/%s/%s" % (workload.kind, workload.name, container)] = image.rsplit("@", 1)[1]
        return out

    def checksums(self):
        """``{"<migration id>/up": hex, "<migration id>/down": hex}`` of every script."""
        out = {}
        for item in self.migrations:
            out["%s/up" % item.id] = item.up.sha256
            if item.down is not None:
                out["%s/down" % item.id] = item.down.sha256
        return out

    def summary(self):
        """A JSON-able description of the release (for module results and logs)."""
        return {
            "version": self.version,
            "digest": self.digest,
            "path": self.path,
            "base_dir": self.base_dir,
            "namespace": self.namespace,
            "workloads": [w.summary() for w in self.workloads],
            "pvcs": list(self.pvcs),
            "images": self.image_digests(),
            "migrations": [m.summary() for m in self.migrations],
            "feature_flags": dict(self.feature_flags),
            "invariants": list(self.invariants),
            "health_checks": list(self.health_checks),
        }


# --- YAML ------------------------------------------------------------------------

if HAS_YAML:

    class _StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate mapping keys and keys that are not strings."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = {}
                for key_node, dummy in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    mark = key_node.start_mark
                    if not isinstance(key, str):
                        raise yaml.constructor.ConstructorError(
                            None, None, "mapping key %s is not a string (quote it; YAML reads yes/no/on/off as booleans)" % json.dumps(key, default=str), mark)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, "duplicate key %r (first at line %d)" % (key, seen[key] + 1), mark)
                    seen[key] = mark.line
            return super(_StrictLoader, self).construct_mapping(node, deep=deep)


def _require_libraries():
    if not HAS_YAML:
        raise ManifestError("missing PyYAML library (pip install PyYAML) to read release manifests")
    if not HAS_JSONSCHEMA:
        raise ManifestError("missing jsonschema library (pip install jsonschema) to validate release manifests")


def parse_yaml(text, name="<memory>"):
    """Parse manifest text; YAML errors name the line and column."""
    _require_libraries()
    try:
        return yaml.load(text, Loader=_StrictLoader)  # nosec B506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise ManifestError("%s: invalid YAML%s: %s" % (name, where, problem))
    except yaml.YAMLError as exc:
        raise ManifestError("%s: invalid YAML: %s" % (name, exc))


# --- error paths -------------------------------------------------------------------


def render_path(parts):
    """('app', 'workloads', 0, 'containers', 'web') -> 'app.workloads[0].containers.web'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += "[%d]" % part
        elif _PLAIN_KEY.match(part):
            out += ("." if out else "") + part
        else:
            out += '[%s]' % json.dumps(part)
    return out or "<top level>"


def _sort_key(item):
    parts, message = item
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in parts), message


def _type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a %s" % type(value).__name__


def _show(value):
    text = json.dumps(value, default=str, sort_keys=True) if not isinstance(value, str) else "'%s'" % value
    return text if len(text) <= 80 else text[:77] + "..."


def _image_message(value):
    expected = "(expected <repo>[:<tag>]@sha256:<64 hex>)"
    if isinstance(value, str) and "@sha256:" not in value:
        return "image %s is not pinned by digest %s" % (_show(value), expected)
    return "image %s is not a valid image reference pinned by digest %s" % (_show(value), expected)


def _schema_errors(data):
    """(path parts, message) for every JSON Schema violation of ``data``."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    out = []
    for error in validator.iter_errors(data):
        out.extend(_explain(error))
    return out


def _explain(error):
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    kind = error.validator
    custom = schema.get("x-error")
    if custom and ("x-field" in schema or kind not in ("required", "additionalProperties", "type")):
        if "x-field" in schema:
            path.append(schema["x-field"])
        if custom == "image":
            return [(path, _image_message(value))]
        return [(path, custom.replace("{value}", _show(value).strip("'")))]
    if kind == "required":
        return [(path + [name], "required field is missing") for name in error.validator_value if name not in value]
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extras = [key for key in value if key not in schema.get("properties", {})]
        hint = " (allowed: %s)" % ", ".join(allowed) if allowed else ""
        return [(path + [key], "unknown field%s" % hint) for key in extras]
    if kind == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        wanted = " or ".join(_JSON_TYPES.get(t, t) for t in expected)
        hint = "; quote it" if expected == ["string"] and isinstance(value, (int, float, bool)) else ""
        shown = "" if value is None else " (%s)" % _show(value)
        return [(path, "expected %s, got %s%s%s" % (wanted, _type_name(value), shown, hint))]
    if kind == "enum":
        return [(path, "must be one of %s, got %s" % (", ".join(str(v) for v in error.validator_value), _show(value)))]
    if kind == "minimum":
        return [(path, "must be at least %s, got %s" % (error.validator_value, _show(value)))]
    if kind == "maximum":
        return [(path, "must be at most %s, got %s" % (error.validator_value, _show(value)))]
    if kind == "exclusiveMinimum":
        return [(path, "must be greater than %s, got %s" % (error.validator_value, _show(value)))]
    if kind == "minLength":
        return [(path, "must not be empty")]
    if kind == "maxLength":
        return [(path, "is longer than %s characters" % error.validator_value)]
    if kind == "minItems":
        return [(path, "must hold at least %s item(s)" % error.validator_value)]
    if kind == "minProperties":
        return [(path, "must hold at least %s entry" % error.validator_value)]
    if kind == "uniqueItems":
        return [(path, "holds duplicate items")]
    if kind == "pattern":
        return [(path, "%s does not match %s" % (_show(value), error.validator_value))]
    return [(path, error.message)]


# --- files -------------------------------------------------------------------------


def _limit():
    mib = 1024 * 1024
    return "%d bytes%s" % (MAX_FILE_BYTES, " (%d MiB)" % (MAX_FILE_BYTES // mib) if MAX_FILE_BYTES % mib == 0 else "")


def _read_script(path_parts, relpath, base_real, problems):
    """Script for ``relpath`` (relative to ``base_real``), or None with the problem appended."""
    def refuse(message):
        problems.append((path_parts, message))

    if "\x00" in relpath:
        return refuse("%s holds a NUL byte" % _show(relpath))
    if os.path.isabs(relpath) or relpath.startswith("~"):
        return refuse("%s is an absolute path; scripts are named relative to the manifest's directory %s" % (_show(relpath), base_real))
    candidate = os.path.join(base_real, relpath)
    real = os.path.realpath(candidate)
    if os.path.commonpath([real, base_real]) != base_real:
        return refuse("%s resolves to %s, outside the manifest's directory %s" % (_show(relpath), real, base_real))
    try:
        info = os.stat(real)
    except FileNotFoundError:
        return refuse("%s does not exist (looked for %s)" % (_show(relpath), real))
    except OSError as exc:
        return refuse("%s cannot be read: %s" % (_show(relpath), exc.strerror or exc))
    if not stat.S_ISREG(info.st_mode):
        return refuse("%s is not a regular file (%s)" % (_show(relpath), real))
    if info.st_size > MAX_FILE_BYTES:
        return refuse("%s is %d bytes, over the limit of %s" % (_show(relpath), info.st_size, _limit()))
    try:
        with open(real, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return refuse("%s cannot be read: %s" % (_show(relpath), exc.strerror or exc))
    if len(raw) > MAX_FILE_BYTES:
        return refuse("%s is over the limit of %s" % (_show(relpath), _limit()))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return refuse("%s is not UTF-8 text (byte 0x%02x at offset %d)" % (_show(relpath), raw[exc.start], exc.start))
    if not text.strip():
        return refuse("%s is empty" % _show(relpath))
    problem = _syntax_problem(text)
    if problem:
        return refuse("%s is not valid SQL: %s" % (_show(relpath), problem))
    return Script(path=real, relpath=relpath, sql=text, sha256=hashlib.sha256(raw).hexdigest())


def _syntax_problem(text):
    """The parser's complaint about ``text`` ("syntax error at line N: ..."), or None (also without pglast)."""
    from ansible_collections.stateful.rollback.plugins.module_utils import compat_static

    if not compat_static.HAS_PGLAST:
        return None
    try:
        statements = compat_static.parse_sql(text)
    except compat_static.CompatError as exc:
        return str(exc)
    if not statements:
        return "it contains no SQL statement (only comments or semicolons)"
    return None


# --- semantic checks -------------------------------------------------------------------


def _duplicates(data, problems):
    migrations = data.get("migrations") if isinstance(data.get("migrations"), list) else []
    first = {}
    for index, item in enumerate(migrations):
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str):
            if ident in first:
                problems.append((["migrations", index, "id"], "duplicate migration id '%s' (also migrations[%d].id)" % (ident, first[ident])))
            else:
                first[ident] = index
    app = data.get("app") if isinstance(data.get("app"), dict) else {}
    workloads = app.get("workloads") if isinstance(app.get("workloads"), list) else []
    seen = {}
    for index, item in enumerate(workloads):
        if isinstance(item, dict) and isinstance(item.get("kind"), str) and isinstance(item.get("name"), str):
            key = (item["kind"], item["name"])
            if key in seen:
                problems.append((["app", "workloads", index, "name"],
                                 "duplicate workload %s/%s (also app.workloads[%d])" % (key[0], key[1], seen[key])))
            else:
                seen[key] = index
    checks = data.get("health_checks") if isinstance(data.get("health_checks"), list) else []
    names = {}
    for index, item in enumerate(checks):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in names:
                problems.append((["health_checks", index, "name"], "duplicate health check '%s' (also health_checks[%d])" % (name, names[name])))
            else:
                names[name] = index


def _scripts(data, base_real, problems):
    """{(migration index, field): Script} for every readable file reference."""
    out = {}
    migrations = data.get("migrations") if isinstance(data.get("migrations"), list) else []
    for index, item in enumerate(migrations):
        if not isinstance(item, dict):
            continue
        for field in SCRIPT_FIELDS:
            relpath = item.get(field)
            if isinstance(relpath, str) and relpath:
                script = _read_script(["migrations", index, field], relpath, base_real, problems)
                if script is not None:
                    out[(index, field)] = script
    return out


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def manifest_digest(data, scripts):
    """'sha256:<hex>' of the manifest with every file reference replaced by its path and hash."""
    addressed = dict(data)
    if isinstance(data.get("migrations"), list):
        addressed["migrations"] = []
        for index, item in enumerate(data["migrations"]):
            item = dict(item)
            for field in SCRIPT_FIELDS:
                if (index, field) in scripts:
                    item[field] = scripts[(index, field)].summary()
            addressed["migrations"].append(item)
    return "sha256:" + hashlib.sha256(canonical_json(addressed).encode("utf-8")).hexdigest()


# --- entry points ------------------------------------------------------------------------


def parse_release(data, base_dir, path="<memory>"):
    """Validate parsed manifest data whose file references are relative to ``base_dir``."""
    _require_libraries()
    name = path
    if data is None:
        raise ManifestError("%s is empty: a release manifest is a mapping with at least version and app" % name)
    if not isinstance(data, dict):
        raise ManifestError("%s: the top level must be a mapping (version, app, migrations, ...), got %s" % (name, _type_name(data)))
    base_real = os.path.realpath(base_dir)
    problems = _schema_errors(data)
    _duplicates(data, problems)
    scripts = _scripts(data, base_real, problems)
    if problems:
        unique = sorted(set((tuple(p), m) for p, m in problems), key=_sort_key)
        errors = ["%s: %s" % (render_path(p), m) for p, m in unique]
        raise ManifestError("%s is not a valid release manifest (%d error%s)" % (name, len(errors), "" if len(errors) == 1 else "s"), errors)
    return _build(data, base_real, path, scripts)


def _build(data, base_real, path, scripts):
    app = data["app"]
    namespace = app.get("namespace")
    workloads = tuple(
        Workload(kind=w["kind"], name=w["name"], namespace=w.get("namespace", namespace), containers=dict(w["containers"]))
        for w in app["workloads"]
    )
    migrations = []
    for index, item in enumerate(data.get("migrations") or []):
        backfill = None
        if item.get("backfill") is not None:
            spec = item["backfill"]
            rate = spec.get("max_rows_per_second")
            lag = spec.get("max_replica_lag_bytes")
            backfill = Backfill(
                table=spec["table"],
                key=spec["key"],
                set=spec["set"],
                where=spec.get("where"),
                batch_size=int(spec.get("batch_size", 5000)),
                max_rows_per_second=float(rate) if rate is not None else None,
                max_replica_lag_bytes=int(lag) if lag is not None else None,
            )
        migrations.append(Migration(
            id=item["id"],
            up=scripts[(index, "up")],
            down=scripts.get((index, "down")),
            irreversible=bool(item.get("irreversible", False)),
            reason=item.get("reason"),
            verify=item.get("verify"),
            transactional=item.get("transactional"),
            backfill=backfill,
        ))
    return Release(
        version=data["version"],
        path=path,
        base_dir=base_real,
        digest=manifest_digest(data, scripts),
        workloads=workloads,
        pvcs=tuple(app.get("pvcs") or ()),
        namespace=namespace,
        migrations=tuple(migrations),
        feature_flags=dict(data.get("feature_flags") or {}),
        invariants=list(data.get("invariants") or []),
        health_checks=[_health_check(c) for c in data.get("health_checks") or []],
        data=data,
    )


def _health_check(check):
    check = dict(check)
    if isinstance(check.get("http"), dict):
        check["http"] = dict({"status": 200}, **check["http"])
    return check


def load_release(path):
    """Read, parse, validate and hash the release manifest at ``path``; raises ManifestError."""
    _require_libraries()
    if not isinstance(path, str) or not path:
        raise ManifestError("release manifest path must be a non-empty string, got %r" % (path,))
    if "\x00" in path:
        raise ManifestError("release manifest path %r holds a NUL byte" % (path[:80],))
    full = os.path.abspath(os.path.expanduser(path))
    try:
        info = os.stat(full)
    except FileNotFoundError:
        raise ManifestError("release manifest %s does not exist" % full)
    except OSError as exc:
        raise ManifestError("release manifest %s cannot be read: %s" % (full, exc.strerror or exc))
    if not stat.S_ISREG(info.st_mode):
        raise ManifestError("release manifest %s is not a regular file" % full)
    if info.st_size > MAX_FILE_BYTES:
        raise ManifestError("release manifest %s is %d bytes, over the limit of %s" % (full, info.st_size, _limit()))
    try:
        with open(full, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ManifestError("release manifest %s cannot be read: %s" % (full, exc.strerror or exc))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("release manifest %s is not UTF-8 text (byte 0x%02x at offset %d)" % (full, raw[exc.start], exc.start))
    data = parse_yaml(text, full)
    return parse_release(data, os.path.dirname(full), full)
