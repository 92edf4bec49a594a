"""A disposable, real PostgreSQL replication sandbox on 127.0.0.1.

Three nodes live under one sandbox directory (default ``<repo>/.sandbox``,
override with ``SANDBOX_DIR``):

``primary``     read/write server holding database ``app``; publishes every
                table (publication ``stateful_pub``) and serves a physical
                replication slot ``standby_slot``.
``standby``     streaming physical standby built with ``pg_basebackup -R``
                (hot standby, ``application_name=standby``).
``subscriber``  independent cluster subscribed (``stateful_sub``) to the
                primary's publication.

Command line::

    scripts/sandbox up          # create/start everything (idempotent)
    scripts/sandbox status      # exit 0 if all nodes run, 3 otherwise
    scripts/sandbox env [--json]
    scripts/sandbox psql [--superuser] NODE [psql args...]
    scripts/sandbox down        # stop our servers and delete the data

Settings (environment): ``SANDBOX_DIR``, ``SANDBOX_PRIMARY_PORT`` (24320),
``SANDBOX_STANDBY_PORT`` (24321), ``SANDBOX_SUBSCRIBER_PORT`` (24322),
``SANDBOX_APP_PASSWORD``, ``SANDBOX_REPLICATION_PASSWORD``,
``SANDBOX_SUPERUSER_PASSWORD``, ``SANDBOX_TIMEOUT`` (seconds per wait, 120)
and ``SANDBOX_PG_BINDIR`` (default: ``pg_config --bindir`` or the newest
``/usr/lib/postgresql/*/bin``).  As root, servers run as the ``postgres`` OS
user (via runuser); otherwise as the current user.  Every default port, and
every port the tests and benchmarks choose, lies below the kernel's ephemeral
range (32768-60999 on Linux), so no outgoing connection can hold it.

The module is importable (stdlib only) so tests can drive it::

    import sandbox
    cfg = sandbox.Config.from_env()
    sandbox.up(cfg); sandbox.sync_table(cfg, "CREATE TABLE t (id int primary key)")

Only processes whose pid is recorded in one of *our* data directories are ever
stopped, always through ``pg_ctl stop``; nothing is killed by name.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import glob
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "Config",
    "SandboxError",
    "SandboxConflict",
    "NODES",
    "up",
    "down",
    "status",
    "env",
    "sync_table",
    "drop_table",
    "wait_standby_caught_up",
    "wait_subscriber_caught_up",
    "query",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SANDBOX_DIR = os.path.join(REPO_ROOT, ".sandbox")

HOST = "127.0.0.1"
NODES = ("primary", "standby", "subscriber")
APP_USER = "app"
APP_DB = "app"
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
PUBLICATION = "stateful_pub"
SUBSCRIPTION = "stateful_sub"
STANDBY_SLOT = "standby_slot"
STANDBY_APPLICATION_NAME = "standby"
OS_USER_WHEN_ROOT = "postgres"

DEFAULT_PORTS = {"primary": 24320, "standby": 24321, "subscriber": 24322}

# Files/dirs that `down` is allowed to delete inside the sandbox dir.
NODE_MARKER = ".sandbox-node"  # proves a node dir was created by us
PROVISIONED_MARKER = "provisioned"  # written once a node is fully set up
STATE_FILE = "sandbox.json"
LOCK_FILE = ".lock"
SOCKET_SUBDIR = "sock"

PG_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "psql", "pg_dump")
UNIX_SOCKET_PATH_MAX = 107  # sizeof(sun_path) - 1 on Linux

FIELD_SEP = "\x1f"  # psql field separator for machine-readable output


class SandboxError(Exception):
    """A failure with a message meant for humans (no traceback needed)."""


class SandboxConflict(SandboxError):
    """Pre-flight refusal: something not ours is in the way; nothing was touched."""


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Config:
    """Where the sandbox lives, its ports and its passwords.

    Build it with :meth:`from_env`; every field has a ``SANDBOX_*`` variable.
    """

    sandbox_dir: str = DEFAULT_SANDBOX_DIR
    primary_port: int = DEFAULT_PORTS["primary"]
    standby_port: int = DEFAULT_PORTS["standby"]
    subscriber_port: int = DEFAULT_PORTS["subscriber"]
    kube_port: int = 0  # the Kubernetes API emulator; 0 = any free port (it is in the kubeconfig)
    app_port: int = 24380  # the demo application's first replica (Deployments' env PORT)
    app_password: str = "app-secret"
    replication_password: str = "repl-secret"
    superuser_password: str = "postgres-secret"
    timeout: float = 120.0  # seconds for each wait (start, streaming, sync)
    pg_bindir: Optional[str] = None  # None: auto-detect
    host: str = HOST

    ENV_VARS = {
        "sandbox_dir": "SANDBOX_DIR",
        "primary_port": "SANDBOX_PRIMARY_PORT",
        "standby_port": "SANDBOX_STANDBY_PORT",
        "subscriber_port": "SANDBOX_SUBSCRIBER_PORT",
        "kube_port": "SANDBOX_KUBE_PORT",
        "app_port": "SANDBOX_APP_PORT",
        "app_password": "SANDBOX_APP_PASSWORD",
        "replication_password": "SANDBOX_REPLICATION_PASSWORD",
        "superuser_password": "SANDBOX_SUPERUSER_PASSWORD",
        "timeout": "SANDBOX_TIMEOUT",
        "pg_bindir": "SANDBOX_PG_BINDIR",
    }

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Config":
        """Read the configuration from ``environ`` (default ``os.environ``)."""
        environ = os.environ if environ is None else environ
        kwargs = {}
        for field in dataclasses.fields(cls):
            var = cls.ENV_VARS.get(field.name)
            raw = environ.get(var) if var else None
            if raw is None or raw == "":
                continue
            if field.name.endswith("_port"):
                try:
                    value = int(raw)
                except ValueError:
                    raise SandboxError(f"{var}={raw!r} is not a port number") from None
                if not 1024 <= value <= 65535 and not (field.name == "kube_port" and value == 0):
                    raise SandboxError(f"{var}={value} must be between 1024 and 65535"
                                       + (" (or 0 for any free port)" if field.name == "kube_port" else ""))
                kwargs[field.name] = value
            elif field.name == "timeout":
                try:
                    kwargs[field.name] = float(raw)
                except ValueError:
                    raise SandboxError(f"{var}={raw!r} is not a number of seconds") from None
            else:
                kwargs[field.name] = raw
        if "sandbox_dir" in kwargs:
            kwargs["sandbox_dir"] = os.path.abspath(os.path.expanduser(kwargs["sandbox_dir"]))
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Reject configurations that cannot work (duplicate ports, ...)."""
        ports = [self.port(n) for n in NODES] + [self.app_port] + ([self.kube_port] if self.kube_port else [])
        if len(set(ports)) != len(ports):
            raise SandboxError(
                "SANDBOX_PRIMARY_PORT, SANDBOX_STANDBY_PORT, SANDBOX_SUBSCRIBER_PORT, SANDBOX_APP_PORT and SANDBOX_KUBE_PORT "
                f"must differ (got {ports})")

    def validate_socket_path(self) -> None:
        """Unix socket paths are limited to 107 bytes; fail clearly before initdb."""
        sock = os.path.join(self.socket_dir, f".s.PGSQL.{max(self.port(n) for n in NODES)}")
        if len(sock.encode()) > UNIX_SOCKET_PATH_MAX:
            raise SandboxError(
                f"sandbox dir {self.sandbox_dir} is too deep for a Unix socket path "
                f"({sock}); set SANDBOX_DIR to a shorter path, e.g. SANDBOX_DIR=/tmp/stateful-sandbox")

    # -- derived paths -----------------------------------------------------
    def port(self, node: str) -> int:
        _check_node(node)
        return getattr(self, f"{node}_port")

    @property
    def socket_dir(self) -> str:
        return os.path.join(self.sandbox_dir, SOCKET_SUBDIR)

    @property
    def state_file(self) -> str:
        return os.path.join(self.sandbox_dir, STATE_FILE)

    def node_dir(self, node: str) -> str:
        _check_node(node)
        return os.path.join(self.sandbox_dir, node)

    def data_dir(self, node: str) -> str:
        return os.path.join(self.node_dir(node), "data")

    def log_file(self, node: str) -> str:
        return os.path.join(self.node_dir(node), "postgresql.log")

    # -- connection parameters ----------------------------------------------
    def params(self, node: str, superuser: bool = False, dbname: str = APP_DB) -> Dict[str, object]:
        """libpq keyword parameters for ``node`` as ``app`` (or the superuser)."""
        return {
            "host": self.host,
            "port": self.port(node),
            "user": SUPERUSER if superuser else APP_USER,
            "password": self.superuser_password if superuser else self.app_password,
            "dbname": dbname,
        }

    def dsn(self, node: str, superuser: bool = False, dbname: str = APP_DB) -> str:
        """libpq URI, e.g. ``postgresql://app:app-secret@127.0.0.1:24320/app``."""
        p = self.params(node, superuser, dbname)

        def q(value):
            return urllib.parse.quote(str(value), safe="")

        return f"postgresql://{q(p['user'])}:{q(p['password'])}@{p['host']}:{p['port']}/{q(p['dbname'])}"


def _kube():
    """The Kubernetes side (scripts/sandbox_kube.py), imported on first use."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    # Run as a script, this module is __main__: let sandbox_kube's `import sandbox`
    # get this very module (one SandboxError class, one configuration).
    sys.modules.setdefault("sandbox", sys.modules[__name__])
    import sandbox_kube  # pylint: disable=import-outside-toplevel

    return sandbox_kube


def _check_node(node: str) -> None:
    if node not in NODES:
        raise SandboxError(f"unknown node {node!r}; expected one of {', '.join(NODES)}")


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress output (stderr, so `env` output stays clean)."""
    print(f"sandbox: {message}", file=sys.stderr, flush=True)


def _is_root() -> bool:
    return os.geteuid() == 0


def _run_as_user() -> Optional[pwd.struct_passwd]:
    """The OS user servers run as when we are root (None: run as ourselves)."""
    if not _is_root():
        return None
    try:
        return pwd.getpwnam(OS_USER_WHEN_ROOT)
    except KeyError:
        raise SandboxError(
            f"running as root but there is no '{OS_USER_WHEN_ROOT}' OS user; "
            "install PostgreSQL (apt-get install -y postgresql) or run as a normal user") from None


def _as_server_user(cmd: Sequence[str]) -> List[str]:
    """Prefix ``cmd`` so it runs as the server OS user (root -> postgres)."""
    if _is_root():
        return ["runuser", "-u", OS_USER_WHEN_ROOT, "--", *cmd]
    return list(cmd)


def _chown(path: str) -> None:
    user = _run_as_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _write_file(path: str, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` owned by the server OS user."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)
    _chown(path)


def _mkdir(path: str, mode: int = 0o755) -> None:
    """Create ``path`` (and parents, world-traversable) owned by the server user."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, mode)
    _chown(path)


def _run(cmd: Sequence[str], *, timeout: float, env: Optional[Mapping[str, str]] = None,
         input: Optional[str] = None, cwd: Optional[str] = None, what: Optional[str] = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with a timeout, raising SandboxError with its output on failure."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    label = what or os.path.basename(cmd[0] if cmd[0] != "runuser" else cmd[4])
    try:
        proc = subprocess.run(
            list(cmd), input=input, capture_output=True, text=True, timeout=timeout, check=False,
            env=full_env, cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SandboxError(f"{label} did not finish within {timeout:.0f}s") from None
    except FileNotFoundError as exc:
        raise SandboxError(f"{label}: command not found ({exc.filename})") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()
        raise SandboxError(f"{label} failed (exit {proc.returncode}): {detail}")
    return proc


def _sql_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _conninfo(**params: object) -> str:
    """A libpq key=value connection string with every value quoted."""
    def quote(v: object) -> str:
        return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return " ".join(f"{k}={quote(v)}" for k, v in params.items())


def _log_tail(config: Config, node: str, lines: int = 15) -> str:
    try:
        with open(config.log_file(node), encoding="utf-8", errors="replace") as fh:
            tail = fh.readlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {config.log_file(node)} ---\n" + "".join(tail).rstrip()


# --------------------------------------------------------------------------
# PostgreSQL binaries
# --------------------------------------------------------------------------


def _has_binaries(bindir: Optional[str]) -> bool:
    return bool(bindir) and all(os.access(os.path.join(bindir, b), os.X_OK) for b in PG_BINARIES)


def find_bindir(config: Optional[Config] = None, install: bool = False) -> str:
    """Locate the PostgreSQL server binaries.

    Order: ``SANDBOX_PG_BINDIR``, ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin``.  When nothing is found and ``install`` is
    true and we are root, install Debian's packages; otherwise raise with
    instructions.
    """
    if config is not None and config.pg_bindir:
        if _has_binaries(config.pg_bindir):
            return config.pg_bindir
        raise SandboxError(f"SANDBOX_PG_BINDIR={config.pg_bindir} does not contain {', '.join(PG_BINARIES)}")
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False)
            if out.returncode == 0:
                candidates.append(out.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass

    def version_key(path: str):
        m = re.search(r"/postgresql/([0-9.]+)/bin$", path)
        return [int(x) for x in m.group(1).split(".")] if m else [0]

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    for bindir in candidates:
        if _has_binaries(bindir):
            return bindir
    if install and _is_root() and shutil.which("apt-get"):
        _install_postgresql()
        return find_bindir(config, install=False)
    raise SandboxError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup, psql, pg_dump) "
        "were not found.\nInstall them, e.g. on Debian/Ubuntu:\n"
        "    sudo apt-get update && sudo apt-get install -y postgresql postgresql-contrib\n"
        "or point SANDBOX_PG_BINDIR at a directory that contains them.")


def _install_postgresql() -> None:
    """apt-get install PostgreSQL without creating/starting a default cluster."""
    log("PostgreSQL not found; installing postgresql + postgresql-contrib with apt-get")
    # Stop Debian's postinst from creating (and starting) a 'main' cluster on
    # port 5432: the sandbox makes its own clusters.
    conf_d = "/etc/postgresql-common/createcluster.d"
    os.makedirs(conf_d, exist_ok=True)
    with open(os.path.join(conf_d, "stateful-sandbox.conf"), "w", encoding="utf-8") as fh:
        fh.write("# written by stateful.rollback scripts/sandbox\ncreate_main_cluster = false\n")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], timeout=600, env=env, what="apt-get update")
    _run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql", "postgresql-contrib"],
         timeout=1200, env=env, what="apt-get install postgresql")


def _bin(bindir: str, name: str) -> str:
    return os.path.join(bindir, name)


def _server_version(bindir: str) -> str:
    out = _run([_bin(bindir, "postgres"), "--version"], timeout=30).stdout.strip()
    m = re.search(r"\(PostgreSQL\)\s+(\S+)", out)
    return m.group(1) if m else out


# --------------------------------------------------------------------------
# SQL through psql (stdlib only)
# --------------------------------------------------------------------------


def query(config: Config, node: str, sql: str, *, superuser: bool = True, dbname: str = APP_DB,
          timeout: float = 60, bindir: Optional[str] = None, single_transaction: bool = False,
          user: Optional[str] = None, password: Optional[str] = None) -> List[List[str]]:
    """Run ``sql`` on ``node`` over TCP with psql and return rows of strings.

    The SQL is sent on stdin (never on the command line, it may hold
    passwords). NULL is returned as ''.  Errors raise SandboxError.
    """
    bindir = bindir or find_bindir(config)
    p = config.params(node, superuser=superuser, dbname=dbname)
    cmd = [_bin(bindir, "psql"), "-X", "-q", "-A", "-t", "-F", FIELD_SEP, "-v", "ON_ERROR_STOP=1",
           "-h", str(p["host"]), "-p", str(p["port"]), "-U", str(user or p["user"]), "-d", str(p["dbname"]), "-f", "-"]
    if single_transaction:
        cmd.insert(1, "-1")
    env = {"PGPASSWORD": str(password if password is not None else p["password"]),
           "PGCONNECT_TIMEOUT": "5", "PGAPPNAME": "sandbox", "PGOPTIONS": ""}
    proc = _run(cmd, timeout=timeout, env=env, input=sql, what=f"psql on {node}")
    return [line.split(FIELD_SEP) for line in proc.stdout.splitlines() if line != ""]


def _scalar(config: Config, node: str, sql: str, **kw) -> str:
    rows = query(config, node, sql, **kw)
    return rows[0][0] if rows and rows[0] else ""


# --------------------------------------------------------------------------
# node process state (from our data dirs only)
# --------------------------------------------------------------------------


def _postmaster_info(config: Config, node: str) -> Optional[dict]:
    """pid/port of the postmaster recorded in our data dir, if it is alive."""
    pidfile = os.path.join(config.data_dir(node), "postmaster.pid")
    try:
        with open(pidfile, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    # Make sure the pid was not recycled by an unrelated process.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv0 = fh.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return None
    if not os.path.basename(argv0).startswith("postgres") and not argv0.startswith("postgres"):
        return None
    recorded_dir = lines[1] if len(lines) > 1 else ""
    if recorded_dir and os.path.realpath(recorded_dir) != os.path.realpath(config.data_dir(node)):
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    state = lines[7].strip() if len(lines) > 7 else ""
    return {"pid": pid, "port": port, "state": state}


def _is_provisioned(config: Config, node: str) -> bool:
    return os.path.exists(os.path.join(config.node_dir(node), PROVISIONED_MARKER))


def _mark_provisioned(config: Config, node: str) -> None:
    _write_file(os.path.join(config.node_dir(node), PROVISIONED_MARKER),
                time.strftime("%Y-%m-%dT%H:%M:%S%z\n"), 0o644)


def _port_is_free(port: int, host: str = HOST) -> bool:
    """True if we could bind host:port (same SO_REUSEADDR semantics as postgres)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ensure_port_free(config: Config, node: str) -> None:
    port = config.port(node)
    if not _port_is_free(port, config.host):
        var = Config.ENV_VARS[f"{node}_port"]
        low, high = _ephemeral_port_range()
        hint = (f" (it lies in the kernel's ephemeral range {low}-{high}, where any client connection may take it "
                f"for a while: prefer a port below {low})" if low <= port <= high else "")
        raise SandboxConflict(
            f"port {port} on {config.host} (for the {node} node) is already in use by something that "
            f"is not this sandbox; free it or choose another port with {var}=<port>{hint}")


def _ephemeral_port_range() -> Tuple[int, int]:
    """The local ports the kernel hands to outgoing connections (net.ipv4.ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(v) for v in fh.read().split()[:2])
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


# --------------------------------------------------------------------------
# node lifecycle
# --------------------------------------------------------------------------


def _node_conf(config: Config, node: str) -> str:
    """postgresql.conf settings for one node (included from postgresql.conf)."""
    return f"""\
# Managed by stateful.rollback scripts/sandbox -- rewritten on every (re)build.
cluster_name = 'sandbox-{node}'
listen_addresses = '{config.host}'
port = {config.port(node)}
unix_socket_directories = '{config.socket_dir}'
unix_socket_permissions = 0700

wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
wal_retrieve_retry_interval = 1s
hot_standby = on
hot_standby_feedback = on

shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all

# fsync=off: this sandbox is disposable, losing it on an OS crash is fine and
# it makes initdb/seed/basebackup much faster.  synchronous_commit stays on so
# commit and LSN semantics match a real server.
fsync = off
synchronous_commit = on
shared_buffers = 128MB

logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_replication_commands = on
"""


def _hba_conf() -> str:
    peer = "peer" if _is_root() else "peer map=sandbox"
    return f"""\
# Managed by stateful.rollback scripts/sandbox.
# TYPE  DATABASE     USER      ADDRESS         METHOD
local   all          {SUPERUSER:<9} {'':15} {peer}
host    all          all       127.0.0.1/32    scram-sha-256
host    replication  all       127.0.0.1/32    scram-sha-256
"""


def _write_node_config(config: Config, node: str) -> None:
    data = config.data_dir(node)
    _write_file(os.path.join(data, "sandbox.conf"), _node_conf(config, node))
    conf = os.path.join(data, "postgresql.conf")
    with open(conf, encoding="utf-8") as fh:
        text = fh.read()
    if "include 'sandbox.conf'" not in text:
        _write_file(conf, text.rstrip("\n") + "\n\ninclude 'sandbox.conf'\n")
    _write_file(os.path.join(data, "pg_hba.conf"), _hba_conf())
    if not _is_root():
        me = pwd.getpwuid(os.geteuid()).pw_name
        _write_file(os.path.join(data, "pg_ident.conf"), f"sandbox  {me}  {SUPERUSER}\n")


def _new_node_dir(config: Config, node: str) -> None:
    """Create an empty node dir tagged with our marker (wiping an old one)."""
    _wipe_node(config, node)
    _mkdir(config.node_dir(node), 0o700)
    _write_file(os.path.join(config.node_dir(node), NODE_MARKER), f"{node}\n", 0o644)


def _wipe_node(config: Config, node: str, bindir: Optional[str] = None) -> None:
    """Stop (if running) and delete one node's directory."""
    if _postmaster_info(config, node):
        _stop_node(config, node, bindir or find_bindir(config))
    path = config.node_dir(node)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, NODE_MARKER)):
            raise SandboxConflict(f"{path} exists but was not created by the sandbox; refusing to delete it")
        shutil.rmtree(path)


def _initdb(config: Config, node: str, bindir: str, volume: Optional[str] = None) -> None:
    """initdb a fresh cluster for ``node`` with the superuser password set.

    With ``volume`` (the primary's PVC volume), the data directory is created
    there and ``<node dir>/data`` becomes a symlink to it.
    """
    _new_node_dir(config, node)
    if volume:
        _kube().prepare_primary_data_dir(config, volume)
    pwfile = os.path.join(config.node_dir(node), "pwfile")
    _write_file(pwfile, config.superuser_password + "\n")
    try:
        _run(_as_server_user([_bin(bindir, "initdb"), "-D", config.data_dir(node), "-U", SUPERUSER,
                              f"--pwfile={pwfile}", "--auth-local=peer", "--auth-host=scram-sha-256",
                              "--encoding=UTF8", "--locale=C", "--no-instructions"]),
             timeout=config.timeout, cwd=config.sandbox_dir, what=f"initdb ({node})")
    finally:
        os.unlink(pwfile)
    _write_node_config(config, node)


def _start_node(config: Config, node: str, bindir: str) -> None:
    """pg_ctl start (waiting until the server accepts connections)."""
    _ensure_port_free(config, node)
    log(f"starting {node} on {config.host}:{config.port(node)}")
    proc = _run(_as_server_user([_bin(bindir, "pg_ctl"), "-D", config.data_dir(node), "-l", config.log_file(node),
                                 "-w", "-t", str(int(config.timeout)), "start"]),
                timeout=config.timeout + 15, cwd=config.sandbox_dir, what=f"pg_ctl start ({node})", check=False)
    if proc.returncode != 0:
        raise SandboxError(f"could not start {node}: {(proc.stderr or proc.stdout).strip()}"
                           + _log_tail(config, node))


def _stop_node(config: Config, node: str, bindir: str) -> bool:
    """Stop our server for ``node`` via pg_ctl (fast, then immediate). True if it was running."""
    if not _postmaster_info(config, node):
        return False
    log(f"stopping {node}")
    for mode in ("fast", "immediate"):
        proc = _run(_as_server_user([_bin(bindir, "pg_ctl"), "-D", config.data_dir(node), "-m", mode,
                                     "-w", "-t", "60", "stop"]),
                    timeout=75, cwd=config.sandbox_dir, what=f"pg_ctl stop ({node})", check=False)
        if proc.returncode == 0 or not _postmaster_info(config, node):
            return True
    raise SandboxError(f"could not stop {node} (pid file {config.data_dir(node)}/postmaster.pid): "
                       f"{(proc.stderr or proc.stdout).strip()}")


def _ensure_running(config: Config, node: str, bindir: str) -> bool:
    """Start ``node`` if it is provisioned but stopped. True if it was started."""
    if _postmaster_info(config, node):
        return False
    _start_node(config, node, bindir)
    return True


def _built_port(config: Config, node: str) -> Optional[int]:
    """The port a node was built with (from its sandbox.conf), if it exists."""
    try:
        with open(os.path.join(config.data_dir(node), "sandbox.conf"), encoding="utf-8") as fh:
            m = re.search(r"^port = (\d+)$", fh.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _check_ports_match(config: Config) -> None:
    """Refuse to touch a sandbox that was built/started with other ports."""
    for node in NODES:
        info = _postmaster_info(config, node)
        built = (info or {}).get("port") or (_built_port(config, node) if _is_provisioned(config, node) else None)
        if built and built != config.port(node):
            var = Config.ENV_VARS[f"{node}_port"]
            raise SandboxConflict(
                f"the {node} in {config.sandbox_dir} was built for port {built} but {var} asks for "
                f"{config.port(node)}; run `scripts/sandbox down` first (with the old settings) "
                "or use another SANDBOX_DIR")


# --------------------------------------------------------------------------
# provisioning
# --------------------------------------------------------------------------

SEED_SQL = """\
CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text,
    created_at  timestamptz DEFAULT now()
);
CREATE TABLE orders (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers(id),
    amount       numeric(12,2) NOT NULL,
    status       text NOT NULL DEFAULT 'new',
    placed_at    timestamptz DEFAULT now()
);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);

-- Deterministic seed data: same rows on every build.
INSERT INTO customers (email, name, created_at)
SELECT format('customer%s@example.com', g),
       format('Customer %s', g),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour'
FROM generate_series(1, 1000) AS g;

INSERT INTO orders (customer_id, amount, status, placed_at)
SELECT 1 + (g * 7919) % 1000,
       round((5 + (g * 37) % 99500 / 100.0)::numeric, 2),
       (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4],
       timestamptz '2024-01-01 00:00:00+00' + g * interval '17 minutes'
FROM generate_series(1, 5000) AS g;

ANALYZE customers;
ANALYZE orders;
"""


def _provision_primary(config: Config, bindir: str, volume: Optional[str] = None) -> None:
    log("building primary" + (f" on the volume of PVC {_kube().NAMESPACE}/{_kube().PVC}" if volume else ""))
    _initdb(config, "primary", bindir, volume)
    _start_node(config, "primary", bindir)

    def q(sql, **kw):
        return query(config, "primary", sql, bindir=bindir, timeout=config.timeout, **kw)

    q(f"""
CREATE ROLE {APP_USER} LOGIN PASSWORD {_sql_literal(config.app_password)};
CREATE ROLE {REPLICATION_USER} REPLICATION LOGIN PASSWORD {_sql_literal(config.replication_password)};
-- the subscription's table sync COPYs every published table as this role
GRANT pg_read_all_data TO {REPLICATION_USER};
-- the app role doubles as the checker of replication_parity: pg_monitor is all it needs
GRANT pg_monitor TO {APP_USER};
CREATE DATABASE {APP_DB} OWNER {APP_USER};
""", dbname="postgres")
    q("CREATE EXTENSION IF NOT EXISTS pg_stat_statements;")
    q(SEED_SQL, superuser=False, single_transaction=True)
    # Only the application's schema is published: bookkeeping schemas such as
    # stateful_rollback (migration journal, release ledger) stay on the primary
    # and its physical standby.  Logical replication does not carry DDL, so a
    # table the subscriber lacks would stop its apply worker.
    q(f"CREATE PUBLICATION {PUBLICATION} FOR TABLES IN SCHEMA public;")
    _mark_provisioned(config, "primary")


def _provision_standby(config: Config, bindir: str) -> None:
    log("building standby with pg_basebackup")
    _new_node_dir(config, "standby")
    # (Re)create the physical slot as part of the base backup.
    query(config, "primary", f"""
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
 WHERE slot_name = {_sql_literal(STANDBY_SLOT)} AND NOT active;""", dbname="postgres", bindir=bindir)
    conninfo = _conninfo(host=config.host, port=config.port("primary"), user=REPLICATION_USER,
                         application_name=STANDBY_APPLICATION_NAME)
    _run(_as_server_user([_bin(bindir, "pg_basebackup"), "-d", conninfo, "-D", config.data_dir("standby"),
                          "-R", "-X", "stream", "-C", "-S", STANDBY_SLOT, "-c", "fast", "--no-sync"]),
         timeout=max(config.timeout, 300), env={"PGPASSWORD": config.replication_password},
         cwd=config.sandbox_dir, what="pg_basebackup")
    _write_node_config(config, "standby")
    auto_conf = os.path.join(config.data_dir("standby"), "postgresql.auto.conf")
    with open(auto_conf, encoding="utf-8") as fh:
        if f"application_name={STANDBY_APPLICATION_NAME}" not in fh.read().replace("'", ""):
            raise SandboxError(f"pg_basebackup -R did not write application_name={STANDBY_APPLICATION_NAME} "
                               f"into {auto_conf}")
    _start_node(config, "standby", bindir)
    _mark_provisioned(config, "standby")


def _schema_dump(config: Config, bindir: str) -> str:
    """Schema-only dump of the primary's app database, cleaned for replay."""
    p = config.params("primary", superuser=True)
    out = _run([_bin(bindir, "pg_dump"), "--schema-only", "--no-publications", "--no-subscriptions",
                "-h", p["host"], "-p", str(p["port"]), "-U", p["user"], APP_DB],
               timeout=config.timeout, env={"PGPASSWORD": p["password"], "PGCONNECT_TIMEOUT": "5"},
               what="pg_dump --schema-only").stdout
    keep = []
    skipping_publication = False
    for line in out.splitlines():
        # PostgreSQL 15.14+ wraps dumps in \restrict / \unrestrict meta-commands.
        if line.startswith("\\restrict") or line.startswith("\\unrestrict"):
            continue
        if re.match(r"\s*(CREATE|ALTER) PUBLICATION\b", line):
            skipping_publication = not line.rstrip().endswith(";")
            continue
        if skipping_publication:
            skipping_publication = not line.rstrip().endswith(";")
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"


def _provision_subscriber(config: Config, bindir: str) -> None:
    log("building subscriber")
    _initdb(config, "subscriber", bindir)
    _start_node(config, "subscriber", bindir)

    def q(sql, **kw):
        return query(config, "subscriber", sql, bindir=bindir, timeout=config.timeout, **kw)

    q(f"""
CREATE ROLE {APP_USER} LOGIN PASSWORD {_sql_literal(config.app_password)};
GRANT pg_monitor TO {APP_USER};
CREATE DATABASE {APP_DB} OWNER {APP_USER};
""", dbname="postgres")
    q(_schema_dump(config, bindir))
    # A slot left behind by an earlier subscriber would make CREATE SUBSCRIPTION fail.
    query(config, "primary", f"""
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
 WHERE slot_name = {_sql_literal(SUBSCRIPTION)} AND NOT active;""", dbname="postgres", bindir=bindir)
    conninfo = _conninfo(host=config.host, port=config.port("primary"), dbname=APP_DB,
                         user=REPLICATION_USER, password=config.replication_password,
                         application_name=SUBSCRIPTION)
    q(f"CREATE SUBSCRIPTION {SUBSCRIPTION} CONNECTION {_sql_literal(conninfo)} PUBLICATION {PUBLICATION};")
    _mark_provisioned(config, "subscriber")


# --------------------------------------------------------------------------
# health checks and waits
# --------------------------------------------------------------------------


def _health(config: Config, bindir: str) -> List[str]:
    """Problems that keep the sandbox from being ready (empty list: healthy)."""
    problems = []
    for node in NODES:
        if not _postmaster_info(config, node):
            problems.append(f"{node} is not running")
    if problems:
        return problems
    try:
        rows = query(config, "primary", "SELECT application_name, state FROM pg_stat_replication;",
                     dbname="postgres", bindir=bindir, timeout=15)
        states = {r[0]: r[1] for r in rows}
        if states.get(STANDBY_APPLICATION_NAME) != "streaming":
            problems.append(f"standby is not streaming yet (pg_stat_replication: {states or 'empty'})")
    except SandboxError as exc:
        problems.append(f"primary not answering: {exc}")
    try:
        problems += _subscription_problems(config, bindir)
    except SandboxError as exc:
        problems.append(f"subscriber not answering: {exc}")
    return problems


def _subscription_problems(config: Config, bindir: Optional[str] = None) -> List[str]:
    rows = query(config, "subscriber", f"""
SELECT s.subenabled,
       (SELECT count(*) FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL),
       (SELECT count(*) FROM pg_subscription_rel r WHERE r.srsubid = s.oid),
       (SELECT string_agg(r.srrelid::regclass::text || '=' || r.srsubstate::text, ', ' ORDER BY 1)
          FROM pg_subscription_rel r WHERE r.srsubid = s.oid AND r.srsubstate <> 'r')
  FROM pg_subscription s WHERE s.subname = {_sql_literal(SUBSCRIPTION)};""",
                 bindir=bindir, timeout=15)
    if not rows:
        return [f"subscription {SUBSCRIPTION} does not exist on the subscriber"]
    enabled, workers, nrels, not_ready = rows[0]
    problems = []
    if enabled != "t":
        problems.append(f"subscription {SUBSCRIPTION} is disabled")
    elif workers == "0":
        problems.append(f"subscription {SUBSCRIPTION} has no running apply worker")
    if nrels == "0":
        problems.append(f"subscription {SUBSCRIPTION} has no tables yet")
    if not_ready:
        problems.append(f"subscription tables not ready (state != 'r'): {not_ready}")
    return problems


def _wait(description: str, check, timeout: float, interval: float = 0.1) -> None:
    """Poll ``check()`` (returning a list of problems) until it returns [] or time runs out."""
    deadline = time.monotonic() + timeout
    problems: List[str] = []
    while True:
        try:
            problems = check()
        except SandboxError as exc:
            problems = [str(exc)]
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise SandboxError(f"timed out after {timeout:.0f}s waiting for {description}: " + "; ".join(problems))
        time.sleep(interval)


def _lsn(value: str) -> int:
    """'16/B374D848' -> integer."""
    hi, lo = value.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _primary_lsn(config: Config, bindir: Optional[str] = None) -> str:
    return _scalar(config, "primary", "SELECT pg_current_wal_lsn();", dbname="postgres", bindir=bindir, timeout=15)


def wait_standby_caught_up(config: Config, timeout: float = 30, target_lsn: Optional[str] = None) -> None:
    """Wait until the standby has replayed the primary's current WAL position."""
    bindir = find_bindir(config)
    target = target_lsn or _primary_lsn(config, bindir)

    def check():
        replayed = _scalar(config, "standby", "SELECT pg_last_wal_replay_lsn();", dbname="postgres",
                           bindir=bindir, timeout=15)
        if not replayed:
            return ["standby reports no replay position (is it in recovery?)"]
        if _lsn(replayed) < _lsn(target):
            return [f"standby replayed {replayed}, primary is at {target}"]
        return []

    _wait("the standby to catch up", check, timeout)


def wait_subscriber_caught_up(config: Config, timeout: float = 30, target_lsn: Optional[str] = None) -> None:
    """Wait until the subscription has applied the primary's current WAL position.

    Uses the subscription slot's ``confirmed_flush_lsn`` or the walsender's
    ``replay_lsn`` (whichever is further), and requires every subscribed
    table to be in state 'r'.
    """
    bindir = find_bindir(config)
    target = target_lsn or _primary_lsn(config, bindir)

    def check():
        problems = _subscription_problems(config, bindir)
        row = query(config, "primary", f"""
SELECT (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {_sql_literal(SUBSCRIPTION)}),
       (SELECT max(replay_lsn) FROM pg_stat_replication WHERE application_name = {_sql_literal(SUBSCRIPTION)});""",
                    dbname="postgres", bindir=bindir, timeout=15)[0]
        positions = [_lsn(v) for v in row if v]
        if not positions or max(positions) < _lsn(target):
            problems.append(f"subscriber confirmed {row[0] or '-'} / applied {row[1] or '-'}, primary is at {target}")
        return problems

    _wait("the subscriber to catch up", check, timeout)


def sync_table(config: Config, ddl_sql: str, timeout: float = 60) -> None:
    """Create table(s) on every node and wait until replication covers them.

    Runs ``ddl_sql`` (DDL only -- it is executed twice) as ``app`` on the
    primary (the standby receives it through WAL) and on the subscriber, then
    ``ALTER SUBSCRIPTION ... REFRESH PUBLICATION`` and waits until every
    subscription table is in state 'r' and both replicas caught up.
    """
    bindir = find_bindir(config)
    query(config, "primary", ddl_sql, superuser=False, single_transaction=True, bindir=bindir, timeout=timeout)
    query(config, "subscriber", ddl_sql, superuser=False, single_transaction=True, bindir=bindir, timeout=timeout)
    _refresh_and_wait(config, bindir, timeout)


def drop_table(config: Config, name: str, timeout: float = 60) -> None:
    """Reverse of :func:`sync_table`: drop ``name`` on primary and subscriber."""
    bindir = find_bindir(config)
    # Let pending changes for the table drain before it disappears.
    wait_subscriber_caught_up(config, timeout=timeout)
    query(config, "primary", f"DROP TABLE IF EXISTS {name};", superuser=False, bindir=bindir, timeout=timeout)
    query(config, "subscriber", f"ALTER SUBSCRIPTION {SUBSCRIPTION} REFRESH PUBLICATION;",
          bindir=bindir, timeout=timeout)
    query(config, "subscriber", f"DROP TABLE IF EXISTS {name};", superuser=False, bindir=bindir, timeout=timeout)
    _refresh_and_wait(config, bindir, timeout)


def _refresh_and_wait(config: Config, bindir: str, timeout: float) -> None:
    query(config, "subscriber", f"ALTER SUBSCRIPTION {SUBSCRIPTION} REFRESH PUBLICATION;",
          bindir=bindir, timeout=timeout)
    target = _primary_lsn(config, bindir)
    deadline = time.monotonic() + timeout
    wait_subscriber_caught_up(config, timeout=timeout, target_lsn=target)
    wait_standby_caught_up(config, timeout=max(1.0, deadline - time.monotonic()), target_lsn=target)


# --------------------------------------------------------------------------
# pre-flight checks and locking
# --------------------------------------------------------------------------


def _check_dir_access(config: Config) -> None:
    """As root, make sure the postgres OS user can reach the sandbox dir."""
    if not _is_root():
        return
    _run_as_user()
    anc = os.path.abspath(config.sandbox_dir)
    while not os.path.exists(anc):
        anc = os.path.dirname(anc)
    proc = _run(["runuser", "-u", OS_USER_WHEN_ROOT, "--", "test", "-x", anc],
                timeout=15, cwd="/", check=False, what="runuser test -x")
    if proc.returncode != 0:
        raise SandboxConflict(
            f"the '{OS_USER_WHEN_ROOT}' OS user cannot traverse {anc} (needed to reach {config.sandbox_dir}); "
            f"put the sandbox somewhere it can reach, e.g. SANDBOX_DIR=/tmp/stateful-sandbox")


class _Lock:
    """Exclusive flock on the sandbox dir so two `up`/`down` never interleave."""

    def __init__(self, config: Config, timeout: float):
        self.path = os.path.join(config.sandbox_dir, LOCK_FILE)
        self.timeout = timeout
        self.fh = None

    def __enter__(self):
        self.fh = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                self.fh.close()
                raise SandboxError(f"another sandbox command holds {self.path} (waited {self.timeout:.0f}s)")
            time.sleep(0.2)

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


# --------------------------------------------------------------------------
# public operations
# --------------------------------------------------------------------------


def up(config: Optional[Config] = None) -> dict:
    """Create and/or start the sandbox; a no-op when it is already healthy.

    Returns the :func:`status` dict plus ``changed`` (list of actions taken).
    """
    config = config or Config.from_env()
    config.validate_socket_path()
    bindir = find_bindir(config, install=True)
    _check_dir_access(config)
    _mkdir(config.sandbox_dir)
    try:
        return _up_locked(config, bindir)
    except SandboxConflict:
        _remove_if_unused(config)  # leave no empty skeleton behind
        raise


def _remove_if_unused(config: Config) -> None:
    """Delete the sandbox dir skeleton (sock dir, lock) when it holds no node."""
    if any(os.path.isdir(config.node_dir(n)) for n in NODES):
        return
    try:
        os.rmdir(config.socket_dir)
    except OSError:
        pass
    _rmdir_if_empty(config.sandbox_dir, also_lock=True)


def _up_locked(config: Config, bindir: str) -> dict:
    kube = _kube()
    changed: List[str] = []
    with _Lock(config, config.timeout):
        # Refuse early, before changing anything, if the sandbox uses other ports.
        _check_ports_match(config)
        _mkdir(config.socket_dir, 0o700)
        if not _is_provisioned(config, "primary"):
            for node in ("subscriber", "standby", "primary"):  # everything derives from the primary
                _wipe_node(config, node, bindir)
            for node in NODES:  # fail before building anything if a port is taken
                _ensure_port_free(config, node)
        if kube.start_daemon(config):
            changed.append("started kubesim")
        if not _is_provisioned(config, "primary"):
            _provision_primary(config, bindir, kube.ensure_db_volume(config))
            changed.append("built primary")
        primary_was_running = bool(_postmaster_info(config, "primary"))
        actions = kube.ensure_statefulset(config)
        if not actions and not primary_was_running:
            # The StatefulSet already runs a replica, but the server is down
            # (stopped outside Kubernetes): start it where its PVC points.
            _ensure_running(config, "primary", bindir)
        changed += actions
    # The StatefulSet's scale hook (in the kubesim process, taking the lock)
    # starts the primary on the PVC's volume; wait for it outside the lock.
    kube.wait_db_ready(config)
    if not primary_was_running and "built primary" not in changed:
        changed.append("started primary")

    with _Lock(config, config.timeout):
        if not _is_provisioned(config, "standby"):
            _wipe_node(config, "standby", bindir)
            _provision_standby(config, bindir)
            changed.append("built standby")
        elif _ensure_running(config, "standby", bindir):
            changed.append("started standby")

        if not _is_provisioned(config, "subscriber"):
            _wipe_node(config, "subscriber", bindir)
            _provision_subscriber(config, bindir)
            changed.append("built subscriber")
        elif _ensure_running(config, "subscriber", bindir):
            changed.append("started subscriber")

        if changed:
            log("waiting for the standby to stream and the subscription to sync")
        _wait("the sandbox to become healthy", lambda: _health(config, bindir), config.timeout, interval=0.2)
        result = status(config)
        _write_state(config, bindir, result)
    result["changed"] = changed
    return result


def _write_state(config: Config, bindir: str, st: dict) -> None:
    state = {
        "sandbox_dir": config.sandbox_dir,
        "host": config.host,
        "socket_dir": config.socket_dir,
        "postgres_version": _server_version(bindir),
        "pg_bindir": bindir,
        "os_user": OS_USER_WHEN_ROOT if _is_root() else pwd.getpwuid(os.geteuid()).pw_name,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nodes": {
            node: {
                "role": node,
                "port": config.port(node),
                "pid": st["nodes"][node]["pid"],
                "data_dir": config.data_dir(node),
                "log_file": config.log_file(node),
            }
            for node in NODES
        },
        "kube": st.get("kube"),
    }
    _write_file(config.state_file, json.dumps(state, indent=2) + "\n", 0o644)


def down(config: Optional[Config] = None) -> dict:
    """Stop the nodes this sandbox started and delete its data.

    Returns ``{"stopped": [...], "removed": bool}``.
    """
    config = config or Config.from_env()
    kube = _kube()
    present = [n for n in NODES if os.path.isdir(config.node_dir(n))]
    leftovers = [p for p in (config.socket_dir, config.state_file, kube.kube_dir(config), kube.kubeconfig_path(config),
                             os.path.join(config.sandbox_dir, kube.APPS_SUBDIR)) if os.path.lexists(p)]
    if not present and not leftovers:
        _rmdir_if_empty(config.sandbox_dir, also_lock=True)
        return {"stopped": [], "removed": False}
    bindir = find_bindir(config)
    stopped: List[str] = []
    with _Lock(config, config.timeout):
        # First the emulator, so that no scale hook starts a server while we stop them.
        if kube.stop_daemon(config):
            stopped.append("kubesim")
        if kube.stop_apps(config):
            stopped.append("demo app")
        apps_dir = os.path.join(config.sandbox_dir, kube.APPS_SUBDIR)
        if os.path.isdir(apps_dir):
            shutil.rmtree(apps_dir)
        running = {n for n in NODES if _postmaster_info(config, n)}
        if "subscriber" in running:
            try:
                _drop_subscription(config, bindir, primary_up="primary" in running)
            except SandboxError as exc:  # the data is deleted anyway; keep going
                log(f"could not drop subscription {SUBSCRIPTION}: {exc}")
        for node in ("subscriber", "standby", "primary"):
            if node in running and _stop_node(config, node, bindir):
                stopped.append(node)
        for node in present:
            _wipe_node(config, node, bindir)
        if os.path.isdir(config.socket_dir):
            shutil.rmtree(config.socket_dir)
        if os.path.exists(config.state_file):
            os.unlink(config.state_file)
        kdir = kube.kube_dir(config)
        if os.path.isdir(kdir):
            if not os.path.exists(os.path.join(kdir, NODE_MARKER)):
                raise SandboxConflict(f"{kdir} exists but was not created by the sandbox; refusing to delete it")
            shutil.rmtree(kdir)
        if os.path.lexists(kube.kubeconfig_path(config)):
            os.unlink(kube.kubeconfig_path(config))
    _rmdir_if_empty(config.sandbox_dir, also_lock=True)
    return {"stopped": stopped, "removed": True}


def _rmdir_if_empty(path: str, also_lock: bool = False) -> None:
    if also_lock:
        try:
            os.unlink(os.path.join(path, LOCK_FILE))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _drop_subscription(config: Config, bindir: str, primary_up: bool) -> None:
    """Drop the subscription (and with it the primary's logical slot)."""
    exists = _scalar(config, "subscriber",
                     f"SELECT count(*) FROM pg_subscription WHERE subname = {_sql_literal(SUBSCRIPTION)};",
                     bindir=bindir, timeout=15)
    if exists != "1":
        return
    log(f"dropping subscription {SUBSCRIPTION}")
    if primary_up:
        try:
            query(config, "subscriber", f"DROP SUBSCRIPTION {SUBSCRIPTION};", bindir=bindir, timeout=60)
            return
        except SandboxError as exc:
            log(f"DROP SUBSCRIPTION failed ({exc}); detaching it from its slot instead")
    # Primary unreachable: detach the slot locally so DROP does not need it.
    for sql in (f"ALTER SUBSCRIPTION {SUBSCRIPTION} DISABLE;",
                f"ALTER SUBSCRIPTION {SUBSCRIPTION} SET (slot_name = NONE);",
                f"DROP SUBSCRIPTION {SUBSCRIPTION};"):
        query(config, "subscriber", sql, bindir=bindir, timeout=30)


def status(config: Optional[Config] = None) -> dict:
    """Per-node running state, port, pid, role and replication state."""
    config = config or Config.from_env()
    try:
        bindir: Optional[str] = find_bindir(config)
    except SandboxError:
        bindir = None
    nodes = {}
    for node in NODES:
        info = _postmaster_info(config, node)
        entry = {
            "running": bool(info),
            "port": config.port(node),
            "pid": info["pid"] if info else None,
            "role": node,
            "replication": "-",
            "data_dir": config.data_dir(node),
            "log_file": config.log_file(node),
        }
        if info and info["port"]:
            entry["port"] = info["port"]
        if info and bindir:
            try:
                entry["replication"] = _replication_state(config, node, bindir)
            except SandboxError as exc:
                entry["replication"] = f"unknown ({str(exc).splitlines()[0]})"
        nodes[node] = entry
    kube = _kube().status(config)
    return {
        "sandbox_dir": config.sandbox_dir,
        "all_running": all(n["running"] for n in nodes.values()) and kube["running"],
        "nodes": nodes,
        "kube": kube,
    }


def _replication_state(config: Config, node: str, bindir: str) -> str:
    if node == "primary":
        rows = query(config, node, "SELECT application_name, state FROM pg_stat_replication ORDER BY 1;",
                     dbname="postgres", bindir=bindir, timeout=15)
        return ", ".join(f"{a}: {s}" for a, s in rows) or "no replicas connected"
    if node == "standby":
        rows = query(config, node, """
SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver), pg_last_wal_replay_lsn();""",
                     dbname="postgres", bindir=bindir, timeout=15)
        in_recovery, receiver, replay = rows[0]
        if in_recovery != "t":
            return "NOT in recovery (promoted?)"
        return f"{receiver or 'wal receiver down'}, replayed {replay or '-'}"
    problems = _subscription_problems(config, bindir)
    return f"{SUBSCRIPTION}: " + ("; ".join(problems) if problems else "enabled, all tables ready ('r')")


def env(config: Optional[Config] = None) -> Dict[str, str]:
    """Connection variables for every node (see module docstring)."""
    config = config or Config.from_env()
    out: Dict[str, str] = {"SANDBOX_DIR": config.sandbox_dir}
    for node in NODES:
        p = config.params(node)
        prefix = f"SANDBOX_{node.upper()}"
        out[f"{prefix}_DSN"] = config.dsn(node)
        out[f"{prefix}_SUPERUSER_DSN"] = config.dsn(node, superuser=True)
        out[f"{prefix}_HOST"] = str(p["host"])
        out[f"{prefix}_PORT"] = str(p["port"])
        out[f"{prefix}_USER"] = str(p["user"])
        out[f"{prefix}_PASSWORD"] = str(p["password"])
        out[f"{prefix}_DB"] = str(p["dbname"])
    out["SANDBOX_SUPERUSER"] = SUPERUSER
    out["SANDBOX_SUPERUSER_PASSWORD"] = config.superuser_password
    kube = _kube()
    out["KUBECONFIG"] = kube.kubeconfig_path(config)
    out["K8S_AUTH_KUBECONFIG"] = kube.kubeconfig_path(config)
    out["SANDBOX_KUBE_NAMESPACE"] = kube.NAMESPACE
    out["SANDBOX_DB_STATEFULSET"] = kube.STATEFULSET
    out["SANDBOX_DB_PVC"] = kube.PVC
    out["SANDBOX_APP_PORT"] = str(config.app_port)
    out["SANDBOX_APP_URL"] = f"http://{config.host}:{config.app_port}"
    out["SANDBOX_APP_IMAGES"] = json.dumps(kube.images(), sort_keys=True)
    return out


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def _print_status(st: dict) -> None:
    print(f"sandbox dir: {st['sandbox_dir']}")
    fmt = "{:<11} {:<8} {:<6} {:<8} {:<11} {}"
    print(fmt.format("NODE", "STATE", "PORT", "PID", "ROLE", "REPLICATION"))
    for node, n in st["nodes"].items():
        print(fmt.format(node, "running" if n["running"] else "stopped", n["port"], n["pid"] or "-",
                         n["role"], n["replication"]))
    kube = st.get("kube") or {}
    if kube:
        detail = (f"{kube['url']}; StatefulSet {kube['namespace']}/{kube['statefulset']} "
                  f"{kube.get('ready_replicas') or 0}/{kube.get('replicas')} ready; PVC {kube['pvc']} -> {kube.get('volume') or '-'}"
                  if kube["running"] else "-")
        print(fmt.format("kubesim", "running" if kube["running"] else "stopped", "-", kube["pid"] or "-", "k8s api", detail))


def _cmd_psql(argv: Sequence[str]) -> int:
    """`sandbox psql [--superuser] NODE [psql args...]`: exec psql on a node."""
    argv = list(argv)
    superuser = False
    if argv and argv[0] in ("--superuser", "-S"):
        superuser, argv = True, argv[1:]
    if not argv or argv[0] not in NODES:
        raise SandboxError(f"usage: sandbox psql [--superuser] {{{','.join(NODES)}}} [psql args...]")
    node, rest = argv[0], argv[1:]
    config = Config.from_env()
    p = config.params(node, superuser=superuser)
    child_env = dict(os.environ, PGHOST=str(p["host"]), PGPORT=str(p["port"]), PGUSER=str(p["user"]),
                     PGDATABASE=str(p["dbname"]), PGPASSWORD=str(p["password"]))
    psql = _bin(find_bindir(config), "psql")
    sys.stdout.flush()
    os.execve(psql, [psql, *rest], child_env)
    return 0  # not reached


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "psql":
            return _cmd_psql(argv[1:])
        if argv and argv[0] == _kube().SERVE_COMMAND:  # internal: the kubesim daemon started by `up`
            return _kube().serve(Config.from_env())
        parser = argparse.ArgumentParser(prog="sandbox", description=__doc__.split("\n\n", maxsplit=1)[0])
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("up", help="create/start primary, standby and subscriber (idempotent)")
        sub.add_parser("down", help="stop the sandbox's servers and delete its data")
        p_status = sub.add_parser("status", help="show nodes; exit 0 if all run, 3 otherwise")
        p_status.add_argument("--json", action="store_true", help="print JSON")
        p_env = sub.add_parser("env", help="print shell exports (eval \"$(scripts/sandbox env)\")")
        p_env.add_argument("--json", action="store_true", help="print a JSON object instead")
        sub.add_parser("psql", help="psql [--superuser] NODE [psql args...]: run psql on a node")
        sub.add_parser("resync", help="rebuild the standby and the subscriber from the primary (after a restore)")
        sub.add_parser("images", help="list the demo app images the sandbox can run (pinned by digest)")
        args = parser.parse_args(argv)
        config = Config.from_env()
        if args.command == "images":
            for version, ref in _kube().images().items():
                print(f"{version:<8} {ref}")
            return 0
        if args.command == "resync":
            with _Lock(config, config.timeout):
                if not _postmaster_info(config, "primary"):
                    raise SandboxError("the primary is not running; run `scripts/sandbox up` first")
                _kube().resync_replicas(config)
            print("standby and subscriber rebuilt from the primary")
            _print_status(status(config))
            return 0

        if args.command == "up":
            result = up(config)
            if result["changed"]:
                print(f"sandbox up ({', '.join(result['changed'])})")
            else:
                print("sandbox already up and healthy; nothing changed")
            _print_status(result)
            print('connect with: eval "$(scripts/sandbox env)"')
            return 0
        if args.command == "down":
            result = down(config)
            if result["stopped"]:
                kept = sorted(os.listdir(config.sandbox_dir)) if os.path.isdir(config.sandbox_dir) else []
                if kept:  # files the sandbox did not make (e.g. the demo's baseline) stay
                    print(f"stopped {', '.join(result['stopped'])}; removed the node data in {config.sandbox_dir} "
                          f"(left files that are not the sandbox's: {', '.join(kept)})")
                else:
                    print(f"stopped {', '.join(result['stopped'])}; removed {config.sandbox_dir}")
            elif result["removed"]:
                print(f"no sandbox node was running; removed leftover data in {config.sandbox_dir}")
            else:
                print(f"no sandbox in {config.sandbox_dir}; nothing to do")
            return 0
        if args.command == "status":
            st = status(config)
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                _print_status(st)
            return 0 if st["all_running"] else 3
        if args.command == "env":
            variables = env(config)
            if args.json:
                print(json.dumps(variables, indent=2))
            else:
                for key, value in variables.items():
                    print(f"export {key}={shlex.quote(value)}")
            return 0
        parser.error(f"unknown command {args.command}")
    except SandboxError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sandbox env | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
