"""Shared pytest setup for stateful.rollback.

* Makes ``ansible_collections.stateful.rollback`` importable from
  ``<repo>/.collections`` (filled by the bootstrap script) and ``sandbox``
  importable from ``<repo>/scripts``.
* Provides the session-scoped ``sandbox`` fixture: a real PostgreSQL primary,
  streaming standby and logical subscriber on 127.0.0.1, started once per
  test session and torn down at its end.

Fixture settings (environment):

``SANDBOX_TEST_PORT_BASE``  primary port; standby = base+1, subscriber = base+2
                            (default 25430; pytest-xdist worker gwN adds 100*N and
                            suffixes the directory with -gwN).
``SANDBOX_TEST_DIR``        sandbox directory (default ``<repo>/.sandbox/pytest``);
                            ``SANDBOX_DIR`` is honoured too unless it points at the
                            developer sandbox ``<repo>/.sandbox`` (as it does after
                            ``eval "$(scripts/sandbox env)"``).
``SANDBOX_KEEP=1``          leave the test sandbox running after the session
                            (faster re-runs; ``up`` is a no-op when healthy).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

for _path in (os.path.join(REPO_ROOT, "scripts"), os.path.join(REPO_ROOT, ".collections")):
    if os.path.isdir(_path) and _path not in sys.path:
        sys.path.insert(0, _path)

import sandbox as sandbox_lib  # noqa: E402  (scripts/sandbox.py)

DEFAULT_TEST_PORT_BASE = 25430


def sandbox_test_config(environ: Optional[Dict[str, str]] = None) -> "sandbox_lib.Config":
    """Config for the dedicated test sandbox (own dir and ports)."""
    environ = dict(os.environ if environ is None else environ)
    base = int(environ.get("SANDBOX_TEST_PORT_BASE") or DEFAULT_TEST_PORT_BASE)
    # Under pytest-xdist every worker has a session sandbox of its own: gw1 gets base+100 and its own directory.
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    worker_index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    base += 100 * worker_index
    for offset, node in enumerate(sandbox_lib.NODES):
        environ[sandbox_lib.Config.ENV_VARS[f"{node}_port"]] = str(base + offset)
    environ["SANDBOX_APP_PORT"] = str(base + 5)
    test_dir = environ.get("SANDBOX_TEST_DIR") or environ.get("SANDBOX_DIR") or ""
    if not test_dir or os.path.abspath(test_dir) == os.path.abspath(sandbox_lib.DEFAULT_SANDBOX_DIR):
        test_dir = os.path.join(sandbox_lib.DEFAULT_SANDBOX_DIR, "pytest")
    if worker_index:
        test_dir = "%s-%s" % (test_dir.rstrip("/"), worker)
    environ["SANDBOX_DIR"] = test_dir
    return sandbox_lib.Config.from_env(environ)


class Sandbox:
    """Handle returned by the ``sandbox`` fixture.

    ``primary`` / ``standby`` / ``subscriber`` are libpq parameter dicts
    (host, port, user, password, dbname) for the ``app`` role.
    """

    def __init__(self, config: "sandbox_lib.Config", info: Optional[dict] = None):
        self.config = config
        self.info = info or {}
        self.primary = self.params("primary")
        self.standby = self.params("standby")
        self.subscriber = self.params("subscriber")

    # -- connection parameters --------------------------------------------------
    def params(self, node: str, superuser: bool = False) -> Dict[str, Any]:
        return dict(self.config.params(node, superuser=superuser))

    def superuser(self, node: str) -> Dict[str, Any]:
        """libpq parameters for the ``postgres`` superuser on ``node``."""
        return self.params(node, superuser=True)

    def dsn(self, node: str, superuser: bool = False) -> str:
        """libpq URI, e.g. ``postgresql://app:app-secret@127.0.0.1:25430/app``."""
        return self.config.dsn(node, superuser=superuser)

    # -- SQL -----------------------------------------------------------------------
    def connect(self, node: str, superuser: bool = False):
        """A new autocommit psycopg2 connection (caller closes it)."""
        import psycopg2

        conn = psycopg2.connect(connect_timeout=5, **self.params(node, superuser))
        conn.autocommit = True
        return conn

    def sql(self, node: str, query: str, params: Optional[Sequence[Any]] = None,
            superuser: bool = False) -> List[tuple]:
        """Run ``query`` on ``node`` (autocommit) and return its rows ([] if none)."""
        conn = self.connect(node, superuser)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            conn.close()

    # -- replication-aware helpers (logic lives in scripts/sandbox.py) ------------------
    def create_table(self, ddl: str, timeout: float = 60) -> None:
        """Create table(s) on primary (standby via WAL) and subscriber; refresh the subscription."""
        sandbox_lib.sync_table(self.config, ddl, timeout=timeout)

    def drop_table(self, name: str, timeout: float = 60) -> None:
        """Drop ``name`` on primary and subscriber and refresh the subscription."""
        sandbox_lib.drop_table(self.config, name, timeout=timeout)

    def wait_standby_caught_up(self, timeout: float = 30) -> None:
        sandbox_lib.wait_standby_caught_up(self.config, timeout=timeout)

    def wait_subscriber_caught_up(self, timeout: float = 30) -> None:
        sandbox_lib.wait_subscriber_caught_up(self.config, timeout=timeout)

    def status(self) -> dict:
        return sandbox_lib.status(self.config)

    def env(self) -> Dict[str, str]:
        """What ``scripts/sandbox env`` exports for this sandbox (DSNs, ports, KUBECONFIG, ...)."""
        return sandbox_lib.env(self.config)

    def up(self) -> dict:
        """Restart any node a test stopped (no-op when healthy)."""
        return sandbox_lib.up(self.config)


@pytest.fixture(scope="module")
def own_sandbox(request):
    """A sandbox of the test module's own, for tests that rebuild or restore it.

    The module sets ``OWN_SANDBOX_PORT_BASE`` (primary port; standby +1,
    subscriber +2) and ``OWN_SANDBOX_NAME`` (directory under ``<repo>/.sandbox``).
    """
    base = int(getattr(request.module, "OWN_SANDBOX_PORT_BASE"))
    name = getattr(request.module, "OWN_SANDBOX_NAME")
    environ = {sandbox_lib.Config.ENV_VARS[f"{node}_port"]: str(base + offset) for offset, node in enumerate(sandbox_lib.NODES)}
    environ["SANDBOX_APP_PORT"] = str(base + 5)
    environ["SANDBOX_DIR"] = os.path.join(sandbox_lib.DEFAULT_SANDBOX_DIR, name)
    config = sandbox_lib.Config.from_env(environ)
    try:
        info = sandbox_lib.up(config)
    except sandbox_lib.SandboxError as exc:
        if not isinstance(exc, sandbox_lib.SandboxConflict):
            sandbox_lib.down(config)
        pytest.fail(f"cannot start the sandbox {name}: {exc}", pytrace=False)
    try:
        yield Sandbox(config, info)
    finally:
        sandbox_lib.down(config)


@pytest.fixture(scope="session")
def sandbox():
    """Session-wide PostgreSQL sandbox (primary, standby, subscriber)."""
    config = sandbox_test_config()
    try:
        info = sandbox_lib.up(config)
    except sandbox_lib.SandboxConflict as exc:
        # Something not ours is in the way; nothing was changed, nothing to clean.
        pytest.fail(f"cannot start the test sandbox: {exc}", pytrace=False)
    except sandbox_lib.SandboxError as exc:
        try:
            sandbox_lib.down(config)
        except sandbox_lib.SandboxError:
            pass
        pytest.fail(f"cannot start the test sandbox: {exc}", pytrace=False)
    try:
        yield Sandbox(config, info)
    finally:
        if not os.environ.get("SANDBOX_KEEP"):
            sandbox_lib.down(config)
            # <repo>/.sandbox was probably created just to hold pytest/.
            parent = os.path.dirname(config.sandbox_dir)
            if os.path.abspath(parent) == os.path.abspath(sandbox_lib.DEFAULT_SANDBOX_DIR):
                try:
                    os.rmdir(parent)
                except OSError:
                    pass
