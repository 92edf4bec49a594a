"""Run the molecule ``sandbox`` scenario end to end: ``molecule test -s sandbox``.

The scenario (molecule/sandbox/) starts its own PostgreSQL sandbox (primary,
streaming standby, logical subscriber on 127.0.0.1, ports 55630-55632 under
``<repo>/.sandbox/molecule``), runs playbooks/parity_demo.yml as converge, reruns it
over a simulated interrupted run, verifies with replication_parity and
destroys the sandbox. See molecule/README.md.

Molecule runs in its own process group so that a timeout can end it with
every ansible-playbook it started. Whatever happens, the scenario's sandbox
is stopped afterwards with ``scripts/sandbox down`` and the settings
molecule.yml gives it (molecule's own destroy step normally did so already;
then this is a no-op).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MOLECULE = BIN / "molecule"
SCENARIO = REPO / "molecule" / "sandbox"
SANDBOX = REPO / "scripts" / "sandbox"

TIMEOUT = 900  # seconds for the whole `molecule test`; a run takes about a minute
TAIL_LINES = 150


def _scenario_sandbox_env() -> dict:
    """SANDBOX_* settings of molecule/sandbox/molecule.yml (ansible.env)."""
    config = yaml.safe_load((SCENARIO / "molecule.yml").read_text(encoding="utf-8"))
    settings = {
        key: str(value).replace("${MOLECULE_PROJECT_DIRECTORY}", str(REPO))
        for key, value in config["ansible"]["env"].items()
        if key.startswith("SANDBOX_")
    }
    assert {"SANDBOX_DIR", "SANDBOX_PRIMARY_PORT", "SANDBOX_STANDBY_PORT", "SANDBOX_SUBSCRIBER_PORT"} <= set(settings)
    return settings


def _molecule_env() -> dict:
    env = dict(os.environ)
    # A molecule or sandbox setting from the caller's shell must not redirect the run.
    for var in list(env):
        if var.startswith(("MOLECULE_", "SANDBOX_")) or var == "ANSIBLE_CONFIG":
            del env[var]
    env.update(
        # molecule calls ansible-config / ansible-playbook through PATH.
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        NO_COLOR="1",
        ANSIBLE_NOCOLOR="1",
        PY_COLORS="0",
    )
    return env


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _sandbox_down(settings: dict) -> str:
    """Stop the scenario's sandbox and remove its directory; return what happened."""
    env = dict(os.environ)
    env.update(settings)
    proc = subprocess.run(
        [str(SANDBOX), "down"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    report = f"scripts/sandbox down (exit {proc.returncode}): {proc.stdout.strip()} {proc.stderr.strip()}"
    sandbox_dir = Path(settings["SANDBOX_DIR"])
    # Only the scenario's dedicated directory (the demo leaves its baseline file
    # in it), and only once its servers are down.
    if proc.returncode == 0 and sandbox_dir == REPO / ".sandbox" / "molecule" and sandbox_dir.exists():
        shutil.rmtree(sandbox_dir)
    return report


@pytest.mark.timeout(TIMEOUT + 360)
def test_molecule_sandbox_scenario():
    if not MOLECULE.exists():
        pytest.fail(f"{MOLECULE} is missing: run scripts/bootstrap (requirements-dev.txt installs molecule)")
    settings = _scenario_sandbox_env()
    output = ""
    try:
        proc = subprocess.Popen(
            [str(MOLECULE), "test", "-s", "sandbox"],
            cwd=REPO,
            env=_molecule_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: see the timeout below
        )
        try:
            output, dummy = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # End molecule and the ansible-playbook it runs: the group we started.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                output, dummy = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, dummy = proc.communicate()
            pytest.fail(f"molecule test -s sandbox did not finish within {TIMEOUT}s; last output:\n{_tail(output)}")
        assert proc.returncode == 0, (
            f"molecule test -s sandbox failed (exit {proc.returncode}); last output:\n{_tail(output)}"
        )
    finally:
        down = _sandbox_down(settings)
        status = subprocess.run(
            [str(SANDBOX), "status", "--json"], env={**os.environ, **settings}, cwd=REPO,
            capture_output=True, text=True, timeout=120, check=False,
        )
    running = [name for name, node in json.loads(status.stdout)["nodes"].items() if node["running"]]
    assert not running, f"the scenario's sandbox still runs after cleanup ({running}):\n{down}"

    # The steps that ran (molecule's closing summary).
    for step in ("create", "prepare", "converge", "side_effect", "verify", "destroy"):
        assert re.search(rf"^sandbox \S+ {step}: Executed: Successful", output, re.MULTILINE), (
            f"{step} did not run successfully:\n{_tail(output)}"
        )
