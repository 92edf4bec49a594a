# -*- coding: utf-8 -*-
"""Helpers shared by the test modules (importable as ``testkit``: pytest puts ``tests/`` on sys.path).

* ``run_module``: run one of the collection's modules in-process as AnsibleModule would (core 2.19 needs
  ``_ANSIBLE_PROFILE`` beside ``_ANSIBLE_ARGS``) and return its JSON result.
* ``playbook`` and friends: run ``ansible-playbook`` with the sandbox inventory against a test sandbox and
  read back what the run left (app version, release ledger, columns).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
RELEASES = os.path.join(REPO, "playbooks", "demo", "releases")


def run_module(capsys, module, args, check_mode=False, diff=False, raw=False):
    """Run ``module.main()`` with ``args``; return its result (and the raw stdout when ``raw``)."""
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    basic._ANSIBLE_PROFILE = "legacy"
    with pytest.raises(SystemExit):
        module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    return (result, out) if raw else result


def closed_port():
    """A loopback port nothing listens on (connection refused): an unreachable server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def login_options(params, **extra):
    """The database modules' connection options (community.postgresql's names) for libpq ``params`` of a
    sandbox node (``sb.primary``, ``sb.params(node)``), plus ``extra``."""
    options = dict(login_host=params["host"], login_port=int(params["port"]), login_user=params["user"],
                   login_password=params["password"], login_db=params["dbname"])
    options.update(extra)
    return options


def playbook_env(sb, **extra):
    """Environment for ansible-playbook against sandbox ``sb`` (its ports and directory)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.update({k: v for k, v in sb.env().items() if k.startswith("SANDBOX_") and k.endswith(("_PORT", "_DIR"))})
    env.update(extra)
    return env


def playbook_command(name, *extra):
    return [os.path.join(BIN, "ansible-playbook"), "-i", "inventories/sandbox", "playbooks/" + name] + list(extra)


def playbook(sb, name, *extra, timeout=900, env=None):
    """Run ``playbooks/<name>`` on sandbox ``sb``; return (returncode, stdout + stderr)."""
    proc = subprocess.run(playbook_command(name, *extra), cwd=REPO, env=playbook_env(sb, **(env or {})),
                          capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def recap_changed(output, host="sandbox"):
    """The ``changed=`` count of ``host`` in a PLAY RECAP."""
    match = re.search(r"^%s\s+:\s+ok=\d+\s+changed=(\d+)" % re.escape(host), output, re.M)
    assert match, output[-3000:]
    return int(match.group(1))


def manifest(version):
    """``-e`` value selecting demo release ``version``."""
    return "stateful_rollback_release_manifest=" + os.path.join(RELEASES, version, "release.yml")


def app_version(sb):
    with urllib.request.urlopen(sb.env()["SANDBOX_APP_URL"] + "/version", timeout=5) as resp:
        return json.loads(resp.read())["version"]


def ledger(sb):
    """{version: (outcome, known_good)} of the release ledger on the primary."""
    rows = sb.sql("primary", "SELECT version, outcome, known_good FROM stateful_rollback.release_ledger ORDER BY id")
    return {version: (outcome, known_good) for version, outcome, known_good in rows}


def columns(sb, node="primary", table="customers"):
    return [r[0] for r in sb.sql(node, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                                       "AND table_name = %s ORDER BY ordinal_position", (table,))]


def wait_for(check, timeout, what, interval=0.2):
    """``check()``'s first truthy value, polled every ``interval`` s; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out after %ss waiting for %s" % (timeout, what)
        time.sleep(interval)
