# -*- coding: utf-8 -*-
"""The playbooks end to end on a sandbox of their own: the demo (release 2.1.0 rolled back by its failing
health check, twice in a row) and a good deploy whose rerun changes nothing.

Everything is real but the Kubernetes API server (kubesim on 127.0.0.1): the
PostgreSQL primary (StatefulSet sandbox/db on PVC data-db-0), its streaming
standby and logical subscriber, the demo app processes behind Deployment
sandbox/web, and ansible-playbook with the inventory inventories/sandbox.
"""

from __future__ import annotations

import json
import os

import pytest
from testkit import app_version, columns, ledger, manifest, playbook, recap_changed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWN_SANDBOX_PORT_BASE = 25830
OWN_SANDBOX_NAME = "pytest-e2e"


@pytest.fixture(scope="module")
def shop(own_sandbox):
    """The demo: shop installed, 1.0.0 deployed and promoted, release 2.1.0 rolled back by its failing health check."""
    for run in range(2):  # a second `make demo` needs no cleanup
        rc, out = playbook(own_sandbox, "demo.yml")
        assert rc == 0, out[-6000:]
        assert "Rollback drill" in out and "PASSED" in out, out[-6000:]
    return own_sandbox


def test_demo_leaves_1_0_0_running_and_a_passed_drill_report(shop):
    assert app_version(shop) == "1.0.0"
    assert ledger(shop)["1.0.0"] == ("verified", True)
    assert ledger(shop)["2.1.0"][0] == "rolled_back"
    assert "full_name" not in columns(shop) and "loyalty_tier" not in columns(shop, "subscriber")
    report = json.load(open(os.path.join(shop.config.sandbox_dir, "state", "drills", "latest.json")))
    assert report["outcome"] == "passed" and report["rpo_rows"] == 0 and report["rto_seconds"] > 0
    assert report["rollback"]["path"] == "revert"


def test_good_release_deploys_and_a_rerun_changes_nothing(shop):
    rc, out = playbook(shop, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    assert app_version(shop) == "2.0.0" and ledger(shop)["2.0.0"] == ("verified", True)
    assert shop.sql("primary", "SELECT count(*) FROM customers WHERE full_name IS NULL") == [(0,)]
    assert "full_name" in columns(shop, "subscriber")
    rc, out = playbook(shop, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    assert recap_changed(out) == 0, out[-6000:]
