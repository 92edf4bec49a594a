# -*- coding: utf-8 -*-
"""stateful.rollback.pvc_snapshot and pvc_snapshot_info through ansible-playbook against kubesim
(the Kubernetes API emulator): snapshots copy real volume directories, restores copy them back."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client


pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
NS = "snaps"
# Faster controller passes (the sim fixture of conftest.py reads this).
KUBESIM_TICK = 0.05
PVC_SPEC = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
SNAP = ("snapshot.storage.k8s.io", "v1", "volumesnapshots")


def wait_until(func, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = func()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.0f s (last value %r)" % (timeout, value))
        time.sleep(interval)


def bound(core, name):
    return core.read_namespaced_persistent_volume_claim(name, NS).status.phase == "Bound"


def write(sim, pvc, content):
    with open(os.path.join(sim.volume_path(NS, pvc), "file"), "w") as handle:
        handle.write(content)


def read(sim, pvc):
    with open(os.path.join(sim.volume_path(NS, pvc), "file")) as handle:
        return handle.read()


def snapshot_names(custom):
    return sorted(s["metadata"]["name"] for s in custom.list_namespaced_custom_object(*SNAP[:2], NS, SNAP[2])["items"])


@pytest.fixture(scope="module")
def cluster(sim, core):
    core.create_namespace({"metadata": {"name": NS}})
    for name in ("data", "other"):
        core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": name, "labels": {"app": "demo"}},
                                                            "spec": PVC_SPEC})
    for name in ("data", "other"):
        wait_until(lambda: bound(core, name))
    write(sim, "data", "v1")
    write(sim, "other", "other")
    return sim


def play(kubeconfig, tmp_path, tasks, name="play"):
    """Run tasks (each registered as its own key, errors ignored) and return {key: result}."""
    keys = []
    body = []
    for key, task in tasks:
        task = dict(task, register=key, ignore_errors=True)
        task.setdefault("name", key)
        body.append(task)
        keys.append(key)
    out = tmp_path / ("%s.json" % name)
    body.append({"name": "Save the results", "ansible.builtin.copy": {
        "dest": str(out), "mode": "0600",
        "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (k, k) for k in keys)}})
    playbook = tmp_path / ("%s.yml" % name)
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                         "tasks": body}], sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), K8S_AUTH_KUBECONFIG=kubeconfig,
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(playbook)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    output = proc.stdout + proc.stderr
    assert out.exists(), output[-5000:]
    return json.loads(out.read_text()), output


def snap_task(**args):
    return {"stateful.rollback.pvc_snapshot": dict({"namespace": NS}, **args)}


def test_pvc_snapshot_lifecycle(cluster, kubeconfig, core, custom, tmp_path):
    sim = cluster
    sim.faults.api_error(count=2, code=500, verb="create", path="/volumesnapshots")  # transient: retried
    sim.faults.snapshot_error("broken-*", message="rpc error: code = Internal desc = emulated")
    sim.faults.snapshot_not_ready("slow-*")
    sim.faults.pvc_pending("pending")
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "pending"}, "spec": PVC_SPEC})
    results, output = play(kubeconfig, tmp_path, [
        ("first", snap_task(pvcs=["data"], name="snap-1", labels={"app": "demo"})),
        ("again", snap_task(pvcs=["data"], name="snap-1", labels={"app": "demo"})),
        ("checked", dict(snap_task(pvc_selector="app=demo", name_prefix="chk-"), check_mode=True, diff=True)),
        ("prune1", snap_task(pvcs=["data"], name="p-1", labels={"set": "prune"})),
        ("prune2", snap_task(pvcs=["data"], name="p-2", labels={"set": "prune"})),
        ("prune3", snap_task(pvcs=["data"], name="p-3", labels={"set": "prune"})),
        ("prune_other", snap_task(pvcs=["other"], name="p-other", labels={"set": "prune"})),
        ("info", {"stateful.rollback.pvc_snapshot_info": {"namespace": NS, "snapshot_selector": "app=demo"}}),
        ("info_all", {"stateful.rollback.pvc_snapshot_info": {}}),
        ("missing_pvc", snap_task(pvcs=["nope"], name="x")),
        ("missing_class", snap_task(pvcs=["data"], name="y", volume_snapshot_class="no-such-class")),
        ("other_source", snap_task(pvcs=["other"], name="snap-1")),
        ("broken", snap_task(pvcs=["data"], name="broken-1")),
        ("slow", snap_task(pvcs=["data"], name="slow-1", wait_timeout=2)),
        ("not_bound", snap_task(pvcs=["pending"], name="z")),
        ("name_many", snap_task(pvc_selector="app=demo", name="one-for-two")),
    ], name="present")
    first = results["first"]
    assert not first.get("failed"), first
    assert first["changed"] is True
    snap = first["snapshots"][0]
    assert (snap["name"], snap["namespace"], snap["source_pvc"], snap["ready_to_use"]) == ("snap-1", NS, "data", True)
    assert snap["labels"] == {"app": "demo"} and snap["content_name"] and snap["restore_size"] == "1Gi"
    assert snap["volume_snapshot_class"] == "csi-hostpath-snapclass"
    assert not [f for f in sim.faults.list() if f["type"] == "api_error"]  # both 500s were consumed, then retried
    assert results["again"]["changed"] is False and results["again"]["snapshots"][0]["name"] == "snap-1"

    checked = results["checked"]
    assert checked["changed"] is True
    assert sorted(s["name"] for s in checked["snapshots"]) == ["chk-data", "chk-other"]
    assert checked["diff"]["before"] == {} and sorted(checked["diff"]["after"]) == ["chk-data", "chk-other"]
    assert not [n for n in snapshot_names(custom) if n.startswith("chk-")]

    assert [s["name"] for s in results["info"]["snapshots"]] == ["snap-1"]
    assert results["info"]["snapshots"][0]["ready_to_use"] is True and results["info"]["changed"] is False
    assert "snap-1" in [s["name"] for s in results["info_all"]["snapshots"]]

    assert results["missing_pvc"]["failed"] and "PersistentVolumeClaim snaps/nope not found" in results["missing_pvc"]["msg"]
    assert "VolumeSnapshotClass 'no-such-class' not found" in results["missing_class"]["msg"]
    msg = results["other_source"]["msg"]
    assert "snap-1" in msg and "PVC data" in msg and "PVC other" in msg, msg
    assert "emulated" in results["broken"]["msg"] and "broken-1" in results["broken"]["msg"]
    msg = results["slow"]["msg"]
    assert "timed out after 2s" in msg and "slow-1" in msg and "readyToUse" in msg, msg
    assert "'readyToUse': False" in msg and "boundVolumeSnapshotContentName" in msg, msg
    assert "PersistentVolumeClaim snaps/pending is Pending, not Bound" in results["not_bound"]["msg"]
    assert "name can only be used with one PVC, but 2 match (data, other)" in results["name_many"]["msg"]
    assert not [n for n in snapshot_names(custom) if n in ("x", "y", "z", "one-for-two")]
    sim.faults.clear()
    core.delete_namespaced_persistent_volume_claim("pending", NS)

    # The source changes after the snapshot; a restore brings the old content back.
    write(sim, "data", "v2")
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "busy"}, "spec": PVC_SPEC})
    wait_until(lambda: bound(core, "busy"))
    apps = client.AppsV1Api(core.api_client)
    apps.create_namespaced_stateful_set(NS, {"metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
            "containers": [{"name": "pg", "image": "postgres:16"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "busy"}}]}}}})
    wait_until(lambda: [p for p in core.list_namespaced_pod(NS).items if p.status.phase == "Running"])
    sim.faults.restore_fail("doomed")

    results, output = play(kubeconfig, tmp_path, [
        ("restore_check", dict(snap_task(state="restored", name="snap-1", target_pvc="restored"), check_mode=True)),
        ("restore", snap_task(state="restored", name="snap-1", target_pvc="restored", size="512Mi", wait_timeout=30)),
        ("restore_again", snap_task(state="restored", name="snap-1", target_pvc="restored")),
        ("exists", snap_task(state="restored", name="snap-1", target_pvc="other")),
        ("refused", snap_task(state="restored", name="snap-1", target_pvc="busy", replace=True)),
        ("replace", dict(snap_task(state="restored", name="snap-1", target_pvc="data", replace=True, wait_timeout=30),
                         diff=True)),
        ("disk_full", snap_task(state="restored", name="snap-1", target_pvc="doomed", wait_timeout=2)),
        ("prune_check", dict(snap_task(state="pruned", snapshot_selector="set=prune", keep=1, protect=["p-1"]),
                             check_mode=True)),
        ("prune", snap_task(state="pruned", snapshot_selector="set=prune", keep=1, protect=["p-1"])),
        ("prune_again", snap_task(state="pruned", snapshot_selector="set=prune", keep=1, protect=["p-1"])),
        ("absent", dict(snap_task(state="absent", name="snap-1"), diff=True)),
        ("absent_sel", snap_task(state="absent", snapshot_selector="set=prune")),
        ("absent_again", snap_task(state="absent", name="snap-1")),
    ], name="restore")
    assert results["restore_check"]["changed"] is True and results["restore_check"]["pvc"]["name"] == "restored"
    restore = results["restore"]
    assert not restore.get("failed"), restore
    assert restore["changed"] is True and restore["pvc"]["phase"] == "Bound"
    assert restore["pvc"]["size"] == "1Gi" and restore["pvc"]["storage_class"] == "standard"
    assert restore["pvc"]["data_source"]["name"] == "snap-1"
    assert read(sim, "restored") == "v1"
    assert results["restore_again"]["changed"] is False
    assert results["exists"]["failed"] and "replace: true" in results["exists"]["msg"]
    assert results["refused"]["failed"] and "Running pod db-0" in results["refused"]["msg"], results["refused"]["msg"]
    assert bound(core, "busy")
    assert not results["replace"].get("failed"), results["replace"]
    assert results["replace"]["changed"] is True and results["replace"]["diff"]["before"]["name"] == "data"
    assert read(sim, "data") == "v1"

    msg = results["disk_full"]["msg"]
    assert "timed out after 2s waiting for PersistentVolumeClaim snaps/doomed" in msg and "No space left on device" in msg, msg
    sim.faults.clear()

    assert results["prune_check"]["changed"] is True and [s["name"] for s in results["prune_check"]["snapshots"]] == ["p-2"]
    prune = results["prune"]
    assert prune["changed"] is True and [s["name"] for s in prune["snapshots"]] == ["p-2"], prune
    assert sorted(s["name"] for s in prune["kept"]) == ["p-1", "p-3", "p-other"]
    assert results["prune_again"]["changed"] is False
    assert results["absent"]["changed"] is True and list(results["absent"]["diff"]["before"]) == ["snap-1"]
    assert results["absent_sel"]["changed"] is True
    assert sorted(s["name"] for s in results["absent_sel"]["snapshots"]) == ["p-1", "p-3", "p-other"]
    assert results["absent_again"]["changed"] is False
    assert not [n for n in snapshot_names(custom) if n.startswith(("snap-", "p-"))]


def test_persistent_api_errors_fail_clearly(cluster, kubeconfig, tmp_path):
    cluster.faults.api_error(count=None, code=503, verb="list", path="/volumesnapshots")
    try:
        results, output = play(kubeconfig, tmp_path, [
            ("info", {"stateful.rollback.pvc_snapshot_info": {"namespace": NS}})], name="errors")
    finally:
        cluster.faults.clear()
    assert results["info"]["failed"]
    assert results["info"]["msg"].startswith("cannot list VolumeSnapshot in snaps:"), results["info"]["msg"]


def test_snapshot_crds_not_served(cluster, kubeconfig, custom, tmp_path):
    """A cluster without the external-snapshotter CRDs: every state and the info module say how to install them."""
    cluster.faults.hide_group("snapshot.storage.k8s.io")
    try:
        results, output = play(kubeconfig, tmp_path, [
            ("present", snap_task(state="present", name="nocrd", pvcs=["data"])),
            ("info", {"stateful.rollback.pvc_snapshot_info": {"namespace": NS}}),
        ], name="nocrd")
    finally:
        cluster.faults.clear()
    for key in ("present", "info"):
        msg = results[key].get("msg", "")
        assert results[key].get("failed"), (key, results[key])
        assert "does not serve VolumeSnapshot" in msg and "external-snapshotter" in msg, (key, msg)
    assert "nocrd" not in snapshot_names(custom)
