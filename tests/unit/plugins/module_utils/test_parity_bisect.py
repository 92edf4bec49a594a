# -*- coding: utf-8 -*-
"""Bisection and confirmation logic of module_utils/parity.py.

The servers are replaced here by in-memory tables (a dict key -> row hash per
node) behind the four rowhash primitives the engine calls. This is the only
place where the database is simulated: it lets the tests drive the search on
shapes a server makes slow to build (one difference among many thousand rows,
budgets, concurrent changes between reads). The same paths run against real
PostgreSQL nodes in tests/integration.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils import parity, rowhash
from ansible_collections.stateful.rollback.plugins.module_utils.catalog import Column, Table


def key(n):
    return ("%08d" % n,)


class FakeNode(object):
    """An in-memory table; every read is counted."""

    def __init__(self, rows):
        self.rows = dict(rows)
        self.reads = 0
        self.before_read = None

    def in_range(self, rng):
        return dict((k, h) for k, h in self.rows.items() if (rng.lo is None or k >= rng.lo) and (rng.hi is None or k < rng.hi))


@pytest.fixture
def fake_server(monkeypatch):
    def touch(conn):
        conn.reads += 1
        if conn.before_read:
            conn.before_read(conn)

    def range_hashes(conn, table, columns, ranges):
        touch(conn)
        out = []
        for rng in ranges:
            rows = conn.in_range(rng)
            out.append((len(rows), str(sum(hash(v) for v in rows.values()))))
        return out

    def row_hashes(conn, table, columns, rng):
        touch(conn)
        return conn.in_range(rng)

    def rows_by_key(conn, table, columns, keys):
        touch(conn)
        return dict((k, conn.rows[k]) for k in keys if k in conn.rows)

    def split_points(conn, table, rng, parts):
        keys = sorted(conn.in_range(rng))
        step = max(len(keys) // parts, 1)
        return [keys[i] for i in range(step, len(keys), step)]

    monkeypatch.setattr(rowhash, "range_hashes", range_hashes)
    monkeypatch.setattr(rowhash, "row_hashes", row_hashes)
    monkeypatch.setattr(rowhash, "rows_by_key", rows_by_key)
    monkeypatch.setattr(rowhash, "split_points", split_points)
    waits = []
    monkeypatch.setattr(parity, "primary_lsn", lambda conn: 1)
    monkeypatch.setattr(parity, "wait_applied", lambda *args, **kwargs: waits.append(args[3]) or 0.0)
    return waits


TABLE = Table("public", "t", [Column("id", "pg_catalog", "text", "text", True)], [Column("id", "pg_catalog", "text", "text", True)], "primary key", 0)


def make_pair(primary_rows, replica_rows, kind="standalone", **settings):
    p, r = FakeNode(primary_rows), FakeNode(replica_rows)
    pair = parity.TablePair(
        parity.Node("primary", p), parity.Node("replica", r, kind), TABLE, TABLE,
        parity.Settings(**settings), {"left": settings.get("max_differences", 100)},
    )
    return pair, p, r


def search(pair, primary, replica):
    whole = rowhash.Range()
    found = []
    pair.bisect(whole, (len(primary.rows), len(replica.rows)), found)
    return pair.confirm(found)


def test_finds_exact_missing_extra_and_different_keys(fake_server):
    rows = dict((key(i), "v%d" % i) for i in range(20000))
    replica = dict(rows)
    del replica[key(17)]
    replica[key(99999)] = "extra"
    replica[key(12345)] = "changed"
    pair, p, r = make_pair(rows, replica, leaf_rows=64, bisect_factor=4)
    assert sorted(search(pair, p, r)) == sorted(
        [("missing_on_replica", key(17)), ("extra_on_replica", key(99999)), ("different", key(12345))]
    )
    # Bisection reads far fewer rows than a full row-by-row comparison would.
    assert pair.bisections < 60


def read_all(conn):
    return rowhash.row_hashes(conn, TABLE, TABLE.columns, rowhash.Range())


def test_quiet_primary_is_read_at_once_with_the_replica(fake_server):
    # Once the replica has applied the primary's position and the position does
    # not move, reads need no further wait.
    rows = dict((key(i), "v") for i in range(10))
    pair, p, r = make_pair(rows, dict(rows), kind="physical")
    for dummy in range(3):
        assert pair.ordered(read_all) == (rows, rows)
    pair.close()
    assert fake_server == [1] and p.reads == r.reads == 3


def test_moving_primary_falls_back_to_waiting_for_the_replica(fake_server, monkeypatch):
    positions = iter(range(100, 200))
    monkeypatch.setattr(parity, "primary_lsn", lambda conn: next(positions))
    rows = dict((key(i), "v") for i in range(10))
    pair, p, r = make_pair(rows, dict(rows), kind="logical")
    for dummy in range(3):
        pair.ordered(read_all)
    pair.close()
    # Every read waited for the position the primary had after its own read.
    assert len(fake_server) == 3 and fake_server == sorted(fake_server)


def test_max_differences_bounds_the_search(fake_server):
    rows = dict((key(i), "v") for i in range(3000))
    replica = dict((k, "other") for k in rows)
    pair, p, r = make_pair(rows, replica, leaf_rows=50, max_differences=7)
    found = search(pair, p, r)
    assert len(found) == 7 and pair.budget["left"] == 0


def test_all_rows_sharing_one_split_point_still_end_in_row_comparison(fake_server):
    pair, p, r = make_pair({key(1): "a", key(2): "b"}, {key(1): "a", key(2): "c"}, leaf_rows=1)
    assert search(pair, p, r) == [("different", key(2))]


def test_transient_difference_from_replication_lag_is_dropped(fake_server):
    # The replica misses a row at first read; by the confirmation read it has it.
    rows = dict((key(i), "v") for i in range(1000))
    lagging = dict(rows)
    del lagging[key(500)]
    pair, p, r = make_pair(rows, lagging, kind="physical", leaf_rows=32)
    found = []
    pair.bisect(rowhash.Range(), (1000, 999), found)
    assert found == [("missing_on_replica", key(500))]
    r.rows[key(500)] = "v"  # replay caught up
    assert pair.confirm(found) == []


def test_a_row_changing_between_reads_is_not_reported(fake_server):
    # The primary keeps rewriting one row; the replica has applied each write
    # by the time it is read (the engine waits), so confirmation sees equality.
    rows = dict((key(i), "v") for i in range(100))
    pair, p, r = make_pair(rows, dict(rows), kind="logical")

    def follow(node):
        r.rows = dict(p.rows)

    r.before_read = follow
    p.rows[key(3)] = "v2"
    assert pair.confirm([("different", key(3))]) == []


def test_persistent_difference_survives_every_confirmation_round(fake_server):
    rows = dict((key(i), "v") for i in range(100))
    replica = dict(rows)
    replica[key(3)] = "corrupt"
    pair, p, r = make_pair(rows, replica, kind="physical", confirm_rounds=3)
    assert pair.confirm([("different", key(3))]) == [("different", key(3))]
    assert p.reads == 3 and r.reads == 3


def test_diff_maps_classifies():
    out = parity.diff_maps({("1",): "a", ("2",): "b"}, {("2",): "c", ("3",): "d"})
    assert out == [("missing_on_replica", ("1",)), ("different", ("2",)), ("extra_on_replica", ("3",))]
