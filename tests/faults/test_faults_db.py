# -*- coding: utf-8 -*-
"""Fault injection on a sandbox of its own, at the level of the modules (no playbook): each fault is injected
into a real component (SIGKILL of the primary's postmaster, WAL replay paused on the standby, rows changed
behind the subscriber's back, kubesim's api_error / api_timeout / restore_fail knobs, a second migration
runner), and each test ends by proving with replication_parity that no row was lost.

The faults of whole ``ansible-playbook`` runs are in test_faults_deploy.py.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from faultkit import (add_fault, clear_faults, conn_options, faults, journal, kill_postmaster, kube_get, module_result,
                      record, replicas, restart, start_module, table_digest, wait_for)
from testkit import playbook

from ansible_collections.stateful.rollback.plugins.module_utils import parity_runner
from ansible_collections.stateful.rollback.plugins.module_utils.parity_runner import ParityFailure

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

OWN_SANDBOX_PORT_BASE = 27700
OWN_SANDBOX_NAME = "pytest-faults-db"
ROWS = 30000
BATCH = 500
SCHEMA = "fault_data"  # not published: the backfill needs no DDL on the logical subscriber


@pytest.fixture(scope="module")
def sb(own_sandbox):
    return own_sandbox


def parity(sb, **kwargs):
    params = dict(conn_options(sb), mode="parity", replicas=replicas(sb), settle_timeout=30)
    params.update(kwargs)
    return parity_runner.run(params)


JOURNALS = ["stateful_rollback", "fault_journal_ref", "fault_journal", "fault_journal_lock"]


def capture(sb, path, tables):
    return parity_runner.run(dict(conn_options(sb), mode="baseline_capture", baseline_path=path, tables=tables,
                                  exclude_schemas=JOURNALS))


def compare(sb, path, tables=None, **kwargs):
    params = dict(conn_options(sb), mode="baseline_compare", baseline_path=path, exclude_schemas=JOURNALS, **kwargs)
    if tables:
        params["tables"] = tables
    return parity_runner.run(params)


def rows_lost(comparison):
    """Rows of the baseline that are not in the database now (by count and by exact key)."""
    lost = 0
    for table in comparison["tables"]:
        missing = len((table.get("differences") or {}).get("missing") or [])
        lost += max(missing, (table["rows_baseline"] or 0) - (table.get("rows_now") or 0), 0)
    return lost


# -- 2. primary killed in the middle of a batched backfill ----------------------------------------------------
def backfill_release(directory, version):
    """A release whose backfill is *not* idempotent (bumped = bumped + 1): a batch applied twice would show."""
    os.makedirs(os.path.join(directory, "sql"), exist_ok=True)
    with open(os.path.join(directory, "sql", "up.sql"), "w", encoding="utf-8") as fh:
        fh.write("ALTER TABLE %s.ledger_lines ADD COLUMN amount_cents bigint;\n" % SCHEMA)
    with open(os.path.join(directory, "sql", "down.sql"), "w", encoding="utf-8") as fh:
        fh.write("ALTER TABLE %s.ledger_lines DROP COLUMN amount_cents;\n" % SCHEMA)
    manifest = {
        "version": version,
        "app": {"workloads": [{"kind": "Deployment", "name": "web",
                               "containers": {"web": "registry.example/shop@sha256:" + "ab" * 32}}]},
        "migrations": [{
            "id": "001-amount-cents", "up": "sql/up.sql", "down": "sql/down.sql",
            "backfill": {"table": "%s.ledger_lines" % SCHEMA, "key": "id", "batch_size": BATCH,
                         "set": "amount_cents = (amount * 100)::bigint, bumped = bumped + 1",
                         "max_rows_per_second": 6000, "max_replica_lag_bytes": 16777216},
        }],
    }
    path = os.path.join(directory, "release.yml")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    return path


def reset_ledger_lines(sb):
    sb.sql("primary", "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s; "
                      "CREATE TABLE %s.ledger_lines (id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, "
                      "bumped int NOT NULL DEFAULT 0, memo text); "
                      "INSERT INTO %s.ledger_lines SELECT g, round((g * 37 %% 100000) / 100.0, 2), 0, 'line ' || g "
                      "FROM generate_series(1, %d) g" % (SCHEMA, SCHEMA, SCHEMA, SCHEMA, ROWS))


def migrate_args(sb, manifest, journal_schema, **extra):
    args = dict(conn_options(sb), manifest=manifest, journal_schema=journal_schema, retry_base_delay=0.05,
                retry_max_delay=0.5, max_retries=2, lock_wait_timeout=5)
    args.update(extra)
    return args


def test_primary_killed_mid_backfill_resumes_at_journaled_key(sb, tmp_path, record_property):
    """Fault 2: SIGKILL of the primary's postmaster mid-backfill; the rerun resumes at the journaled key and the
    table ends identical (fingerprint) to an uninterrupted reference run; no batch applied twice."""
    started = time.monotonic()
    manifest = backfill_release(str(tmp_path / "release"), "9.2.0")
    reference = str(tmp_path / "reference.json")

    # The reference: the same backfill, uninterrupted, on the same data.
    reset_ledger_lines(sb)
    proc = start_module("migrate", migrate_args(sb, manifest, "fault_journal_ref"), str(tmp_path / "ref.log"))
    rc, result, raw = module_result(proc)
    assert rc == 0 and result["changed"] is True, raw[-3000:]
    capture(sb, reference, ["%s.ledger_lines" % SCHEMA])
    ref_digest = table_digest(sb, "%s.ledger_lines" % SCHEMA)
    sb.sql("primary", "DROP SCHEMA fault_journal_ref CASCADE")

    # The faulted run on fresh data: kill the primary once a few batches are committed.
    reset_ledger_lines(sb)
    proc = start_module("migrate", migrate_args(sb, manifest, "fault_journal"), str(tmp_path / "killed.log"))

    def batches_done():
        try:
            rows = sb.sql("primary", "SELECT batches FROM fault_journal.migration_journal WHERE phase = 'backfill'")
        except Exception:  # the journal is created by the run
            return False
        return rows and 5 <= rows[0][0]
    wait_for(batches_done, 120, "five committed backfill batches")
    kill_postmaster(sb)
    rc, result, raw = module_result(proc, timeout=120)
    assert rc != 0 and result is not None and result.get("failed"), raw[-3000:]
    assert "Traceback" not in raw, raw[-3000:]

    restart(sb)
    [row] = [r for r in journal(sb, "fault_journal") if r["phase"] == "backfill"]
    assert row["state"] in ("running", "failed") and row["last_key"] is not None, row
    journaled_key, journaled_rows = row["last_key"], row["rows_processed"]
    assert 0 < journaled_rows < ROWS and journaled_rows == int(journaled_key), row  # keys 1..N, one row per key
    # What the journal says matches what the table holds: exactly the rows up to the key are bumped, once.
    assert sb.sql("primary", "SELECT count(*) FILTER (WHERE bumped = 1), count(*) FILTER (WHERE bumped > 1), "
                             "max(id) FILTER (WHERE bumped = 1) FROM %s.ledger_lines" % SCHEMA) == [(journaled_rows, 0, int(journaled_key))]

    proc = start_module("migrate", migrate_args(sb, manifest, "fault_journal"), str(tmp_path / "rerun.log"))
    rc, result, raw = module_result(proc)
    assert rc == 0, raw[-3000:]
    [step] = [s for s in result["steps"] if s["phase"] == "backfill"]
    assert step["resumed"] is True and step["resumed_from_key"] == journaled_key, step
    assert step["rows_processed"] == ROWS - journaled_rows, step

    rows = journal(sb, "fault_journal")
    assert [(r["phase"], r["state"]) for r in rows] == [("schema", "done"), ("backfill", "done")], rows
    assert rows[1]["rows_processed"] == ROWS and rows[1]["attempts"] == 2, rows
    assert table_digest(sb, "%s.ledger_lines" % SCHEMA) == ref_digest
    comparison = compare(sb, reference)["comparison"]
    assert comparison["same"] is True, comparison
    sb.wait_standby_caught_up(timeout=60)
    assert parity(sb, replicas=replicas(sb, ("standby",)), tables=["%s.ledger_lines" % SCHEMA])["in_sync"] is True
    assert table_digest(sb, "%s.ledger_lines" % SCHEMA, node="standby") == ref_digest
    record(record_property, "primary killed mid-backfill (migrate)", rows_lost(comparison),
           resumed_from_key=journaled_key, seconds=round(time.monotonic() - started, 1))
    sb.sql("primary", "DROP SCHEMA fault_journal CASCADE; DROP SCHEMA %s CASCADE" % SCHEMA)


# -- 8. two migration runners at once --------------------------------------------------------------------------
def test_second_migration_runner_is_refused_by_the_lock(sb, tmp_path, record_property):
    """Fault 8 (module level): two runs of the same release at once; one runs, the other is refused by the
    one-runner-per-database lock; nothing is applied twice."""
    manifest = backfill_release(str(tmp_path / "release"), "9.8.0")
    reset_ledger_lines(sb)
    capture(sb, str(tmp_path / "before.json"), ["%s.ledger_lines" % SCHEMA])
    first = start_module("migrate", migrate_args(sb, manifest, "fault_journal_lock"), str(tmp_path / "first.log"))

    def running():
        try:
            return sb.sql("primary", "SELECT batches FROM fault_journal_lock.migration_journal WHERE phase = 'backfill'")
        except Exception:
            return False
    wait_for(running, 120, "the first runner's backfill")
    second = start_module("migrate", migrate_args(sb, manifest, "fault_journal_lock", lock_wait_timeout=2),
                          str(tmp_path / "second.log"))
    rc2, result2, raw2 = module_result(second, timeout=120)
    rc1, result1, raw1 = module_result(first)
    assert rc1 == 0 and result1["changed"] is True, raw1[-3000:]
    assert rc2 != 0 and "another migration runner holds the lock" in result2["msg"], raw2[-3000:]
    assert "Traceback" not in raw2
    rows = journal(sb, "fault_journal_lock")
    assert [(r["phase"], r["state"], r["attempts"]) for r in rows] == [("schema", "done", 1), ("backfill", "done", 1)], rows
    assert rows[1]["rows_processed"] == ROWS
    assert sb.sql("primary", "SELECT count(*), min(bumped), max(bumped) FROM %s.ledger_lines" % SCHEMA) == [(ROWS, 1, 1)]
    # Only the added column changed: every baseline row is still there.
    comparison = compare(sb, str(tmp_path / "before.json"), fail_on_difference=False)["comparison"]
    assert [t["rows_now"] for t in comparison["tables"]] == [ROWS]
    record(record_property, "two migration runners at once", rows_lost(comparison))
    sb.sql("primary", "DROP SCHEMA fault_journal_lock CASCADE; DROP SCHEMA %s CASCADE" % SCHEMA)


# -- 5. standby lagging during verify --------------------------------------------------------------------------
VERIFY_PLAYBOOK = "../tests/faults/playbooks/verify_only.yml"  # testkit.playbook prefixes playbooks/


def test_standby_replay_paused_verify_fails_clearly_within_its_timeout(sb, tmp_path, record_property):
    """Fault 5: WAL replay paused on the standby while the primary takes writes. Parity waits its settle_timeout
    and then fails naming the standby (never "in sync"); the verify role fails within its timeout; once replay
    resumes, parity holds and no row is missing."""
    sb.create_table("CREATE TABLE IF NOT EXISTS fault_lag (id bigint PRIMARY KEY, note text)")
    sb.sql("primary", "TRUNCATE fault_lag")
    sb.wait_standby_caught_up()
    sb.wait_subscriber_caught_up()
    sb.sql("standby", "SELECT pg_wal_replay_pause()", superuser=True)
    try:
        sb.sql("primary", "INSERT INTO fault_lag SELECT g, 'written while the standby replays nothing' "
                          "FROM generate_series(1, 2000) g")
        began = time.monotonic()
        with pytest.raises(ParityFailure) as err:
            parity(sb, settle_timeout=5, tables=["public.fault_lag"])
        waited = time.monotonic() - began
        assert 5 <= waited < 60, waited
        standby = [r for r in err.value.result["replicas"] if r["name"] == "standby"][0]
        assert standby["in_sync"] is not True and err.value.result.get("in_sync") is not True, err.value.result
        assert "standby" in err.value.msg, err.value.msg

        began = time.monotonic()
        rc, out = playbook(sb, VERIFY_PLAYBOOK, "-e", "stateful_rollback_verify_replica_timeout=6",
                           "-e", "stateful_rollback_verify_delay=2", "-e", "stateful_rollback_verify_settle_timeout=3",
                           timeout=600)
        verify_seconds = time.monotonic() - began
        assert rc != 0, out[-4000:]
        assert re.search(r"replicas standby do not hold the primary\\?'s data after 6 s: replica standby did not apply", out), out[-4000:]
        assert "PARITY_OK" not in out
    finally:
        sb.sql("standby", "SELECT pg_wal_replay_resume()", superuser=True)
    result = parity(sb, tables=["public.fault_lag"])
    assert result["in_sync"] is True, result
    assert sb.sql("standby", "SELECT count(*) FROM fault_lag") == [(2000,)]
    record(record_property, "standby replay paused during verify", 2000 - sb.sql("standby", "SELECT count(*) FROM fault_lag")[0][0],
           verify_seconds=round(verify_seconds, 1))
    sb.drop_table("fault_lag")


# -- 6. logical subscriber diverged ----------------------------------------------------------------------------
def test_diverged_subscriber_parity_names_the_exact_keys(sb, record_property):
    """Fault 6 (module level): rows changed, deleted and added on the subscriber behind replication's back;
    parity reports exactly those keys (and only those), the standby stays in sync."""
    sb.create_table("CREATE TABLE IF NOT EXISTS fault_drift (id bigint PRIMARY KEY, qty int NOT NULL)")
    sb.sql("primary", "TRUNCATE fault_drift; INSERT INTO fault_drift SELECT g, g % 17 FROM generate_series(1, 5000) g")
    sb.wait_subscriber_caught_up()
    assert parity(sb, tables=["public.fault_drift"])["in_sync"] is True
    sb.sql("subscriber", "UPDATE fault_drift SET qty = qty + 1 WHERE id IN (17, 2500); DELETE FROM fault_drift WHERE id = 4999; "
                         "INSERT INTO fault_drift VALUES (900001, 1)", superuser=True)
    with pytest.raises(ParityFailure) as err:
        parity(sb, tables=["public.fault_drift"], settle_timeout=10)
    reps = {r["name"]: r for r in err.value.result["replicas"]}
    assert reps["standby"]["in_sync"] is True
    diffs = reps["subscriber"]["tables"][0]["differences"]
    assert sorted(k["id"] for k in diffs["different"]) == [17, 2500], diffs
    assert [k["id"] for k in diffs["missing_on_replica"]] == [4999], diffs
    assert [k["id"] for k in diffs["extra_on_replica"]] == [900001], diffs
    assert err.value.result["difference_count"] == 4
    assert "fault_drift on subscriber" in err.value.msg, err.value.msg
    record(record_property, "subscriber diverged (parity)", sb.sql("primary", "SELECT 5000 - count(*) FROM fault_drift")[0][0])
    sb.drop_table("fault_drift")


# -- 7. Kubernetes API errors ----------------------------------------------------------------------------------
def snapshot_args(sb, **extra):
    args = dict(kubeconfig=sb.env()["KUBECONFIG"], namespace="sandbox", wait_timeout=60)
    args.update(extra)
    return args


def test_kube_api_errors_are_retried_and_persistent_ones_fail_cleanly(sb, tmp_path, record_property):
    """Fault 7 (module level): a few 503s and a timed-out-but-applied create are retried with backoff and the
    snapshot is taken once; errors that persist fail with a message naming the call, no traceback."""
    clear_faults(sb)
    before = str(tmp_path / "before.json")
    capture(sb, before, ["public.customers", "public.orders"])
    # Four 503s on the create: with_retries tries five times.
    add_fault(sb, type="api_error", count=4, code=503, verb="create", path="volumesnapshots", message="etcd leader changed")
    began = time.monotonic()
    rc, result, raw = module_result(start_module("pvc_snapshot", snapshot_args(sb, pvcs=["data-db-0"], name="fault-retry-1"),
                                                 str(tmp_path / "retry.log")))
    retried = time.monotonic() - began
    assert rc == 0 and result["changed"] is True, raw[-3000:]
    assert faults(sb) == [], "the four errors were consumed by four retries"
    # A create that times out after it was applied: the retry meets 409 and takes the object as its own.
    add_fault(sb, type="api_timeout", count=1, seconds=2, then="process", verb="create", path="volumesnapshots")
    rc, result, raw = module_result(start_module("pvc_snapshot", snapshot_args(sb, pvcs=["data-db-0"], name="fault-retry-2"),
                                                 str(tmp_path / "timeout.log")))
    assert rc == 0 and result["changed"] is True, raw[-3000:]
    names = [s["metadata"]["name"] for s in kube_get(sb, "/apis/snapshot.storage.k8s.io/v1/namespaces/sandbox/volumesnapshots")["items"]]
    assert names.count("fault-retry-2") == 1 and names.count("fault-retry-1") == 1, names
    # Persistent errors: a clean failure.
    add_fault(sb, type="api_error", count=None, code=500, verb="create", path="volumesnapshots", message="etcdserver: no space")
    try:
        rc, result, raw = module_result(start_module("pvc_snapshot", snapshot_args(sb, pvcs=["data-db-0"], name="fault-retry-3"),
                                                     str(tmp_path / "persistent.log")))
    finally:
        clear_faults(sb)
    assert rc != 0 and "etcdserver: no space" in result["msg"] and "VolumeSnapshot" in result["msg"], raw[-3000:]
    assert "Traceback" not in raw
    names = [s["metadata"]["name"] for s in kube_get(sb, "/apis/snapshot.storage.k8s.io/v1/namespaces/sandbox/volumesnapshots")["items"]]
    assert "fault-retry-3" not in names
    comparison = compare(sb, before)["comparison"]
    for name in ("fault-retry-1", "fault-retry-2"):
        rc, result, raw = module_result(start_module("pvc_snapshot", snapshot_args(sb, state="absent", name=name),
                                                     str(tmp_path / "cleanup.log")))
        assert rc == 0, raw[-2000:]
    record(record_property, "kube API errors (503 x4, timeout, persistent)", rows_lost(comparison), retried_seconds=round(retried, 1))


# -- 9. disk full during a restore -----------------------------------------------------------------------------
def test_restore_disk_full_leaves_the_old_pvc_bound_and_the_data_intact(sb, tmp_path, record_property):
    """Fault 9: the restore's new volume cannot be provisioned (restore_fail: "No space left on device").
    The module fails clearly; PVC data-db-0 stays bound to its volume, the primary runs on it, no row is lost."""
    clear_faults(sb)
    before = str(tmp_path / "before.json")
    rc, result, raw = module_result(start_module("pvc_snapshot", snapshot_args(sb, pvcs=["data-db-0"], name="fault-restore"),
                                                 str(tmp_path / "snap.log")))
    assert rc == 0, raw[-3000:]
    capture(sb, before, ["public.customers", "public.orders"])
    pvc = kube_get(sb, "/api/v1/namespaces/sandbox/persistentvolumeclaims/data-db-0")
    volume = pvc["spec"]["volumeName"]
    add_fault(sb, type="restore_fail", name="*", message="No space left on device")
    try:
        rc, result, raw = module_result(start_module(
            "pvc_snapshot", snapshot_args(sb, state="restored", name="fault-restore", target_pvc="data-db-0", replace=True,
                                          workload={"kind": "StatefulSet", "name": "db"}, wait_timeout=15),
            str(tmp_path / "restore.log")))
    finally:
        clear_faults(sb)
    assert rc != 0, raw[-3000:]
    assert "No space left on device" in result["msg"], result["msg"]
    assert "Traceback" not in raw
    pvc = kube_get(sb, "/api/v1/namespaces/sandbox/persistentvolumeclaims/data-db-0")
    assert pvc["spec"]["volumeName"] == volume and pvc["status"]["phase"] == "Bound", pvc
    pv = kube_get(sb, "/api/v1/persistentvolumes/%s" % volume)
    assert pv["status"]["phase"] == "Bound" and pv["spec"]["claimRef"]["name"] == "data-db-0", pv
    sts = kube_get(sb, "/apis/apps/v1/namespaces/sandbox/statefulsets/db")
    restart(sb)  # a no-op when the module scaled the database back up itself
    assert sts["spec"]["replicas"] == 1, "the failed restore left StatefulSet db scaled to %s" % sts["spec"]["replicas"]
    comparison = compare(sb, before)["comparison"]
    assert comparison["same"] is True, comparison
    assert parity(sb, tables=["public.customers", "public.orders"])["in_sync"] is True
    leftovers = [c["metadata"]["name"] for c in kube_get(sb, "/api/v1/namespaces/sandbox/persistentvolumeclaims")["items"]
                 if c["metadata"]["name"] != "data-db-0"]
    rc, result, raw = module_result(start_module("pvc_snapshot", snapshot_args(sb, state="absent", name="fault-restore"),
                                                 str(tmp_path / "cleanup.log")))
    record(record_property, "disk full during restore", rows_lost(comparison), leftover_pvcs=",".join(leftovers) or "none")
