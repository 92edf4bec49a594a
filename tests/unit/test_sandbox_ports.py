"""Port policy of the sandbox, the tests and the benchmarks.

A CI run once failed because a port of the fault suite's sandbox (then 57700) had been taken as the local
end of some client connection: every port in the kernel's ephemeral range can be.  These tests keep every
port we choose below that range, and check the conflict message says why when a user picks one inside it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess

import pytest

import sandbox as sandbox_lib  # scripts/sandbox.py (tests/conftest.py puts scripts/ on sys.path)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EPHEMERAL_LOW = 32768  # Linux's default net.ipv4.ip_local_port_range is 32768-60999
PORT_ASSIGNMENT = re.compile(r"(?:PORT_BASE|_PORT\b|_port\b|PORTS\b)[^\n]{0,40}?\b(\d{4,5})\b")


def test_sandbox_defaults_lie_below_the_ephemeral_range():
    config = sandbox_lib.Config()
    for port in [config.port(node) for node in sandbox_lib.NODES] + [config.app_port]:
        assert 1024 <= port < EPHEMERAL_LOW


def test_no_test_benchmark_or_scenario_port_lies_in_the_ephemeral_range():
    files = subprocess.run(["git", "ls-files", "tests", "benchmarks", "molecule", "scripts"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        if not name.endswith((".py", ".yml", ".yaml")) or name.startswith("molecule/kind/"):
            continue  # kind maps ports of a real cluster; this file's own regex and constants are not ports
        with open(os.path.join(REPO, name), encoding="utf-8") as fh:
            text = fh.read()
        for match in PORT_ASSIGNMENT.finditer(text):
            if int(match.group(1)) >= EPHEMERAL_LOW:
                offenders.append("%s: %s" % (name, match.group(0)))
    assert offenders == []


def test_a_taken_port_inside_the_ephemeral_range_is_explained(tmp_path):
    low, high = sandbox_lib._ephemeral_port_range()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))  # the kernel picks from its ephemeral range
        taken.listen(1)
        port = taken.getsockname()[1]
        if not low <= port <= high:
            pytest.skip("the kernel picked a port outside its advertised ephemeral range")
        config = sandbox_lib.Config(sandbox_dir=str(tmp_path), primary_port=port)
        with pytest.raises(sandbox_lib.SandboxConflict) as caught:
            sandbox_lib._ensure_port_free(config, "primary")
    message = str(caught.value)
    assert "port %d on 127.0.0.1 (for the primary node) is already in use" % port in message
    assert "SANDBOX_PRIMARY_PORT=<port>" in message and "ephemeral range %d-%d" % (low, high) in message
