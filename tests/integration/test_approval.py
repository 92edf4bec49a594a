# -*- coding: utf-8 -*-
"""The approval gate of destructive steps (roles/README.md, "Approvals"), with real ansible-playbook runs on a
sandbox of its own: a production rollback (playbooks/rollback.yml), an irreversible migration (release 3.0.0's
005-drop-customer-name, through deploy.yml and the migrate role) and a snapshot restore (the rollback role's
restore path).

Each refusal must fail with a message naming the step, the release and who may approve, leave what that step
would change untouched (the ledger and the app, the column 005 drops, the PVC's volume), and be in the audit log;
each approval must let the step run and be in the audit log. The module's tests run in order: each starts
from the state the previous one left.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import sandbox_kube  # scripts/ is on sys.path (tests/conftest.py)
from testkit import BIN, REPO, app_version, columns, ledger, manifest, playbook, playbook_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]

OWN_SANDBOX_PORT_BASE = 27450
OWN_SANDBOX_NAME = "pytest-approval"

RELEASE_3 = os.path.join(REPO, "playbooks", "demo", "releases", "3.0.0", "release.yml")
# 3.0.0 drops a column on purpose: accept those preflight findings, as playbooks/drill.yml does.
ACCEPT_3 = {"stateful_rollback_preflight_ignore_rules": ["drop-column", "drop-column-data"]}

MIGRATE_ONLY = """---
- name: Apply a release's migrations with the migrate role alone
  hosts: all
  gather_facts: false
  vars:
    stateful_rollback_playbook: migrate-only.yml
  tasks:
    - name: Apply the migrations
      ansible.builtin.include_role:
        name: stateful.rollback.migrate
"""


def extra(values):
    return ["-e", json.dumps(values)]


def run(sb, tmp_path, text, *args):
    """Run a playbook written to ``tmp_path`` with the sandbox inventory (relative paths from the repo)."""
    path = tmp_path / "playbook.yml"
    path.write_text(text)
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "inventories/sandbox", str(path), "-e", "repo=" + REPO]
                          + list(args),
                          cwd=REPO, env=playbook_env(sb), capture_output=True, text=True, timeout=1800, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def audit(sb):
    """Every audit record of the sandbox's state directory, oldest first."""
    records = []
    for name in ("audit-log.jsonl", "audit.jsonl"):
        path = os.path.join(sb.config.sandbox_dir, "state", name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                records += [json.loads(line) for line in handle if line.strip()]
    return records


def approvals(sb, since):
    return [r for r in audit(sb)[since:] if r["stage"] == "approval"]


def volume(sb):
    return sandbox_kube.claim_volume(sb.config)


def one_line(out):
    return " ".join(out.split())


@pytest.fixture(scope="module")
def shop(own_sandbox, tmp_path_factory):
    """The shop installed and release 1.0.0 deployed and promoted, with the gate off (the sandbox's default)."""
    sandbox_kube.install_shop(own_sandbox.config)
    rc, out = playbook(own_sandbox, "deploy.yml", "-e", manifest("1.0.0"))
    assert rc == 0, out[-6000:]
    assert app_version(own_sandbox) == "1.0.0"
    return own_sandbox


def test_the_gate_is_off_without_approvers_outside_production(shop):
    # deploy.yml ran without stateful_rollback_approvers and no environment: nothing to approve, nothing recorded.
    assert [r for r in audit(shop) if r["stage"] == "approval"] == []
    assert ledger(shop)["1.0.0"] == ("verified", True)


@pytest.mark.parametrize("approved_by, reason", [
    (None, "no approver was given (stateful_rollback_approved_by is empty)"),
    ("mallory", "mallory is not on the allow-list stateful_rollback_approvers"),
])
def test_production_rollback_is_refused_without_an_approver_from_the_list(shop, approved_by, reason):
    before, ledger_before, since = app_version(shop), ledger(shop), len(audit(shop))
    values = {"stateful_rollback_environment": "production", "stateful_rollback_approvers": ["alice", "bob"]}
    if approved_by:
        values["stateful_rollback_approved_by"] = approved_by
    rc, out = playbook(shop, "rollback.yml", *extra(values))
    assert rc != 0, out[-4000:]
    text = one_line(out)
    assert "Approval refused for step production_rollback" in text, out[-4000:]
    assert reason in text and "Who may approve: alice, bob." in text and "Nothing was changed by this step." in text
    # The rollback role never started: same app, same ledger.
    assert app_version(shop) == before and ledger(shop) == ledger_before
    assert "Roll back the release" not in out
    records = approvals(shop, since)
    assert len(records) == 1, records
    record = records[0]
    assert record["outcome"] == "refused" and record["playbook"] == "rollback.yml"
    assert record["details"]["step"] == "production_rollback" and record["details"]["decision"] == "refused"
    assert record["details"]["approver"] == approved_by and record["details"]["approvers"] == ["alice", "bob"]
    assert record["details"]["environment"] == "production" and record["details"]["rule"] == "environment production"
    assert reason in record["error"]
    run_record = [r for r in audit(shop)[since:] if r["stage"] == "run"][-1]
    assert run_record["details"]["run_outcome"] == "rollback_failed"


def test_irreversible_migration_is_refused_before_anything_runs(shop):
    since, pvc_volume = len(audit(shop)), volume(shop)
    values = dict(ACCEPT_3, stateful_rollback_approvers=["alice"], stateful_rollback_approved_by="mallory")
    rc, out = playbook(shop, "deploy.yml", "-e", "stateful_rollback_release_manifest=" + RELEASE_3, *extra(values))
    assert rc != 0, out[-4000:]
    text = one_line(out)
    assert "release 3.0.0 did not deploy" in text and "Approval refused for step irreversible_migration" in text, out[-5000:]
    assert "(release: 3.0.0; apply the irreversible migration(s) 005-drop-customer-name:" in text
    assert "Who may approve: alice." in text
    # Nothing of 3.0.0's migrations ran, on the primary nor on the subscriber (the gate precedes both).
    assert "name" in columns(shop) and "full_name" not in columns(shop)
    assert "name" in columns(shop, "subscriber") and "full_name" not in columns(shop, "subscriber")
    assert app_version(shop) == "1.0.0" and volume(shop) == pvc_volume
    records = approvals(shop, since)
    assert [(r["outcome"], r["details"]["step"], r["details"]["approver"], r["release"]) for r in records] == [
        ("refused", "irreversible_migration", "mallory", "3.0.0")]
    assert records[0]["details"]["extra"] == {"migrations": ["005-drop-customer-name"]}
    migrate = [r for r in audit(shop)[since:] if r["stage"] == "migrate"]
    assert [r["outcome"] for r in migrate] == ["failed"], migrate
    assert ledger(shop)["3.0.0"][0] == "rolled_back"


def test_irreversible_migration_runs_once_approved(shop, tmp_path):
    since = len(audit(shop))
    values = {"stateful_rollback_release_manifest": RELEASE_3, "stateful_rollback_approvers": ["alice", "bob"],
              "stateful_rollback_approved_by": "bob"}
    rc, out = run(shop, tmp_path, MIGRATE_ONLY, *extra(values))
    assert rc == 0, out[-5000:]
    assert "name" not in columns(shop) and "full_name" in columns(shop)
    applied = shop.sql("primary", "SELECT DISTINCT migration_id FROM stateful_rollback.migration_journal "
                                  "WHERE direction = 'up' AND state = 'done' ORDER BY 1")
    assert ("005-drop-customer-name",) in applied, applied
    records = approvals(shop, since)
    assert [(r["outcome"], r["details"]["step"], r["details"]["approver"]) for r in records] == [
        ("approved", "irreversible_migration", "bob")]
    assert records[0]["error"] is None and records[0]["playbook"] == "migrate-only.yml"


def test_snapshot_restore_is_refused_without_an_approver_from_the_list(shop):
    since, pvc_volume = len(audit(shop)), volume(shop)
    assert pvc_volume
    values = {"stateful_rollback_approvers": ["alice"], "stateful_rollback_approved_by": "mallory",
              "stateful_rollback_rollback_strategy": "restore"}
    rc, out = playbook(shop, "rollback.yml", *extra(values))
    assert rc != 0, out[-4000:]
    text = one_line(out)
    assert "Approval refused for step snapshot_restore (release: 3.0.0; restore data-db-0 in sandbox from the snapshots" in text, \
        out[-5000:]
    assert "mallory is not on the allow-list" in text and "Who may approve: alice." in text
    # The volume was not touched: same PVC binding, the migrated schema still there.
    assert volume(shop) == pvc_volume
    assert "name" not in columns(shop)
    records = approvals(shop, since)
    assert [(r["outcome"], r["details"]["step"], r["details"]["release"]) for r in records] == [
        ("refused", "snapshot_restore", "3.0.0")]
    assert records[0]["details"]["rule"] == "stateful_rollback_approvers is set"
    assert records[0]["details"]["extra"]["snapshots"], records[0]


def test_production_rollback_with_a_restore_runs_once_approved(shop):
    since, pvc_volume = len(audit(shop)), volume(shop)
    values = {"stateful_rollback_environment": "production", "stateful_rollback_approvers": ["alice"],
              "stateful_rollback_approved_by": "alice", "stateful_rollback_rollback_strategy": "restore"}
    rc, out = playbook(shop, "rollback.yml", *extra(values))
    assert rc == 0, out[-6000:]
    # The restore ran: the PVC is bound to a new volume holding the data from before 3.0.0.
    assert volume(shop) != pvc_volume
    assert "name" in columns(shop) and "full_name" not in columns(shop)
    assert app_version(shop) == "1.0.0" and ledger(shop)["3.0.0"][0] == "rolled_back"
    records = approvals(shop, since)
    assert [(r["outcome"], r["details"]["step"], r["details"]["approver"]) for r in records] == [
        ("approved", "production_rollback", "alice"), ("approved", "snapshot_restore", "alice")]
    # Each approval is recorded before its step: the production one before the rollback starts, the restore's before
    # the restore's own record.
    stages = [(r["stage"], r["details"].get("step")) for r in audit(shop)[since:]]
    assert stages[0] == ("approval", "production_rollback"), stages
    assert stages.index(("approval", "snapshot_restore")) < [s for s, dummy in stages].index("rollback_restore"), stages
