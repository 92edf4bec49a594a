# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Static migration compatibility rules, without a database.

Can this migration run while the previous application version keeps serving,
and can it be undone without losing data? ``parse_sql()`` splits a migration
file into statements with pglast (libpg_query: PostgreSQL's own parser, so
no regular expression ever looks at SQL), and ``analyze_static()`` walks
their syntax trees and reports findings in five categories (CATEGORIES):

``breaks_old_app``     the old version's queries fail or misbehave (drop or
                       rename of what it uses, NOT NULL it does not fill,
                       narrowed or converted types, new constraints).
``blocking_lock``      a lock that blocks the old version's reads or writes
                       for longer than a catalog update (index builds,
                       validation scans, rewrites), or an ACCESS EXCLUSIVE
                       lock requested without ``lock_timeout``.
``table_rewrite``      the statement copies the whole table (and holds
                       ACCESS EXCLUSIVE meanwhile); what PostgreSQL 11 and
                       later do without a rewrite is not reported.
``data_loss``          what a rollback cannot bring back.
``non_transactional``  what cannot run in a transaction block, so a failure
                       is not rolled back atomically.

Severities scale with what is known: a table created earlier in the same
file is invisible to the old version (no finding on it); ``table_rows``
(the target's statistics) below ``large_table_rows`` turns a lock or
rewrite error into a warning; ``old_queries`` (the running version's
statements) turns a drop or rename of something they never reference into
a warning. ``column_types`` (current column types, from the live catalog's
format_type() or from a schema file through column_types_from_sql()) lets a
type change be classified exactly; without it, a change whose current type
is unknown is reported with the uncertainty stated.

The analysis follows the file in order: tables, columns, indexes, types and
functions it creates are new (the old version cannot use them), renames and
SET search_path are tracked, a CHECK (col IS NOT NULL) validated earlier
lets SET NOT NULL skip its scan, and SET lock_timeout (or set_config) is
remembered until RESET.

Every rule is listed in RULES (rule id -> category, default severity,
description); ids are stable and can be passed in ``ignore_rules``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import traceback

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import PostgresError

PGLAST_IMP_ERR = None
try:
    import pglast
    import pglast.parser
    from pglast import ast as pg_ast

    HAS_PGLAST = True
except ImportError:  # pragma: no cover - exercised only without the library
    pglast = None
    pg_ast = None
    HAS_PGLAST = False
    PGLAST_IMP_ERR = traceback.format_exc()

CATEGORIES = ("breaks_old_app", "blocking_lock", "table_rewrite", "data_loss", "non_transactional")
SEVERITIES = ("error", "warning", "info")

RULES = {
    # breaks_old_app
    "drop-table": ("breaks_old_app", "error", "DROP TABLE of a table the old version may still query"),
    "drop-view": ("breaks_old_app", "error", "DROP VIEW / DROP MATERIALIZED VIEW the old version may still query"),
    "drop-column": ("breaks_old_app", "error", "DROP COLUMN the old version may still read or write"),
    "rename-table": ("breaks_old_app", "error", "ALTER TABLE ... RENAME TO: the old version still uses the old name"),
    "rename-view": ("breaks_old_app", "error", "ALTER VIEW ... RENAME TO: the old version still uses the old name"),
    "rename-column": ("breaks_old_app", "error", "RENAME COLUMN: the old version still uses the old name"),
    "rename-schema": ("breaks_old_app", "error", "ALTER SCHEMA ... RENAME TO: qualified names of the old version break"),
    "set-schema": ("breaks_old_app", "error", "ALTER ... SET SCHEMA moves an object away from the name the old version uses"),
    "drop-function": ("breaks_old_app", "error", "DROP FUNCTION / PROCEDURE the old version may call"),
    "rename-function": ("breaks_old_app", "error", "ALTER FUNCTION ... RENAME TO: the old version calls the old name"),
    "rename-enum-value": ("breaks_old_app", "error", "ALTER TYPE ... RENAME VALUE: the old version reads and writes the old label"),
    "drop-type": ("breaks_old_app", "error", "DROP TYPE / DROP DOMAIN the old version may cast to"),
    "rename-type": ("breaks_old_app", "warning", "ALTER TYPE ... RENAME TO: casts to the old name in the old version break"),
    "drop-sequence": ("breaks_old_app", "error", "DROP SEQUENCE the old version may call nextval() on"),
    "drop-schema": ("breaks_old_app", "error", "DROP SCHEMA"),
    "drop-cascade": ("breaks_old_app", "warning", "DROP ... CASCADE also drops dependent views, foreign keys and columns"),
    "add-column-not-null-no-default": (
        "breaks_old_app", "error", "ADD COLUMN ... NOT NULL without a default: the old version's INSERTs fail"),
    "set-not-null": ("breaks_old_app", "error", "SET NOT NULL on an existing column: the old version may still write NULL"),
    "drop-column-default": ("breaks_old_app", "warning", "DROP DEFAULT: the old version's INSERTs that omit the column change meaning"),
    "narrow-column-type": ("breaks_old_app", "error", "type narrowed (shorter varchar, smaller numeric or integer): old writes can fail"),
    "incompatible-column-type": ("breaks_old_app", "error", "type changed to one that is not a known safe widening"),
    "add-constraint-old-writes": (
        "breaks_old_app", "info",
        "new CHECK / UNIQUE / FOREIGN KEY / NOT NULL constraint can reject the old version's writes (warning or error when "
        "the old version's INSERTs leave a column it requires NULL)"),
    # blocking_lock
    "create-index-non-concurrent": (
        "blocking_lock", "error", "CREATE INDEX without CONCURRENTLY holds a SHARE lock (no writes) for the whole build"),
    "add-constraint-validates": (
        "blocking_lock", "error", "ADD CONSTRAINT CHECK / FOREIGN KEY without NOT VALID scans the table under lock"),
    "add-unique-builds-index": (
        "blocking_lock", "error", "ADD UNIQUE / PRIMARY KEY / EXCLUDE without USING INDEX builds an index under ACCESS EXCLUSIVE"),
    "set-not-null-scan": ("blocking_lock", "error", "SET NOT NULL scans the table under ACCESS EXCLUSIVE"),
    "alter-column-type-lock": ("blocking_lock", "error", "ALTER COLUMN TYPE holds ACCESS EXCLUSIVE for the whole rewrite"),
    "reindex-non-concurrent": ("blocking_lock", "error", "REINDEX without CONCURRENTLY blocks writes (and reads using the index)"),
    "refresh-matview-non-concurrent": (
        "blocking_lock", "error", "REFRESH MATERIALIZED VIEW without CONCURRENTLY blocks reads of the view"),
    "drop-index-non-concurrent": ("blocking_lock", "warning", "DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the table"),
    "lock-table": ("blocking_lock", "error", "LOCK TABLE in a mode that blocks the old version's writes"),
    "vacuum-full-lock": ("blocking_lock", "error", "VACUUM FULL holds ACCESS EXCLUSIVE while it rewrites the table"),
    "cluster-lock": ("blocking_lock", "error", "CLUSTER holds ACCESS EXCLUSIVE while it rewrites the table"),
    "backfill-unbatched": (
        "blocking_lock", "error",
        "UPDATE of every row of an existing table in one statement: row locks on all rows until it commits, and one huge transaction"),
    "missing-lock-timeout": (
        "blocking_lock", "warning", "ACCESS EXCLUSIVE requested without SET lock_timeout: queued behind long transactions, it blocks everyone"),
    # table_rewrite
    "alter-column-type-rewrite": ("table_rewrite", "error", "ALTER COLUMN TYPE that is not binary coercible rewrites the table"),
    "add-column-volatile-default": (
        "table_rewrite", "error", "ADD COLUMN with a volatile default (random(), nextval(), serial, identity) rewrites the table"),
    "add-column-default-pre11": ("table_rewrite", "error", "ADD COLUMN with a default rewrites the table before PostgreSQL 11"),
    "add-column-generated-stored": ("table_rewrite", "error", "ADD COLUMN ... GENERATED ALWAYS AS (...) STORED rewrites the table"),
    "set-generated-expression": ("table_rewrite", "error", "ALTER COLUMN ... SET EXPRESSION rewrites the table"),
    "cluster-rewrite": ("table_rewrite", "error", "CLUSTER rewrites the table"),
    "vacuum-full-rewrite": ("table_rewrite", "error", "VACUUM FULL rewrites the table"),
    "set-tablespace": ("table_rewrite", "error", "ALTER TABLE / INDEX ... SET TABLESPACE copies every block"),
    "set-logged": ("table_rewrite", "error", "ALTER TABLE ... SET LOGGED / UNLOGGED rewrites the table"),
    "set-access-method": ("table_rewrite", "error", "ALTER TABLE ... SET ACCESS METHOD rewrites the table"),
    # data_loss
    "drop-table-data": ("data_loss", "error", "DROP TABLE deletes its rows; a rollback recreates an empty table"),
    "drop-column-data": ("data_loss", "error", "DROP COLUMN deletes its values; a rollback re-adds an empty column"),
    "drop-schema-cascade": ("data_loss", "error", "DROP SCHEMA ... CASCADE drops every table in it"),
    "truncate": ("data_loss", "error", "TRUNCATE deletes every row"),
    "delete-without-where": ("data_loss", "error", "DELETE without WHERE deletes every row"),
    "update-without-where": ("data_loss", "error", "UPDATE without WHERE overwrites existing values in every row"),
    "lossy-type-change": ("data_loss", "error", "type change that truncates, rounds or drops part of the values"),
    # non_transactional
    "non-transactional": ("non_transactional", "warning", "statement that cannot run inside a transaction block"),
}

_DOWN = {"error": "warning", "warning": "info", "info": "info"}

# Lock modes of LOCK TABLE (LockStmt.mode is the lockmode number).
_LOCK_MODES = {
    1: "ACCESS SHARE", 2: "ROW SHARE", 3: "ROW EXCLUSIVE", 4: "SHARE UPDATE EXCLUSIVE",
    5: "SHARE", 6: "SHARE ROW EXCLUSIVE", 7: "EXCLUSIVE", 8: "ACCESS EXCLUSIVE",
}
_ACCESS_EXCLUSIVE = 8
_SHARE = 5

# ALTER TABLE subcommands that take less than ACCESS EXCLUSIVE (PostgreSQL docs, ALTER TABLE).
_WEAKER_THAN_AE = frozenset([
    "AT_SetStatistics", "AT_SetOptions", "AT_ResetOptions", "AT_ValidateConstraint", "AT_ClusterOn",
    "AT_DropCluster", "AT_SetRelOptions", "AT_ResetRelOptions", "AT_AttachPartition",
    "AT_DetachPartitionFinalize", "AT_EnableTrig", "AT_EnableAlwaysTrig", "AT_EnableReplicaTrig",
    "AT_DisableTrig", "AT_EnableTrigAll", "AT_DisableTrigAll", "AT_EnableTrigUser", "AT_DisableTrigUser",
    "AT_AlterConstraint",
])

_NON_TRANSACTIONAL_KINDS = frozenset([
    "CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt",
])

_RELATION_DROPS = {
    "OBJECT_TABLE": "table", "OBJECT_FOREIGN_TABLE": "foreign table", "OBJECT_VIEW": "view",
    "OBJECT_MATVIEW": "materialized view", "OBJECT_INDEX": "index", "OBJECT_SEQUENCE": "sequence",
}
_FUNCTION_OBJECTS = {
    "OBJECT_FUNCTION": "function", "OBJECT_PROCEDURE": "procedure", "OBJECT_ROUTINE": "routine",
    "OBJECT_AGGREGATE": "aggregate",
}

# Volatility of functions in column defaults. VOLATILE ones are evaluated per
# row, so ADD COLUMN rewrites the table; STABLE and IMMUTABLE ones are
# evaluated once (PostgreSQL >= 11 stores the value as the column's "missing"
# value). A function on neither list is reported as possibly volatile.
_VOLATILE_FUNCTIONS = frozenset([
    "random", "random_normal", "setseed", "gen_random_uuid", "gen_random_bytes", "uuidv4", "uuidv7",
    "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "clock_timestamp", "timeofday",
    "nextval", "currval", "lastval", "setval", "txid_current", "pg_current_xact_id",
])
_NON_VOLATILE_FUNCTIONS = frozenset([
    "now", "transaction_timestamp", "statement_timestamp", "current_setting", "timezone", "date_trunc",
    "date_part", "extract", "make_date", "make_time", "make_timestamp", "make_timestamptz", "make_interval",
    "to_timestamp", "to_date", "to_char", "to_number", "age", "lower", "upper", "initcap", "length",
    "char_length", "octet_length", "substr", "substring", "left", "right", "trim", "btrim", "ltrim", "rtrim",
    "replace", "concat", "concat_ws", "format", "md5", "sha224", "sha256", "sha384", "sha512", "encode",
    "decode", "abs", "round", "trunc", "floor", "ceil", "ceiling", "power", "sqrt", "mod", "greatest",
    "least", "coalesce", "nullif", "array_length", "cardinality", "array", "jsonb_build_object",
    "jsonb_build_array", "json_build_object", "json_build_array", "to_json", "to_jsonb", "jsonb_object",
    "json_object", "row_to_json", "uuid_nil", "uuid_ns_dns", "uuid_ns_url", "uuid_ns_oid", "uuid_ns_x500",
    "uuid_generate_v3", "uuid_generate_v5", "int2", "int4", "int8", "numeric", "text", "float4", "float8",
    "bool", "date", "timestamp", "timestamptz", "interval", "current_database", "current_schema",
    "current_user", "session_user", "inet_client_addr", "version", "pg_backend_pid",
])
_SERIAL_TYPES = frozenset(["serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"])

# Types whose typmod can grow without a rewrite, or that another type
# converts to without one: an ALTER COLUMN TYPE to one of them may be free
# when the current type is not known.
_MAYBE_FREE_TARGETS = frozenset(["text", "varchar", "numeric", "varbit", "timestamp", "timestamptz", "time", "timetz",
                                 "interval", "inet"])
_STRING_TYPES = frozenset(["text", "varchar"])
_INT_RANK = {"int2": 1, "int4": 2, "int8": 3}
_INT_DIGITS = {"int2": 5, "int4": 10, "int8": 19}
_PRECISION_TYPES = frozenset(["timestamp", "timestamptz", "time", "timetz"])
# Value-preserving conversions that rewrite the table (old, new).
_WIDENINGS = frozenset([
    ("int2", "float4"), ("int2", "float8"), ("int4", "float8"), ("float4", "float8"), ("float4", "numeric"),
    ("float8", "numeric"), ("date", "timestamp"), ("date", "timestamptz"), ("timestamp", "timestamptz"),
    ("json", "jsonb"), ("jsonb", "json"), ("bpchar", "text"), ("bpchar", "varchar"),
])
# Conversions that succeed but keep only part of each value.
_LOSSY = frozenset([
    ("timestamptz", "date"), ("timestamp", "date"), ("timestamptz", "timestamp"), ("timestamptz", "time"),
    ("timestamp", "time"), ("float4", "int2"), ("float4", "int4"), ("float4", "int8"), ("float8", "int2"),
    ("float8", "int4"), ("float8", "int8"), ("numeric", "int2"), ("numeric", "int4"), ("numeric", "int8"),
    ("numeric", "float4"), ("numeric", "float8"), ("int4", "float4"), ("int8", "float4"), ("int8", "float8"),
    ("inet", "cidr"),
])


class CompatError(PostgresError):
    """Input the analysis cannot work with (syntax error, missing pglast); the message is for the operator."""


def _require_pglast():
    if not HAS_PGLAST:
        raise CompatError("pglast is required for SQL analysis: pip install 'pglast>=7,<9'")


def _enum_name(value):
    """Name of a pglast enum member (enum values differ between PostgreSQL versions, names do not)."""
    return getattr(value, "name", value)


def _kind(node):
    return type(node).__name__


def _walk(node):
    """Every pglast node under ``node`` (itself included), depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(item)
            continue
        if not isinstance(item, pg_ast.Node):
            continue
        yield item
        for attr in type(item).__slots__:
            value = getattr(item, attr, None)
            if isinstance(value, (tuple, pg_ast.Node)):
                stack.append(value)


def _strings(names):
    """Python strings of a tuple of String nodes (qualified names)."""
    return [n.sval for n in (names or ()) if _kind(n) == "String"]


def _fmt(rel):
    return "%s.%s" % rel if rel else None


def _rel(rangevar, schema):
    return (rangevar.schemaname or schema, rangevar.relname)


def _names_rel(names, schema):
    parts = _strings(names)
    if not parts:
        return None
    if len(parts) >= 2:
        return (parts[-2], parts[-1])
    return (schema, parts[-1])


def _option_on(options, name):
    """Whether a DefElem option list (VACUUM (...), REINDEX (...)) turns ``name`` on."""
    for opt in options or ():
        if _kind(opt) == "DefElem" and opt.defname == name:
            arg = opt.arg
            if arg is None:
                return True
            if _kind(arg) == "Boolean":
                return bool(arg.boolval)
            if _kind(arg) == "Integer":
                return bool(arg.ival)
            if _kind(arg) == "String":
                return arg.sval.lower() not in ("false", "off", "0", "no")
            return True
    return False


def _option_off(options, name):
    for opt in options or ():
        if _kind(opt) == "DefElem" and opt.defname == name and opt.arg is not None:
            return not _option_on((opt,), name)
    return False


def _transactional(node, server_version=None):
    """Whether ``node`` may run inside a transaction block on ``server_version`` (None: 12 or later)."""
    kind = _kind(node)
    if kind in ("IndexStmt", "DropStmt"):
        return not node.concurrent
    if kind == "ReindexStmt":
        if _option_on(node.params, "concurrently"):
            return False
        return _enum_name(node.kind) in ("REINDEX_OBJECT_INDEX", "REINDEX_OBJECT_TABLE")
    if kind == "VacuumStmt":
        return not node.is_vacuumcmd
    if kind == "ClusterStmt":
        # CLUSTER of one table is transactional; CLUSTER of every clustered table is not.
        return node.relation is not None
    if kind in _NON_TRANSACTIONAL_KINDS:
        return False
    if kind == "CreateSubscriptionStmt":
        return _option_off(node.options, "connect") or _option_off(node.options, "create_slot")
    if kind == "DropSubscriptionStmt":
        return False
    if kind == "AlterEnumStmt":
        if node.oldVal is None and node.newVal is not None:
            return server_version is None or server_version >= 120000
        return True
    if kind == "AlterTableStmt":
        for cmd in node.cmds or ():
            if _enum_name(cmd.subtype) == "AT_DetachPartition" and getattr(cmd.def_, "concurrent", False):
                return False
    return True


class Statement(object):
    """One statement of a migration file.

    ``index`` (0-based), ``line`` (1-based line of its first token in the
    file), ``text`` (its own SQL, without surrounding comments and the
    trailing semicolon), ``node`` (the pglast node, RawStmt.stmt), ``kind``
    (the node's class name, e.g. 'AlterTableStmt'), ``tables`` (qualified
    'schema.name' of the relations it targets, unqualified names resolved
    with the file's SET search_path, default public) and ``schema`` (that
    default schema).

    ``transactional`` is whether it may run inside a transaction block on
    PostgreSQL 12 or later; ``is_transactional(server_version)`` answers for
    a given server (ALTER TYPE ... ADD VALUE is transactional only from 12
    on). analyze_static() reports the latter for its server_version.
    """

    __slots__ = ("index", "line", "text", "node", "kind", "tables", "schema")

    def __init__(self, index, line, text, node, tables=(), schema="public"):
        self.index = index
        self.line = line
        self.text = text
        self.node = node
        self.kind = _kind(node)
        self.tables = tuple(tables)
        self.schema = schema

    @property
    def transactional(self):
        return _transactional(self.node)

    def is_transactional(self, server_version=None):
        return _transactional(self.node, server_version)

    def as_dict(self, server_version=None):
        return {
            "index": self.index,
            "line": self.line,
            "text": self.text,
            "kind": self.kind,
            "transactional": self.is_transactional(server_version),
            "tables": list(self.tables),
        }

    def __repr__(self):
        return "Statement(%d, line %d, %s)" % (self.index, self.line, self.kind)


def _target_rels(node, schema):
    """Relations a statement targets, as (schema, name) pairs in order."""
    kind = _kind(node)
    rels = []
    if kind in ("AlterTableStmt", "IndexStmt", "CreateStmt", "RenameStmt", "DeleteStmt", "UpdateStmt", "InsertStmt",
                "MergeStmt", "ClusterStmt", "RefreshMatViewStmt", "ReindexStmt", "AlterObjectSchemaStmt", "CreateTrigStmt",
                "CopyStmt", "RuleStmt"):
        if getattr(node, "relation", None) is not None:
            rels.append(_rel(node.relation, schema))
    elif kind == "CreateTableAsStmt":
        if node.into is not None and node.into.rel is not None:
            rels.append(_rel(node.into.rel, schema))
    elif kind == "SelectStmt":
        if node.intoClause is not None and node.intoClause.rel is not None:
            rels.append(_rel(node.intoClause.rel, schema))
    elif kind == "ViewStmt":
        rels.append(_rel(node.view, schema))
    elif kind == "CreatePolicyStmt":
        rels.append(_rel(node.table, schema))
    elif kind in ("TruncateStmt", "LockStmt"):
        rels.extend(_rel(rv, schema) for rv in node.relations or ())
    elif kind == "VacuumStmt":
        rels.extend(_rel(vr.relation, schema) for vr in node.rels or () if vr.relation is not None)
    elif kind == "DropStmt" and _enum_name(node.removeType) in _RELATION_DROPS:
        for obj in node.objects or ():
            rel = _names_rel(obj, schema)
            if rel is not None:
                rels.append(rel)
    seen = set()
    out = []
    for rel in rels:
        if rel not in seen:
            seen.add(rel)
            out.append(rel)
    return out


def _search_path_schema(node, current):
    """Default schema after a SET search_path statement (first entry that is not $user or pg_catalog)."""
    kind = _enum_name(node.kind)
    if kind in ("VAR_RESET", "VAR_RESET_ALL", "VAR_SET_DEFAULT"):
        return "public"
    if kind != "VAR_SET_VALUE":
        return current
    for arg in node.args or ():
        value = getattr(getattr(arg, "val", None), "sval", None)
        if value is None:
            continue
        for entry in value.split(","):
            entry = entry.strip().strip('"')
            if entry and entry not in ("$user", "pg_catalog", "pg_temp"):
                return entry
    return current


def _ascii_shadow(text):
    """``text`` with every non-ASCII character replaced by 'x'.

    PostgreSQL's lexer treats every non-ASCII character as an identifier
    character, and so does it 'x': tokens keep their boundaries. Scanning the
    shadow gives character positions without pglast's byte-to-character
    mapping, which is linear per token.
    """
    if text.isascii():
        return text
    return "".join(c if c < "\x80" else "x" for c in text)


def _code_tokens(text):
    """(start, end) character spans of the tokens of ``text`` that are not comments (end exclusive)."""
    out = []
    for token in pglast.parser.scan(_ascii_shadow(text)):
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        out.append((token.start, token.end + 1, token.name))
    return out


def _error_line(text, exc):
    index = exc.args[1] if len(exc.args) > 1 else None
    if index is None:
        # At the end of the input: the line of the last character that is not blank.
        index = len(text.rstrip())
        index = max(index - 1, 0)
    return text.count("\n", 0, index) + 1


def parse_sql(text):
    """Statements of an SQL file, as a list of Statement.

    Raises CompatError("syntax error at line N: <parser message>") when the
    file does not parse; N is the line, in the whole file, of the position
    the parser reports.
    """
    _require_pglast()
    if not isinstance(text, str):
        raise CompatError("SQL must be text, got %s" % type(text).__name__)
    try:
        raws = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        raise CompatError("syntax error at line %d: %s" % (_error_line(text, exc), exc.args[0]))
    try:
        tokens = _code_tokens(text)
    except pglast.parser.ParseError:  # pragma: no cover - the text parsed, so it scans
        tokens = []
    starts = [t[0] for t in tokens]
    schema = "public"
    statements = []
    line, line_pos = 1, 0
    for raw in raws:
        node = raw.stmt
        if node is None:
            continue
        begin = raw.stmt_location or 0
        end = begin + raw.stmt_len if raw.stmt_len else len(text)
        first = bisect.bisect_left(starts, begin)
        last = bisect.bisect_left(starts, end)
        while last > first and tokens[last - 1][2] == "ASCII_59":
            last -= 1
        if last > first:
            begin, end = tokens[first][0], tokens[last - 1][1]
        stmt_text = text[begin:end].strip().rstrip(";").rstrip()
        line += text.count("\n", line_pos, begin)
        line_pos = begin
        rels = _target_rels(node, schema)
        statements.append(Statement(len(statements), line, stmt_text, node, [_fmt(r) for r in rels], schema))
        if _kind(node) == "VariableSetStmt" and node.name == "search_path":
            schema = _search_path_schema(node, schema)
    return statements


# -- types ---------------------------------------------------------------------------


_TYPE_DISPLAY = {
    "int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real", "float8": "double precision",
    "bpchar": "char", "bool": "boolean", "varbit": "bit varying",
}


class _Type(object):
    """A column type: normalized name, integer typmods (None when not constants), array or not."""

    __slots__ = ("name", "mods", "array")

    def __init__(self, name, mods=(), array=False):
        self.name = name
        self.mods = mods
        self.array = array

    def __eq__(self, other):
        return isinstance(other, _Type) and (self.name, self.mods, self.array) == (other.name, other.mods, other.array)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.name, self.mods, self.array))

    def element(self):
        return _Type(self.name, self.mods)

    def __str__(self):
        if self.name in _TYPE_DISPLAY:
            text = _TYPE_DISPLAY[self.name]
        else:
            text = ".".join(_quote_ident(part) for part in self.name.split("."))
        if self.mods:
            text += "(%s)" % ",".join(str(m) for m in self.mods)
        return text + ("[]" if self.array else "")


def _type_of(type_name):
    """_Type of a pglast TypeName, or None for %TYPE references."""
    if type_name is None or type_name.pct_type:
        return None
    parts = _strings(type_name.names)
    if not parts:
        return None
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog"):
        name = parts[-1]
    else:
        name = ".".join(parts)
    mods = []
    for mod in type_name.typmods or ():
        value = getattr(mod, "val", None)
        if _kind(mod) == "A_Const" and value is not None and _kind(value) == "Integer":
            mods.append(value.ival)
        else:
            mods = None
            break
    return _Type(name, tuple(mods) if mods is not None else None, bool(type_name.arrayBounds))


def _quote_ident(name):
    """``name`` as SQL writes it: bare when lower-case and plain, else double-quoted."""
    if name and (name[0].isalpha() or name[0] == "_") and name.isascii() and all(
            c.islower() or c.isdigit() or c in "_$" for c in name):
        return name
    return '"%s"' % name.replace('"', '""')


_TYPE_STRING_CACHE = {}


def _type_from_string(text):
    """_Type of a type as format_type() writes it ('character varying(50)'), or None."""
    if isinstance(text, _Type):
        return text
    if text in _TYPE_STRING_CACHE:
        return _TYPE_STRING_CACHE[text]
    result = None
    try:
        raws = pglast.parse_sql("SELECT NULL::%s" % text)
    except pglast.parser.ParseError:
        raws = ()
    if len(raws) == 1 and _kind(raws[0].stmt) == "SelectStmt":
        targets = raws[0].stmt.targetList or ()
        if len(targets) == 1 and _kind(targets[0].val) == "TypeCast":
            result = _type_of(targets[0].val.typeName)
    _TYPE_STRING_CACHE[text] = result
    return result


def _precision(t):
    return t.mods[0] if t.mods else 6


def _classify_change(old, new):
    """How changing a column from ``old`` to ``new`` behaves.

    'same', 'free' (binary coercible: catalog-only, no rewrite, no scan),
    'widen' (every value fits: rewrite, old app unaffected), 'narrow' (same
    family, smaller: rewrite, old writes may fail, values may be cut),
    'lossy' (converts and keeps part of each value) or 'incompatible'.
    """
    if old == new:
        return "same"
    if old.array or new.array:
        if old.array != new.array:
            return "incompatible"
        inner = _classify_change(old.element(), new.element())
        # Element coercions of arrays are not recognized as binary: assume a rewrite.
        return "widen" if inner in ("free", "same") else inner
    o, n = old.name, new.name
    if old.mods is None or new.mods is None:
        return "widen" if o == n else "incompatible"
    if o in _STRING_TYPES and n in _STRING_TYPES:
        old_len = old.mods[0] if o == "varchar" and old.mods else None
        new_len = new.mods[0] if n == "varchar" and new.mods else None
        if new_len is None:
            return "free"
        if old_len is None or new_len < old_len:
            return "narrow"
        return "free"
    if o == "bpchar" and n in ("bpchar", "varchar") and new.mods:
        return "widen" if not old.mods or new.mods[0] >= old.mods[0] else "narrow"
    if o in _STRING_TYPES and n == "bpchar":
        return "narrow"
    if o == n == "numeric":
        if not new.mods:
            return "free"
        if not old.mods:
            return "narrow"
        p1, s1 = old.mods[0], (old.mods[1] if len(old.mods) > 1 else 0)
        p2, s2 = new.mods[0], (new.mods[1] if len(new.mods) > 1 else 0)
        if s2 == s1 and p2 >= p1:
            return "free"
        if s2 >= s1 and p2 - s2 >= p1 - s1:
            return "widen"
        return "narrow"
    if o in _INT_RANK and n in _INT_RANK:
        return "widen" if _INT_RANK[n] > _INT_RANK[o] else "narrow"
    if o in _INT_RANK and n == "numeric":
        if not new.mods:
            return "widen"
        scale = new.mods[1] if len(new.mods) > 1 else 0
        return "widen" if new.mods[0] - scale >= _INT_DIGITS[o] else "narrow"
    if o == n and o in _PRECISION_TYPES:
        return "free" if not new.mods or _precision(new) >= _precision(old) else "narrow"
    if o == n == "interval":
        return "free" if not new.mods else "widen"
    if o == n == "varbit":
        return "free" if not new.mods or (old.mods and new.mods[0] >= old.mods[0]) else "narrow"
    if (o, n) == ("cidr", "inet"):
        return "free"
    if (o, n) == ("float8", "float4"):
        return "narrow"
    if (o, n) in _WIDENINGS:
        return "widen"
    if (o, n) in _LOSSY:
        return "lossy"
    return "incompatible"


# -- expressions -----------------------------------------------------------------------


def _default_volatility(expr):
    """('constant' | 'stable' | 'volatile' | 'unknown', [function names]) of a default expression."""
    if expr is None:
        return "constant", []
    verdict = "constant"
    volatile, unknown = [], []
    for node in _walk(expr):
        kind = _kind(node)
        if kind == "FuncCall":
            name = _strings(node.funcname)[-1].lower()
            if name in _VOLATILE_FUNCTIONS:
                volatile.append("%s()" % name)
            elif name in _NON_VOLATILE_FUNCTIONS:
                verdict = "stable"
            else:
                unknown.append("%s()" % name)
        elif kind in ("SQLValueFunction", "ColumnRef"):
            verdict = "stable"
        elif kind == "SubLink":
            unknown.append("a subquery")
    if volatile:
        return "volatile", volatile
    if unknown:
        return "unknown", unknown
    return verdict, []


def _is_null_default(expr):
    return expr is not None and _kind(expr) == "A_Const" and expr.isnull


def _column_refs(expr):
    names = set()
    for node in _walk(expr):
        if _kind(node) == "ColumnRef":
            fields = _strings(node.fields)
            if fields:
                names.add(fields[-1])
    return names


def _not_null_check_column(expr):
    """Column of a CHECK (col IS NOT NULL) expression, or None."""
    if expr is not None and _kind(expr) == "NullTest" and _enum_name(expr.nulltesttype) == "IS_NOT_NULL":
        arg = expr.arg
        if arg is not None and _kind(arg) == "ColumnRef":
            fields = _strings(arg.fields)
            if len(fields) == 1:
                return fields[0]
    return None


def _trivial_using(expr, column):
    """Whether a USING expression is the column itself, possibly cast (no transformation of its values)."""
    if expr is None:
        return True
    while _kind(expr) == "TypeCast":
        expr = expr.arg
    if _kind(expr) == "ColumnRef":
        fields = _strings(expr.fields)
        return bool(fields) and fields[-1] == column
    return False


# -- the old application's queries -------------------------------------------------


class _QueryRefs(object):
    """Names one old query references."""

    __slots__ = ("rels", "names", "star", "funcs", "types", "strings", "inserts", "writes", "opaque")

    def __init__(self):
        self.rels = set()
        self.names = set()
        self.star = False
        self.funcs = set()
        self.types = set()
        self.strings = set()
        self.inserts = []
        self.writes = set()
        self.opaque = False


def _query_refs(text):
    refs = _QueryRefs()
    try:
        raws = pglast.parse_sql(text)
    except pglast.parser.ParseError:
        return _opaque_refs(text)
    aliases, singles = set(), set()
    for raw in raws:
        for node in _walk(raw.stmt):
            kind = _kind(node)
            if kind == "RangeVar":
                refs.rels.add(node.relname)
                if node.alias is not None:
                    aliases.add(node.alias.aliasname)
            elif kind == "String":
                refs.names.add(node.sval)
            elif kind == "ColumnRef":
                fields = node.fields or ()
                if any(_kind(f) == "A_Star" for f in fields):
                    refs.star = True
                elif len(fields) == 1:
                    singles.add(fields[0].sval)
            elif kind in ("ResTarget", "IndexElem") and node.name:
                refs.names.add(node.name)
            elif kind == "FuncCall":
                refs.funcs.add(_strings(node.funcname)[-1])
            elif kind == "TypeName":
                parts = _strings(node.names)
                if parts:
                    refs.types.add(parts[-1])
            elif kind == "A_Const" and node.val is not None and _kind(node.val) == "String":
                refs.strings.add(node.val.sval)
            elif kind == "InsertStmt":
                cols = frozenset(rt.name for rt in node.cols) if node.cols else None
                refs.inserts.append((node.relation.relname, cols))
                refs.writes.add(node.relation.relname)
                if cols is None:
                    refs.star = True
            elif kind in ("UpdateStmt", "DeleteStmt", "MergeStmt"):
                refs.writes.add(node.relation.relname)
            elif kind == "CopyStmt" and node.relation is not None:
                if not node.attlist:
                    refs.star = True
                if node.is_from:
                    refs.inserts.append((node.relation.relname, frozenset(_strings(node.attlist)) if node.attlist else None))
                    refs.writes.add(node.relation.relname)
    if singles & (refs.rels | aliases):
        refs.star = True  # a whole-row reference (SELECT t FROM t) uses every column
    return refs


def _opaque_refs(text):
    """References of a query pglast cannot parse (e.g. %s placeholders): every identifier, anywhere."""
    refs = _QueryRefs()
    refs.opaque = True
    refs.star = True
    try:
        tokens = pglast.parser.scan(text)
    except pglast.parser.ParseError:
        tokens = None
    if tokens is None:
        # Not even tokens: it may reference anything.
        refs.rels = refs.names = refs.funcs = refs.types = refs.writes = None
        return refs
    for token in tokens:
        word = text[token.start:token.end + 1]
        if token.name == "SCONST":
            refs.strings.add(word.strip("'"))
            continue
        if token.name == "IDENT" or token.kind != "NO_KEYWORD":
            word = word[1:-1].replace('""', '"') if word.startswith('"') else word.lower()
            refs.names.add(word)
    refs.rels = refs.funcs = refs.types = refs.writes = refs.names
    return refs


class _OldUsage(object):
    """What the old application version's queries reference."""

    def __init__(self, queries):
        self.queries = [_query_refs(q) for q in queries if q and q.strip()]

    @staticmethod
    def _has(collection, name):
        return collection is None or name in collection

    def table(self, rel):
        return any(self._has(q.rels, rel[1]) for q in self.queries)

    def column(self, rel, column):
        return any(self._has(q.rels, rel[1]) and (q.star or self._has(q.names, column)) for q in self.queries)

    def function(self, name):
        return any(self._has(q.funcs, name) or self._has(q.strings, name) for q in self.queries)

    def type(self, name):
        return any(self._has(q.types, name) or self._has(q.names, name) for q in self.queries)

    def sequence(self, name):
        return any(self._has(q.rels, name) or any(name in s for s in q.strings) for q in self.queries)

    def writes(self, rel):
        return any(self._has(q.writes, rel[1]) for q in self.queries)

    def inserts(self, rel):
        """Column sets of the old INSERTs into ``rel`` (None: no column list, or not known)."""
        out = []
        for q in self.queries:
            if q.opaque and self._has(q.names, rel[1]):
                out.append(None)
            for name, cols in q.inserts:
                if name == rel[1]:
                    out.append(cols)
        return out


# -- analysis ----------------------------------------------------------------------


class _Analyzer(object):
    def __init__(self, server_version, table_rows, large_table_rows, old_queries, ignore_rules, column_types):
        self.version = int(server_version or 150000)
        self.table_rows = dict(table_rows or {})
        self.sized = table_rows is not None
        self.large = large_table_rows
        self.old = _OldUsage(old_queries) if old_queries is not None else None
        self.ignore = set(ignore_rules or ())
        self.findings = []
        self.created = set()          # relations created by this file
        self.created_indexes = {}     # index rel -> table rel, for indexes created by this file
        self.created_routines = set()
        self.created_types = set()    # names of types created by this file
        self.moved = {}               # relation renamed or moved away by this file -> its finding (or None)
        self.new_columns = set()      # (rel, column) added by this file
        self.defaults = set()         # (rel, column) of new columns that the old version's INSERTs fill by default
        self.original = {}            # rel after a rename -> rel the old version knows
        self.types = {}               # (rel, column) -> _Type, known current types
        self.not_null_checks = {}     # (rel, constraint name) -> column, CHECK (col IS NOT NULL) NOT VALID
        self.not_null_proven = set()  # (rel, column) with a validated CHECK (col IS NOT NULL)
        self.lock_timeout = False
        self.lock_warned = set()      # statement indexes with a missing-lock-timeout finding
        self.stmt = None
        for table, columns in (column_types or {}).items():
            rel = _split_qualified(table)
            for column, type_text in (columns or {}).items():
                parsed = _type_from_string(type_text)
                if parsed is not None:
                    self.types[(rel, column)] = parsed

    # -- helpers ---------------------------------------------------------------
    def emit(self, rule, message, rel=None, severity=None):
        if rule in self.ignore:
            return
        category, default = RULES[rule][:2]
        stmt = self.stmt
        finding = {
            "rule": rule,
            "category": category,
            "severity": severity or default,
            "statement": stmt.text,
            "statement_index": stmt.index,
            "line": stmt.line,
            "message": message,
            "table": _fmt(rel),
            "source": "static",
        }
        self.findings.append(finding)
        return finding

    def is_new(self, rel):
        return rel in self.created

    def known_as(self, rel):
        return self.original.get(rel, rel)

    def rows(self, rel):
        if rel is None:
            return None
        for key in (_fmt(self.known_as(rel)), _fmt(rel)):
            value = self.table_rows.get(key)
            if value is not None:
                return value
        return None

    def emit_sized(self, rule, message, rel, severity=None):
        """A lock or rewrite finding whose severity depends on the table's size."""
        if rel is not None and self.is_new(rel):
            return
        severity = severity or RULES[rule][1]
        rows = self.rows(rel)
        if rows is not None and rows < self.large:
            severity = _DOWN[severity]
            message += " (%s has about %d rows, below large_table_rows %d)" % (_fmt(rel), rows, self.large)
        elif rows is not None:
            message += " (%s has about %d rows)" % (_fmt(rel), rows)
        elif rel is not None:
            message += " (%s: size unknown, counted as large)" % _fmt(rel) if not self.sized else \
                " (%s: no statistics, counted as large)" % _fmt(rel)
        self.emit(rule, message, rel, severity)

    def emit_old(self, rule, message, rel, used, what, severity=None):
        """A breaks_old_app finding, one severity lower when the old queries never reference ``what``."""
        severity = severity or RULES[rule][1]
        if self.old is not None:
            if used:
                message += "; the old version's queries reference %s" % what
            else:
                severity = _DOWN[severity]
                message += "; none of the old version's queries reference %s" % what
        return self.emit(rule, message, rel, severity)

    def access_exclusive(self, rel, what):
        """missing-lock-timeout for a statement taking ACCESS EXCLUSIVE on an existing relation."""
        if self.lock_timeout or (rel is not None and self.is_new(rel)) or self.stmt.index in self.lock_warned:
            return
        self.lock_warned.add(self.stmt.index)
        self.emit(
            "missing-lock-timeout",
            "%s takes an ACCESS EXCLUSIVE lock on %s and no SET lock_timeout precedes it: if a long transaction holds any "
            "lock on it, this statement waits in the lock queue and every later query on the table, reads included, "
            "queues behind it; start the file with SET lock_timeout = '2s' (or SET LOCAL in the migration's transaction) "
            "and retry on timeout" % (what, _fmt(rel) if rel else "the tables it touches"),
            rel,
        )

    def column_used(self, rel, column):
        return self.old is not None and self.old.column(self.known_as(rel), column)

    def old_inserts_supply(self, rel, column):
        """('none' | 'all' | 'some'): whether the old version's INSERTs into ``rel`` name ``column``."""
        inserts = self.old.inserts(self.known_as(rel))
        if not inserts:
            return "none"
        if all(cols is not None and column in cols for cols in inserts):
            return "all"
        return "some"

    # -- dispatch --------------------------------------------------------------
    def statement(self, stmt):
        self.stmt = stmt
        handler = getattr(self, "on_" + stmt.kind, None)
        if handler is not None:
            handler(stmt.node, stmt.schema)
        # Data-modifying CTEs: WITH gone AS (DELETE FROM t RETURNING *) SELECT ...
        with_clause = getattr(stmt.node, "withClause", None)
        for cte in getattr(with_clause, "ctes", None) or ():
            query = getattr(cte, "ctequery", None)
            if query is not None and _kind(query) in ("DeleteStmt", "UpdateStmt"):
                getattr(self, "on_" + _kind(query))(query, stmt.schema)
        if not stmt.is_transactional(self.version):
            self.non_transactional(stmt)

    def non_transactional(self, stmt):
        node = stmt.node
        kind = stmt.kind
        message = "%s cannot run inside a transaction block: if it fails, what it did is not rolled back with the rest of the " \
                  "migration; run it as the only statement of its migration step" % _describe_kind(stmt)
        if kind == "IndexStmt":
            message += ", and on failure drop the INVALID index it leaves behind (DROP INDEX CONCURRENTLY IF EXISTS %s) " \
                       "before retrying" % (node.idxname or "<index>")
        elif kind == "ReindexStmt":
            message += ", and on failure drop the INVALID *_ccnew indexes it leaves behind before retrying"
        elif kind == "AlterEnumStmt":
            message += " (PostgreSQL < 12 cannot add an enum value inside a transaction)"
        self.emit("non-transactional", message, _first_rel(stmt))

    # -- settings --------------------------------------------------------------
    def on_VariableSetStmt(self, node, schema):
        if node.name != "lock_timeout" and _enum_name(node.kind) != "VAR_RESET_ALL":
            return
        kind = _enum_name(node.kind)
        if kind == "VAR_SET_VALUE":
            self.lock_timeout = not _zero_setting(node.args)
        elif kind in ("VAR_RESET", "VAR_RESET_ALL", "VAR_SET_DEFAULT"):
            self.lock_timeout = False

    def on_SelectStmt(self, node, schema):
        if node.intoClause is not None and node.intoClause.rel is not None:
            self.created.add(_rel(node.intoClause.rel, schema))  # SELECT ... INTO new_table
        # SELECT set_config('lock_timeout', '2s', false)
        for target in node.targetList or ():
            call = target.val
            if call is None or _kind(call) != "FuncCall" or _strings(call.funcname)[-1] != "set_config":
                continue
            args = call.args or ()
            values = [getattr(getattr(a, "val", None), "sval", None) for a in args[:2]]
            if len(values) == 2 and values[0] == "lock_timeout" and values[1] is not None:
                self.lock_timeout = not _zero_setting_text(values[1])

    # -- creations -------------------------------------------------------------
    def on_CreateStmt(self, node, schema):
        rel = _rel(node.relation, schema)
        self.created.add(rel)
        for elt in node.tableElts or ():
            if _kind(elt) == "ColumnDef":
                col_type = _type_of(elt.typeName)
                if col_type is not None:
                    self.types[(rel, elt.colname)] = col_type

    def on_CreateTableAsStmt(self, node, schema):
        if node.into is not None and node.into.rel is not None:
            self.created.add(_rel(node.into.rel, schema))

    def on_ViewStmt(self, node, schema):
        rel = _rel(node.view, schema)
        if rel in self.moved:
            # The expand step of a rename: a view keeps the old name working for the old version.
            finding = self.moved.pop(rel)
            if finding is not None:
                finding["severity"] = "info"
                finding["message"] += (
                    "; statement %d (line %d) creates view %s under the old name, so the old version keeps working through it "
                    "as long as the view is updatable and exposes every column it uses (keep the rename and the view in one "
                    "transaction)" % (self.stmt.index, self.stmt.line, _fmt(rel)))
        if not node.replace or rel not in self.created:
            self.created.add(rel)

    def _created_type(self, names):
        parts = _strings(names)
        if parts:
            self.created_types.add(parts[-1])

    def on_CreateEnumStmt(self, node, schema):
        self._created_type(node.typeName)

    def on_CreateRangeStmt(self, node, schema):
        self._created_type(node.typeName)

    def on_CreateDomainStmt(self, node, schema):
        self._created_type(node.domainname)

    def on_CompositeTypeStmt(self, node, schema):
        self.created_types.add(node.typevar.relname)

    def on_CreateSeqStmt(self, node, schema):
        self.created.add(_rel(node.sequence, schema))

    def on_CreateFunctionStmt(self, node, schema):
        if not node.replace:
            self.created_routines.add(_strings(node.funcname)[-1])

    # -- ALTER TABLE -------------------------------------------------------------
    def on_AlterTableStmt(self, node, schema):
        rel = _rel(node.relation, schema)
        objtype = _enum_name(node.objtype)
        new = self.is_new(rel)
        takes_ae = False
        for cmd in node.cmds or ():
            subtype = _enum_name(cmd.subtype)
            if subtype not in _WEAKER_THAN_AE and not (subtype == "AT_AddConstraint" and _is_fk(cmd.def_)):
                if not (subtype == "AT_DetachPartition" and getattr(cmd.def_, "concurrent", False)):
                    takes_ae = True
            handler = getattr(self, "alter_" + subtype[3:], None)
            if handler is not None:
                handler(rel, cmd, new, objtype)
        if takes_ae:
            self.access_exclusive(rel, "ALTER %s" % _OBJ_WORDS.get(objtype, "TABLE"))

    def alter_AddColumn(self, rel, cmd, new, objtype):
        col = cmd.def_
        name = col.colname
        col_type = _type_of(col.typeName)
        self.new_columns.add((rel, name))
        if col_type is not None:
            self.types[(rel, name)] = col_type
        if new:
            return
        default = None
        has_default = not_null = identity = stored = False
        checks, uniques, fks = [], [], []
        for con in col.constraints or ():
            contype = _enum_name(con.contype)
            if contype == "CONSTR_DEFAULT":
                if not _is_null_default(con.raw_expr):
                    default, has_default = con.raw_expr, True
            elif contype == "CONSTR_NOTNULL":
                not_null = True
            elif contype == "CONSTR_IDENTITY":
                identity = True
            elif contype == "CONSTR_GENERATED":
                stored = con.generated_kind != "v" or self.version < 180000
            elif contype == "CONSTR_CHECK":
                checks.append(con)
            elif contype in ("CONSTR_PRIMARY", "CONSTR_UNIQUE"):
                uniques.append(con)
                if contype == "CONSTR_PRIMARY":
                    not_null = True
            elif contype == "CONSTR_FOREIGN":
                fks.append(con)
        not_null = not_null or bool(col.is_not_null)
        serial = col_type is not None and col_type.name in _SERIAL_TYPES
        if has_default or serial or identity or stored:
            self.defaults.add((rel, name))
        what = "column %s of %s" % (name, _fmt(rel))
        if serial or identity:
            self.emit_sized(
                "add-column-volatile-default",
                "adding %s as %s fills every existing row from a sequence, which rewrites the table under ACCESS EXCLUSIVE; "
                "add a plain nullable column, attach the sequence with SET DEFAULT nextval(...), backfill in batches, then "
                "add the constraints" % (what, col_type if serial else "an identity column"),
                rel,
            )
        elif stored:
            self.emit_sized(
                "add-column-generated-stored",
                "adding stored generated %s computes it for every row, which rewrites the table under ACCESS EXCLUSIVE; "
                "add a nullable column, fill it with a trigger plus a batched backfill%s"
                % (what, "" if self.version < 180000 else ", or use a VIRTUAL generated column (PostgreSQL 18)"),
                rel,
            )
        elif has_default and self.version < 110000:
            self.emit_sized(
                "add-column-default-pre11",
                "before PostgreSQL 11, adding %s with a DEFAULT rewrites the table under ACCESS EXCLUSIVE; add the column "
                "without a default, SET DEFAULT in a separate statement (new rows only), and backfill existing rows in "
                "batches" % what,
                rel,
            )
        elif has_default:
            verdict, funcs = _default_volatility(default)
            if verdict == "volatile":
                self.emit_sized(
                    "add-column-volatile-default",
                    "the default of %s calls volatile %s, evaluated per row: the table is rewritten under ACCESS "
                    "EXCLUSIVE; add the column without a default (or with a constant one), SET DEFAULT afterwards for new "
                    "rows, and backfill existing rows in batches" % (what, ", ".join(funcs)),
                    rel,
                )
            elif verdict == "unknown":
                self.emit_sized(
                    "add-column-volatile-default",
                    "the default of %s calls %s, whose volatility is not known here: if it is VOLATILE the table is "
                    "rewritten under ACCESS EXCLUSIVE; use a constant or STABLE default, or add the column without one, SET "
                    "DEFAULT afterwards and backfill in batches" % (what, ", ".join(funcs)),
                    rel,
                    severity="warning",
                )
        if not_null and not has_default and not (serial or identity or stored):
            severity = None
            note = ""
            if self.old is not None:
                if self.old.inserts(self.known_as(rel)):
                    note = "; the old version's queries INSERT into %s" % _fmt(rel)
                else:
                    severity = "warning"
                    note = "; none of the old version's queries INSERT into %s" % _fmt(rel)
            self.emit(
                "add-column-not-null-no-default",
                "%s is NOT NULL without a default: the old version's INSERTs do not supply it and fail (and the ALTER itself "
                "fails if the table has rows); add it nullable or with a DEFAULT, backfill, and enforce NOT NULL once every "
                "running version writes it%s" % (what, note),
                rel,
                severity,
            )
        for con in checks + fks:
            if not con.skip_validation:
                self.emit_sized(
                    "add-constraint-validates",
                    "the %s on new %s is checked against every existing row under lock; add the column first, then the "
                    "constraint NOT VALID, then VALIDATE CONSTRAINT in a separate transaction" % (_constraint_word(con), what),
                    rel,
                )
        for con in uniques:
            self.emit_sized(
                "add-unique-builds-index",
                "the %s on new %s builds its index under ACCESS EXCLUSIVE; add the column, CREATE UNIQUE INDEX "
                "CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX" % (_constraint_word(con), what),
                rel,
            )

    def alter_DropColumn(self, rel, cmd, new, objtype):
        name = cmd.name
        self.types.pop((rel, name), None)
        if new or (rel, name) in self.new_columns:
            self.new_columns.discard((rel, name))
            return
        what = "column %s of %s" % (name, _fmt(rel))
        self.emit_old(
            "drop-column",
            "dropping %s breaks the old version's queries that read or write it (SELECT * included); stop using it in a "
            "release first and drop it in a later migration, once no running version uses it" % what,
            rel, self.column_used(rel, name), "it",
        )
        self.emit(
            "drop-column-data",
            "dropping %s deletes its values: a rollback can re-add the column but not its data; keep it until the new "
            "version is proven, or copy it aside first" % what,
            rel,
        )
        if _enum_name(cmd.behavior) == "DROP_CASCADE":
            self.emit("drop-cascade", "DROP COLUMN %s CASCADE also drops the views and constraints that depend on it; drop "
                      "dependents explicitly so the migration says what it removes" % name, rel)

    def alter_ColumnDefault(self, rel, cmd, new, objtype):
        if cmd.def_ is not None and not _is_null_default(cmd.def_):
            self.defaults.add((rel, cmd.name))
            return
        self.defaults.discard((rel, cmd.name))
        if new or (rel, cmd.name) in self.new_columns:
            return
        note = ""
        severity = None
        if self.old is not None:
            supply = self.old_inserts_supply(rel, cmd.name)
            if supply in ("none", "all"):
                severity = "info"
                note = "; the old version's INSERTs %s" % ("never target the table" if supply == "none" else "always name the column")
        self.emit(
            "drop-column-default",
            "dropping the default of column %s of %s makes the old version's INSERTs that omit it write NULL (or fail if it is "
            "NOT NULL); drop the default only once no running version relies on it%s" % (cmd.name, _fmt(rel), note),
            rel,
            severity,
        )

    def alter_SetNotNull(self, rel, cmd, new, objtype):
        self.set_not_null(rel, cmd.name, new, skip_validation=False)

    def set_not_null(self, rel, column, new, skip_validation):
        if new:
            return
        proven = (rel, column) in self.not_null_proven
        if proven and self.version >= 120000:
            return  # a validated CHECK (col IS NOT NULL) already rejects NULLs and spares the scan
        what = "column %s of %s" % (column, _fmt(rel))
        if not proven and not ((rel, column) in self.new_columns and (rel, column) in self.defaults):
            severity = None
            note = ""
            if self.old is not None:
                supply = self.old_inserts_supply(rel, column)
                if supply == "none":
                    severity, note = "warning", "; none of the old version's queries INSERT into %s" % _fmt(rel)
                elif supply == "all":
                    severity, note = "warning", "; the old version's INSERTs name the column: check they never send NULL"
                else:
                    note = "; the old version's INSERTs into %s do not always name the column" % _fmt(rel)
            self.emit(
                "set-not-null",
                "SET NOT NULL on %s makes the old version's writes of NULL (or INSERTs that omit it) fail; enforce it only "
                "once every running version writes the column%s" % (what, note),
                rel,
                severity,
            )
        if skip_validation:
            return
        if self.version >= 120000:
            alternative = "add CHECK (%s IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a separate transaction, then SET NOT " \
                          "NULL, which PostgreSQL 12+ does without a scan, and drop the CHECK" % column
            if self.version >= 180000:
                alternative += " (or, on 18+, ADD CONSTRAINT ... NOT NULL %s NOT VALID then VALIDATE)" % column
        else:
            alternative = "before PostgreSQL 12 it always scans: use a validated CHECK (%s IS NOT NULL) NOT VALID constraint " \
                          "instead of NOT NULL, or run it in a maintenance window" % column
        self.emit_sized(
            "set-not-null-scan",
            "SET NOT NULL on %s scans every row under ACCESS EXCLUSIVE, blocking reads and writes; %s" % (what, alternative),
            rel,
        )

    def alter_AddConstraint(self, rel, cmd, new, objtype):
        con = cmd.def_
        contype = _enum_name(con.contype)
        name = con.conname
        if contype == "CONSTR_CHECK":
            column = _not_null_check_column(con.raw_expr)
            if column is not None:
                if con.skip_validation:
                    self.not_null_checks[(rel, name)] = column
                else:
                    self.not_null_proven.add((rel, column))
        if new:
            return
        word = _constraint_word(con)
        columns = _constraint_columns(con)
        if contype == "CONSTR_NOTNULL":
            for column in columns:
                self.set_not_null(rel, column, new, skip_validation=con.skip_validation)
            return
        if not (con.indexname and contype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY")):
            # (USING INDEX: the unique index already constrains the old version's writes.)
            not_null = columns if contype == "CONSTR_PRIMARY" else [c for c in [_not_null_check_column(con.raw_expr)] if c]
            self.constraint_old_writes(rel, "%s%s" % (word, " %s" % name if name else ""), columns, not_null)
        if contype in ("CONSTR_CHECK", "CONSTR_FOREIGN") and not con.skip_validation:
            if contype == "CONSTR_FOREIGN":
                lock = "SHARE ROW EXCLUSIVE on %s and on %s" % (_fmt(rel), _fmt(_rel(con.pktable, rel[0])))
            else:
                lock = "ACCESS EXCLUSIVE"
            self.emit_sized(
                "add-constraint-validates",
                "adding the %s%s validates every row under %s, blocking writes for the whole scan; add the constraint "
                "NOT VALID, then VALIDATE CONSTRAINT in a separate transaction"
                % (word, " %s" % name if name else "", lock),
                rel,
            )
        elif contype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION") and not con.indexname:
            alternative = "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... %s USING INDEX" % (
                "PRIMARY KEY" if contype == "CONSTR_PRIMARY" else "UNIQUE")
            if contype == "CONSTR_EXCLUSION":
                alternative = "exclusion constraints cannot use an existing index: run it in a maintenance window"
            self.emit_sized(
                "add-unique-builds-index",
                "adding the %s%s builds its index under ACCESS EXCLUSIVE, blocking reads and writes for the whole build; %s"
                % (word, " %s" % name if name else "", alternative),
                rel,
            )

    def constraint_old_writes(self, rel, what, columns, not_null):
        """add-constraint-old-writes: error when the old version's INSERTs certainly leave a required column NULL."""
        fresh = bool(columns) and all((rel, c) in self.new_columns for c in columns)
        unfilled = [c for c in not_null if (rel, c) in self.new_columns and (rel, c) not in self.defaults]
        if fresh and not unfilled:
            return  # the old version leaves new columns NULL or default, which the constraint accepts
        inserts = self.old.inserts(self.known_as(rel)) if self.old is not None else None
        if unfilled:
            severity = "error"
            note = "the old version's INSERTs do not know column %s (new, no default) and leave it NULL; give it a DEFAULT " \
                   "first" % ", ".join(unfilled)
            if inserts is not None and not inserts:
                severity, note = "warning", note + "; none of the old version's queries INSERT into %s" % _fmt(rel)
        else:
            severity = "info"
            note = "make sure every running version already writes conforming data"
            omitted = sorted(set(c for cols in inserts or () if cols is not None for c in not_null if c not in cols))
            if omitted:
                severity = "warning"
                note = "an INSERT of the old version omits column %s, relying on its default or NULL" % ", ".join(omitted)
            elif self.old is not None and not self.old.writes(self.known_as(rel)):
                note += "; none of the old version's queries write %s" % _fmt(rel)
        self.emit(
            "add-constraint-old-writes",
            "the new %s on %s rejects writes that violate it, including the old version's; %s" % (what, _fmt(rel), note),
            rel,
            severity,
        )

    def alter_ValidateConstraint(self, rel, cmd, new, objtype):
        column = self.not_null_checks.pop((rel, cmd.name), None)
        if column is not None:
            self.not_null_proven.add((rel, column))

    def alter_AlterColumnType(self, rel, cmd, new, objtype):
        column = cmd.name
        col = cmd.def_
        target = _type_of(col.typeName)
        current = self.types.get((rel, column))
        if target is not None:
            self.types[(rel, column)] = target
        if new or target is None:
            return
        fresh = (rel, column) in self.new_columns
        what = "column %s of %s" % (column, _fmt(rel))
        using = not _trivial_using(col.raw_default, column)
        if current is not None:
            change = _classify_change(current, target)
            if using and change in ("same", "free"):
                change = "widen"
            self.type_change(rel, column, what, current, target, change, fresh, " USING an expression" if using else "")
            return
        # The current type is not known (pure static mode without column_types).
        hint = "the current type of %s is not known here: run the live analysis or pass its type" % what
        if using or target.name not in _MAYBE_FREE_TARGETS or target.array:
            self.rewrite_findings(rel, what, "to %s%s" % (target, " USING an expression" if using else ""), hint)
        else:
            self.emit_sized(
                "alter-column-type-rewrite",
                "changing %s to %s rewrites the table under ACCESS EXCLUSIVE unless it only widens a binary-compatible "
                "type (varchar(n) to varchar(m > n) or text, numeric(p,s) to numeric(q > p,s), higher timestamp precision); "
                "%s" % (what, target, hint),
                rel,
                severity="warning",
            )
        if not fresh:
            self.emit_old(
                "incompatible-column-type",
                "changing %s to %s: if this narrows the type or converts between type families, the old version's reads "
                "and writes can fail; %s. Safe alternative: add a new column of the new type, write both, backfill, switch "
                "readers, drop the old column later" % (what, target, hint),
                rel, self.column_used(rel, column), "it", severity="warning",
            )

    def type_change(self, rel, column, what, current, target, change, fresh, using=""):
        if change in ("same", "free"):
            return
        self.rewrite_findings(rel, what, "from %s to %s%s" % (current, target, using), "")
        if fresh:
            return
        if change == "narrow":
            self.emit_old(
                "narrow-column-type",
                "changing %s from %s to %s narrows it: the old version's writes of values that no longer fit fail; widen "
                "instead, or add a new column and migrate (expand/contract)" % (what, current, target),
                rel, self.column_used(rel, column), "it",
            )
        elif change in ("lossy", "incompatible"):
            self.emit_old(
                "incompatible-column-type",
                "changing %s from %s to %s is not a compatible widening: the old version's reads and writes expect %s; add a "
                "new column of type %s, write both, backfill, switch readers, and drop the old column in a later release"
                % (what, current, target, current, target),
                rel, self.column_used(rel, column), "it",
            )
        if change in ("narrow", "lossy"):
            self.emit(
                "lossy-type-change",
                "changing %s from %s to %s truncates, rounds or rejects values that do not fit: a rollback cannot restore "
                "them; keep the old column (or a copy) until the change is proven" % (what, current, target),
                rel,
            )

    def rewrite_findings(self, rel, what, change, hint):
        suffix = "; %s" % hint if hint else ""
        self.emit_sized(
            "alter-column-type-rewrite",
            "changing %s %s rewrites the whole table and its indexes%s" % (what, change, suffix),
            rel,
        )
        self.emit_sized(
            "alter-column-type-lock",
            "changing %s %s holds ACCESS EXCLUSIVE for the whole rewrite, blocking reads and writes; add a new column of the "
            "new type, keep it in sync with a trigger, backfill in batches, then switch over" % (what, change),
            rel,
        )

    def alter_SetExpression(self, rel, cmd, new, objtype):
        self.emit_sized(
            "set-generated-expression",
            "SET EXPRESSION on column %s of %s recomputes it for every row, rewriting the table under ACCESS EXCLUSIVE; add a "
            "new generated column (or trigger-maintained one) and switch over" % (cmd.name, _fmt(rel)),
            rel,
        )

    def alter_SetTableSpace(self, rel, cmd, new, objtype):
        self.emit_sized(
            "set-tablespace",
            "SET TABLESPACE copies every block of %s under ACCESS EXCLUSIVE; move it in a maintenance window, or with "
            "pg_repack --tablespace" % _fmt(rel),
            rel,
        )

    def alter_SetLogged(self, rel, cmd, new, objtype):
        self.emit_sized(
            "set-logged",
            "SET LOGGED / UNLOGGED rewrites %s under ACCESS EXCLUSIVE; do it in a maintenance window" % _fmt(rel),
            rel,
        )

    alter_SetUnLogged = alter_SetLogged

    def alter_SetAccessMethod(self, rel, cmd, new, objtype):
        self.emit_sized(
            "set-access-method",
            "SET ACCESS METHOD rewrites %s under ACCESS EXCLUSIVE; do it in a maintenance window" % _fmt(rel),
            rel,
        )

    # -- renames -----------------------------------------------------------------
    def on_RenameStmt(self, node, schema):
        rtype = _enum_name(node.renameType)
        if node.relation is not None:
            rel = _rel(node.relation, schema)
        else:
            rel = None
        if rtype == "OBJECT_COLUMN":
            self.rename_column(rel, node.subname, node.newname)
        elif rtype in ("OBJECT_TABLE", "OBJECT_FOREIGN_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW"):
            new_rel = (rel[0], node.newname)
            self.original[new_rel] = self.known_as(rel)
            self.retarget(rel, new_rel)
            if self.is_new(rel):
                self.created.add(new_rel)
            else:
                rule = "rename-table" if rtype in ("OBJECT_TABLE", "OBJECT_FOREIGN_TABLE") else "rename-view"
                self.moved[rel] = self.emit_old(
                    rule,
                    "renaming %s %s to %s breaks the old version's queries that use the old name; keep the old name "
                    "working for the old version (e.g. rename, then CREATE VIEW %s AS SELECT * FROM %s, an updatable view) "
                    "and drop it once no running version uses it" % (
                        _OBJ_WORDS.get(rtype, "table").lower(), _fmt(rel), node.newname, _fmt(rel), _fmt(new_rel)),
                    rel, self.old is not None and self.old.table(self.known_as(rel)), "it",
                )
            self.access_exclusive(rel, "ALTER %s ... RENAME" % _OBJ_WORDS.get(rtype, "TABLE"))
        elif rtype in _FUNCTION_OBJECTS:
            name = _strings(node.object.objname)[-1]
            if name not in self.created_routines:
                self.emit_old(
                    "rename-function",
                    "renaming %s %s to %s breaks the old version's calls of it; create the new name as a wrapper (or copy) "
                    "and drop the old one once no running version calls it" % (_FUNCTION_OBJECTS[rtype], name, node.newname),
                    None, self.old is not None and self.old.function(name), "it",
                )
        elif rtype in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
            name = _strings(node.object)[-1] if isinstance(node.object, tuple) else None
            self.rename_type(name, node.newname)
            if name in self.created_types:
                self.created_types.add(node.newname)
                return
            self.emit_old(
                "rename-type",
                "renaming type %s to %s breaks the old version's casts to the old name; keep using the old name until no "
                "running version casts to it" % (name, node.newname),
                None, self.old is not None and name is not None and self.old.type(name), "it",
            )
        elif rtype == "OBJECT_SCHEMA":
            self.emit(
                "rename-schema",
                "renaming schema %s to %s breaks every qualified name and search_path of the old version; create the new "
                "objects alongside and move over in several releases" % (node.subname, node.newname),
            )
        elif rtype == "OBJECT_TABCONSTRAINT" and rel is not None:
            self.access_exclusive(rel, "ALTER TABLE ... RENAME CONSTRAINT")

    def rename_type(self, old_name, new_name):
        """Columns of type ``old_name`` now have type ``new_name``."""
        for key, col_type in list(self.types.items()):
            parts = col_type.name.split(".")
            if parts[-1] == old_name:
                parts[-1] = new_name
                self.types[key] = _Type(".".join(parts), col_type.mods, col_type.array)

    def rename_column(self, rel, old_name, new_name):
        if (rel, old_name) in self.types:
            self.types[(rel, new_name)] = self.types.pop((rel, old_name))
        if (rel, old_name) in self.defaults:
            self.defaults.discard((rel, old_name))
            self.defaults.add((rel, new_name))
        if self.is_new(rel) or (rel, old_name) in self.new_columns:
            self.new_columns.discard((rel, old_name))
            self.new_columns.add((rel, new_name))
            return
        self.emit_old(
            "rename-column",
            "renaming column %s of %s to %s breaks the old version's queries that use the old name; add the new column, "
            "keep both in sync with a trigger, backfill, switch readers and writers, and drop the old column in a later "
            "release (expand/contract)" % (old_name, _fmt(rel), new_name),
            rel, self.column_used(rel, old_name), "it",
        )
        self.access_exclusive(rel, "ALTER TABLE ... RENAME COLUMN")

    def retarget(self, old_rel, new_rel):
        for key in [k for k in self.types if k[0] == old_rel]:
            self.types[(new_rel, key[1])] = self.types.pop(key)
        for columns in (self.new_columns, self.defaults):
            for key in [k for k in columns if k[0] == old_rel]:
                columns.discard(key)
                columns.add((new_rel, key[1]))

    def on_AlterObjectSchemaStmt(self, node, schema):
        otype = _enum_name(node.objectType)
        if node.relation is not None:
            rel = _rel(node.relation, schema)
            new_rel = (node.newschema, rel[1])
            self.original[new_rel] = self.known_as(rel)
            self.retarget(rel, new_rel)
            if self.is_new(rel):
                self.created.add(new_rel)
                return
            self.moved[rel] = self.emit_old(
                "set-schema",
                "moving %s to schema %s breaks the old version's queries that name it (or find it through search_path); "
                "leave a view under the old name until no running version uses it" % (_fmt(rel), node.newschema),
                rel, self.old is not None and self.old.table(self.known_as(rel)), "it",
            )
            self.access_exclusive(rel, "ALTER ... SET SCHEMA")
        elif otype in _FUNCTION_OBJECTS or otype in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
            obj = node.object
            name = _strings(obj.objname if _kind(obj) == "ObjectWithArgs" else obj)[-1] if obj is not None else None
            if name in self.created_routines:
                return
            used = self.old is not None and name is not None and (self.old.function(name) or self.old.type(name))
            self.emit_old(
                "set-schema",
                "moving %s to schema %s breaks the old version's references to it; keep a copy under the old schema until "
                "no running version uses it" % (name, node.newschema),
                None, used, "it",
            )

    def on_AlterEnumStmt(self, node, schema):
        if node.oldVal is not None:
            self.emit(
                "rename-enum-value",
                "renaming value %r of type %s to %r: the old version still writes %r (rejected now) and reads a label it does "
                "not know; add the new value with ADD VALUE, migrate rows, and stop using the old one in a later release"
                % (node.oldVal, ".".join(_strings(node.typeName)), node.newVal, node.oldVal),
            )

    # -- drops -------------------------------------------------------------------
    def on_DropStmt(self, node, schema):
        rtype = _enum_name(node.removeType)
        cascade = _enum_name(node.behavior) == "DROP_CASCADE"
        if rtype in ("OBJECT_TABLE", "OBJECT_FOREIGN_TABLE"):
            for obj in node.objects or ():
                rel = _names_rel(obj, schema)
                if self.is_new(rel):
                    continue
                self.emit_old(
                    "drop-table",
                    "dropping table %s breaks the old version's queries on it; stop using it in a release first, and drop it "
                    "in a later migration once no running version uses it" % _fmt(rel),
                    rel, self.old is not None and self.old.table(self.known_as(rel)), "it",
                )
                if rtype == "OBJECT_TABLE":
                    self.emit(
                        "drop-table-data",
                        "dropping table %s deletes its rows: a rollback recreates an empty table; rename it aside (or dump "
                        "it) and drop it only after the new version is proven" % _fmt(rel),
                        rel,
                    )
                self.access_exclusive(rel, "DROP TABLE")
        elif rtype in ("OBJECT_VIEW", "OBJECT_MATVIEW"):
            for obj in node.objects or ():
                rel = _names_rel(obj, schema)
                if self.is_new(rel):
                    continue
                self.emit_old(
                    "drop-view",
                    "dropping %s %s breaks the old version's queries on it; drop it in a later migration, once no running "
                    "version uses it" % (_RELATION_DROPS[rtype], _fmt(rel)),
                    rel, self.old is not None and self.old.table(self.known_as(rel)), "it",
                )
                self.access_exclusive(rel, "DROP VIEW")
        elif rtype == "OBJECT_INDEX":
            for obj in node.objects or ():
                rel = _names_rel(obj, schema)
                if rel in self.created_indexes:
                    # Created by this file: unknown to the old version, but its table's lock is still taken.
                    if not node.concurrent:
                        self.access_exclusive(self.created_indexes[rel], "DROP INDEX")
                    continue
                if not node.concurrent:
                    self.emit(
                        "drop-index-non-concurrent",
                        "DROP INDEX %s takes ACCESS EXCLUSIVE on its table, queued behind every running transaction on it; "
                        "use DROP INDEX CONCURRENTLY as the only statement of its migration step" % _fmt(rel),
                        rel,
                    )
                    self.access_exclusive(rel, "DROP INDEX")
        elif rtype in _FUNCTION_OBJECTS:
            for obj in node.objects or ():
                name = _strings(obj.objname)[-1] if _kind(obj) == "ObjectWithArgs" else _strings(obj)[-1]
                if name in self.created_routines:
                    continue
                self.emit_old(
                    "drop-function",
                    "dropping %s %s breaks the old version's calls of it; drop it in a later migration, once no running "
                    "version calls it" % (_FUNCTION_OBJECTS[rtype], name),
                    None, self.old is not None and self.old.function(name), "it",
                )
        elif rtype in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
            for obj in node.objects or ():
                parts = [_type_of(obj)] if _kind(obj) == "TypeName" else []
                name = parts[0].name.split(".")[-1] if parts and parts[0] is not None else None
                if name in self.created_types:
                    continue
                self.emit_old(
                    "drop-type",
                    "dropping type %s breaks the old version's casts to it%s; drop it once no running version uses it"
                    % (name, " and, with CASCADE, drops the columns of that type with their data" if cascade else ""),
                    None, self.old is not None and name is not None and self.old.type(name), "it",
                )
        elif rtype == "OBJECT_SEQUENCE":
            for obj in node.objects or ():
                rel = _names_rel(obj, schema)
                if self.is_new(rel):
                    continue
                self.emit_old(
                    "drop-sequence",
                    "dropping sequence %s breaks the old version's nextval() calls and column defaults using it; drop it "
                    "once no running version uses it" % _fmt(rel),
                    rel, self.old is not None and self.old.sequence(rel[1]), "it",
                )
        elif rtype == "OBJECT_SCHEMA":
            for obj in node.objects or ():
                name = obj.sval if _kind(obj) == "String" else ".".join(_strings(obj))
                self.emit(
                    "drop-schema",
                    "dropping schema %s breaks every old query on its objects; empty it over several releases and drop it "
                    "last" % name,
                )
                if cascade:
                    self.emit(
                        "drop-schema-cascade",
                        "DROP SCHEMA %s CASCADE drops every table in it with its rows: a rollback cannot bring them back; "
                        "drop the objects one by one, after a dump" % name,
                    )
            return
        if cascade and rtype not in ("OBJECT_INDEX",):
            self.emit(
                "drop-cascade",
                "CASCADE also drops every object that depends on what is dropped (views, foreign keys, for types the columns "
                "of that type with their data), which the old version may use; drop dependents explicitly",
                _first_rel(self.stmt),
            )

    def on_TruncateStmt(self, node, schema):
        for rv in node.relations or ():
            rel = _rel(rv, schema)
            if self.is_new(rel):
                continue
            self.emit(
                "truncate",
                "TRUNCATE %s deletes every row%s: a rollback cannot bring them back; delete what must go with a WHERE, in "
                "batches, after a copy" % (_fmt(rel), " and those of the tables referencing it (CASCADE)"
                                           if _enum_name(node.behavior) == "DROP_CASCADE" else ""),
                rel,
            )
            self.access_exclusive(rel, "TRUNCATE")

    def on_DeleteStmt(self, node, schema):
        rel = _rel(node.relation, schema)
        if node.whereClause is None and not self.is_new(rel):
            self.emit(
                "delete-without-where",
                "DELETE FROM %s without WHERE deletes every row: a rollback cannot bring them back; add the WHERE clause "
                "that selects what must go" % _fmt(rel),
                rel,
            )

    def on_UpdateStmt(self, node, schema):
        rel = _rel(node.relation, schema)
        if node.whereClause is None and not self.is_new(rel):
            names = [t.name for t in node.targetList or () if getattr(t, "name", None)]
            self.emit_sized(
                "backfill-unbatched",
                "UPDATE %s without WHERE changes every row in one transaction: it holds a row lock on each row until it "
                "commits, so the old version's UPDATE and DELETE of any of them wait, and the replicas lag behind one huge "
                "transaction; update in key-ordered batches (WHERE id >= $1 AND id < $2), each its own transaction" % _fmt(rel),
                rel,
            )
            if names and all((rel, n) in self.new_columns for n in names):
                return  # a backfill of columns this file added: nothing existed to overwrite
            self.emit(
                "update-without-where",
                "UPDATE %s without WHERE overwrites %s in every row: the previous values are lost for a rollback; add a WHERE "
                "clause (e.g. WHERE %s IS NULL for a backfill), copy the old values first, and update in batches"
                % (_fmt(rel), ", ".join(names) or "columns", names[0] if names else "col"),
                rel,
            )

    # -- indexes and maintenance ---------------------------------------------------
    def on_IndexStmt(self, node, schema):
        rel = _rel(node.relation, schema)
        if node.idxname:
            self.created_indexes[(rel[0], node.idxname)] = rel
        if self.is_new(rel):
            return
        if node.unique:
            columns = [e.name for e in node.indexParams or () if getattr(e, "name", None)]
            self.constraint_old_writes(rel, "UNIQUE index%s" % (" %s" % node.idxname if node.idxname else ""), columns, [])
        if not node.concurrent:
            self.emit_sized(
                "create-index-non-concurrent",
                "CREATE %sINDEX %son %s without CONCURRENTLY holds a SHARE lock for the whole build: every INSERT, UPDATE and "
                "DELETE waits; use CREATE %sINDEX CONCURRENTLY as the only statement of its migration step"
                % ("UNIQUE " if node.unique else "", (node.idxname + " ") if node.idxname else "", _fmt(rel),
                   "UNIQUE " if node.unique else ""),
                rel,
            )

    def on_ReindexStmt(self, node, schema):
        if _option_on(node.params, "concurrently"):
            return
        kind = _enum_name(node.kind)
        rel = _rel(node.relation, schema) if node.relation is not None else None
        table = self.created_indexes.get(rel, rel) if kind == "REINDEX_OBJECT_INDEX" else rel
        if table is not None and self.is_new(table):
            return
        if self.version >= 120000:
            alternative = "use REINDEX ... CONCURRENTLY as the only statement of its migration step"
        else:
            alternative = "before PostgreSQL 12, build a replacement with CREATE INDEX CONCURRENTLY and swap it in"
        if rel is not None:
            target = _fmt(rel)
        else:
            target = "%s%s" % (kind.replace("REINDEX_OBJECT_", ""), " %s" % node.name if node.name else "")
        self.emit_sized(
            "reindex-non-concurrent",
            "REINDEX %s blocks writes to the table and reads that use the index for the whole rebuild; %s"
            % (target, alternative),
            table,
        )
        if kind == "REINDEX_OBJECT_INDEX":
            self.access_exclusive(rel, "REINDEX INDEX")

    def on_RefreshMatViewStmt(self, node, schema):
        rel = _rel(node.relation, schema)
        if node.concurrent or self.is_new(rel):
            return
        self.emit_sized(
            "refresh-matview-non-concurrent",
            "REFRESH MATERIALIZED VIEW %s takes ACCESS EXCLUSIVE: reads of the view block until it is rebuilt; give it a "
            "UNIQUE index and use REFRESH MATERIALIZED VIEW CONCURRENTLY" % _fmt(rel),
            rel,
        )
        self.access_exclusive(rel, "REFRESH MATERIALIZED VIEW")

    def on_LockStmt(self, node, schema):
        mode = node.mode if isinstance(node.mode, int) else _ACCESS_EXCLUSIVE
        if mode < _SHARE:
            return
        for rv in node.relations or ():
            rel = _rel(rv, schema)
            if self.is_new(rel):
                continue
            self.emit_sized(
                "lock-table",
                "LOCK TABLE %s IN %s MODE blocks the old version's %s until the end of the transaction; lock only as long as "
                "needed, with lock_timeout set, or avoid the explicit lock"
                % (_fmt(rel), _LOCK_MODES.get(mode, "ACCESS EXCLUSIVE"),
                   "reads and writes" if mode == _ACCESS_EXCLUSIVE else "writes"),
                rel,
            )
            if mode == _ACCESS_EXCLUSIVE and not node.nowait:
                self.access_exclusive(rel, "LOCK TABLE")

    def on_VacuumStmt(self, node, schema):
        if not node.is_vacuumcmd or not _option_on(node.options, "full"):
            return
        rels = [_rel(vr.relation, schema) for vr in node.rels or () if vr.relation is not None] or [None]
        for rel in rels:
            if rel is not None and self.is_new(rel):
                continue
            name = _fmt(rel) if rel else "every table of the database"
            self.emit_sized(
                "vacuum-full-rewrite",
                "VACUUM FULL rewrites %s; use pg_repack (or pg_squeeze), which rebuilds online" % name,
                rel,
            )
            self.emit_sized(
                "vacuum-full-lock",
                "VACUUM FULL holds ACCESS EXCLUSIVE on %s for the whole rewrite, blocking reads and writes; use pg_repack "
                "(or pg_squeeze) instead" % name,
                rel,
            )
            self.access_exclusive(rel, "VACUUM FULL")

    def on_ClusterStmt(self, node, schema):
        rel = _rel(node.relation, schema) if node.relation is not None else None
        if rel is not None and self.is_new(rel):
            return
        name = _fmt(rel) if rel else "every previously clustered table"
        self.emit_sized("cluster-rewrite", "CLUSTER rewrites %s in index order; use pg_repack --order-by, which rebuilds "
                        "online" % name, rel)
        self.emit_sized("cluster-lock", "CLUSTER holds ACCESS EXCLUSIVE on %s for the whole rewrite, blocking reads and "
                        "writes; use pg_repack --order-by instead" % name, rel)
        self.access_exclusive(rel, "CLUSTER")


_OBJ_WORDS = {
    "OBJECT_TABLE": "TABLE", "OBJECT_FOREIGN_TABLE": "FOREIGN TABLE", "OBJECT_VIEW": "VIEW",
    "OBJECT_MATVIEW": "MATERIALIZED VIEW", "OBJECT_INDEX": "INDEX", "OBJECT_SEQUENCE": "SEQUENCE",
}


def _describe_kind(stmt):
    node = stmt.node
    kind = stmt.kind
    if kind == "IndexStmt":
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt":
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt":
        return "REINDEX %s" % ("CONCURRENTLY" if _option_on(node.params, "concurrently") else "SCHEMA/DATABASE/SYSTEM")
    if kind == "VacuumStmt":
        return "VACUUM"
    if kind == "ClusterStmt":
        return "CLUSTER without a table"
    if kind == "AlterEnumStmt":
        return "ALTER TYPE ... ADD VALUE"
    if kind == "AlterTableStmt":
        return "DETACH PARTITION CONCURRENTLY"
    return {
        "CreatedbStmt": "CREATE DATABASE", "DropdbStmt": "DROP DATABASE", "AlterSystemStmt": "ALTER SYSTEM",
        "CreateTableSpaceStmt": "CREATE TABLESPACE", "DropTableSpaceStmt": "DROP TABLESPACE",
        "CreateSubscriptionStmt": "CREATE SUBSCRIPTION", "DropSubscriptionStmt": "DROP SUBSCRIPTION",
    }.get(kind, kind)


def _first_rel(stmt):
    return _split_qualified(stmt.tables[0]) if stmt.tables else None


def _split_qualified(name):
    if isinstance(name, tuple):
        return name
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else ("public", schema)


def _is_fk(con):
    return con is not None and _kind(con) == "Constraint" and _enum_name(con.contype) == "CONSTR_FOREIGN"


def _constraint_word(con):
    return {
        "CONSTR_CHECK": "CHECK constraint", "CONSTR_FOREIGN": "FOREIGN KEY", "CONSTR_PRIMARY": "PRIMARY KEY",
        "CONSTR_UNIQUE": "UNIQUE constraint", "CONSTR_EXCLUSION": "EXCLUDE constraint", "CONSTR_NOTNULL": "NOT NULL constraint",
    }.get(_enum_name(con.contype), "constraint")


def _constraint_columns(con):
    contype = _enum_name(con.contype)
    if contype == "CONSTR_CHECK":
        return sorted(_column_refs(con.raw_expr))
    if contype == "CONSTR_FOREIGN":
        return _strings(con.fk_attrs)
    if contype == "CONSTR_EXCLUSION":
        return sorted(n for pair in con.exclusions or () for elem in pair[:1] for n in [getattr(elem, "name", None)] if n)
    return _strings(con.keys)


def _zero_setting_text(value):
    digits = ""
    for char in str(value).strip():
        if not char.isdigit():
            break
        digits += char
    return digits != "" and int(digits) == 0


def _zero_setting(args):
    for arg in args or ():
        value = getattr(arg, "val", None)
        if value is None:
            continue
        if _kind(value) == "Integer":
            return value.ival == 0
        if _kind(value) == "String":
            return _zero_setting_text(value.sval)
    return False


def column_types_from_sql(text_or_statements):
    """{'schema.table': {'column': 'type'}} of the tables a schema file (or migrations) creates.

    Follows CREATE TABLE, ADD COLUMN, ALTER COLUMN TYPE, renames and drops
    in order, so the result of base schema + earlier migrations can be given
    as analyze_static(column_types=...) in static mode.
    """
    _require_pglast()
    statements = parse_sql(text_or_statements) if isinstance(text_or_statements, str) else list(text_or_statements)
    analyzer = _Analyzer(150000, None, 0, None, RULES, None)
    for stmt in statements:
        analyzer.statement(stmt)
    out = {}
    for (rel, column), col_type in sorted(analyzer.types.items()):
        out.setdefault(_fmt(rel), {})[column] = str(col_type)
    return out


def analyze_static(text_or_statements, server_version=150000, table_rows=None, large_table_rows=100000,
                   old_queries=None, ignore_rules=(), column_types=None):
    """Static findings for a migration.

    ``text_or_statements``: the SQL text or parse_sql()'s statements.
    ``server_version``: server_version_num the rules assume (150000).
    ``table_rows``: {'schema.table': estimated rows or None}, or None when
    nothing is known (every existing table counts as large).
    ``old_queries``: SQL strings the running (old) version issues, or None.
    ``ignore_rules``: rule ids to leave out.
    ``column_types``: {'schema.table': {'column': 'character varying(50)'}},
    current types as format_type() writes them, so type changes are
    classified exactly (optional).

    Returns {"statements": [Statement.as_dict()...], "findings": [...]}.
    """
    _require_pglast()
    if isinstance(text_or_statements, str):
        statements = parse_sql(text_or_statements)
    else:
        statements = list(text_or_statements)
    analyzer = _Analyzer(server_version, table_rows, large_table_rows, old_queries, ignore_rules, column_types)
    for stmt in statements:
        analyzer.statement(stmt)
    return {
        "statements": [s.as_dict(analyzer.version) for s in statements],
        "findings": analyzer.findings,
    }
