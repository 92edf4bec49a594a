# -*- coding: utf-8 -*-
"""The sandbox's database on a PVC: snapshot -> change data -> restore -> scale up returns the old rows.

A sandbox of its own (ports 25730-25732, ``<repo>/.sandbox/pytest-kube``): the
primary's data directory is the volume of PVC ``sandbox/data-db-0`` of the
emulated StatefulSet ``db`` (scripts/sandbox_kube.py). Everything runs for
real except the Kubernetes API server, which is kubesim on 127.0.0.1: real
PostgreSQL servers, real files copied by the emulated CSI driver, and
``stateful.rollback.pvc_snapshot`` / ``kubernetes.core.k8s_scale`` /
``stateful.rollback.replication_parity`` through ansible-playbook.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
import yaml
from kubernetes import client, config as kube_config

import sandbox_kube  # scripts/ is on sys.path (tests/conftest.py)

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
OWN_SANDBOX_PORT_BASE = 25730
OWN_SANDBOX_NAME = "pytest-kube"
NS = sandbox_kube.NAMESPACE


def playbook(sb, tmp_path, tasks, name):
    """Run tasks against the sandbox (module defaults: its primary) and return {register: result}."""
    env_vars = sb.env()
    keys = [t["register"] for t in tasks]
    body = list(tasks) + [{"name": "Save the results", "ansible.builtin.copy": {
        "dest": str(tmp_path / f"{name}.json"), "mode": "0600",
        "content": "{{ {%s} | to_json }}" % ", ".join(f"'{k}': {k}" for k in keys)}}]
    play = [{"hosts": "localhost", "gather_facts": False, "environment": {"K8S_AUTH_KUBECONFIG": env_vars["KUBECONFIG"]},
             "module_defaults": {"group/stateful.rollback.postgres": {
                 "login_host": "127.0.0.1", "login_port": int(env_vars["SANDBOX_PRIMARY_PORT"]),
                 "login_user": env_vars["SANDBOX_PRIMARY_USER"], "login_password": env_vars["SANDBOX_PRIMARY_PASSWORD"],
                 "login_db": env_vars["SANDBOX_PRIMARY_DB"]}},
             "tasks": body}]
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    out = tmp_path / f"{name}.json"
    assert proc.returncode == 0 and out.exists(), (proc.stdout + proc.stderr)[-6000:]
    return json.loads(out.read_text())


def replicas(sb):
    env_vars = sb.env()
    return [{"name": "standby", "login_host": "127.0.0.1", "login_port": int(env_vars["SANDBOX_STANDBY_PORT"])},
            {"name": "subscriber", "login_host": "127.0.0.1", "login_port": int(env_vars["SANDBOX_SUBSCRIBER_PORT"])}]


@pytest.fixture(scope="module")
def apps(own_sandbox):
    api_client = kube_config.new_client_from_config(config_file=own_sandbox.env()["KUBECONFIG"])
    return client.AppsV1Api(api_client)


class Writer(threading.Thread):
    """Inserts ticks 1, 2, 3, ... each in its own committed transaction, until stopped."""

    def __init__(self, params):
        super().__init__(daemon=True)
        self.params = params
        self.committed = 0
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            conn = psycopg2.connect(connect_timeout=5, **self.params)
            conn.autocommit = True
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    cur.execute("INSERT INTO ticks (id) VALUES (%s)", (self.committed + 1,))
                    self.committed += 1
            conn.close()
        except psycopg2.Error as exc:  # reported by the test
            self.error = exc


def test_primary_lives_on_the_pvc(own_sandbox, apps):
    st = own_sandbox.status()
    kube = st["kube"]
    assert kube["running"] and kube["ready_replicas"] == 1 and kube["replicas"] == 1
    data_dir = os.path.realpath(own_sandbox.config.data_dir("primary"))
    assert data_dir == os.path.join(os.path.realpath(kube["volume"]), sandbox_kube.PGDATA)
    sts = apps.read_namespaced_stateful_set(sandbox_kube.STATEFULSET, NS)
    assert sts.status.ready_replicas == 1
    assert own_sandbox.env()["KUBECONFIG"] == os.path.join(own_sandbox.config.sandbox_dir, "kubeconfig")


def test_scale_to_zero_stops_the_primary_and_up_brings_it_back(own_sandbox, apps):
    apps.patch_namespaced_stateful_set_scale(sandbox_kube.STATEFULSET, NS, {"spec": {"replicas": 0}})
    deadline = time.monotonic() + 60
    while own_sandbox.status()["nodes"]["primary"]["running"]:
        assert time.monotonic() < deadline, "the primary did not stop after scaling to 0"
        time.sleep(0.2)
    with pytest.raises(psycopg2.OperationalError):
        own_sandbox.sql("primary", "SELECT 1")
    result = own_sandbox.up()
    assert f"scaled StatefulSet {NS}/{sandbox_kube.STATEFULSET} to 1" in result["changed"]
    assert result["all_running"] and own_sandbox.sql("primary", "SELECT count(*) FROM orders") == [(5000,)]


def test_snapshot_change_restore_returns_the_old_rows(own_sandbox, tmp_path):
    sb = own_sandbox
    sb.create_table("CREATE TABLE ticks (id bigint PRIMARY KEY)")
    volume_before = sb.status()["kube"]["volume"]
    writer = Writer(sb.primary)
    writer.start()
    try:
        while writer.committed < 200 and writer.is_alive():
            time.sleep(0.01)
        low = writer.committed
        # A snapshot of the running, busy primary: the emulated CSI driver freezes
        # the server while it copies the volume, so the image is point-in-time.
        snap = playbook(sb, tmp_path, [{"name": "Snapshot the database volume", "register": "snap",
                                        "stateful.rollback.pvc_snapshot": {
                                            "namespace": NS, "name": "before-change", "pvcs": [sandbox_kube.PVC]}}],
                        "snapshot")["snap"]
        high = writer.committed
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, writer.error
    assert snap["changed"] and snap["snapshots"][0]["ready_to_use"]

    # The change a rollback must undo.
    sb.sql("primary", "DELETE FROM orders WHERE id <= 100")
    sb.sql("primary", "UPDATE customers SET name = 'changed' WHERE id <= 10")
    sb.sql("primary", "INSERT INTO ticks SELECT g FROM generate_series(%s, %s) g", (writer.committed + 1, writer.committed + 500))
    assert sb.sql("primary", "SELECT count(*) FROM orders") == [(4900,)]

    scale = {"kind": "StatefulSet", "name": sandbox_kube.STATEFULSET, "namespace": NS, "wait": True, "wait_timeout": 300}
    restore = {"namespace": NS, "state": "restored", "name": "before-change", "target_pvc": sandbox_kube.PVC,
               "replace": True}
    results = playbook(sb, tmp_path, [
        {"name": "Stop the database", "register": "down", "kubernetes.core.k8s_scale": dict(scale, replicas=0)},
        {"name": "Restore its volume", "register": "restore", "stateful.rollback.pvc_snapshot": restore},
        {"name": "Start the database", "register": "up", "kubernetes.core.k8s_scale": dict(scale, replicas=1)},
        {"name": "Check the replicas", "register": "parity", "stateful.rollback.replication_parity": {
            "mode": "parity", "replicas": replicas(sb), "tables": ["customers", "orders", "ticks"]}},
        {"name": "Check replication health", "register": "health", "stateful.rollback.replication_parity": {
            "mode": "health", "replicas": replicas(sb), "max_lag_bytes": 16777216}},
        {"name": "Restore again (already restored from that snapshot)", "register": "again",
         "stateful.rollback.pvc_snapshot": restore},
    ], "restore")
    assert results["restore"]["changed"] and results["again"]["changed"] is False

    # The old rows are back: every order, the unchanged names, and a gap-free
    # prefix of the ticks written while the snapshot was taken.
    assert sb.sql("primary", "SELECT count(*) FROM orders") == [(5000,)]
    assert sb.sql("primary", "SELECT count(*) FROM customers WHERE name = 'changed'") == [(0,)]
    count, lowest, highest = sb.sql("primary", "SELECT count(*), min(id), max(id) FROM ticks")[0]
    assert low <= count <= high, (low, count, high)
    assert (lowest, highest) == (1, count)  # contiguous: an atomic point-in-time image

    # The primary now runs on another volume; the standby and the subscriber
    # were rebuilt from it and hold exactly its rows.
    kube = sb.status()["kube"]
    assert kube["volume"] != volume_before and kube["ready_replicas"] == 1
    assert os.path.realpath(sb.config.data_dir("primary")).startswith(os.path.realpath(kube["volume"]))
    assert results["parity"]["in_sync"] and results["parity"]["difference_count"] == 0, results["parity"]
    assert results["health"]["healthy"], results["health"]
    assert sb.sql("standby", "SELECT count(*) FROM orders") == [(5000,)]


def test_deployments_run_the_demo_app(own_sandbox, apps):
    """A Deployment in namespace sandbox runs scripts/demo_app.py for its image; health follows the schema and flags."""
    sb = own_sandbox
    env_vars = sb.env()
    port = int(env_vars["SANDBOX_APP_PORT"])
    url = f"http://127.0.0.1:{port}"
    core = client.CoreV1Api(apps.api_client)

    def container(image):
        return {"name": "web", "image": image,
                "env": [{"name": "PORT", "value": str(port)}, {"name": "DATABASE_URL", "value": env_vars["SANDBOX_PRIMARY_DSN"]},
                        {"name": "FLAGS_CONFIGMAP", "value": "web-flags"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}}}

    def deployment(image):
        return {"metadata": {"name": "web", "namespace": NS}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container(image)]}}}}

    def roll_to(image):  # kubesim merges lists whole (no strategic merge by key): send the full container
        apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {"containers": [container(image)]}}}})

    def ready():
        status = apps.read_namespaced_deployment("web", NS).status  # what kubernetes.core.k8s wait: true checks
        return status.replicas == status.updated_replicas == status.ready_replicas == 1

    def wait(predicate, timeout=60):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.2)

    def get(path):
        try:
            with urllib.request.urlopen(url + path, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    images = json.loads(env_vars["SANDBOX_APP_IMAGES"])
    try:
        apps.create_namespaced_deployment(NS, deployment(images["1.0.0"]))
        wait(ready)
        assert get("/healthz") == (200, {"status": "ok", "version": "1.0.0", "flags": {}})
        core.create_namespaced_config_map(NS, {"metadata": {"name": "web-flags"}, "data": {"fail_health": "true"}})
        code, body = get("/healthz")
        assert code == 503 and body["error"] == "feature flag fail_health is on"
        core.delete_namespaced_config_map("web-flags", NS)

        # Version 2 reads customers.full_name, which does not exist: the readiness probe fails, the rollout stalls.
        roll_to(images["2.0.0"])
        wait(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="app=web").items
                      if "Readiness probe failed" in str(p.status.container_statuses)])
        assert not ready()
        sb.sql("primary", "ALTER TABLE customers ADD COLUMN full_name text")
        try:
            wait(ready, timeout=90)  # retried by the controller: ready once the column exists
            assert get("/healthz")[1]["version"] == "2.0.0"
        finally:
            sb.sql("primary", "ALTER TABLE customers DROP COLUMN full_name")

        # An image that is not in the sandbox's registry never becomes ready.
        roll_to("demo.local/shop@sha256:" + "0" * 64)
        wait(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="app=web").items
                      if "not found in the sandbox registry" in str(p.status.container_statuses)])
    finally:
        with contextlib.suppress(client.ApiException):
            apps.delete_namespaced_deployment("web", NS)
    wait(lambda: not sb.status()["kube"]["apps"])  # the processes are stopped with the Deployment
