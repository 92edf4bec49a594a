# -*- coding: utf-8 -*-
"""Helpers of the fault-injection suite (tests/faults): processes to kill, kubesim fault knobs, the demo
shop installed without the drill, data fingerprints, journal rows and the fault table's records.

Every kill is aimed at one PID we know for certain: the postmaster of a test sandbox (from its own
``postmaster.pid``) or the process group of an ``ansible-playbook`` the test started itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import sandbox as sandbox_lib  # scripts/sandbox.py (tests/conftest.py puts scripts/ on sys.path)
import sandbox_kube
from testkit import REPO, login_options, playbook_command, playbook_env, wait_for  # noqa: F401  (wait_for: used by the fault tests through faultkit)

PYTHON = sys.executable


# -- the demo shop, installed as playbooks/demo.yml's first play does (without the drill) --------------------
def install_shop(sb, version="1.0.0"):
    """The shop's Secret and Deployment sandbox/web running ``version`` (once), ready."""
    sandbox_kube.install_shop(sb.config, version)


# -- kills aimed at one known PID --------------------------------------------------------------------
def postmaster_pid(sb, node="primary"):
    """PID of ``node``'s postmaster, read from its own postmaster.pid (checked alive and a postgres process)."""
    info = sandbox_lib._postmaster_info(sb.config, node)
    assert info, "%s is not running" % node
    return info["pid"]


def kill_postmaster(sb, node="primary", timeout=60):
    """SIGKILL the postmaster of ``node`` (that PID only); wait until its backends have exited too.

    Returns the killed PID. The backends notice the postmaster's death and exit by themselves; the next
    start needs them gone (their shared memory would otherwise block it).
    """
    pid = postmaster_pid(sb, node)
    children = sandbox_kube._children(pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(_alive(p) for p in [pid] + children), timeout, "the killed postmaster's processes to exit")
    return pid


def _alive(pid):
    """True while ``pid`` exists, zombies included: PostgreSQL refuses to start while the PID of its old
    postmaster.pid answers kill(pid, 0), which a zombie not yet reaped by init still does."""
    return os.path.exists("/proc/%d" % pid)


def restart(sb):
    """``scripts/sandbox up``'s start path: start whatever is down and wait until the sandbox is healthy."""
    return sandbox_lib.up(sb.config)


def start_playbook(sb, name, *extra, env=None, log=None):
    """ansible-playbook in a process group of its own (so that killing the group kills its modules too)."""
    out = open(log, "w+", encoding="utf-8") if log else subprocess.DEVNULL
    proc = subprocess.Popen(playbook_command(name, *extra), cwd=REPO, env=playbook_env(sb, **(env or {})),
                            stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.log = log
    return proc


def _descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, encoding="utf-8") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(proc):
    """SIGKILL a process this test started, its process group, and every process below it.

    ansible-playbook's workers call setsid(), so its process group alone would miss the module process: the tree
    is frozen first (SIGSTOP, so nothing forks or reparents meanwhile), then killed.
    """
    tree = [proc.pid] + _descendants(proc.pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    tree = sorted(set(tree + _descendants(proc.pid)))
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    return tree


def start_module(module, args, log):
    """Run one of the collection's modules in its own process (as Ansible runs it); stdout+stderr to ``log``."""
    code = ("import json, sys\n"
            "from ansible.module_utils import basic\n"
            "basic._ANSIBLE_ARGS = json.dumps({'ANSIBLE_MODULE_ARGS': json.loads(sys.argv[1])}).encode()\n"
            "basic._ANSIBLE_PROFILE = 'legacy'\n"
            "from ansible_collections.stateful.rollback.plugins.modules import %s as m\n"
            "m.main()\n" % module)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, ".collections"), os.environ.get("PYTHONPATH", "")]))
    out = open(log, "w+", encoding="utf-8")
    proc = subprocess.Popen([PYTHON, "-c", code, json.dumps(args)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    proc.log = log
    return proc


def module_result(proc, timeout=600):
    """(returncode, parsed JSON result or None, raw output) of a start_module process."""
    proc.wait(timeout=timeout)
    with open(proc.log, encoding="utf-8") as fh:
        raw = fh.read()
    result = None
    for line in raw.splitlines():
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
    return proc.returncode, result, raw


# -- kubesim fault knobs (POST /_kubesim/faults on the sandbox's kube port) ------------------------------
def add_fault(sb, **spec):
    return sandbox_kube.api(sb.config, "POST", "/_kubesim/faults", spec)["faults"][0]


def faults(sb):
    return sandbox_kube.api(sb.config, "GET", "/_kubesim/faults")["faults"]


def clear_faults(sb):
    sandbox_kube.api(sb.config, "DELETE", "/_kubesim/faults")


def kube_get(sb, path):
    return sandbox_kube.api(sb.config, "GET", path)


# -- connections and data --------------------------------------------------------------------------------
def conn_options(sb, node="primary", superuser=False):
    return login_options(sb.params(node, superuser=superuser))


def replicas(sb, names=("standby", "subscriber")):
    return [dict(name=n, login_host=sb.params(n)["host"], login_port=int(sb.params(n)["port"])) for n in names]


def table_digest(sb, table, node="primary", key="id"):
    """(row count, md5 of every row in key order): a fingerprint of a table's exact content."""
    return tuple(sb.sql(node, "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.%s), '')) FROM %s t"
                        % (key, table))[0])


def journal(sb, schema="stateful_rollback", version=None):
    """Journal rows (dicts) of the primary, oldest first."""
    cols = ("id", "release_version", "migration_id", "direction", "phase", "state", "rows_processed", "batches",
            "attempts", "last_key", "error")
    where = " WHERE release_version = %s" if version else ""
    rows = sb.sql("primary", "SELECT %s FROM %s.migration_journal%s ORDER BY id" % (", ".join(cols), schema, where),
                  (version,) if version else None)
    return [dict(zip(cols, r)) for r in rows]


def record(record_property, fault, rows_lost, **details):
    """What the fault table (tests/faults/conftest.py) prints for this test."""
    record_property("fault", fault)
    record_property("rows_lost", rows_lost)
    for key, value in details.items():
        record_property(key, value)
