"""The sandbox life cycle every benchmark shares (scripts/sandbox.py underneath).

A benchmark builds its own sandbox (own directory and ports, never the demo's or the tests'), and::

    box = benchsandbox.BenchSandbox("bench_x", cfg, say)
    if not box.lock():          # one run per sandbox directory: a second would tear it down under the first
        return 2
    try:
        box.start()             # sandbox.up(), retried while a port is briefly busy
        ...
    finally:
        failed = box.finish(keep=args.keep)   # stop and remove it, unless --keep or it ran before
        code = code or failed

``say(message)`` prints progress; ``status(message)`` (optional) is a context manager showing it while a
step runs (rich's spinner in bench_parity / bench_live).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import sys
import tempfile
import time
from typing import Callable, Dict, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(REPO_ROOT, "scripts"), os.path.join(REPO_ROOT, ".collections")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import sandbox  # noqa: E402  (scripts/sandbox.py)


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
                 status: Optional[Callable[[str], "contextlib.AbstractContextManager"]] = None):
        self.prog = prog
        self.cfg = cfg
        self.say = say
        self.status = status or _no_status
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
