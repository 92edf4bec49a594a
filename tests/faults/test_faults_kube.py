# -*- coding: utf-8 -*-
"""Kubernetes-side faults in whole ``ansible-playbook playbooks/deploy.yml`` runs, on a sandbox of its own (the
demo shop with release 1.0.0 deployed and promoted):

* 4. the pre-release VolumeSnapshot never becomes ready, or reports an error: the deploy stops in its snapshot
  stage, before any migration runs, and leaves no snapshot behind; cleared, the same deploy converges.
* 7. the Kubernetes API answers 500 or times out: a few such answers are retried (the collection's modules with
  exponential backoff, the deploy role's workload update ``stateful_rollback_deploy_api_retries`` times); a
  persistent error fails the deploy cleanly and the rescue rolls back what ran before it.

The tests share the sandbox and run in file order; each leaves it consistent. Kubesim's request log
(``/_kubesim/requests``) shows which requests failed and how often they were sent.
"""

from __future__ import annotations

import os

import pytest
import sandbox_kube
from faultdata import assert_whole, data, lost, shop_on_1_0_0
from faultkit import add_fault, clear_faults, faults, journal, kube_get, record
from testkit import app_version, columns, ledger, manifest, playbook

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults, pytest.mark.faults_extended, pytest.mark.timeout(1800)]

OWN_SANDBOX_PORT_BASE = int(os.environ.get("FAULTS_KUBE_PORT_BASE") or 29740)
OWN_SANDBOX_NAME = "pytest-faults-kube-%d" % OWN_SANDBOX_PORT_BASE
SNAPSHOT = "db-2.0.0-data-db-0"  # <db workload>-<version>-<pvc>: the snapshot role's name of 2.0.0's restore point
SNAPSHOT_WAIT = 10  # stateful_rollback_snapshot_wait_timeout for the not-ready case (default 300)
TRACEBACK = "Traceback (most recent call last)"


def journal_of(sb, version=None):
    """faultkit.journal, or [] while the journal table does not exist (release 1.0.0 has no migrations)."""
    if sb.sql("primary", "SELECT to_regclass('stateful_rollback.migration_journal')")[0][0] is None:
        return []
    return journal(sb, version=version)


def namespace(sb):
    return sb.env()["SANDBOX_KUBE_NAMESPACE"]


def snapshots_of(sb, version):
    """Names of the VolumeSnapshots of ``version`` (by name and by release label) and of their contents."""
    snaps = kube_get(sb, "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/volumesnapshots" % namespace(sb))["items"]
    names = [s["metadata"]["name"] for s in snaps
             if s["metadata"]["name"].startswith("db-%s-" % version)
             or (s["metadata"].get("labels") or {}).get("stateful.rollback/release") == version]
    contents = kube_get(sb, "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents")["items"]
    names += ["content %s" % c["metadata"]["name"] for c in contents
              if (c["spec"].get("volumeSnapshotRef") or {}).get("name", "").startswith("db-%s-" % version)]
    return names


def start_request_log(sb):
    """Record kubesim's API requests from now on (an empty log)."""
    sandbox_kube.api(sb.config, "POST", "/_kubesim/requests", {"record": True})
    sandbox_kube.api(sb.config, "DELETE", "/_kubesim/requests")


def request_codes(sb, method, path_end):
    """HTTP codes of the logged ``method`` requests whose path ends with ``path_end``, oldest first."""
    log = sandbox_kube.api(sb.config, "GET", "/_kubesim/requests")["requests"]
    return [r["code"] for r in log if r["method"] == method and r["path"].split("?")[0].endswith(path_end)]


@pytest.fixture(scope="module")
def shop(own_sandbox):
    yield shop_on_1_0_0(own_sandbox)
    clear_faults(own_sandbox)


# -- 4. the pre-release snapshot never becomes ready / reports an error ------------------------------------------------
def _snapshot_fault_stops_deploy(sb, spec, expected):
    """deploy.yml of 2.0.0 with the snapshot fault ``spec`` on 2.0.0's snapshots: it must stop in the snapshot stage
    naming the snapshot and ``expected``, before any migration, and delete the snapshot it created."""
    before = data(sb)
    assert journal_of(sb, version="2.0.0") == [], "2.0.0 ran migrations before this test"
    start_request_log(sb)
    add_fault(sb, **spec)
    try:
        rc, out = playbook(sb, "deploy.yml", "-e", manifest("2.0.0"), "-e", "stateful_rollback_snapshot_wait_timeout=%d" % SNAPSHOT_WAIT)
        created = request_codes(sb, "POST", "/volumesnapshots")
        deleted = request_codes(sb, "DELETE", "/volumesnapshots/" + SNAPSHOT)
    finally:
        clear_faults(sb)
    assert rc != 0, out[-6000:]
    assert TRACEBACK not in out, out[-6000:]
    summary = [line for line in out.splitlines() if "release 2.0.0 did not deploy" in line]
    assert summary, out[-6000:]
    assert "snapshot failed at" in summary[-1] and SNAPSHOT in summary[-1] and expected in summary[-1], summary[-1]
    assert "rolled back: nothing" in summary[-1], summary[-1]
    # Stopped before the migrate stage: no journal row, the schema and the app as they were, 2.0.0 not verified.
    assert journal_of(sb, version="2.0.0") == []
    assert "full_name" not in columns(sb) and "full_name" not in columns(sb, "subscriber")
    assert app_version(sb) == "1.0.0"
    book = ledger(sb)
    assert book.get("2.0.0", (None, False))[0] != "verified" and book["1.0.0"] == ("verified", True), book
    # The snapshot role deletes the snapshot the failed stage created (a failed one would turn ready later).
    assert created == [201] and deleted and deleted[0] in (200, 202), (created, deleted)
    assert snapshots_of(sb, "2.0.0") == []
    assert_whole(sb, before)
    return before


def test_snapshot_never_ready_stops_deploy_before_migrations(shop, record_property):
    """Fault 4a: 2.0.0's VolumeSnapshot stays readyToUse false; with stateful_rollback_snapshot_wait_timeout=10 the
    deploy fails in its snapshot stage after 10 s, naming the snapshot; no migration ran, nothing left behind."""
    sb = shop
    before = _snapshot_fault_stops_deploy(sb, {"type": "snapshot_not_ready", "name": "db-2.0.0-*"},
                                          "timed out after %ss waiting for VolumeSnapshot" % SNAPSHOT_WAIT)
    record(record_property, "snapshot never ready (deploy)", lost(before, data(sb)), wait_timeout=SNAPSHOT_WAIT)


def test_snapshot_error_stops_deploy_then_converges(shop, record_property):
    """Fault 4b: 2.0.0's VolumeSnapshot reports status.error; the deploy fails in its snapshot stage with the
    driver's message, before any migration, and deletes the failed snapshot. Once the fault is cleared, the same
    deploy converges: 2.0.0 runs, verified, with its restore point."""
    sb = shop
    message = "Failed to create snapshot: emulated CSI driver error"
    before = _snapshot_fault_stops_deploy(sb, {"type": "snapshot_error", "name": "db-2.0.0-*", "message": message}, message)
    rc, out = playbook(sb, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    assert app_version(sb) == "2.0.0" and ledger(sb)["2.0.0"] == ("verified", True)
    assert "full_name" in columns(sb) and "full_name" in columns(sb, "subscriber")
    snap = kube_get(sb, "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/volumesnapshots/%s" % (namespace(sb), SNAPSHOT))
    assert snap and snap["status"]["readyToUse"] is True, snap
    assert_whole(sb, before)
    record(record_property, "snapshot error (deploy)", lost(before, data(sb)))


# -- 7. Kubernetes API errors and timeouts ---------------------------------------------------------------------------------
def test_persistent_api_errors_fail_cleanly_and_roll_back(shop, record_property):
    """Fault 7b: every PATCH of Deployment sandbox/web answers 500 (count null, until cleared) while 2.0.0 deploys
    over 1.0.0. The deploy stage's update is retried and then fails with the API's error (no traceback); the rescue
    rolls back what ran before: the feature flags, and 2.0.0's migrations by their down scripts.

    Why the rollback can finish while the fault persists: the fault is restricted to PATCH of the app's Deployment,
    the one request of the forward step, and the update never reached the Deployment, so the rollback reads it,
    finds the 1.0.0 image still set and needs no PATCH (reads, the ConfigMap and the database are not faulted). A
    rollback that had to PATCH the Deployment too would fail the same way and report "rolled back: FAILED"; an API
    server that refuses every write cannot be rolled back through it.
    """
    sb = shop
    # From 2.0.0 (the previous test) back to 1.0.0 by its down scripts.
    rc, out = playbook(sb, "rollback.yml")
    assert rc == 0, out[-6000:]
    assert app_version(sb) == "1.0.0" and "full_name" not in columns(sb)
    before = data(sb)
    last_id = max([r["id"] for r in journal_of(sb)] or [0])
    start_request_log(sb)
    add_fault(sb, type="api_error", count=None, code=500, verb="patch", path=r"/deployments/web$")
    try:
        rc, out = playbook(sb, "deploy.yml", "-e", manifest("2.0.0"))
        patches = request_codes(sb, "PATCH", "/deployments/web")
    finally:
        clear_faults(sb)
    assert rc != 0, out[-6000:]
    assert TRACEBACK not in out, out[-6000:]
    summary = [line for line in out.splitlines() if "release 2.0.0 did not deploy" in line]
    assert summary, out[-6000:]
    assert "deploy failed at" in summary[-1] and "the Kubernetes API refused the update of Deployment sandbox/web" in summary[-1], summary[-1]
    assert "500" in summary[-1] and "rolled back: FAILED" not in summary[-1], summary[-1]
    # Retried a bounded number of times, every answer 500.
    assert len(patches) >= 3 and set(patches) == {500}, patches
    # The migrations ran, then were reverted by their down scripts.
    rows = [r for r in journal_of(sb, version="2.0.0") if r["id"] > last_id]
    ups = [r for r in rows if r["direction"] == "up" and r["state"] == "done"]
    downs = [r for r in rows if r["direction"] == "down" and r["state"] == "done"]
    assert ups and downs and min(d["id"] for d in downs) > max(u["id"] for u in ups), rows
    assert "full_name" not in columns(sb) and "full_name" not in columns(sb, "subscriber")
    assert app_version(sb) == "1.0.0"
    book = ledger(sb)
    assert book["2.0.0"][0] == "rolled_back" and book["1.0.0"] == ("verified", True), book
    assert_whole(sb, before)
    record(record_property, "Kubernetes API errors persist (deploy)", lost(before, data(sb)), patch_attempts=len(patches))


def test_transient_api_errors_and_timeout_are_retried(shop, record_property):
    """Fault 7a: two 500s and one timeout (504 after 3 s, nothing applied) on the creation of 2.0.0's VolumeSnapshot,
    and the same on the PATCH of Deployment sandbox/web. deploy.yml of 2.0.0 over 1.0.0 still succeeds; kubesim's
    request log shows each request sent again after its failures (pvc_snapshot: exponential backoff in the module;
    the deploy role: stateful_rollback_deploy_api_retries)."""
    sb = shop
    assert app_version(sb) == "1.0.0"
    before = data(sb)
    start_request_log(sb)
    for path, verb in ((r"/volumesnapshots$", "create"), (r"/deployments/web$", "patch")):
        add_fault(sb, type="api_error", count=2, code=500, verb=verb, path=path)
        add_fault(sb, type="api_timeout", count=1, seconds=3, verb=verb, path=path)
    try:
        rc, out = playbook(sb, "deploy.yml", "-e", manifest("2.0.0"))
        creates = request_codes(sb, "POST", "/volumesnapshots")
        patches = request_codes(sb, "PATCH", "/deployments/web")
        left = faults(sb)
    finally:
        clear_faults(sb)
    assert rc == 0, out[-6000:]
    assert TRACEBACK not in out, out[-6000:]
    assert left == [], left  # every injected failure was served
    assert creates[:4] == [500, 500, 504, 201], creates
    assert patches[:4] == [500, 500, 504, 200], patches
    assert app_version(sb) == "2.0.0" and ledger(sb)["2.0.0"] == ("verified", True)
    assert "full_name" in columns(sb) and "full_name" in columns(sb, "subscriber")
    assert_whole(sb, before)
    record(record_property, "Kubernetes API errors and a timeout, transient (deploy)", lost(before, data(sb)),
           snapshot_create_codes=creates, deployment_patch_codes=patches)
