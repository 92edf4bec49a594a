# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection helpers shared by every module of the collection.

One argument spec, one way to turn module options into libpq parameters, one
``connect()`` whose failure message starts with "unable to connect to
database:", and identifier handling that never formats SQL by hand: names are
resolved through the catalog with bound parameters and quoted with
``psycopg2.sql.Identifier``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import traceback

PSYCOPG2_IMP_ERR = None
try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql

    HAS_PSYCOPG2 = True
except ImportError:  # pragma: no cover - exercised only without the library
    psycopg2 = None
    sql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMP_ERR = traceback.format_exc()

SSL_MODES = ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]

# Session settings that make the text form of every value the same on every
# node, whatever the server's postgresql.conf says: row hashes are computed
# over that text, so two nodes must render identical data identically.
CANONICAL_SESSION = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
)

MAX_IDENTIFIER_BYTES = 63
_PLAIN_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
RESERVED_SCHEMAS = ("information_schema", "public")


def journal_schema_problem(name, default="stateful_rollback"):
    """Why ``name`` cannot be the bookkeeping schema (journal, ledger, audit table), or None.

    One rule for every module that takes ``journal_schema``: a plain identifier (letters, digits, _ and $, starting
    with a letter or _, at most 63 bytes), not a system or shared schema. The name is still always quoted.
    """
    if not isinstance(name, str) or not name:
        return "journal_schema must be a non-empty schema name"
    if not _PLAIN_SCHEMA_NAME.match(name) or len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        return ("journal_schema %r is not a valid schema name: use letters, digits, _ and $, starting with a letter or _, "
                "at most %d bytes" % (name, MAX_IDENTIFIER_BYTES))
    if name.lower().startswith("pg_") or name.lower() in RESERVED_SCHEMAS:
        return "journal_schema %r is reserved; use a dedicated schema such as %s" % (name, default)
    return None


class PostgresError(Exception):
    """An error whose message is meant for the operator as it is."""


def postgres_common_argument_spec():
    """Connection options named as community.postgresql names them."""
    return dict(
        login_user=dict(type="str", default="postgres", aliases=["login"]),
        login_password=dict(type="str", default="", no_log=True),
        login_host=dict(type="str", default="", aliases=["host"]),
        login_unix_socket=dict(type="str", default="", aliases=["unix_socket"]),
        login_port=dict(type="int", default=5432, aliases=["port"]),
        login_db=dict(type="str", default="", aliases=["db"]),
        ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
        ca_cert=dict(type="str", aliases=["ssl_rootcert"]),
        ssl_cert=dict(type="path"),
        ssl_key=dict(type="path", no_log=False),
        connect_timeout=dict(type="int", default=10),
        connect_params=dict(type="dict", default={}),
    )


def replica_argument_spec():
    """Suboptions of one entry of ``replicas``: a connection plus a name.

    Every connection key is optional: what an entry leaves out is taken from
    the primary's options (same user, password and database by default).
    """
    spec = {}
    for key, value in postgres_common_argument_spec().items():
        entry = dict(value)
        entry.pop("default", None)
        spec[key] = entry
    spec["name"] = dict(type="str")
    spec["subscription"] = dict(type="str")
    return spec


CONNECTION_KEYS = tuple(postgres_common_argument_spec().keys())

_LIBPQ_KEYS = {
    "login_host": "host",
    "login_user": "user",
    "login_password": "password",
    "login_port": "port",
    "login_db": "dbname",
    "ssl_mode": "sslmode",
    "ca_cert": "sslrootcert",
    "ssl_cert": "sslcert",
    "ssl_key": "sslkey",
    "connect_timeout": "connect_timeout",
}


def get_conn_params(options, fallback=None):
    """Map module options to libpq keyword parameters.

    ``fallback`` (the primary's options) fills what ``options`` leaves empty,
    so a replica entry may name only its host and port.
    """
    merged = dict(fallback or {})
    for key, value in (options or {}).items():
        if value not in (None, "") or key not in merged:
            merged[key] = value
    params = {}
    for option, libpq in _LIBPQ_KEYS.items():
        value = merged.get(option)
        if value not in (None, ""):
            params[libpq] = value
    # A unix socket directory wins over an empty host, as in community.postgresql.
    if merged.get("login_unix_socket") and not merged.get("login_host"):
        params["host"] = merged["login_unix_socket"]
    for key, value in (merged.get("connect_params") or {}).items():
        params[key] = value
    return params


def describe(params):
    """A short, secret-free name for a connection: user@host:port/db."""
    return "%s@%s:%s/%s" % (
        params.get("user", ""),
        params.get("host", "local"),
        params.get("port", 5432),
        params.get("dbname", ""),
    )


def redact(text, params):
    """Remove the password of ``params`` from ``text`` (libpq echoes DSNs)."""
    password = (params or {}).get("password")
    if password and text:
        text = text.replace(str(password), "********")
    return text


def connect(params, application_name="stateful.rollback", autocommit=True, canonical=True):
    """Open a connection; failures raise PostgresError("unable to connect to database: ...")."""
    if not HAS_PSYCOPG2:
        raise PostgresError("psycopg2 is required: pip install psycopg2-binary")
    kwargs = dict(params)
    kwargs.setdefault("application_name", application_name)
    try:
        conn = psycopg2.connect(**kwargs)
    except (psycopg2.Error, TypeError, ValueError) as exc:
        message = redact(str(exc).strip(), params)
        raise PostgresError("unable to connect to database: %s (%s)" % (message, describe(params)))
    conn.autocommit = autocommit
    if canonical:
        with conn.cursor() as cur:
            for name, value in CANONICAL_SESSION:
                cur.execute("SELECT set_config(%s, %s, false)", (name, value))
    return conn


def server_version(conn):
    """Server version as an integer, e.g. 150018."""
    return conn.server_version


def fetch_all(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def fetch_all_with(conn, settings, query, params=None):
    """fetch_all inside its own transaction with planner settings applied locally.

    The connection must be in autocommit mode (as connect() leaves it); the
    settings end with the transaction, whatever happens.
    """
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            for name, value in settings:
                cur.execute("SELECT set_config(%s, %s, true)", (name, value))
            cur.execute(query, params)
            rows = cur.fetchall()
        except BaseException:
            if not conn.closed:
                cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return rows


def fetch_one(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def fetch_value(conn, query, params=None):
    row = fetch_one(conn, query, params)
    return row[0] if row else None


# --- LSNs ------------------------------------------------------------------

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def lsn_to_int(lsn):
    """'16/B374D848' -> integer byte position; None stays None."""
    if lsn is None:
        return None
    match = _LSN_RE.match(str(lsn))
    if not match:
        raise ValueError("not a PostgreSQL LSN: %r" % (lsn,))
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


def int_to_lsn(value):
    if value is None:
        return None
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


# --- identifiers -----------------------------------------------------------


def _check_part(part, whole):
    if part == "":
        raise PostgresError("malformed table name %r: empty name part" % (whole,))
    if "\x00" in part:
        raise PostgresError("malformed table name %r: NUL byte" % (whole,))
    if len(part.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise PostgresError(
            "malformed table name %r: %r is longer than %d bytes" % (whole, part, MAX_IDENTIFIER_BYTES)
        )
    return part


def split_qualified_name(name, default_schema="public"):
    """Split ``schema.table`` (parts may be double-quoted) into (schema, table).

    Unquoted parts are folded to lower case as PostgreSQL folds them; quoted
    parts are taken literally with ``""`` meaning one quote. Nothing here
    ever reaches SQL text: the parts are looked up in the catalog as bound
    parameters and quoted with psycopg2.sql.Identifier afterwards.
    """
    if not isinstance(name, str) or not name.strip():
        raise PostgresError("malformed table name %r: expected 'table' or 'schema.table'" % (name,))
    parts = []
    i, text = 0, name.strip()
    while True:
        if i < len(text) and text[i] == '"':
            j, buf = i + 1, []
            while True:
                if j >= len(text):
                    raise PostgresError("malformed table name %r: unterminated quote" % (name,))
                if text[j] == '"':
                    if j + 1 < len(text) and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append(_check_part("".join(buf), name))
            i = j + 1
        else:
            j = i
            while j < len(text) and text[j] != ".":
                if text[j] == '"':
                    raise PostgresError("malformed table name %r: stray quote" % (name,))
                j += 1
            parts.append(_check_part(text[i:j].lower(), name))
            i = j
        if i >= len(text):
            break
        if text[i] != ".":
            raise PostgresError("malformed table name %r: expected '.' after a quoted part" % (name,))
        i += 1
        if i >= len(text):
            raise PostgresError("malformed table name %r: ends with '.'" % (name,))
    if len(parts) == 1:
        return default_schema, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise PostgresError("malformed table name %r: expected 'table' or 'schema.table'" % (name,))


def qualified(schema, table):
    """Display form of a table name, quoted only where PostgreSQL needs it."""
    return "%s.%s" % (_display(schema), _display(table))


def _display(part):
    if re.match(r"^[a-z_][a-z0-9_$]*$", part):
        return part
    return '"%s"' % part.replace('"', '""')


def ident(*parts):
    """psycopg2.sql.Identifier for a (possibly qualified) name."""
    return sql.Identifier(*parts)


def table_exists(cur, schema, table):
    """Whether schema.table exists as a table (plain or partitioned), through the cursor ``cur``."""
    cur.execute(
        "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    )
    return cur.fetchone() is not None
