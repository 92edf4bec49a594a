# -*- coding: utf-8 -*-
"""What the playbook-level fault tests compare: fingerprints of the demo shop's rows that no release changes,
parity of every node, and the journal's proof that each step of a release was applied once; and the shop they
start from."""

from __future__ import annotations

from faultkit import conn_options, install_shop, journal, replicas
from testkit import app_version, ledger, manifest, playbook

from ansible_collections.stateful.rollback.plugins.module_utils import parity_runner

CORE = "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, email, name, created_at), ',' ORDER BY id), '')) FROM customers"
ORDERS = "SELECT count(*), md5(coalesce(string_agg(o::text, ',' ORDER BY id), '')) FROM orders o"


def data(sb, node="primary"):
    """Fingerprints of the shop's rows that no release changes (customers' original columns, orders)."""
    return {"customers": tuple(sb.sql(node, CORE)[0]), "orders": tuple(sb.sql(node, ORDERS)[0])}


def lost(before, after):
    return sum(max(before[t][0] - after[t][0], 0) for t in before)


def in_sync(sb, timeout=120):
    """Primary vs standby vs subscriber: parity of every table of the app."""
    return parity_runner.run(dict(conn_options(sb), mode="parity", replicas=replicas(sb), settle_timeout=timeout,
                                  exclude_schemas=["stateful_rollback"]))["in_sync"]


def assert_whole(sb, before):
    """Nothing lost or changed in the rows no release touches, on every node."""
    sb.wait_standby_caught_up(timeout=120)
    sb.wait_subscriber_caught_up(timeout=120)
    assert in_sync(sb) is True
    for node in ("primary", "standby", "subscriber"):
        assert data(sb, node) == before, node


def applied_once(sb, version):
    """Journal rows of ``version`` since its last revert: one done row per (migration, phase) and direction up."""
    rows = journal(sb, version=version)
    last_down = max([r["id"] for r in rows if r["direction"] == "down"] or [0])
    ups = [r for r in rows if r["direction"] == "up" and r["id"] > last_down]
    keys = [(r["migration_id"], r["phase"]) for r in ups]
    assert len(keys) == len(set(keys)), ups
    assert all(r["state"] == "done" for r in ups), ups
    return {(r["migration_id"], r["phase"]): r for r in ups}


def deployed(sb, version):
    assert app_version(sb) == version
    assert ledger(sb)[version] == ("verified", True)


def shop_on_1_0_0(sb):
    """The demo shop installed, release 1.0.0 deployed and promoted by deploy.yml: where every fault file starts."""
    install_shop(sb)
    rc, out = playbook(sb, "deploy.yml", "-e", manifest("1.0.0"))
    assert rc == 0, out[-6000:]
    deployed(sb, "1.0.0")
    return sb
