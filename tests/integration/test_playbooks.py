# -*- coding: utf-8 -*-
"""The module as operators run it: ansible-playbook, resolving stateful.rollback by
FQCN through the repo's ansible.cfg, against the real sandbox."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def playbook_env(sandbox):
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["SANDBOX_DIR"] = sandbox.config.sandbox_dir
    for node in ("primary", "standby", "subscriber"):
        env["SANDBOX_%s_PORT" % node.upper()] = str(sandbox.config.port(node))
    return env


def ansible_playbook(sandbox, playbook, *args, timeout=600):
    proc = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), playbook] + list(args),
        cwd=REPO, env=playbook_env(sandbox), capture_output=True, text=True, timeout=timeout, check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_demo_playbook_runs_end_to_end_and_again(sandbox):
    baseline = os.path.join(sandbox.config.sandbox_dir, "demo-baseline.json")
    try:
        for dummy in range(2):  # a rerun gives the same result
            rc, out = ansible_playbook(sandbox, "playbooks/parity_demo.yml")
            assert rc == 0, out[-4000:]
            assert "drift found: 2 keys on the subscriber; repaired; in sync: True" in out
            assert "baseline compare after repair: same" in out
    finally:
        if os.path.exists(baseline):  # the demo's file, not the sandbox's: down() leaves it
            os.remove(baseline)
    # It left the sandbox whole: orders equal on all nodes.
    counts = [sandbox.sql(node, "SELECT count(*), sum(amount) FROM orders")[0] for node in ("primary", "standby", "subscriber")]
    assert counts[0] == counts[1] == counts[2]


def test_demo_refuses_without_a_running_sandbox(sandbox, tmp_path):
    env_dir = str(tmp_path / "no-sandbox")
    os.mkdir(env_dir)
    env = playbook_env(sandbox)
    env["SANDBOX_DIR"] = env_dir
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "playbooks/parity_demo.yml"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "The sandbox is not running" in proc.stdout + proc.stderr


def test_check_mode_writes_nothing_and_secrets_stay_hidden(sandbox, tmp_path):
    baseline = tmp_path / "baseline.json"
    progress = tmp_path / "progress.jsonl"
    playbook = tmp_path / "check.yml"
    primary = sandbox.primary
    playbook.write_text(textwrap.dedent("""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: Capture a baseline in check mode
              stateful.rollback.replication_parity:
                mode: baseline_capture
                login_host: {host}
                login_port: {port}
                login_user: {user}
                login_password: {password}
                login_db: {dbname}
                tables: [orders]
                baseline_path: {baseline}
              check_mode: true
              register: captured
            - name: Parity in check mode
              stateful.rollback.replication_parity:
                login_host: {host}
                login_port: {port}
                login_user: {user}
                login_password: {password}
                login_db: {dbname}
                tables: [orders, customers]
                progress_log: {progress}
                replicas:
                  - {{name: standby, login_host: {host}, login_port: {standby_port}}}
              check_mode: true
              register: checked
            - name: Show what check mode reported
              ansible.builtin.assert:
                that:
                  - captured.changed
                  - not checked.changed
                  - checked.in_sync
        """).format(baseline=baseline, progress=progress, standby_port=sandbox.standby["port"], **primary))
    rc, out = ansible_playbook(sandbox, str(playbook), "-vvv")
    assert rc == 0, out[-4000:]
    assert not baseline.exists()  # check mode: the file would change, but is not written
    assert primary["password"] not in out
    assert "********" in out or "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in out
    # Long comparisons report progress: one event per table, then the running totals.
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    done = [e for e in events if e["event"] == "table_done"]
    assert [e["table"] for e in done] == ["public.orders", "public.customers"]
    assert events[-1]["event"] == "progress" and events[-1]["tables_done"] == 2 and events[-1]["rows"] == 6000
    assert all("elapsed_seconds" in e for e in events)


def test_ansible_doc_teaches_the_module(sandbox):
    proc = subprocess.run([os.path.join(BIN, "ansible-doc"), "stateful.rollback.replication_parity"], cwd=REPO,
                          env=playbook_env(sandbox), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for text in ("baseline_compare", "login_password", "max_differences", "EXAMPLES", "RETURN VALUES"):
        assert text in proc.stdout
