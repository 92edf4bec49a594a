"""schema_compat_check without Ansible: the same analysis, the same result as JSON.

For a pre-merge pipeline:

    scripts/schema-compat-check --migration 0042.up.sql --rollback 0042.down.sql
    scripts/schema-compat-check --migration 0042.up.sql --login-host db-staging --login-db app \\
        --login-user migrator --old-queries queries-v1.41.sql --fail-on error,data_loss

The password comes from --login-password or PGPASSWORD. Exit status: 0 when the
migration passes the fail_on policy, 1 when it does not (the JSON says why),
2 on bad input or an unreachable server.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _import_path():
    """Where ``ansible_collections`` is: the repo's .collections, or an installed collection's root."""
    local = os.path.join(REPO, ".collections")
    if os.path.isdir(local):
        return local
    parts = REPO.split(os.sep)
    if len(parts) >= 3 and parts[-3:-2] == ["ansible_collections"]:
        return os.sep.join(parts[:-3])
    return None


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="schema-compat-check", description=__doc__.split("\n\n", maxsplit=1)[0])
    src = parser.add_argument_group("migration")
    src.add_argument("--migration", help="path of the up SQL file")
    src.add_argument("--migration-sql", help="the up SQL itself")
    src.add_argument("--rollback", help="path of the down SQL file")
    src.add_argument("--rollback-sql", help="the down SQL itself")
    src.add_argument("--old-queries", help="file of the statements the running app version issues")
    src.add_argument("--old-queries-from", choices=["file", "pg_stat_statements"], default="file")
    src.add_argument("--schema", help="current schema as SQL (pg_dump --schema-only): exact type rules in static mode")
    pol = parser.add_argument_group("policy")
    pol.add_argument("--mode", choices=["static", "live"], help="default: live when a connection is given")
    pol.add_argument("--server-version", type=int, default=150000, help="server_version_num for static rules")
    pol.add_argument("--large-table-rows", type=int, default=100000)
    pol.add_argument("--fail-on", default="error", help="comma-separated severities and/or categories (default: error)")
    pol.add_argument("--ignore-rules", default="", help="comma-separated rule ids")
    pol.add_argument("--scratch", choices=["auto", "always"], default="always")
    pol.add_argument("--timeout", type=int, default=300)
    con = parser.add_argument_group("connection (live mode; defaults from PGHOST, PGPORT, PGUSER, PGDATABASE)")
    con.add_argument("--login-host", default=os.environ.get("PGHOST", ""))
    con.add_argument("--login-port", type=int, default=int(os.environ.get("PGPORT") or 5432))
    con.add_argument("--login-user", default=os.environ.get("PGUSER", "postgres"))
    con.add_argument("--login-password", default=os.environ.get("PGPASSWORD", ""))
    con.add_argument("--login-db", default=os.environ.get("PGDATABASE", ""))
    con.add_argument("--login-unix-socket", default="")
    con.add_argument("--ssl-mode", default="prefer")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON")
    args = parser.parse_args(argv)
    if not args.migration and args.migration_sql is None:
        parser.error("give --migration or --migration-sql")
    return args


def params_from(args):
    def split(value):
        return [item.strip() for item in value.split(",") if item.strip()]

    return dict(
        migration=args.migration, migration_sql=args.migration_sql,
        rollback=args.rollback, rollback_sql=args.rollback_sql,
        old_queries=args.old_queries, old_queries_sql=None, old_queries_from=args.old_queries_from,
        schema=args.schema, schema_sql=None,
        mode=args.mode, server_version=args.server_version, large_table_rows=args.large_table_rows,
        fail_on=split(args.fail_on), ignore_rules=split(args.ignore_rules), scratch=args.scratch, timeout=args.timeout,
        login_host=args.login_host, login_port=args.login_port, login_user=args.login_user,
        login_password=args.login_password, login_db=args.login_db, login_unix_socket=args.login_unix_socket,
        ssl_mode=args.ssl_mode, ca_cert=None, ssl_cert=None, ssl_key=None, connect_timeout=10, connect_params={},
    )


def emit(obj, indent):
    try:
        print(json.dumps(obj, indent=indent, sort_keys=True, default=str))
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    path = _import_path()
    if path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        from ansible_collections.stateful.rollback.plugins.module_utils.compat_runner import CompatFailure, run  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        emit({"failed": True, "msg": "cannot load the analyzer: %s (run scripts/bootstrap)" % exc}, None)
        return 2
    indent = 2 if args.pretty else None
    try:
        result = run(params_from(args))
    except CompatFailure as exc:
        emit(dict(exc.result, failed=True, msg=exc.msg), indent)
        return 1 if "findings" in exc.result else 2
    emit(dict(result, failed=False), indent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
