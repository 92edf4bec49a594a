# -*- coding: utf-8 -*-
"""Fault 8 of the table: two deploys of the same release started at once. One runs; the other is refused by the
target's lock (a Kubernetes Lease, stateful.rollback.release_lock) before it changes anything, rolls nothing back,
and nothing is duplicated: one journal entry per step, one pre-release snapshot, the data whole on every node.

A sandbox of its own (ports 29760-29765): the demo shop with release 1.0.0 deployed and promoted.
"""

from __future__ import annotations

import glob
import json
import os
import re

import pytest
import sandbox_kube
from faultdata import applied_once, assert_whole, data, deployed, lost, shop_on_1_0_0
from faultkit import journal, record, start_playbook, wait_for
from testkit import manifest, playbook

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults, pytest.mark.timeout(1800)]

OWN_SANDBOX_PORT_BASE = 29760
OWN_SANDBOX_NAME = "pytest-faults-lock"


@pytest.fixture(scope="module")
def shop(own_sandbox):
    return shop_on_1_0_0(own_sandbox)


def snapshot_names(sb):
    ns = sb.env()["SANDBOX_KUBE_NAMESPACE"]
    items = sandbox_kube.api(sb.config, "GET", "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/volumesnapshots" % ns)["items"]
    return sorted(s["metadata"]["name"] for s in items)


def lease(sb):
    ns = sb.env()["SANDBOX_KUBE_NAMESPACE"]
    return sandbox_kube.api(sb.config, "GET", "/apis/coordination.k8s.io/v1/namespaces/%s/leases/stateful-rollback" % ns)


def run_records(sb, version):
    out = []
    for path in glob.glob(os.path.join(sb.config.sandbox_dir, "state", "runs", "*-%s.json" % version)):
        with open(path, encoding="utf-8") as handle:
            out.append(json.load(handle))
    return out


def log_of(proc):
    with open(proc.log, encoding="utf-8") as handle:
        return handle.read()


def test_two_deploys_at_once_one_runs_the_other_is_refused(shop, tmp_path, record_property):
    sb = shop
    before = data(sb)
    snapshots_before = snapshot_names(sb)
    ids_before = {r["id"] for r in run_records(sb, "2.0.0")}  # a kept sandbox directory may hold earlier runs
    runs = [start_playbook(sb, "deploy.yml", "-e", manifest("2.0.0"), log=str(tmp_path / ("deploy-%d.log" % i))) for i in (1, 2)]
    try:
        for proc in runs:
            proc.wait(timeout=1500)
    finally:
        for proc in runs:
            if proc.poll() is None:
                proc.kill()
    outs = [log_of(proc) for proc in runs]
    codes = [proc.returncode for proc in runs]
    assert sorted(code == 0 for code in codes) == [False, True], (codes, [o[-4000:] for o in outs])
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)

    # The loser: refused by the lock, naming the winner's run, before any stage; nothing rolled back.
    refused = outs[loser]
    held = re.search(r"Lease sandbox/stateful-rollback is held by run (\S+), doing deploy\.yml 2\.0\.0", refused)
    assert held, refused[-6000:]
    assert re.search(r"release 2\.0\.0 did not deploy \(run [^)]*\): lock failed at", refused), refused[-6000:]
    assert "rolled back: nothing (no stage had changed anything)" in refused
    assert "Traceback" not in refused
    records = [r for r in run_records(sb, "2.0.0") if r["id"] not in ids_before]
    assert len(records) == 2, [r["id"] for r in records]
    mine = [r for r in records if (r.get("failure") or {}).get("stage") == "lock"]
    assert len(mine) == 1, records
    assert mine[0]["done"] == [] and mine[0]["changed"] == [] and mine[0]["snapshots"] == [], mine[0]
    assert mine[0]["outcome"] == "failed"
    winner_id = held.group(1).rstrip(",")
    assert any(r["id"] == winner_id and r["outcome"] == "succeeded" for r in records), [(r["id"], r["outcome"]) for r in records]

    # Nothing duplicated: each step applied once, one pre-release snapshot more, the release deployed once.
    deployed(sb, "2.0.0")
    steps = applied_once(sb, "2.0.0")
    assert len([r for r in journal(sb, version="2.0.0") if r["direction"] == "up"]) == len(steps)
    new_snapshots = sorted(set(snapshot_names(sb)) - set(snapshots_before))
    assert len(new_snapshots) == 1 and "2.0.0" in new_snapshots[0], new_snapshots
    assert sb.sql("primary", "SELECT count(*) FROM customers WHERE full_name IS DISTINCT FROM name") == [(0,)]
    assert_whole(sb, before)

    # The lease was given back when the winner ended.
    wait_for(lambda: not (lease(sb).get("spec") or {}).get("holderIdentity"), 60, "the lease to be given back")
    record(record_property, "two deploys of one release at once", lost(before, data(sb)))


def test_a_rollback_during_a_deploy_is_refused(shop, tmp_path):
    """The lock covers every operation on the target: rollback.yml started while a deploy runs is refused before it
    changes anything, and the deploy goes on undisturbed."""
    sb = shop
    rc, out = playbook(sb, "rollback.yml")  # back to 1.0.0, so that the deploy below has migrations to run
    assert rc == 0, out[-6000:]
    deploy = start_playbook(sb, "deploy.yml", "-e", manifest("2.0.0"), log=str(tmp_path / "deploy.log"))
    try:
        wait_for(lambda: (lease(sb).get("spec") or {}).get("holderIdentity") or deploy.poll() is not None, 600,
                 "the deploy to take the lock")
        assert deploy.poll() is None, log_of(deploy)[-4000:]
        rc, out = playbook(sb, "rollback.yml")
        assert rc != 0 and "Lease sandbox/stateful-rollback is held by run" in out, out[-6000:]
        assert "Traceback" not in out
        assert deploy.wait(timeout=1500) == 0, log_of(deploy)[-6000:]
    finally:
        if deploy.poll() is None:
            deploy.kill()
    deployed(sb, "2.0.0")
