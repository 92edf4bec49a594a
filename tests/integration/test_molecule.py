"""Run every local molecule scenario end to end: ``molecule test -s <scenario>``.

Each scenario (molecule/<scenario>/, see molecule/README.md) starts a sandbox of
its own (PostgreSQL primary, streaming standby, logical subscriber and the
kubesim API on 127.0.0.1, its ports and ``SANDBOX_DIR`` in its molecule.yml),
prepares it, converges, checks idempotence (or, for the drill, runs it a second
time), verifies and destroys it:

* ``sandbox``: a PVC snapshot restore and the replica-parity demo;
* ``deploy``: playbooks/deploy.yml deploys release 2.0.0 over 1.0.0;
* ``rollback``: playbooks/rollback.yml rolls 2.0.0 back to 1.0.0;
* ``drill``: playbooks/drill.yml with fault ``migration``, twice;
* ``preflight``: playbooks/preflight.yml passes 2.0.0 and changes nothing (and refuses 3.0.0).

Molecule runs in its own process group so that a timeout can end it with
every ansible-playbook it started. Whatever happens, the scenario's sandbox
is stopped afterwards with ``scripts/sandbox down`` and the settings its
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
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MOLECULE = BIN / "molecule"
SANDBOX = REPO / "scripts" / "sandbox"
TAIL_LINES = 150

# scenario -> (seconds for the whole `molecule test`, the steps its summary must show as successful).
# The budgets only guard against a hang: on a 2-core machine under a load average of 20-28 the runs took
# 11 min (sandbox), 28 (deploy), 26 (rollback), 38 (drill) and 23 (preflight); molecule/README.md has the times.
SCENARIOS = {
    "sandbox": (1500, ("create", "prepare", "converge", "idempotence", "side_effect", "verify", "destroy")),
    "deploy": (2700, ("create", "prepare", "converge", "idempotence", "verify", "destroy")),
    "rollback": (3300, ("create", "prepare", "converge", "idempotence", "verify", "destroy")),
    "drill": (3300, ("create", "prepare", "converge", "side_effect", "verify", "destroy")),
    "preflight": (2700, ("create", "prepare", "converge", "idempotence", "verify", "destroy")),
}


def _scenario_sandbox_env(scenario: str) -> dict:
    """SANDBOX_* settings of molecule/<scenario>/molecule.yml (ansible.env)."""
    config = yaml.safe_load((REPO / "molecule" / scenario / "molecule.yml").read_text(encoding="utf-8"))
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


def _is_scenario_dir(path: Path) -> bool:
    """Whether ``path`` is a directory the scenarios dedicate to themselves: <repo>/.sandbox/molecule[-<name>]."""
    return path.parent == REPO / ".sandbox" and re.fullmatch(r"molecule(-[a-z]+)?", path.name) is not None


def _sandbox_down(settings: dict) -> str:
    """Stop the scenario's sandbox and remove its directory; return what happened."""
    env = dict(os.environ)
    env.update(settings)
    proc = subprocess.run(
        [str(SANDBOX), "down"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    report = f"scripts/sandbox down (exit {proc.returncode}): {proc.stdout.strip()} {proc.stderr.strip()}"
    sandbox_dir = Path(settings["SANDBOX_DIR"])
    # Only the scenario's dedicated directory (baselines, reports and audit logs
    # are left in it), and only once its servers are down.
    if proc.returncode == 0 and _is_scenario_dir(sandbox_dir) and sandbox_dir.exists():
        shutil.rmtree(sandbox_dir)
    return report


def test_every_scenario_has_its_own_sandbox():
    """Scenarios run in parallel in a developer's shell: no two may share a port or a directory."""
    on_disk = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml") if p.parent.name != "kind")
    assert on_disk == sorted(SCENARIOS), f"molecule scenarios {on_disk} but this module runs {sorted(SCENARIOS)}"
    seen_ports: dict = {}
    seen_dirs: dict = {}
    for scenario in SCENARIOS:
        settings = _scenario_sandbox_env(scenario)
        assert _is_scenario_dir(Path(settings["SANDBOX_DIR"])), settings["SANDBOX_DIR"]
        assert settings["SANDBOX_DIR"] not in seen_dirs, (scenario, seen_dirs)
        seen_dirs[settings["SANDBOX_DIR"]] = scenario
        for key in ("SANDBOX_PRIMARY_PORT", "SANDBOX_STANDBY_PORT", "SANDBOX_SUBSCRIBER_PORT", "SANDBOX_APP_PORT"):
            port = settings[key]
            assert port not in seen_ports, f"{scenario} {key}={port} is also {seen_ports[port]}"
            seen_ports[port] = f"{scenario} {key}"


@pytest.mark.parametrize(
    "scenario",
    # pytest-timeout: the scenario's budget plus time for the teardown below.
    [pytest.param(name, marks=pytest.mark.timeout(budget + 360), id=name) for name, (budget, dummy) in SCENARIOS.items()],
)
def test_molecule_scenario(scenario):
    timeout, steps = SCENARIOS[scenario]
    if not MOLECULE.exists():
        pytest.fail(f"{MOLECULE} is missing: run scripts/bootstrap (requirements-dev.txt installs molecule)")
    settings = _scenario_sandbox_env(scenario)
    output = ""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [str(MOLECULE), "test", "-s", scenario],
            cwd=REPO,
            env=_molecule_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: see the timeout below
        )
        try:
            output, dummy = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # End molecule and the ansible-playbook it runs: the group we started.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                output, dummy = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                output, dummy = proc.communicate()
            pytest.fail(f"molecule test -s {scenario} did not finish within {timeout}s; last output:\n{_tail(output)}")
        assert proc.returncode == 0, (
            f"molecule test -s {scenario} failed (exit {proc.returncode}); last output:\n{_tail(output)}"
        )
    finally:
        elapsed = time.monotonic() - started
        down = _sandbox_down(settings)
        status = subprocess.run(
            [str(SANDBOX), "status", "--json"], env={**os.environ, **settings}, cwd=REPO,
            capture_output=True, text=True, timeout=120, check=False,
        )
    print(f"molecule test -s {scenario}: {elapsed:.0f} s")
    running = [name for name, node in json.loads(status.stdout)["nodes"].items() if node["running"]]
    assert not running, f"the scenario's sandbox still runs after cleanup ({running}):\n{down}"

    # The steps that ran (molecule's closing summary).
    for step in steps:
        assert re.search(rf"^{scenario} \S+ {step}: Executed: Successful", output, re.MULTILINE), (
            f"{step} did not run successfully:\n{_tail(output)}"
        )
