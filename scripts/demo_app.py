"""The demo application the sandbox runs for Deployments in namespace ``sandbox``.

A tiny HTTP service (stdlib only) standing in for a real app image. The
sandbox's Deployment scale hook (scripts/sandbox_kube.py) starts one process
per replica with the image's version, its port and its database (the
container's DATABASE_URL, from the Secret the Deployment references)::

    DATABASE_URL=postgresql://app:...@127.0.0.1:24320/app \\
        python3 scripts/demo_app.py --version 2.0.0 --port 24380 --psql /usr/lib/postgresql/15/bin/psql \\
        [--flags-url http://127.0.0.1:PORT/api/v1/namespaces/sandbox/configmaps/web-flags]

Endpoints:

``/healthz``  200 when the queries this version runs work against the database
              (see QUERIES: 1.x reads ``customers.name``, 2.0 also
              ``customers.full_name``, 2.1 a table ``loyalty_points`` that no
              release creates, 3.x no longer ``name``), 503 with the error
              otherwise, or when the feature flag ``fail_health`` is ``"true"``.
``/version``  the version and the current feature flags.

Feature flags are read from the ConfigMap at ``--flags-url`` on every request,
like an app polling its flag service.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What each version reads: its view of the schema. 2.0 needs the column release
# 2.0.0's migration adds; 2.1 also reads a table no release creates (the bug a
# drill rolls back); 3.x no longer reads the column release 3.0.0 drops.
QUERIES = {
    (1, 0): ["SELECT count(*) FROM customers", "SELECT email, name FROM customers ORDER BY id LIMIT 1"],
    (1, 1): ["SELECT count(*) FROM customers", "SELECT email, name FROM customers ORDER BY id LIMIT 1",
             "SELECT count(*) FROM orders"],
    (2, 0): ["SELECT count(*) FROM customers", "SELECT email, name, full_name FROM customers ORDER BY id LIMIT 1"],
    (2, 1): ["SELECT count(*) FROM customers", "SELECT email, name, full_name FROM customers ORDER BY id LIMIT 1",
             "SELECT count(*) FROM loyalty_points"],
    (3, 0): ["SELECT count(*) FROM customers", "SELECT email, full_name FROM customers ORDER BY id LIMIT 1"],
}


def queries_for(version: str):
    parts = (version.split(".") + ["0", "0"])[:2]
    try:
        key = (int(parts[0]), int(parts[1]))
    except ValueError:
        key = (1, 0)
    if key in QUERIES:
        return QUERIES[key]
    same_major = sorted(k for k in QUERIES if k[0] == key[0])
    return QUERIES[same_major[-1]] if same_major else QUERIES[max(QUERIES)]


class App:
    def __init__(self, version, database_url, psql, flags_url=None):
        self.version = version
        # psql gets the URL without its password, and the password in PGPASSWORD: a child's argv is public.
        parts = urllib.parse.urlsplit(database_url)
        self.psql_env = dict(os.environ)
        if parts.password is not None:
            self.psql_env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
            userinfo, at, hostport = parts.netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            parts = parts._replace(netloc=user + at + hostport if user else hostport)
        self.database_url = urllib.parse.urlunsplit(parts)
        self.psql = psql
        self.flags_url = flags_url

    def flags(self):
        if not self.flags_url:
            return {}
        try:
            with urllib.request.urlopen(self.flags_url, timeout=3) as resp:
                return dict(json.loads(resp.read()).get("data") or {})
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise

    def health(self):
        flags = self.flags()
        if str(flags.get("fail_health", "")).lower() == "true":
            return 503, {"status": "failing", "version": self.version, "error": "feature flag fail_health is on"}
        queries = queries_for(self.version)
        proc = subprocess.run([self.psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.database_url,
                               "-c", "; ".join(queries)], capture_output=True, text=True, timeout=10, check=False,
                              env=self.psql_env)
        if proc.returncode != 0:
            error = (proc.stderr or proc.stdout).strip().splitlines()
            return 503, {"status": "failing", "version": self.version, "error": error[0] if error else "psql failed"}
        return 200, {"status": "ok", "version": self.version, "flags": flags}


class Handler(BaseHTTPRequestHandler):
    server_version = "stateful-rollback-demo"

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def do_GET(self):
        app = self.server.app
        try:
            if self.path.rstrip("/") == "/healthz":
                code, body = app.health()
            elif self.path.rstrip("/") in ("", "/version"):
                code, body = 200, {"version": app.version, "flags": app.flags()}
            else:
                code, body = 404, {"error": "not found"}
        except Exception as exc:  # pylint: disable=broad-except
            code, body = 500, {"status": "failing", "version": app.version, "error": "%s: %s" % (type(exc).__name__, exc)}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv=None):
    parser = argparse.ArgumentParser(description="the sandbox's demo application")
    parser.add_argument("--version", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="the database (default: the environment's DATABASE_URL, where the sandbox puts it)")
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--flags-url")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("no database: set DATABASE_URL or give --database-url")
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.app = App(args.version, args.database_url, args.psql, args.flags_url)
    print("demo app %s listening on http://%s:%d" % (args.version, args.host, args.port), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
