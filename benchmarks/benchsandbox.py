"""The sandbox life cycle every benchmark shares (scripts/sandbox.py underneath).

A benchmark builds its own sandbox (own directory and ports, never the demo's or the tests'), and::

    box = benchsandbox.BenchSandbox("bench_x", cfg, say)

    def body():
        box.start()             # sandbox.up(), retried while a port is briefly busy
        ...
        return code, [last_line]

    return box.run(body, keep=args.keep)

``run()`` takes the lock (one run per sandbox directory: a second would tear it down under the first), runs
``body()``, reports Ctrl-C / SIGTERM (exit status 130) and a ``SetupError`` or ``SandboxError`` (2), tears the
sandbox down with ``finish()`` (unless ``--keep`` or it ran before) and only then prints the last lines.

``say(message)`` prints progress; ``status(message)`` (optional) is a context manager showing it while a
step runs (rich's spinner in bench_parity / bench_live); ``alarm(message)`` (optional, default ``say``) prints
an error.

Also shared by the benchmarks: ``SetupError`` and ``say()``; ``interrupt_on_signals()`` (SIGTERM / SIGHUP act as
Ctrl-C); ``parse_count()`` / ``counter()`` (``200k``, ``2M``) and ``from_env()`` (an option's value, else its
environment variable, else the default); ``Postgres`` (autocommit psycopg2 connections named after the
benchmark) and ``login_options()`` (a node's ``login_*`` module parameters); ``write_release()`` (a one-migration
release for migrate_runner) and ``GROW_ORDERS_SQL`` (deterministic rows for the demo ``orders`` table).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(REPO_ROOT, "scripts"), os.path.join(REPO_ROOT, ".collections")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import sandbox  # noqa: E402  (scripts/sandbox.py)


# The demo `orders` table grown by %(missing)s deterministic rows (customer ids 1..%(customers)s, one placed_at
# every %(step)s); psycopg2 named parameters.
GROW_ORDERS_SQL = """
INSERT INTO orders (customer_id, amount, status, placed_at)
SELECT 1 + (g * 7919) %% %(customers)s,
       round((5 + (g * 37) %% 99500 / 100.0)::numeric, 2),
       (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g %% 4],
       timestamptz '2024-01-01 00:00:00+00' + g * %(step)s::interval
  FROM generate_series(1::bigint, %(missing)s::bigint) AS g
"""


class SetupError(Exception):
    """The benchmark could not prepare its sandbox or data (message for humans)."""


def say(message: str) -> None:
    """One line of progress, printed at once."""
    print(message, flush=True)


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so they tear the sandbox down as Ctrl-C does."""
    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)


def parse_count(text, minimum: int = 1, what: str = "", noun: str = "a number") -> int:
    """``2m``, ``500k``, ``1_000``, ``1.5M`` -> an int of at least ``minimum``.

    Bad input raises argparse.ArgumentTypeError: ``not <noun>: '<text>'``, or ``<what> must be at least ...``.
    """
    raw = str(text).strip().lower().replace("_", "")
    factor = {"k": 1000, "m": 1000000}.get(raw[-1:], 1)
    try:
        value = int(float(raw[:-1] if factor > 1 else raw) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{what + ' ' if what else ''}must be at least {minimum} (got {value})")
    return value


def counter(minimum: int = 1, what: str = "", noun: str = "a number") -> Callable[[str], int]:
    """parse_count() with these settings, for argparse's ``type=``."""
    return functools.partial(parse_count, minimum=minimum, what=what, noun=noun)


def from_env(parser: argparse.ArgumentParser, value, env: str, parse: Callable[[str], Any], default, prefix: Optional[str] = None):
    """``value`` when the option was given (not None), else ``parse($env)`` when that is set, else ``default``.

    A bad ``$env`` is a usage error (parser.error, exit status 2): ``prefix`` (default ``"<env>: "``) + the reason.
    """
    if value is not None:
        return value
    if not os.environ.get(env):
        return default
    try:
        return parse(os.environ[env])
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(f"{env + ': ' if prefix is None else prefix}{exc}")
    return None  # not reached: parser.error() exits


class Postgres:
    """Autocommit psycopg2 connections to a benchmark's sandbox, named ``application_name`` (pg_stat_activity).

    ``superuser`` is the role of every call that does not say; ``canonical`` opens them through the collection's
    module_utils/postgres.connect() with the modules' canonical session settings (to measure as they do).
    """

    def __init__(self, application_name: str, superuser: bool = False, canonical: bool = False):
        self.application_name = application_name
        self.superuser = superuser
        self.canonical = canonical

    def connect(self, cfg: "sandbox.Config", node: str = "primary", superuser: Optional[bool] = None,
                dbname: Optional[str] = None):
        params = cfg.params(node, superuser=self.superuser if superuser is None else superuser,
                            **({"dbname": dbname} if dbname else {}))
        if self.canonical:
            from ansible_collections.stateful.rollback.plugins.module_utils.postgres import connect

            return connect(dict(params), application_name=self.application_name)
        import psycopg2

        conn = psycopg2.connect(connect_timeout=10, application_name=self.application_name, **params)
        conn.autocommit = True
        return conn

    def query(self, cfg: "sandbox.Config", sql: str, params=None, node: str = "primary", superuser: Optional[bool] = None,
              dbname: Optional[str] = None) -> list:
        """Every row of ``sql`` on its own connection ([] for a statement that returns none)."""
        conn = self.connect(cfg, node, superuser, dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            conn.close()

    def scalar(self, cfg: "sandbox.Config", sql: str, params=None, node: str = "primary", superuser: Optional[bool] = None):
        """The first column of the first row of ``sql`` (None without one)."""
        rows = self.query(cfg, sql, params, node, superuser)
        return rows[0][0] if rows else None


def login_options(cfg: "sandbox.Config", node: str = "primary", superuser: bool = False, dbname: Optional[str] = None) -> Dict[str, Any]:
    """The modules' connection parameters (canonical names: login_host, login_port, ...) for ``node``."""
    p = cfg.params(node, superuser=superuser, **({"dbname": dbname} if dbname else {}))
    return dict(login_host=p["host"], login_port=int(p["port"]), login_user=p["user"], login_password=p["password"],
                login_db=p["dbname"])


def write_release(directory: str, version: str, image: str, migration: Dict[str, Any], up_sql: str, down_sql: str) -> str:
    """A release for migrate_runner in ``directory``; returns its manifest's path.

    ``migration`` is the manifest's one migration (id, up, down, backfill ...); ``up_sql`` / ``down_sql`` are
    written to its ``up`` / ``down`` files. The app is one Deployment ``web`` running ``image``.
    """
    for key, text in (("up", up_sql), ("down", down_sql)):
        path = os.path.join(directory, migration[key])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    manifest = {"version": version, "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": image}}]},
                "migrations": [migration]}
    path = os.path.join(directory, "release.yml")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    return path


def config(dir_env: str, default_dir: str, ports: Dict[str, int], port_env: Optional[Callable[[str], str]] = None,
           app_port: Optional[int] = None, drop_env_ports: bool = False) -> "sandbox.Config":
    """The benchmark's sandbox Config: directory from ``$dir_env`` (else ``default_dir``), one port per node.

    ``ports`` maps node -> default port; ``port_env(node)`` names the variable overriding one. The caller's
    ``SANDBOX_*`` settings (passwords, bindir, timeout) are kept; with ``drop_env_ports`` its ``SANDBOX_*_PORT``
    and ``SANDBOX_DIR`` are ignored entirely.
    """
    environ = {k: v for k, v in os.environ.items() if k.startswith("SANDBOX_")
               and not (drop_env_ports and (k.endswith("_PORT") or k == "SANDBOX_DIR"))}
    environ["SANDBOX_DIR"] = os.environ.get(dir_env) or default_dir
    for node, port in ports.items():
        environ[sandbox.Config.ENV_VARS[f"{node}_port"]] = (os.environ.get(port_env(node)) if port_env else None) or str(port)
    if app_port is not None:
        environ[sandbox.Config.ENV_VARS["app_port"]] = str(app_port)
    return sandbox.Config.from_env(environ)


def based_ports(base: int) -> Dict[str, int]:
    """primary = base, standby = base + 1, subscriber = base + 2."""
    return {node: base + offset for offset, node in enumerate(sandbox.NODES)}


def _no_status(message: str) -> "contextlib.AbstractContextManager":
    return contextlib.nullcontext(message)


class BenchSandbox:
    """Lock, start and tear down one benchmark's sandbox."""

    def __init__(self, prog: str, cfg: "sandbox.Config", say: Callable[[str], None],
                 status: Optional[Callable[[str], "contextlib.AbstractContextManager"]] = None,
                 alarm: Optional[Callable[[str], None]] = None):
        self.prog = prog
        self.cfg = cfg
        self.say = say
        self.status = status or _no_status
        self.alarm = alarm or say
        self.was_running = False
        self._lock = None

    def lock(self) -> bool:
        """Take the per-directory lock (False, with a message on stderr, when another run holds it)."""
        digest = hashlib.sha1(self.cfg.sandbox_dir.encode()).hexdigest()[:12]
        path = os.path.join(tempfile.gettempdir(), "%s-%s.lock" % (self.prog, digest))
        self._lock = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"{self.prog}: another {self.prog} run is using {self.cfg.sandbox_dir} (lock {path})", file=sys.stderr)
            return False
        self.was_running = sandbox.status(self.cfg)["all_running"]
        return True

    def start(self, wait: float = 70.0, what: str = "primary, standby, subscriber") -> None:
        """sandbox.up(), retried for a while when a port is busy.

        The ports lie in Linux's ephemeral range (32768-60999): a client connection elsewhere may have used one
        as its source port, and its TIME_WAIT entry blocks the server's bind for up to 60 seconds.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                with self.status(f"starting the sandbox ({what})"):
                    sandbox.up(self.cfg)
                return
            except sandbox.SandboxConflict as exc:
                if time.monotonic() >= deadline:
                    raise
                self.say(f"{exc} -- retrying in 5s (until {wait:.0f}s have passed)")
                time.sleep(5)

    def stop_hint(self, extra: str = "") -> str:
        cfg = self.cfg
        return (f"SANDBOX_DIR={cfg.sandbox_dir} SANDBOX_PRIMARY_PORT={cfg.primary_port} SANDBOX_STANDBY_PORT={cfg.standby_port} "
                f"SANDBOX_SUBSCRIBER_PORT={cfg.subscriber_port}{extra} scripts/sandbox down")

    def finish(self, keep: bool = False, keep_note: str = "", hint_extra: str = "",
               if_was_running: Optional[Callable[[], str]] = None, after_down: Optional[Callable[[dict], None]] = None) -> int:
        """Tear down (0) or leave running; 2 when the teardown failed. Further Ctrl-C is ignored meanwhile."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if keep:
            self.say(f"--keep: sandbox left running{keep_note}; stop it with: {self.stop_hint(hint_extra)}")
            return 0
        if self.was_running:
            detail = if_was_running() if if_was_running else "left it running"
            self.say(f"the sandbox in {self.cfg.sandbox_dir} was already running before this run; {detail}")
            return 0
        try:
            with self.status("tearing the sandbox down"):
                gone = sandbox.down(self.cfg)
            if after_down:
                after_down(gone)
            if gone.get("removed"):
                self.say(f"sandbox {self.cfg.sandbox_dir} stopped ({', '.join(gone.get('stopped') or []) or 'nothing running'}) and removed")
        except sandbox.SandboxError as exc:
            self.say(f"{self.prog}: could not tear the sandbox down: {exc}")
            return 2
        return 0

    def run(self, body: Callable[[], Tuple[int, Sequence[str]]], keep: bool = False,
            describe: Optional[Callable[[Exception], Optional[str]]] = None, **finish: Any) -> int:
        """The benchmark's run: lock, ``body()`` -> (exit status, last lines), teardown, then the last lines.

        Ctrl-C (and SIGTERM / SIGHUP after interrupt_on_signals()) is exit status 130, a SetupError or
        SandboxError 2 (``<prog>: error: ...``); ``describe(exc)`` gives the message (exit status 2) of any other
        exception the benchmark expects ("" when it printed one itself), None to let it through. ``finish`` goes to
        finish().
        """
        if not self.lock():
            return 2
        code, last = 2, ()
        try:
            code, last = body()
        except KeyboardInterrupt:
            self.alarm(f"{self.prog}: interrupted")
            code = 130
        except (SetupError, sandbox.SandboxError) as exc:
            self.alarm(f"{self.prog}: error: {exc}")
        except Exception as exc:  # pylint: disable=broad-except
            text = describe(exc) if describe else None
            if text is None:
                raise
            if text:  # "": describe() reported it itself
                self.alarm(text)
        finally:
            failed = self.finish(keep=keep, **finish)
            code = code or failed  # the teardown runs whatever the outcome
        for line in last:
            print(line, flush=True)
        return code
