# -*- coding: utf-8 -*-
"""Fault injection into whole ``ansible-playbook`` runs (playbooks/deploy.yml, playbooks/rollback.yml) on a
sandbox of its own: the demo shop with release 1.0.0 deployed and promoted, and 60,000 more customers so
that release 2.0.0's backfill runs long enough to be interrupted.

The tests share that sandbox and run in file order; each leaves it consistent (every fault is repaired or
converged before the next). They are ``faults_extended``: a plain ``pytest tests`` skips them (several
minutes of playbook runs each); ``make test-faults`` runs them.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from faultdata import applied_once, assert_whole, data, deployed, lost, shop_on_1_0_0
from faultkit import conn_options, journal, kill_group, kill_postmaster, kube_get, record, replicas, restart, start_playbook, wait_for
from testkit import app_version, columns, ledger, manifest, playbook

from ansible_collections.stateful.rollback.plugins.module_utils import parity_runner
from ansible_collections.stateful.rollback.plugins.module_utils.parity_runner import ParityFailure

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults, pytest.mark.faults_extended, pytest.mark.timeout(1800)]

OWN_SANDBOX_PORT_BASE = int(os.environ.get("FAULTS_DEPLOY_PORT_BASE") or 27720)  # 277xx: a base of its own per concurrent run
OWN_SANDBOX_NAME = "pytest-faults-deploy-%d" % OWN_SANDBOX_PORT_BASE
EXTRA_CUSTOMERS = 60000


def flags(sb):
    """The feature flags ConfigMap's data (None when there is none)."""
    found = kube_get(sb, "/api/v1/namespaces/%s/configmaps/feature-flags" % sb.env()["SANDBOX_KUBE_NAMESPACE"])
    return (found or {}).get("data")


def images(sb):
    """Deployment sandbox/web's container images."""
    found = kube_get(sb, "/apis/apps/v1/namespaces/%s/deployments/web" % sb.env()["SANDBOX_KUBE_NAMESPACE"])
    return [c["image"] for c in found["spec"]["template"]["spec"]["containers"]]


@pytest.fixture(scope="module")
def shop(own_sandbox):
    sb = shop_on_1_0_0(own_sandbox)
    sb.sql("primary", "INSERT INTO customers (email, name, created_at) SELECT format('bulk%%s@example.com', g), "
                      "format('Bulk %%s', g), timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute' "
                      "FROM generate_series(1, %d) g" % EXTRA_CUSTOMERS)
    sb.wait_subscriber_caught_up(timeout=120)
    return sb


class StalledBackfill:
    """Hold a row lock on the last customer, so that 2.0.0's backfill stalls at its last batch (retrying its
    lock_timeout) instead of racing the kill. Taken once the schema step (ALTER TABLE, which the row lock would
    block) is done; released when the fault has been injected.

    Create it before starting the playbook: it notes the journal's last row, and only rows written after it count
    (an earlier test's deploy of the same release left schema rows that are done already; taking the row lock on
    their word would block this run's ALTER TABLE until its lock_timeout retries give up, and the deploy would end
    before its backfill started)."""

    def __init__(self, sb, version="2.0.0"):
        self.sb, self.version, self.conn = sb, version, None
        self.since = 0
        if sb.sql("primary", "SELECT to_regclass('stateful_rollback.migration_journal') IS NOT NULL")[0][0]:
            self.since = sb.sql("primary", "SELECT coalesce(max(id), 0) FROM stateful_rollback.migration_journal")[0][0]

    def hold(self, proc, timeout=900):
        def schema_done():
            if proc.poll() is not None:
                return True
            try:
                return self.sb.sql("primary", "SELECT count(*) FROM stateful_rollback.migration_journal WHERE release_version = %s "
                                              "AND migration_id = '001-customer-full-name' AND direction = 'up' AND phase = 'schema' "
                                              "AND state = 'done' AND id > %s", (self.version, self.since))[0][0] > 0
            except Exception:  # pylint: disable=broad-except
                return False
        wait_for(schema_done, timeout, "2.0.0's schema step")
        assert proc.poll() is None, "the deploy ended before its migrations ran"
        self.conn = self.sb.connect("primary", superuser=True)
        self.conn.autocommit = False
        with self.conn.cursor() as cur:
            cur.execute("SELECT id FROM customers ORDER BY id DESC LIMIT 1 FOR UPDATE")
        wait_for(lambda: self.batches() >= 3 or proc.poll() is not None, timeout, "the backfill's batches")
        assert proc.poll() is None, "the deploy ended while its backfill was stalled"
        return self.batches()

    def batches(self):
        return backfill_batches(self.sb, self.version, self.since)

    def release(self):
        try:
            self.conn.rollback()
            self.conn.close()
        except Exception:  # pylint: disable=broad-except
            pass


def backfill_batches(sb, version, since=0):
    try:
        rows = sb.sql("primary", "SELECT batches FROM stateful_rollback.migration_journal WHERE release_version = %s "
                                 "AND phase = 'backfill' AND direction = 'up' AND state = 'running' AND id > %s", (version, since))
    except Exception:  # pylint: disable=broad-except
        return 0
    return rows[0][0] if rows else 0


def read_log(proc):
    with open(proc.log, encoding="utf-8") as fh:
        return fh.read()


# -- 1. primary PostgreSQL killed mid-migration, restarted, deploy rerun --------------------------------------
def test_primary_killed_mid_migration_rerun_converges(shop, tmp_path, record_property):
    """Fault 1: SIGKILL of the primary's postmaster while 2.0.0's backfill runs, then the primary restarted. The
    interrupted deploy fails cleanly (its migrate step names the lost connection; its rescue's rollback succeeds
    or fails on the missing primary, no traceback either way) and leaves journal and data in agreement; the deploy
    run again converges: 2.0.0 deployed and verified, each step applied once since the last revert, every row
    backfilled, nothing lost on any node. 1.0.0 is then rolled back to for the tests that follow."""
    sb = shop
    before = data(sb)
    to_fill = sb.sql("primary", "SELECT count(*) FROM customers")[0][0]
    stall = StalledBackfill(sb)
    proc = start_playbook(sb, "deploy.yml", "-e", manifest("2.0.0"), log=str(tmp_path / "killed.log"))
    try:
        killed_at = stall.hold(proc)
        kill_postmaster(sb)
    finally:
        stall.release()
    restart(sb)
    proc.wait(timeout=900)
    out = read_log(proc)
    assert proc.returncode != 0, out[-6000:]
    assert "Traceback" not in out, out[-6000:]
    # The summary names the migrate step's own error (the lost connection), not a template error of the role reading it.
    summary = out[out.rindex("release 2.0.0 did not deploy"):]
    assert 'migrate failed at "Stop when a migration failed on the primary"' in summary, summary[:3000]
    assert "the connection was lost" in " ".join(summary.split()), summary[:3000]
    assert "Finalization of task args" not in out and "has no attribute" not in out, out[-6000:]
    # Journal and data agree after the crash: the batches the journal counts are the rows that hold full_name.
    rows = [r for r in journal(sb, version="2.0.0") if r["id"] > stall.since]
    reverted = any(r["direction"] == "down" for r in rows)
    if reverted:
        assert "full_name" not in columns(sb), rows
        assert ledger(sb)["2.0.0"] == ("rolled_back", False), ledger(sb)
    else:
        [fill] = [r for r in rows if r["phase"] == "backfill"]
        assert fill["state"] in ("running", "failed") and killed_at <= fill["batches"], fill
        assert sb.sql("primary", "SELECT count(*) FROM customers WHERE full_name IS NOT NULL")[0][0] == fill["rows_processed"], fill
        assert ledger(sb).get("2.0.0", (None, False))[1] is False, ledger(sb)
    assert ledger(sb)["1.0.0"] == ("verified", True), ledger(sb)

    rc, out = playbook(sb, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    deployed(sb, "2.0.0")
    steps = applied_once(sb, "2.0.0")
    assert set(steps) == {("001-customer-full-name", "schema"), ("001-customer-full-name", "backfill"),
                          ("002-orders-status-index", "schema")}, steps
    backfill = steps[("001-customer-full-name", "backfill")]
    assert backfill["rows_processed"] == to_fill and backfill["attempts"] == (1 if reverted else 2), backfill
    assert sb.sql("primary", "SELECT count(*) FROM customers WHERE full_name IS DISTINCT FROM name") == [(0,)]
    assert_whole(sb, before)
    rows_lost = lost(before, data(sb))

    # Back to 1.0.0, as the following tests expect.
    rc, out = playbook(sb, "rollback.yml")
    assert rc == 0, out[-6000:]
    assert app_version(sb) == "1.0.0" and "full_name" not in columns(sb)
    assert_whole(sb, before)
    record(record_property, "primary killed mid-migration (deploy)", rows_lost, killed_at_batch=killed_at,
           first_run="rolled back" if reverted else "rollback failed (primary down)")


# -- 3. ansible-playbook killed mid-backfill, rerun ------------------------------------------------------------
def test_playbook_killed_mid_backfill_rerun_converges_without_duplicates(shop, tmp_path, record_property):
    """Fault 3: SIGKILL of ansible-playbook's process group and tree while 2.0.0's backfill runs; the same playbook run
    again converges; the journal holds one applied entry per step and the backfill counted every row once."""
    sb = shop
    before = data(sb)
    to_fill = sb.sql("primary", "SELECT count(*) FROM customers")[0][0]
    stall = StalledBackfill(sb)
    proc = start_playbook(sb, "deploy.yml", "-e", manifest("2.0.0"), log=str(tmp_path / "killed.log"))
    try:
        stall.hold(proc)
        killed = kill_group(proc)
    finally:
        stall.release()
    killed_at = stall.batches()
    assert 3 <= killed_at and len(killed) >= 3, (killed_at, killed)  # ansible-playbook, its worker, the module
    wait_for(lambda: not sb.sql("primary", "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                           "'stateful.rollback.migrate%%'")[0][0], 60, "the killed module's sessions to end")
    assert stall.batches() == killed_at, "the backfill went on after the kill"
    assert sb.sql("primary", "SELECT count(*) FROM customers WHERE full_name IS NULL")[0][0] > 0

    rc, out = playbook(sb, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    deployed(sb, "2.0.0")
    steps = applied_once(sb, "2.0.0")
    backfill = steps[("001-customer-full-name", "backfill")]
    assert backfill["rows_processed"] == to_fill and backfill["attempts"] == 2, backfill
    assert set(steps) == {("001-customer-full-name", "schema"), ("001-customer-full-name", "backfill"),
                          ("002-orders-status-index", "schema")}, steps
    assert sb.sql("primary", "SELECT count(*) FROM customers WHERE full_name IS DISTINCT FROM name") == [(0,)]
    assert_whole(sb, before)
    record(record_property, "ansible-playbook killed mid-backfill (deploy)", lost(before, data(sb)), killed_at_batch=killed_at)


# -- 6. logical subscriber diverged: the rollback refuses before changing anything ---------------------------------
def test_diverged_subscriber_rollback_refuses_then_converges(shop, tmp_path, record_property):
    """Fault 6: a row changed on the subscriber behind replication's back; rollback.yml's replica check names the
    exact replica, table and key and refuses BEFORE any change (journal, columns, app version, flags and ledger as
    they were: 2.0.0 still runs, nothing reverted, 1.0.0 not recorded as reached); once the row is repaired, the
    same rollback converges."""
    sb = shop
    before = data(sb)
    assert app_version(sb) == "2.0.0" and "full_name" in columns(sb) and "full_name" in columns(sb, "subscriber")
    sb.sql("subscriber", "UPDATE orders SET amount = amount + 1 WHERE id = 42", superuser=True)
    with pytest.raises(ParityFailure) as err:
        parity_runner.run(dict(conn_options(sb), mode="parity", replicas=replicas(sb), tables=["public.orders"], settle_timeout=30))
    sub = [r for r in err.value.result["replicas"] if r["name"] == "subscriber"][0]
    assert sub["tables"][0]["differences"]["different"] == [{"id": 42}], sub
    untouched = {"journal": journal(sb), "ledger": ledger(sb), "columns": (columns(sb), columns(sb, "subscriber")),
                 "flags": flags(sb), "images": images(sb)}
    rc, out = playbook(sb, "rollback.yml")
    assert rc != 0, out[-6000:]
    flat = " ".join(out.split())
    assert "rollback refused before any change" in flat, out[-6000:]
    assert re.search(r'replica subscriber, table public\.orders: keys different \[\{\\?"id\\?": 42\}\]', flat), out[-6000:]
    assert "stateful_rollback_rollback_allow_diverged_replicas=true" in flat, out[-6000:]
    assert "Revert the release's migrations" not in out and "Put the feature flags back" not in out, out[-6000:]
    assert "Traceback" not in out, out[-6000:]
    assert app_version(sb) == "2.0.0"
    assert {"journal": journal(sb), "ledger": ledger(sb), "columns": (columns(sb), columns(sb, "subscriber")),
            "flags": flags(sb), "images": images(sb)} == untouched, "the refused rollback changed something"
    # Repair the subscriber from the primary, then the same rollback converges.
    amount = sb.sql("primary", "SELECT amount FROM orders WHERE id = 42")[0][0]
    sb.sql("subscriber", "UPDATE orders SET amount = %s WHERE id = 42", (amount,), superuser=True)
    rc, out = playbook(sb, "rollback.yml")
    assert rc == 0, out[-6000:]
    assert app_version(sb) == "1.0.0" and ledger(sb)["2.0.0"][0] == "rolled_back"
    assert "full_name" not in columns(sb) and "full_name" not in columns(sb, "subscriber")
    assert_whole(sb, before)
    record(record_property, "subscriber diverged (rollback)", lost(before, data(sb)))


# -- 10. restore of a snapshot taken before a later release --------------------------------------------------------------
def test_restore_of_an_older_snapshot_keeps_ledger_and_journal_consistent(shop, tmp_path, record_property):
    """Fault 10: 2.0.0 deployed, then rolled back by restoring the snapshot taken before it. Journal and ledger
    live in the restored database: the journal holds no applied row of 2.0.0 (its data has no full_name), and the
    ledger then records the rollback of 2.0.0 with 1.0.0 current."""
    sb = shop
    before = data(sb)
    assert app_version(sb) == "1.0.0"
    rc, out = playbook(sb, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    deployed(sb, "2.0.0")
    started = time.monotonic()
    rc, out = playbook(sb, "rollback.yml", "-e", "stateful_rollback_rollback_strategy=restore")
    assert rc == 0, out[-6000:]
    restore_seconds = time.monotonic() - started
    assert "full_name" not in columns(sb) and app_version(sb) == "1.0.0"
    rows = journal(sb, version="2.0.0")
    ups = [r for r in rows if r["direction"] == "up" and r["state"] == "done"]
    downs = [r for r in rows if r["direction"] == "down"]
    last_up = max([r["id"] for r in ups] or [0])
    assert not ups or any(d["id"] > last_up for d in downs), "journal says 2.0.0 is applied but its data is gone: %s" % rows
    book = ledger(sb)
    assert book["2.0.0"][0] == "rolled_back" and book["2.0.0"][1] is False, book
    assert book["1.0.0"] == ("verified", True), book
    assert_whole(sb, before)
    record(record_property, "restore of an older snapshot", lost(before, data(sb)), restore_seconds=round(restore_seconds, 1))
