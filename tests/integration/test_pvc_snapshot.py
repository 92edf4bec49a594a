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


def test_a_named_class_is_found_in_the_list_the_shipped_rbac_grants(cluster, kubeconfig, custom, tmp_path):
    """docs/k8s/rbac.yml grants only `list` on volumesnapshotclasses: a named class must not need `get`."""
    cluster.record_requests(True)
    cluster.requests(clear=True)
    try:
        results, output = play(kubeconfig, tmp_path, [
            ("named", snap_task(pvcs=["data"], name="named-1", volume_snapshot_class="csi-hostpath-snapclass")),
            ("missing", snap_task(pvcs=["data"], name="named-2", volume_snapshot_class="no-such-class")),
            ("gone", snap_task(state="absent", name="named-1")),
        ], name="named-class")
        requests = cluster.requests(clear=True)
    finally:
        cluster.record_requests(False)
    assert not results["named"].get("failed"), results["named"]
    assert results["named"]["snapshots"][0]["volume_snapshot_class"] == "csi-hostpath-snapclass"
    assert "VolumeSnapshotClass 'no-such-class' not found" in results["missing"]["msg"]
    assert results["gone"]["changed"] is True
    verbs = {r["verb"] for r in requests if r["resource"] == "volumesnapshotclasses"}
    assert verbs == {"list"}, verbs
    assert "named-2" not in snapshot_names(custom) and "named-1" not in snapshot_names(custom)


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


# -- safe replace (restore, then re-bind), workloads, interruptions -----------------------------------
SWAP_SELECTOR = "stateful.rollback/swap=pending"
TEMP_SELECTOR = "stateful.rollback/role=restore-temp"


def take_snapshot(custom, name, pvc):
    custom.create_namespaced_custom_object(*SNAP[:2], NS, SNAP[2], {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": name},
        "spec": {"source": {"persistentVolumeClaimName": pvc}}})
    return wait_until(lambda: (custom.get_namespaced_custom_object(*SNAP[:2], NS, SNAP[2], name).get("status") or {})
                      .get("readyToUse"))


def new_pvc(sim, core, name, content, labels=None, annotations=None):
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": name, "labels": labels or {},
                                                                     "annotations": annotations or {}},
                                                        "spec": PVC_SPEC})
    wait_until(lambda: bound(core, name))
    write(sim, name, content)
    return core.read_namespaced_persistent_volume_claim(name, NS)


def read_pv(sim, pv_name):
    with open(os.path.join(sim.volumes_dir, pv_name, "file")) as handle:
        return handle.read()


def pv_or_none(core, name):
    try:
        return core.read_persistent_volume(name)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def leftovers(core):
    """Temporary PVCs and journaled PVs of unfinished restores."""
    temps = [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(NS, label_selector=TEMP_SELECTOR).items]
    swaps = [p.metadata.name for p in core.list_persistent_volume(label_selector=SWAP_SELECTOR).items]
    return temps + swaps


def assert_replaced_volume_kept(core, sim, pv_name, snapshot, claim, content):
    pv = core.read_persistent_volume(pv_name)
    assert pv.spec.persistent_volume_reclaim_policy == "Retain" and pv.status.phase == "Released", pv
    assert pv.metadata.labels["stateful.rollback/replaced-by-snapshot"] == snapshot
    ann = pv.metadata.annotations
    assert ann["stateful.rollback/replaced-pvc"] == "%s/%s" % (NS, claim)
    assert ann["stateful.rollback/original-reclaim-policy"] == "Delete" and ann["stateful.rollback/replaced-at"].endswith("Z")
    assert read_pv(sim, pv_name) == content


def restore_task(name, target, **args):
    return snap_task(**dict({"state": "restored", "name": name, "target_pvc": target, "replace": True, "wait_timeout": 30}, **args))


def test_replace_restores_first_and_keeps_the_old_volume(cluster, kubeconfig, core, custom, tmp_path):
    sim = cluster
    olds = {}
    for name in ("keep", "drop", "faulty"):
        pvc = new_pvc(sim, core, name, "v1", labels={"app": name, "tier": "db"}, annotations={"team": "storage"})
        take_snapshot(custom, "%s-s1" % name, name)
        write(sim, name, "v2")
        olds[name] = (pvc.metadata.uid, pvc.spec.volume_name)
    sim.faults.restore_fail("faulty-restore-*")
    try:
        results, output = play(kubeconfig, tmp_path, [
            ("check", dict(restore_task("keep-s1", "keep"), check_mode=True, diff=True)),
            ("replace", dict(restore_task("keep-s1", "keep"), diff=True)),
            ("again", restore_task("keep-s1", "keep")),
            ("force_needs_replace", snap_task(state="restored", name="keep-s1", target_pvc="keep", force=True)),
            ("write_v3", {"ansible.builtin.copy": {
                "dest": "%s/{{ replace.pvc.volume_name }}/file" % sim.volumes_dir, "content": "v3", "mode": "0644"}}),
            ("forced", restore_task("keep-s1", "keep", force=True)),
            ("drop", restore_task("drop-s1", "drop", keep_replaced_volume=False)),
            ("faulty", restore_task("faulty-s1", "faulty", wait_timeout=2)),
        ], name="safe-replace")
    finally:
        sim.faults.clear()

    check = results["check"]
    assert check["changed"] is True and check["diff"]["before"]["volume_name"] == olds["keep"][1], check
    assert check["diff"]["after"]["restored_from"].startswith("keep-s1/") and check["replaced_volume"] is None

    replace = results["replace"]
    assert not replace.get("failed"), replace
    first_pv = replace["pvc"]["volume_name"]
    assert replace["changed"] is True and replace["resumed"] is False and replace["pvc"]["phase"] == "Bound"
    assert first_pv != olds["keep"][1] and replace["replaced_volume"] == olds["keep"][1]
    assert replace["pvc"]["data_source"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "keep-s1"}
    assert replace["diff"]["before"]["volume_name"] == olds["keep"][1] and replace["diff"]["after"]["volume_name"] == first_pv
    assert replace["timings"]["restore_seconds"] > 0 and replace["timings"]["swap_seconds"] > 0
    assert results["again"]["changed"] is False and results["again"]["pvc"]["volume_name"] == first_pv
    msg = results["force_needs_replace"]["msg"]
    assert results["force_needs_replace"]["failed"] and "already restored from VolumeSnapshot keep-s1" in msg, msg

    # force: restored again although the PVC is marked as restored from keep-s1; the volume written to (v3) is kept.
    forced = results["forced"]
    assert not forced.get("failed"), forced
    assert forced["changed"] is True and forced["replaced_volume"] == first_pv and forced["pvc"]["volume_name"] != first_pv
    pvc = core.read_namespaced_persistent_volume_claim("keep", NS)
    assert pvc.spec.volume_name == forced["pvc"]["volume_name"] and pvc.status.phase == "Bound"
    assert read(sim, "keep") == "v1"
    assert pvc.metadata.labels == {"app": "keep", "tier": "db"} and pvc.metadata.annotations["team"] == "storage"
    assert pvc.metadata.annotations["stateful.rollback/restored-from"].startswith("keep-s1/")
    assert json.loads(pvc.metadata.annotations["stateful.rollback/data-source"])["name"] == "keep-s1"
    assert pvc.spec.data_source is None
    new_pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert new_pv.spec.persistent_volume_reclaim_policy == "Delete" and new_pv.status.phase == "Bound"
    assert not (new_pv.metadata.labels or {}).get("stateful.rollback/swap")
    assert "stateful.rollback/swap-journal" not in (new_pv.metadata.annotations or {})
    assert_replaced_volume_kept(core, sim, olds["keep"][1], "keep-s1", "keep", "v2")
    assert_replaced_volume_kept(core, sim, first_pv, "keep-s1", "keep", "v3")

    # keep_replaced_volume: false: the old volume goes back to Delete and is reclaimed, directory included.
    drop = results["drop"]
    assert not drop.get("failed"), drop
    assert drop["changed"] is True and drop["replaced_volume"] is None and read(sim, "drop") == "v1"
    wait_until(lambda: pv_or_none(core, olds["drop"][1]) is None)
    assert not os.path.exists(os.path.join(sim.volumes_dir, olds["drop"][1]))

    # A failed restore (disk full) leaves the old PVC on the same volume with the same content.
    faulty = results["faulty"]
    msg = faulty["msg"]
    assert faulty["failed"] and "No space left on device" in msg and "faulty-s1" in msg, msg
    assert "the temporary PVC was deleted" in msg and "PersistentVolumeClaim snaps/faulty was not changed" in msg, msg
    pvc = core.read_namespaced_persistent_volume_claim("faulty", NS)
    assert (pvc.metadata.uid, pvc.spec.volume_name, pvc.status.phase) == (olds["faulty"] + ("Bound",))
    assert read(sim, "faulty") == "v2"
    assert core.read_persistent_volume(olds["faulty"][1]).spec.persistent_volume_reclaim_policy == "Delete"
    assert leftovers(core) == []


class Interrupted(Exception):
    pass


def interrupted_restore(api, params, stop_after):
    """Run the module's logic in-process and stop it dead after step ``stop_after`` (as a killed ansible-playbook would)."""
    from kubernetes.dynamic import DynamicClient

    from ansible_collections.stateful.rollback.plugins.module_utils import snapshots
    from ansible_collections.stateful.rollback.plugins.module_utils.k8s import Kube

    class CrashingRunner(snapshots.Runner):
        def checkpoint(self, step):
            if step == stop_after:
                raise Interrupted(step)

    full = dict(state="restored", namespace=NS, replace=True, force=False, keep_replaced_volume=True, wait=True,
                wait_timeout=30, labels={}, size=None, storage_class=None, workload=None)
    full.update(params)
    with pytest.raises(Interrupted):
        CrashingRunner(Kube(DynamicClient(api)), full).restored()


def statefulset(name, replicas):
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": PVC_SPEC}]}}


def ready_replicas(apps, kind, name):
    read = apps.read_namespaced_stateful_set if kind == "StatefulSet" else apps.read_namespaced_deployment
    return read(name, NS).status.ready_replicas or 0


def test_interrupted_replace_converges_on_rerun(cluster, kubeconfig, api, core, apps, custom, tmp_path):
    """Stop the restore after each step of the swap; running the task again finishes it."""
    sim = cluster
    steps = ["temp-bound", "journaled", "temp-deleted", "target-deleted", "volume-prebound", "target-created",
             "replaced-volume-done"]
    olds = {}
    for index, step in enumerate(steps):
        claim = "int-%d" % index
        olds[claim] = new_pvc(sim, core, claim, "v1", labels={"step": step}).spec.volume_name
        take_snapshot(custom, "%s-s1" % claim, claim)
        write(sim, claim, "v2")
        interrupted_restore(api, dict(name="%s-s1" % claim, target_pvc=claim), step)
        # What the interruption left: target claim (present, on which volume), temporary claims, journaled volumes.
        target = [p for p in core.list_namespaced_persistent_volume_claim(NS).items if p.metadata.name == claim]
        temps = [p for p in core.list_namespaced_persistent_volume_claim(NS, label_selector=TEMP_SELECTOR).items
                 if p.metadata.annotations["stateful.rollback/restore-target"] == "%s/%s" % (NS, claim)]
        swaps = [p for p in core.list_persistent_volume(label_selector=SWAP_SELECTOR).items
                 if p.metadata.annotations["stateful.rollback/restore-target"] == "%s/%s" % (NS, claim)]
        on = "absent" if not target else "old" if target[0].spec.volume_name == olds[claim] else "restored"
        state = (on, len(temps), len(swaps))
        expected = {"temp-bound": ("old", 1, 0), "journaled": ("old", 1, 1), "temp-deleted": ("old", 0, 1),
                    "target-deleted": ("absent", 0, 1), "volume-prebound": ("absent", 0, 1),
                    "target-created": ("restored", 0, 1), "replaced-volume-done": ("restored", 0, 1)}[step]
        assert state == expected, (step, state)
    # A workload scaled down and left at 0 in the middle of the swap is scaled back to its recorded count.
    apps.create_namespaced_stateful_set(NS, statefulset("iw", 2))
    wait_until(lambda: ready_replicas(apps, "StatefulSet", "iw") == 2)
    write(sim, "data-iw-0", "v1")
    take_snapshot(custom, "iw-s1", "data-iw-0")
    write(sim, "data-iw-0", "v2")
    olds["data-iw-0"] = core.read_namespaced_persistent_volume_claim("data-iw-0", NS).spec.volume_name
    workload = {"kind": "StatefulSet", "name": "iw"}
    interrupted_restore(api, dict(name="iw-s1", target_pvc="data-iw-0", workload=workload), "target-deleted")
    sts = apps.read_namespaced_stateful_set("iw", NS)
    assert sts.spec.replicas == 0 and sts.metadata.annotations["stateful.rollback/replicas-before-restore"] == "2"

    tasks = [("resume_%d" % i, restore_task("int-%d-s1" % i, "int-%d" % i)) for i in range(len(steps))]
    tasks += [("resume_iw", restore_task("iw-s1", "data-iw-0", workload=workload)),
              ("again_iw", restore_task("iw-s1", "data-iw-0", workload=workload))]
    results, output = play(kubeconfig, tmp_path, tasks, name="resume")
    for index, step in enumerate(steps):
        claim = "int-%d" % index
        result = results["resume_%d" % index]
        assert not result.get("failed"), (step, result)
        assert result["changed"] is True and result["resumed"] is (step != "temp-bound"), (step, result)
        pvc = core.read_namespaced_persistent_volume_claim(claim, NS)
        assert pvc.status.phase == "Bound" and pvc.spec.volume_name != olds[claim], step
        assert pvc.metadata.labels == {"step": step} and read(sim, claim) == "v1", step
        assert result["replaced_volume"] == olds[claim], (step, result)
        assert_replaced_volume_kept(core, sim, olds[claim], "%s-s1" % claim, claim, "v2")
        assert core.read_persistent_volume(pvc.spec.volume_name).spec.persistent_volume_reclaim_policy == "Delete"
    resumed = results["resume_iw"]
    assert not resumed.get("failed"), resumed
    assert resumed["changed"] is True and resumed["resumed"] is True
    assert resumed["workload"] == {"kind": "StatefulSet", "name": "iw", "replicas": 2}
    sts = apps.read_namespaced_stateful_set("iw", NS)
    assert sts.spec.replicas == 2 and sts.status.ready_replicas == 2
    assert "stateful.rollback/replicas-before-restore" not in (sts.metadata.annotations or {})
    assert read(sim, "data-iw-0") == "v1"
    assert_replaced_volume_kept(core, sim, olds["data-iw-0"], "iw-s1", "data-iw-0", "v2")
    assert results["again_iw"]["changed"] is False, results["again_iw"]
    assert leftovers(core) == []


def test_workload_is_scaled_down_and_back_up(cluster, kubeconfig, core, apps, custom, tmp_path):
    sim = cluster
    apps.create_namespaced_stateful_set(NS, statefulset("web", 2))
    wait_until(lambda: ready_replicas(apps, "StatefulSet", "web") == 2)
    write(sim, "data-web-0", "w1")
    write(sim, "data-web-1", "other ordinal")
    take_snapshot(custom, "web-s1", "data-web-0")
    write(sim, "data-web-0", "w2")
    generation = apps.read_namespaced_stateful_set("web", NS).metadata.generation
    # A Deployment whose restore fails (disk full): it is scaled back up and keeps its data.
    api_pvc = new_pvc(sim, core, "api-data", "a1")
    take_snapshot(custom, "api-s1", "api-data")
    write(sim, "api-data", "a2")
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "api"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "api"}},
        "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
            "containers": [{"name": "main", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "api-data"}}]}}}})
    wait_until(lambda: ready_replicas(apps, "Deployment", "api") == 1)
    sim.faults.restore_fail("api-data-restore-*")
    web = {"kind": "StatefulSet", "name": "web"}
    info = {"kubernetes.core.k8s_info": {"kind": "StatefulSet", "namespace": NS, "name": "web"}}
    try:
        results, output = play(kubeconfig, tmp_path, [
            ("refused", restore_task("web-s1", "data-web-0")),
            ("check", dict(restore_task("web-s1", "data-web-0", workload=web), check_mode=True, diff=True)),
            ("info_checked", info),
            ("restore", restore_task("web-s1", "data-web-0", workload=web)),
            ("info_restored", info),
            ("again", restore_task("web-s1", "data-web-0", workload=web)),
            ("info_again", info),
            ("compensated", restore_task("api-s1", "api-data", wait_timeout=2,
                                         workload={"kind": "Deployment", "name": "api"})),
        ], name="workload")
    finally:
        sim.faults.clear()
    msg = results["refused"]["msg"]
    assert results["refused"]["failed"] and "Running pod web-0" in msg and "workload" in msg, msg

    check = results["check"]
    assert not check.get("failed"), check
    assert check["changed"] is True and check["workload"] == {"kind": "StatefulSet", "name": "web", "replicas": 2}
    assert check["diff"]["after"]["restored_from"].startswith("web-s1/")
    checked = results["info_checked"]["resources"][0]
    assert checked["metadata"]["generation"] == generation and checked["spec"]["replicas"] == 2

    restore = results["restore"]
    assert not restore.get("failed"), restore
    assert restore["changed"] is True and restore["workload"] == {"kind": "StatefulSet", "name": "web", "replicas": 2}
    assert restore["timings"]["scale_down_seconds"] > 0 and restore["timings"]["scale_up_seconds"] > 0
    restored = results["info_restored"]["resources"][0]
    assert restored["spec"]["replicas"] == 2 and restored["status"]["readyReplicas"] == 2
    assert restored["status"]["observedGeneration"] == restored["metadata"]["generation"] > generation
    assert "stateful.rollback/replicas-before-restore" not in restored["metadata"].get("annotations", {})
    assert read(sim, "data-web-0") == "w1" and read(sim, "data-web-1") == "other ordinal"
    assert_replaced_volume_kept(core, sim, restore["replaced_volume"], "web-s1", "data-web-0", "w2")

    again = results["again"]
    assert again["changed"] is False and "scale_down_seconds" not in again["timings"], again
    assert results["info_again"]["resources"][0]["metadata"]["generation"] == restored["metadata"]["generation"]

    compensated = results["compensated"]
    msg = compensated["msg"]
    assert compensated["failed"] and "No space left on device" in msg, msg
    assert "PersistentVolumeClaim snaps/api-data was not changed" in msg and "Deployment snaps/api was scaled back to 1" in msg
    dep = apps.read_namespaced_deployment("api", NS)
    assert dep.spec.replicas == 1 and dep.status.ready_replicas == 1
    assert "stateful.rollback/replicas-before-restore" not in (dep.metadata.annotations or {})
    pvc = core.read_namespaced_persistent_volume_claim("api-data", NS)
    assert (pvc.metadata.uid, pvc.spec.volume_name) == (api_pvc.metadata.uid, api_pvc.spec.volume_name)
    assert read(sim, "api-data") == "a2"
    assert leftovers(core) == []


def test_kubesim_rebinds_retained_volumes(cluster, core):
    """The PV semantics a swap relies on, as on a real cluster."""
    sim = cluster
    old = new_pvc(sim, core, "rebind", "data").spec.volume_name
    core.patch_persistent_volume(old, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
    core.delete_namespaced_persistent_volume_claim("rebind", NS)
    wait_until(lambda: core.read_persistent_volume(old).status.phase == "Released")
    assert read_pv(sim, old) == "data"
    # A claim naming a Released volume does not get it; pre-binding the volume to that claim (no uid) does.
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "rebind"},
                                                        "spec": dict(PVC_SPEC, volumeName=old)})
    time.sleep(0.3)
    assert core.read_namespaced_persistent_volume_claim("rebind", NS).status.phase == "Pending"
    core.patch_persistent_volume(old, {"spec": {"claimRef": {"name": "rebind", "namespace": NS, "uid": None,
                                                             "resourceVersion": None}}})
    wait_until(lambda: bound(core, "rebind"))
    assert read(sim, "rebind") == "data" and core.read_persistent_volume(old).status.phase == "Bound"
    # Cleared claimRef: Available, and an unclaimed Available volume is bound to a claim that fits.
    core.delete_namespaced_persistent_volume_claim("rebind", NS)
    wait_until(lambda: core.read_persistent_volume(old).status.phase == "Released")
    core.patch_persistent_volume(old, {"spec": {"claimRef": None}})
    wait_until(lambda: core.read_persistent_volume(old).status.phase == "Available")
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "rebind-2"},
                                                        "spec": dict(PVC_SPEC, volumeName=old)})
    wait_until(lambda: bound(core, "rebind-2"))
    assert read(sim, "rebind-2") == "data"
    # A reclaim policy changed after the release is honoured: Delete removes the volume and its directory.
    core.delete_namespaced_persistent_volume_claim("rebind-2", NS)
    wait_until(lambda: core.read_persistent_volume(old).status.phase == "Released")
    assert read_pv(sim, old) == "data"
    core.patch_persistent_volume(old, {"spec": {"persistentVolumeReclaimPolicy": "Delete"}})
    wait_until(lambda: pv_or_none(core, old) is None)
    assert not os.path.exists(os.path.join(sim.volumes_dir, old))
