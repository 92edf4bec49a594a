# -*- coding: utf-8 -*-
"""kubesim, the Kubernetes API emulator (scripts/kubesim), over the real protocol:
the official ``kubernetes`` client, its DynamicClient, and ansible-playbook with
kubernetes.core, all through a kubeconfig. No mocks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest
import urllib3
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

from kubesim import KubeSim  # scripts/ is on sys.path (tests/conftest.py)

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
SNAP = ("snapshot.storage.k8s.io", "v1")
PG_UID = 999  # files owned by someone else than root, as PostgreSQL's are


def wait_until(func, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = func()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.0f s (last value %r)" % (timeout, value))
        time.sleep(interval)


def wait_for(fetch, predicate, timeout=15.0):
    """Poll ``fetch()`` until ``predicate`` holds for its value; return that value."""
    found = []

    def check():
        value = fetch()
        if predicate(value):
            found.append(value)
            return True
        return False
    wait_until(check, timeout)
    return found[-1]


def api_error(func, *args, **kwargs):
    with pytest.raises(ApiException) as info:
        func(*args, **kwargs)
    return info.value.status, json.loads(info.value.body)


def http(sim, method, path, body=None, headers=None):
    """Raw request: (code, decoded JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(sim.url + path, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            code, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode()


PVC_SPEC = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}


def pvc_body(name, **spec):
    body = {"metadata": {"name": name}, "spec": dict(PVC_SPEC)}
    body["spec"].update(spec)
    return body


def sts_body(name, replicas=1):
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": dict(PVC_SPEC)}]}}


# -- fixtures (sim, kubeconfig, api, core, apps, custom: tests/integration/conftest.py) ---
@pytest.fixture(autouse=True)
def no_faults_left(request):
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").faults.clear()


_NS_COUNTER = [0]


@pytest.fixture
def ns(core):
    _NS_COUNTER[0] += 1
    name = "t%d-%d" % (os.getpid() % 10000, _NS_COUNTER[0])
    core.create_namespace({"metadata": {"name": name}})
    return name


def bound(core, ns, name):
    pvc = core.read_namespaced_persistent_volume_claim(name, ns)
    return pvc if pvc.status.phase == "Bound" else None


def events_for(core, ns, name):
    return core.list_namespaced_event(ns, field_selector="involvedObject.name=%s" % name).items


def make_snapshot(custom, ns, name, claim):
    return custom.create_namespaced_custom_object(*SNAP, ns, "volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": name},
        "spec": {"source": {"persistentVolumeClaimName": claim}}})


def snapshot_status(custom, ns, name):
    return custom.get_namespaced_custom_object(*SNAP, ns, "volumesnapshots", name).get("status") or {}


# -- discovery ------------------------------------------------------------------------------
def test_discovery_documents_and_dynamic_client(sim, api, tmp_path):
    code, version = http(sim, "GET", "/version")
    assert code == 200 and version["major"] == "1"
    code, groups = http(sim, "GET", "/apis", headers={
        "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"})
    assert code == 200 and groups["kind"] == "APIGroupList"  # plain list: clients fall back
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "storage.k8s.io", "rbac.authorization.k8s.io", "snapshot.storage.k8s.io"} <= names
    code, apps_list = http(sim, "GET", "/apis/apps/v1")
    entries = {r["name"]: r for r in apps_list["resources"]}
    assert entries["statefulsets"]["shortNames"] == ["sts"] and entries["statefulsets"]["namespaced"]
    assert entries["statefulsets/scale"]["kind"] == "Scale" and "patch" in entries["statefulsets/scale"]["verbs"]
    assert "statefulsets/status" in entries
    code, core_list = http(sim, "GET", "/api/v1")
    assert {"namespaces", "pods", "persistentvolumeclaims", "persistentvolumes", "configmaps", "secrets", "services",
            "serviceaccounts", "events"} <= {r["name"] for r in core_list["resources"]}

    dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    for api_version, kind in (("v1", "Namespace"), ("v1", "Pod"), ("v1", "PersistentVolumeClaim"), ("v1", "PersistentVolume"),
                              ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("v1", "ServiceAccount"),
                              ("v1", "Event"), ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
                              ("storage.k8s.io/v1", "StorageClass"), ("rbac.authorization.k8s.io/v1", "Role"),
                              ("rbac.authorization.k8s.io/v1", "RoleBinding"),
                              ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"),
                              ("snapshot.storage.k8s.io/v1", "VolumeSnapshotContent"),
                              ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass")):
        resource = dyn.resources.get(api_version=api_version, kind=kind)
        assert resource.kind == kind
    namespaces = dyn.resources.get(api_version="v1", kind="Namespace").get()
    assert {"default", "kube-system"} <= {n.metadata.name for n in namespaces.items}
    classes = dyn.resources.get(api_version="storage.k8s.io/v1", kind="StorageClass").get(name="standard")
    assert classes.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    snapclass = dyn.resources.get(api_version="snapshot.storage.k8s.io/v1", kind="VolumeSnapshotClass").get(
        name="csi-hostpath-snapclass")
    assert snapclass.driver == "hostpath.csi.stateful.rollback"


# -- CRUD ------------------------------------------------------------------------------------
def test_create_get_conflicts_and_not_found(core, ns):
    body = {"metadata": {"name": "cfg", "labels": {"app": "a"}}, "data": {"k": "v"}}
    data, code, dummy = core.create_namespaced_config_map_with_http_info(ns, body)
    assert code == 201
    meta = data.metadata
    assert meta.uid and meta.resource_version and meta.creation_timestamp and meta.generation == 1
    code, status = api_error(core.create_namespaced_config_map, ns, body)
    assert code == 409 and status["kind"] == "Status" and status["reason"] == "AlreadyExists"
    code, status = api_error(core.read_namespaced_config_map, "missing", ns)
    assert code == 404 and status["reason"] == "NotFound"
    assert status["details"] == {"name": "missing", "group": "", "kind": "configmaps"}
    assert status["message"] == 'configmaps "missing" not found'
    code, status = api_error(core.create_namespaced_config_map, "no-such-ns", body)
    assert code == 404 and status["details"]["kind"] == "namespaces"
    code, status = api_error(core.create_namespaced_config_map, ns, {"metadata": {"name": "Bad_Name"}})
    assert code == 422 and status["reason"] == "Invalid"
    generated = core.create_namespaced_secret(ns, {"metadata": {"generateName": "sec-"}, "stringData": {"pw": "x"}})
    assert generated.metadata.name.startswith("sec-") and generated.data == {"pw": "eA=="} and generated.type == "Opaque"


def test_list_selectors_and_all_namespaces(sim, core, ns):
    for name, labels in (("a", {"tier": "db", "env": "prod"}), ("b", {"tier": "db", "env": "dev"}), ("c", {"tier": "web"}),
                         ("d", {})):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs):
        return sorted(c.metadata.name for c in core.list_namespaced_config_map(ns, **kwargs).items)
    assert names() == ["a", "b", "c", "d"]
    assert names(label_selector="tier=db") == ["a", "b"]
    assert names(label_selector="tier==db,env=prod") == ["a"]
    assert names(label_selector="tier!=db") == ["c", "d"]
    assert names(label_selector="env in (prod, dev)") == ["a", "b"]
    assert names(label_selector="env notin (prod)") == ["b", "c", "d"]
    assert names(label_selector="env") == ["a", "b"]
    assert names(label_selector="!env") == ["c", "d"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(field_selector="metadata.name!=c") == ["a", "b", "d"]
    assert names(field_selector="metadata.namespace=%s" % ns) == ["a", "b", "c", "d"]
    every = core.list_config_map_for_all_namespaces(label_selector="tier")
    assert {(c.metadata.namespace, c.metadata.name) for c in every.items} >= {(ns, "a"), (ns, "b"), (ns, "c")}
    code, raw = http(sim, "GET", "/api/v1/namespaces/%s/configmaps?labelSelector=tier%%3Ddb" % ns)
    assert code == 200 and raw["kind"] == "ConfigMapList" and raw["apiVersion"] == "v1" and raw["metadata"]["resourceVersion"]
    code, raw = http(sim, "GET", "/api/v1/namespaces/%s/configmaps?labelSelector=%%28%%29bad" % ns)
    assert code == 400 and raw["reason"] == "BadRequest"
    page = core.list_namespaced_config_map(ns, limit=3)
    assert len(page.items) == 3 and page.metadata._continue
    rest = core.list_namespaced_config_map(ns, limit=3, _continue=page.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["d"]


def test_replace_patch_and_generation(sim, core, apps, custom, ns):
    cfg = core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"k": "1"}})
    stale = cfg.metadata.resource_version
    fresh = core.replace_namespaced_config_map("cfg", ns, {"metadata": {"name": "cfg", "resourceVersion": stale},
                                                           "data": {"k": "2"}})
    assert fresh.data == {"k": "2"} and fresh.metadata.resource_version != stale
    code, status = api_error(core.replace_namespaced_config_map, "cfg", ns,
                             {"metadata": {"name": "cfg", "resourceVersion": stale}, "data": {"k": "3"}})
    assert code == 409 and status["reason"] == "Conflict" and "the object has been modified" in status["message"]
    same = core.patch_namespaced_config_map("cfg", ns, {"data": {"k": "2"}})
    assert same.metadata.resource_version == fresh.metadata.resource_version  # a no-op write keeps the version
    merged = core.patch_namespaced_config_map("cfg", ns, {"data": {"x": "y"}, "metadata": {"labels": {"l": "1"}}})
    assert merged.data == {"k": "2", "x": "y"} and merged.metadata.labels == {"l": "1"}
    patched = core.patch_namespaced_config_map("cfg", ns, [{"op": "replace", "path": "/data/k", "value": "9"},
                                                           {"op": "remove", "path": "/data/x"}])
    assert patched.data == {"k": "9"}
    code, status = api_error(core.patch_namespaced_config_map, "cfg", ns, {"metadata": {"resourceVersion": stale}})
    assert code == 409
    code, status = http(sim, "PATCH", "/api/v1/namespaces/%s/configmaps/cfg" % ns, {"data": {}},
                        {"Content-Type": "application/apply-patch+yaml"})
    assert code == 415 and "server-side apply" in status["message"]

    dep = apps.create_namespaced_deployment(ns, {"metadata": {"name": "web"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    assert dep.metadata.generation == 1 and dep.spec.strategy.type == "RollingUpdate"
    dep = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"x": "1"}}})
    assert dep.metadata.generation == 1  # metadata only
    dep = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 2}})
    assert dep.metadata.generation == 2
    ready = wait_for(lambda: apps.read_namespaced_deployment_status("web", ns), lambda d: d.status.available_replicas == 2)
    assert ready.status.observed_generation == 2
    assert {c.type: c.status for c in ready.status.conditions} == {"Available": "True", "Progressing": "True"}
    # status is only written through /status
    apps.patch_namespaced_deployment("web", ns, {"status": {"replicas": 42}})
    assert apps.read_namespaced_deployment("web", ns).status.replicas == 2
    code, status = api_error(apps.create_namespaced_deployment, ns, {"metadata": {"name": "bad"}, "spec": {
        "selector": {"matchLabels": {"app": "x"}},
        "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    assert code == 422

    snap = {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "s"},
            "spec": {"source": {"persistentVolumeClaimName": "none"}}}
    custom.create_namespaced_custom_object(*SNAP, ns, "volumesnapshots", snap)
    labelled = custom.patch_namespaced_custom_object(*SNAP, ns, "volumesnapshots", "s", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["labels"] == {"a": "b"}
    code, status = http(sim, "PATCH", "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/volumesnapshots/s" % ns, {},
                        {"Content-Type": "application/strategic-merge-patch+json"})
    assert code == 415  # custom resources take no strategic merge patch, as on a real cluster
    code, status = http(sim, "POST", "/api/v1/namespaces/%s/configmaps?dryRun=All" % ns, {"metadata": {"name": "dry"}})
    assert code == 201 and status["metadata"]["name"] == "dry"
    assert api_error(core.read_namespaced_config_map, "dry", ns)[0] == 404


def test_delete_finalizers_collection_and_namespace(sim, core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    status = core.delete_namespaced_config_map("held", ns, propagation_policy="Foreground")
    held = core.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None and held.metadata.finalizers == ["example.com/hold"]
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    assert api_error(core.read_namespaced_config_map, "held", ns)[0] == 404

    core.create_namespaced_config_map(ns, {"metadata": {"name": "plain"}})
    code, status = http(sim, "DELETE", "/api/v1/namespaces/%s/configmaps/plain?propagationPolicy=Background" % ns)
    assert code == 200 and status["kind"] == "Status" and status["status"] == "Success"
    for name in ("x1", "x2", "keep"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": {"drop": str(name != "keep").lower()}}})
    core.delete_collection_namespaced_config_map(ns, label_selector="drop=true")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["keep"]

    core.create_namespaced_persistent_volume_claim(ns, pvc_body("data"))
    wait_until(lambda: bound(core, ns, "data"))
    core.delete_namespace(ns)
    assert core.read_namespace(ns).status.phase == "Terminating"
    code, status = api_error(core.create_namespaced_config_map, ns, {"metadata": {"name": "late"}})
    assert code == 403
    wait_until(lambda: ns not in {n.metadata.name for n in core.list_namespace().items})
    assert not [p for p in core.list_persistent_volume().items if p.spec.claim_ref and p.spec.claim_ref.namespace == ns]


def test_watch_streams_events(core, ns):
    got = []

    def consume():
        for event in watch.Watch().stream(core.list_namespaced_config_map, ns, label_selector="w=1", timeout_seconds=3):
            got.append((event["type"], event["object"].metadata.name))
    core.create_namespaced_config_map(ns, {"metadata": {"name": "before", "labels": {"w": "1"}}})
    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.5)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w1", "labels": {"w": "1"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    core.patch_namespaced_config_map("w1", ns, {"data": {"a": "b"}})
    core.delete_namespaced_config_map("w1", ns)
    reader.join(10)
    assert got == [("ADDED", "before"), ("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


# -- volumes and snapshots ---------------------------------------------------------------------
def test_pvc_binds_to_a_host_directory(sim, core, ns):
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("data", resources={"requests": {"storage": "3Gi"}}))
    pvc = wait_until(lambda: bound(core, ns, "data"))
    assert pvc.spec.storage_class_name == "standard" and pvc.status.capacity == {"storage": "3Gi"}
    assert "kubernetes.io/pvc-protection" in pvc.metadata.finalizers
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.status.phase == "Bound" and pv.spec.claim_ref.name == "data" and pv.spec.capacity == {"storage": "3Gi"}
    assert pv.spec.csi.driver == "hostpath.csi.stateful.rollback"
    path = sim.volume_path(ns, "data")
    assert path == os.path.join(sim.data_dir, "volumes", pv.metadata.name) and os.path.isdir(path)
    assert [e.reason for e in events_for(core, ns, "data")].count("ProvisioningSucceeded") == 1
    core.delete_namespaced_persistent_volume_claim("data", ns)
    wait_until(lambda: not os.path.exists(path))  # reclaimPolicy Delete


def _write_pg_like_data(path, text):
    pgdata = os.path.join(path, "pgdata")
    os.makedirs(pgdata, mode=0o700, exist_ok=True)
    with open(os.path.join(pgdata, "PG_VERSION"), "w") as handle:
        handle.write(text)
    if os.geteuid() == 0:
        for target in (pgdata, os.path.join(pgdata, "PG_VERSION")):
            os.chown(target, PG_UID, PG_UID)
    os.chmod(pgdata, 0o700)
    os.chmod(os.path.join(pgdata, "PG_VERSION"), 0o600)
    return pgdata


def test_snapshot_copies_data_and_restore_gets_old_content(sim, core, custom, ns):
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("data"))
    wait_until(lambda: bound(core, ns, "data"))
    pgdata = _write_pg_like_data(sim.volume_path(ns, "data"), "old")
    make_snapshot(custom, ns, "snap", "data")
    status = wait_for(lambda: snapshot_status(custom, ns, "snap"), lambda s: s.get("readyToUse"))
    assert status["restoreSize"] == "1Gi" and status["creationTime"]
    content = custom.get_cluster_custom_object(*SNAP, "volumesnapshotcontents", status["boundVolumeSnapshotContentName"])
    assert content["spec"]["volumeSnapshotRef"]["name"] == "snap" and content["status"]["readyToUse"] is True
    assert os.path.isdir(os.path.join(sim.data_dir, "snapshots", content["metadata"]["name"]))
    with open(os.path.join(pgdata, "PG_VERSION"), "w") as handle:
        handle.write("new")

    core.create_namespaced_persistent_volume_claim(ns, pvc_body("restored", dataSource={
        "kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "snap"}))
    wait_until(lambda: bound(core, ns, "restored"))
    restored = os.path.join(sim.volume_path(ns, "restored"), "pgdata")
    with open(os.path.join(restored, "PG_VERSION")) as handle:
        assert handle.read() == "old"
    with open(os.path.join(pgdata, "PG_VERSION")) as handle:
        assert handle.read() == "new"
    info = os.stat(restored)
    assert stat.S_IMODE(info.st_mode) == 0o700
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid) == (PG_UID, PG_UID)
        assert os.stat(os.path.join(restored, "PG_VERSION")).st_uid == PG_UID

    # Deleting the snapshot removes its content and data (deletionPolicy Delete).
    snap_dir = sim.snapshot_path(ns, "snap")
    custom.delete_namespaced_custom_object(*SNAP, ns, "volumesnapshots", "snap")
    wait_until(lambda: not os.path.exists(snap_dir))


def test_restore_from_a_missing_snapshot_waits(sim, core, custom, ns):
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("data"))
    wait_until(lambda: bound(core, ns, "data"))
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("restored", dataSource={
        "kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "later"}))
    event = wait_until(lambda: [e for e in events_for(core, ns, "restored") if e.reason == "ProvisioningFailed"])
    assert "not found" in event[0].message and event[0].type == "Warning"
    assert core.read_namespaced_persistent_volume_claim("restored", ns).status.phase == "Pending"
    make_snapshot(custom, ns, "later", "data")
    wait_until(lambda: bound(core, ns, "restored"))


# -- workloads ---------------------------------------------------------------------------------
def test_statefulset_status_scale_and_pods(sim, core, apps, ns):
    apps.create_namespaced_stateful_set(ns, sts_body("pg"))
    sts = wait_for(lambda: apps.read_namespaced_stateful_set("pg", ns), lambda s: s.status.ready_replicas == 1)
    status = sts.status
    assert (status.replicas, status.current_replicas, status.updated_replicas, status.available_replicas) == (1, 1, 1, 1)
    assert status.observed_generation == sts.metadata.generation and status.current_revision == status.update_revision
    assert sts.spec.update_strategy.type == "RollingUpdate"
    pod = core.read_namespaced_pod("pg-0", ns)
    assert pod.status.phase == "Running" and pod.status.container_statuses[0].ready
    claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if v.persistent_volume_claim]
    assert claims == ["data-pg-0"] and bound(core, ns, "data-pg-0")

    scale = apps.patch_namespaced_stateful_set_scale("pg", ns, {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2 and scale.status.selector == "app=pg"
    wait_until(lambda: apps.read_namespaced_stateful_set("pg", ns).status.ready_replicas == 2)
    assert apps.read_namespaced_stateful_set_scale("pg", ns).status.replicas == 2
    assert sorted(p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="app=pg").items) == ["pg-0", "pg-1"]
    stale = apps.read_namespaced_stateful_set_scale("pg", ns)
    apps.patch_namespaced_stateful_set("pg", ns, {"metadata": {"labels": {"bump": "1"}}})
    stale.spec.replicas = 0
    assert api_error(apps.replace_namespaced_stateful_set_scale, "pg", ns, stale)[0] == 409
    apps.patch_namespaced_stateful_set_scale("pg", ns, {"spec": {"replicas": 0}})
    sts = wait_for(lambda: apps.read_namespaced_stateful_set("pg", ns), lambda s: s.status.replicas == 0)
    assert not sts.status.ready_replicas and not core.list_namespaced_pod(ns).items
    assert bound(core, ns, "data-pg-1")  # PVCs are kept, as on a real cluster
    code, status = api_error(apps.patch_namespaced_stateful_set, "pg", ns, {"spec": {"serviceName": "other"}})
    assert code == 422 and "Forbidden" in status["message"]


def test_scale_hook_gates_readiness(sim, core, apps, ns):
    calls = []
    release = threading.Event()
    failures = [1]

    def hook(event):
        calls.append(event)
        if event.new_replicas and failures[0]:
            failures[0] -= 1
            raise RuntimeError("postgres did not start")
        if event.new_replicas:
            release.wait(10)
        for path in event.volumes.values():
            assert os.path.isdir(path)

    hook_id = sim.on_scale("StatefulSet", ns, "db", hook)
    try:
        apps.create_namespaced_stateful_set(ns, sts_body("db"))
        wait_until(lambda: [e for e in events_for(core, ns, "db") if e.reason == "ScaleHookFailed"])

        def crashing():
            pods = core.list_namespaced_pod(ns).items
            statuses = pods[0].status.container_statuses if pods else None
            waiting = statuses[0].state.waiting if statuses else None
            return waiting if waiting and waiting.reason == "CrashLoopBackOff" else None
        assert "postgres did not start" in wait_until(crashing).message
        wait_until(lambda: len(calls) >= 2)  # retried after a back-off
        time.sleep(0.3)
        assert not apps.read_namespaced_stateful_set("db", ns).status.ready_replicas  # held until the hook returns
        release.set()
        wait_until(lambda: apps.read_namespaced_stateful_set("db", ns).status.ready_replicas == 1)
        assert (calls[-1].old_replicas, calls[-1].new_replicas, calls[-1].reason) == (0, 1, "scale")
        assert list(calls[-1].volumes) == ["data-db-0"] and calls[-1].volumes["data-db-0"] == sim.volume_path(ns, "data-db-0")
        apps.patch_namespaced_stateful_set_scale("db", ns, {"spec": {"replicas": 0}})
        wait_until(lambda: apps.read_namespaced_stateful_set("db", ns).status.replicas == 0)
        assert (calls[-1].old_replicas, calls[-1].new_replicas) == (1, 0)
    finally:
        sim.remove_scale_hook(hook_id)


def test_snapshot_hook_wraps_the_copy(sim, core, custom, ns):
    """on_snapshot: entered before the volume is copied, exited after; a failing hook fails the snapshot."""
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("hooked"))
    wait_until(lambda: bound(core, ns, "hooked"))
    path = sim.volume_path(ns, "hooked")
    with open(os.path.join(path, "file"), "w") as handle:
        handle.write("before")
    seen = []

    @contextlib.contextmanager
    def hook(namespace, claim, volume):
        seen.append(("enter", namespace, claim, volume))
        with open(os.path.join(volume, "file"), "w") as handle:  # what the copy must see
            handle.write("quiesced")
        yield
        seen.append(("exit", claim))
        with open(os.path.join(volume, "file"), "w") as handle:
            handle.write("after")

    hook_id = sim.on_snapshot(ns, "hooked", hook)
    try:
        make_snapshot(custom, ns, "hooked-1", "hooked")
        wait_until(lambda: snapshot_status(custom, ns, "hooked-1").get("readyToUse"))
        assert seen == [("enter", ns, "hooked", path), ("exit", "hooked")]
        with open(os.path.join(sim.snapshot_path(ns, "hooked-1"), "file")) as handle:
            assert handle.read() == "quiesced"
    finally:
        sim.remove_snapshot_hook(hook_id)

    @contextlib.contextmanager
    def broken(namespace, claim, volume):
        raise RuntimeError("cannot freeze the database")
        yield  # pylint: disable=unreachable

    hook_id = sim.on_snapshot(ns, "hooked", broken)
    try:
        make_snapshot(custom, ns, "hooked-2", "hooked")
        status = wait_until(lambda: snapshot_status(custom, ns, "hooked-2").get("error"))
        assert "cannot freeze the database" in status["message"]
    finally:
        sim.remove_snapshot_hook(hook_id)
    wait_until(lambda: snapshot_status(custom, ns, "hooked-2").get("readyToUse"))  # retried without the hook


def test_persistence_across_restarts(tmp_path):
    """persist=True: objects and resourceVersions survive a restart; workloads are not ready until reconciled."""
    data = str(tmp_path / "data")
    with KubeSim(data, persist=True, tick=0.05) as first:
        cfg = first.write_kubeconfig(str(tmp_path / "kubeconfig"))
        api_client = config.new_client_from_config(config_file=cfg)
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        core.create_namespace({"metadata": {"name": "keep"}})
        core.create_namespaced_config_map("keep", {"metadata": {"name": "c"}, "data": {"k": "v"}})
        core.create_namespaced_persistent_volume_claim("keep", pvc_body("data"))
        wait_until(lambda: bound(core, "keep", "data"))
        apps.create_namespaced_stateful_set("keep", sts_body("db"))
        wait_until(lambda: apps.read_namespaced_stateful_set("db", "keep").status.ready_replicas == 1)
        rv = core.read_namespaced_config_map("c", "keep").metadata.resource_version
        volume = first.volume_path("keep", "data")
    assert os.path.exists(os.path.join(data, "store.json"))
    calls = []
    second = KubeSim(data, persist=True, tick=0.05)
    second.on_scale("StatefulSet", "keep", "db", calls.append)
    with second:
        cfg = second.write_kubeconfig(str(tmp_path / "kubeconfig"))
        api_client = config.new_client_from_config(config_file=cfg)
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        again = core.read_namespaced_config_map("c", "keep")
        assert again.data == {"k": "v"} and again.metadata.resource_version == rv
        assert second.volume_path("keep", "data") == volume
        wait_until(lambda: apps.read_namespaced_stateful_set("db", "keep").status.ready_replicas == 1)
        assert [(c.old_replicas, c.new_replicas) for c in calls] == [(0, 1)]  # the hook brought the replica back
        core.patch_namespaced_config_map("c", "keep", {"data": {"k": "w"}})
        assert int(core.read_namespaced_config_map("c", "keep").metadata.resource_version) > int(rv)


# -- faults --------------------------------------------------------------------------------------
def test_fault_api_errors_via_admin_endpoint(sim, core, ns):
    code, added = http(sim, "POST", "/_kubesim/faults",
                       {"type": "api_error", "count": 2, "code": 500, "verb": "get", "path": "/configmaps/"})
    assert code == 201 and added["faults"][0]["id"]
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})  # a create does not match
    for dummy in range(2):
        code, status = api_error(core.read_namespaced_config_map, "c", ns)
        assert code == 500 and status["kind"] == "Status" and status["reason"] == "InternalError"
    assert core.read_namespaced_config_map("c", ns).metadata.name == "c"
    sim.faults.api_error(count=None, code=503, verb="list")
    assert api_error(core.list_namespaced_config_map, ns)[0] == 503
    assert http(sim, "GET", "/_kubesim/faults")[1]["faults"][0]["code"] == 503
    http(sim, "DELETE", "/_kubesim/faults")
    assert core.list_namespaced_config_map(ns).items
    assert http(sim, "POST", "/_kubesim/faults", {"type": "nope"})[0] == 400


def test_fault_timeout(sim, core, ns):
    sim.faults.api_timeout(count=1, seconds=1.5, verb="create")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.create_namespaced_config_map(ns, {"metadata": {"name": "slow"}}, _request_timeout=0.5)
    time.sleep(1.2)
    assert api_error(core.read_namespaced_config_map, "slow", ns)[0] == 404  # then=fail: nothing was written
    sim.faults.api_timeout(count=1, seconds=0.5, then="process", verb="create")
    started = time.monotonic()
    core.create_namespaced_config_map(ns, {"metadata": {"name": "slow"}})
    assert time.monotonic() - started >= 0.5


def test_fault_snapshot_error_and_not_ready(sim, core, custom, ns):
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("data"))
    wait_until(lambda: bound(core, ns, "data"))
    sim.faults.snapshot_error("broken-*", message="rpc error: code = Internal desc = emulated")
    make_snapshot(custom, ns, "broken-1", "data")
    status = wait_until(lambda: snapshot_status(custom, ns, "broken-1").get("error"))
    assert status["message"] == "rpc error: code = Internal desc = emulated"
    assert snapshot_status(custom, ns, "broken-1")["readyToUse"] is False

    sim.faults.snapshot_not_ready("slow")
    make_snapshot(custom, ns, "slow", "data")
    wait_until(lambda: snapshot_status(custom, ns, "slow").get("boundVolumeSnapshotContentName"))
    time.sleep(0.5)
    assert snapshot_status(custom, ns, "slow")["readyToUse"] is False
    sim.faults.clear()
    wait_until(lambda: snapshot_status(custom, ns, "slow").get("readyToUse"))
    wait_until(lambda: snapshot_status(custom, ns, "broken-1").get("readyToUse"))  # retried once the fault is gone


def test_fault_hide_group(sim, custom, ns):
    """Like a cluster without the snapshot CRDs: absent from discovery, 404 below /apis/<group>."""
    make_snapshot(custom, ns, "kept", "data")
    sim.faults.hide_group("snapshot.storage.k8s.io")
    code, groups = http(sim, "GET", "/apis")
    assert code == 200 and "snapshot.storage.k8s.io" not in [g["name"] for g in groups["groups"]]
    assert "apps" in [g["name"] for g in groups["groups"]]
    assert http(sim, "GET", "/apis/snapshot.storage.k8s.io/v1")[0] == 404
    code, status = api_error(custom.list_namespaced_custom_object, "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots")
    assert code == 404 and status["reason"] == "NotFound"
    sim.faults.clear()
    names = [s["metadata"]["name"] for s in custom.list_namespaced_custom_object(
        "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots")["items"]]
    assert "kept" in names


def test_fault_pvc_pending(sim, core, ns):
    sim.faults.pvc_pending("stuck")
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("stuck"))
    wait_until(lambda: [e for e in events_for(core, ns, "stuck") if e.reason == "ExternalProvisioning"])
    time.sleep(0.3)
    assert core.read_namespaced_persistent_volume_claim("stuck", ns).status.phase == "Pending"
    sim.faults.clear()
    wait_until(lambda: bound(core, ns, "stuck"))


def test_fault_restore_disk_full(sim, core, custom, ns):
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("data"))
    wait_until(lambda: bound(core, ns, "data"))
    source = sim.volume_path(ns, "data")
    with open(os.path.join(source, "file"), "w") as handle:
        handle.write("precious")
    make_snapshot(custom, ns, "snap", "data")
    wait_until(lambda: snapshot_status(custom, ns, "snap").get("readyToUse"))
    sim.faults.restore_fail("restored")
    core.create_namespaced_persistent_volume_claim(ns, pvc_body("restored", dataSource={
        "kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "snap"}))
    event = wait_until(lambda: [e for e in events_for(core, ns, "restored") if e.reason == "ProvisioningFailed"])
    assert "No space left on device" in event[0].message
    assert core.read_namespaced_persistent_volume_claim("restored", ns).status.phase == "Pending"
    with open(os.path.join(source, "file")) as handle:
        assert handle.read() == "precious"
    assert not [d for d in os.listdir(os.path.join(sim.data_dir, "volumes")) if ".tmp-" in d]
    sim.faults.clear()
    wait_until(lambda: bound(core, ns, "restored"), timeout=20)
    with open(os.path.join(sim.volume_path(ns, "restored"), "file")) as handle:
        assert handle.read() == "precious"


# -- auth, CLI --------------------------------------------------------------------------------------
def test_tokens_and_forbidden_verbs(tmp_path):
    with KubeSim(str(tmp_path / "data")) as guarded:
        guarded.add_token("admin-token")
        guarded.add_token("reader-token", user="reader", rules=[
            {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"]},
            {"verbs": ["get", "patch"], "apiGroups": ["apps"], "resources": ["statefulsets/scale"]}])
        cfg = client.Configuration()
        config.load_kube_config(config_file=guarded.write_kubeconfig(str(tmp_path / "admin"), token="admin-token"),
                                client_configuration=cfg)
        admin = client.CoreV1Api(client.ApiClient(cfg))
        admin.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
        cfg = client.Configuration()
        config.load_kube_config(config_file=guarded.write_kubeconfig(str(tmp_path / "reader"), token="reader-token"),
                                client_configuration=cfg)
        reader = client.CoreV1Api(client.ApiClient(cfg))
        assert reader.read_namespaced_config_map("c", "default").metadata.name == "c"
        code, status = api_error(reader.delete_namespaced_config_map, "c", "default")
        assert code == 403 and status["reason"] == "Forbidden"
        assert status["message"] == ('configmaps "c" is forbidden: User "reader" cannot delete resource "configmaps" in API '
                                     'group "" in the namespace "default"')
        assert api_error(reader.list_namespaced_secret, "default")[0] == 403
        assert http(guarded, "GET", "/api/v1/namespaces")[0] == 401


RBAC_DOCS = [
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": "app"}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "deployer", "namespace": "app"},
     "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
               {"apiGroups": ["apps"], "resources": ["statefulsets/scale"], "verbs": ["patch"]},
               {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["only-this"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "deployer", "namespace": "app"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
     "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "app"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "deployer-storage"},
     "rules": [{"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get"]},
               {"nonResourceURLs": ["/version"], "verbs": ["get"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "deployer-storage"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "deployer-storage"},
     "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "app"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "someone-else"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "deployer-storage"},
     "subjects": [{"kind": "ServiceAccount", "name": "other", "namespace": "app"}]},
]


def test_rbac_manifests_become_token_rules():
    from kubesim import rbac

    assert rbac.token_rules(RBAC_DOCS, "app", "deployer") == [
        {"verbs": ["get", "create"], "apiGroups": [""], "resources": ["configmaps"], "namespaces": ["app"]},
        {"verbs": ["patch"], "apiGroups": ["apps"], "resources": ["statefulsets/scale"], "namespaces": ["app"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["only-this"], "namespaces": ["app"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["persistentvolumes"]}]
    assert rbac.token_rules(RBAC_DOCS, "elsewhere", "deployer") == []
    assert rbac.service_account_user("app", "deployer") == "system:serviceaccount:app:deployer"
    dangling = [dict(RBAC_DOCS[2], roleRef={"kind": "Role", "name": "missing"})]
    with pytest.raises(rbac.RbacError, match="RoleBinding app/deployer: roleRef Role 'missing' is not in the manifests"):
        rbac.token_rules(dangling, "app", "deployer")
    bad_verb = [dict(RBAC_DOCS[1], rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["read"]}]), RBAC_DOCS[2]]
    with pytest.raises(rbac.RbacError, match=r"Role app/deployer: rules\[0\].verbs: unknown verb\(s\) read"):
        rbac.token_rules(bad_verb, "app", "deployer")


def test_role_rules_hold_in_their_namespace_only_and_requests_are_logged(tmp_path):
    from kubesim import rbac

    with KubeSim(str(tmp_path / "data")) as guarded:
        user = rbac.service_account_user("app", "deployer")
        guarded.add_token("admin-token")
        guarded.add_token("deployer-token", rules=rbac.token_rules(RBAC_DOCS, "app", "deployer"), user=user)
        admin = {"Authorization": "Bearer admin-token"}
        deployer = {"Authorization": "Bearer deployer-token"}
        for ns in ("app", "other"):
            assert http(guarded, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}}, admin)[0] == 201
            assert http(guarded, "POST", "/apis/apps/v1/namespaces/%s/statefulsets" % ns, sts_body("db"), admin)[0] == 201
        assert http(guarded, "POST", "/_kubesim/requests", {"record": True})[0] == 201
        cm = {"metadata": {"name": "flags"}, "data": {"a": "1"}}
        assert http(guarded, "POST", "/api/v1/namespaces/app/configmaps", cm, deployer)[0] == 201
        code, status = http(guarded, "POST", "/api/v1/namespaces/other/configmaps", cm, deployer)
        assert code == 403 and status["message"] == (
            'configmaps is forbidden: User "system:serviceaccount:app:deployer" cannot create resource "configmaps" in API '
            'group "" in the namespace "other"')
        scale = {"spec": {"replicas": 0}}
        apps_api = client.AppsV1Api(client.ApiClient(client.Configuration(host=guarded.url, api_key={"authorization": "Bearer deployer-token"})))
        assert apps_api.patch_namespaced_stateful_set_scale("db", "app", scale).spec.replicas == 0
        code, status = api_error(apps_api.patch_namespaced_stateful_set, "db", "app", scale)
        assert code == 403 and 'cannot patch resource "statefulsets" in API group "apps"' in status["message"]
        assert http(guarded, "GET", "/api/v1/namespaces/app/secrets/only-this", headers=deployer)[0] == 404  # allowed, absent
        assert http(guarded, "GET", "/api/v1/namespaces/app/secrets/another", headers=deployer)[0] == 403
        assert http(guarded, "GET", "/api/v1/namespaces/app/secrets", headers=deployer)[0] == 403  # resourceNames never list
        assert http(guarded, "GET", "/api/v1/persistentvolumes/pv-1", headers=deployer)[0] == 404  # ClusterRoleBinding: allowed
        code, status = http(guarded, "GET", "/api/v1/persistentvolumes", headers=deployer)
        assert code == 403 and status["message"] == (
            'persistentvolumes is forbidden: User "system:serviceaccount:app:deployer" cannot list resource '
            '"persistentvolumes" in API group "" at the cluster scope')
        assert http(guarded, "GET", "/api/v1", headers=deployer)[0] == 200  # discovery: any known token
        assert http(guarded, "GET", "/api/v1/namespaces/app/configmaps/flags")[0] == 401
        assert http(guarded, "GET", "/api/v1", headers={"Authorization": "Bearer wrong"})[0] == 401
        guarded.allow_anonymous([{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "namespaces": ["app"],
                                  "resourceNames": ["flags"]}])
        assert http(guarded, "GET", "/api/v1/namespaces/app/configmaps/flags")[1]["data"] == {"a": "1"}
        code, status = http(guarded, "DELETE", "/api/v1/namespaces/app/configmaps/flags")
        assert code == 403 and 'User "system:anonymous" cannot delete' in status["message"]
        assert http(guarded, "GET", "/api/v1", headers={"Authorization": "Bearer wrong"})[0] == 401
        code, body = http(guarded, "DELETE", "/_kubesim/requests")
        seen = [(r["user"], r["verb"], r["resource"], r["subresource"], r["namespace"], r["name"], r["code"])
                for r in body["requests"]]
        assert seen[:4] == [(user, "create", "configmaps", None, "app", None, 201),
                            (user, "create", "configmaps", None, "other", None, 403),
                            (user, "patch", "statefulsets", "scale", "app", "db", 200),
                            (user, "patch", "statefulsets", None, "app", "db", 403)]
        assert (None, "get", "configmaps", None, "app", "flags", 401) in seen  # before allow_anonymous
        assert ("system:anonymous", "get", "configmaps", None, "app", "flags", 200) in seen
        assert (None, "get", None, None, None, None, 401) in seen  # discovery with an unknown token
        assert http(guarded, "GET", "/_kubesim/requests")[1] == {"recording": True, "requests": []}


def test_cli_prints_url_and_writes_kubeconfig(tmp_path):
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "kubesim"), "--port", "0", "--data-dir",
                             str(tmp_path / "data"), "--kubeconfig", str(kubeconfig)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("kubesim listening on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[-1]
        assert json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == url
        with urllib.request.urlopen(url + "/version", timeout=5) as resp:
            assert json.loads(resp.read())["gitVersion"].endswith("kubesim")
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


# -- ansible ------------------------------------------------------------------------------------------
PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  vars:
    ns: ansible-kubesim
    cm:
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: settings, namespace: "{{ ns }}", labels: {app: demo}}
      data: {mode: fast}
    pvc:
      apiVersion: v1
      kind: PersistentVolumeClaim
      metadata: {name: data, namespace: "{{ ns }}", labels: {app: demo}}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
  tasks:
    - name: Create the namespace
      kubernetes.core.k8s: {api_version: v1, kind: Namespace, name: "{{ ns }}"}
    - name: Create a ConfigMap and a PVC
      kubernetes.core.k8s: {definition: "{{ item }}"}
      loop: ["{{ cm }}", "{{ pvc }}"]
      register: first
    - name: Create them again
      kubernetes.core.k8s: {definition: "{{ item }}"}
      loop: ["{{ cm }}", "{{ pvc }}"]
      register: second
    - name: The second run changed nothing
      ansible.builtin.assert:
        that:
          - first.results | map(attribute='changed') | list == [true, true]
          - second.results | map(attribute='changed') | list == [false, false]
    - name: List by label selector
      kubernetes.core.k8s_info: {kind: ConfigMap, namespace: "{{ ns }}", label_selectors: ["app=demo"]}
      register: listed
    - name: Wait for the PVC to be Bound
      kubernetes.core.k8s_info: {kind: PersistentVolumeClaim, namespace: "{{ ns }}", name: data}
      register: claim
      until: claim.resources and claim.resources[0].status.phase == 'Bound'
      retries: 30
      delay: 1
    - name: A StatefulSet, waited for
      kubernetes.core.k8s:
        wait: true
        wait_timeout: 60
        definition:
          apiVersion: apps/v1
          kind: StatefulSet
          metadata: {name: pg, namespace: "{{ ns }}"}
          spec:
            replicas: 1
            serviceName: pg
            selector: {matchLabels: {app: pg}}
            template:
              metadata: {labels: {app: pg}}
              spec: {containers: [{name: postgres, image: "postgres:16"}]}
            volumeClaimTemplates:
              - metadata: {name: data}
                spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
      register: sts
    - name: Delete the ConfigMap, twice
      kubernetes.core.k8s: {kind: ConfigMap, name: settings, namespace: "{{ ns }}", state: absent}
      loop: [1, 2]
      register: deleted
    - name: Check the results
      ansible.builtin.assert:
        that:
          - listed.resources | map(attribute='metadata.name') | list == ['settings']
          - claim.resources[0].spec.storageClassName == 'standard'
          - sts.result.status.readyReplicas == 1
          - sts.result.status.currentRevision == sts.result.status.updateRevision
          - deleted.results | map(attribute='changed') | list == [true, false]
"""


def test_ansible_kubernetes_core_modules(sim, kubeconfig, core, tmp_path):
    playbook = tmp_path / "kubesim.yml"
    playbook.write_text(textwrap.dedent(PLAYBOOK))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), K8S_AUTH_KUBECONFIG=kubeconfig,
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(playbook)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "failed=0" in out
    assert core.read_namespaced_pod("pg-0", "ansible-kubesim").status.phase == "Running"
