# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data parity between a primary and its replicas.

For each table:

1. Cut the key space into chunks (about ``chunk_size`` rows each) with
   boundaries taken from the primary.
2. One scan per node, all nodes at once: per chunk the row count and the sum
   of row hashes, computed server-side (see rowhash.py).
3. A chunk that differs may differ only because the replica has not applied
   the primary's latest commits yet. Bisection therefore reads in order: the
   primary first, noting its WAL position, then the replica once it has
   applied that position (both at once when the primary's position does not
   move during the reads). A differing chunk is cut into ``bisect_factor``
   pieces by key (split points from the node with more rows there); pieces
   that still differ are cut again until they hold at most ``leaf_rows``
   rows, then rows are compared by key and hash. A difference that was only
   lag does not survive the first step.
4. Each differing key is confirmed by re-reading it the same way, up to
   ``confirm_rounds`` times; only keys that differ every time are reported.
   Under concurrent writes a row changed between two reads is therefore not
   reported, while a real difference persists.

A replica that cannot apply up to the needed position within
``settle_timeout`` (paused or broken replication) is reported as not
confirmed, never as "in sync", and none of its transient differences are
reported as data differences.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.stateful.rollback.plugins.module_utils import rowhash
from ansible_collections.stateful.rollback.plugins.module_utils.catalog import describe_table
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import PostgresError
from ansible_collections.stateful.rollback.plugins.module_utils.replication import (
    LOGICAL,
    PHYSICAL,
    NotCaughtUp,
    primary_lsn,
    wait_applied,
)

DEFAULTS = dict(
    chunk_size=10000,
    leaf_rows=1000,
    bisect_factor=16,
    max_differences=100,
    settle_timeout=30.0,
    confirm_rounds=3,
)


class Settings(object):
    def __init__(self, **kwargs):
        for key, value in DEFAULTS.items():
            setattr(self, key, kwargs.get(key) if kwargs.get(key) is not None else value)
        self.on_missing_key = kwargs.get("on_missing_key") or "fail"


class Node(object):
    """A connection plus what parity needs to know about the node."""

    def __init__(self, name, conn, kind=None, subscription=None):
        self.name = name
        self.conn = conn
        self.kind = kind
        self.subscription = subscription
        self.applied = -1  # highest primary LSN this replica is known to have applied


class TablePair(object):
    """Compares one table between the primary and one replica."""

    def __init__(self, primary, replica, table, replica_table, settings, budget):
        self.primary = primary
        self.replica = replica
        self.table = table
        self.settings = settings
        self.budget = budget  # shared dict: differences left to report for this replica
        replica_columns = dict((c.name, c) for c in replica_table.columns)
        self.columns = [c for c in table.columns if c.name in replica_columns and replica_columns[c.name].signature() == c.signature()]
        self.queries = 0
        self.bisections = 0
        self.executor = None

    # -- ordered reads ------------------------------------------------------

    def _wait(self, target):
        if target is not None and target <= self.replica.applied:
            return 0.0  # already seen applied: no need to ask again
        waited = wait_applied(
            self.primary.conn,
            self.replica.conn,
            self.replica.kind,
            target,
            self.settings.settle_timeout,
            self.replica.subscription,
            self.replica.name,
        )
        self.replica.applied = max(self.replica.applied, target or -1)
        return waited

    def ordered(self, read):
        """Read the same thing on the primary and on the replica, consistently.

        The replica is read only once it has applied the primary's WAL position
        of the primary's read, so it holds at least what the primary showed.
        When the replica has already applied the primary's current position and
        that position does not move while both are read (no commit happened in
        between), both reads run at once: the same guarantee at half the latency.
        """
        self.queries += 2
        if self.replica.kind not in (PHYSICAL, LOGICAL):
            return self._both(read)
        before = primary_lsn(self.primary.conn)
        if before <= self.replica.applied:
            on_primary, on_replica = self._both(read)
            if primary_lsn(self.primary.conn) == before:
                return on_primary, on_replica
        on_primary = read(self.primary.conn)
        self._wait(primary_lsn(self.primary.conn))
        return on_primary, read(self.replica.conn)

    def _both(self, read):
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1)
        future = self.executor.submit(read, self.primary.conn)
        on_replica = read(self.replica.conn)
        return future.result(), on_replica

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
            self.executor = None

    # -- the steps ----------------------------------------------------------

    def compare_rows(self, rng, found):
        """Leaf of the bisection: compare the rows of ``rng`` by key and hash."""
        p_map, r_map = self.ordered(lambda c: rowhash.row_hashes(c, self.table, self.columns, rng))
        for kind, key in diff_maps(p_map, r_map):
            if self.budget["left"] <= 0:
                return
            found.append((kind, key))
            self.budget["left"] -= 1

    def bisect(self, rng, counts, found):
        """Append (kind, key) of every row that differs in ``rng`` to ``found``."""
        if self.budget["left"] <= 0:
            return
        self.bisections += 1
        p_rows, r_rows = counts
        if max(p_rows, r_rows) <= self.settings.leaf_rows:
            self.compare_rows(rng, found)
            return
        source = self.primary.conn if p_rows >= r_rows else self.replica.conn
        points = rowhash.split_points(source, self.table, rng, self.settings.bisect_factor)
        if not points:
            # Too few rows to cut (both sides changed under us since they were counted): compare rows.
            self.compare_rows(rng, found)
            return
        edges = [rng.lo] + points + [rng.hi]
        pieces = [rowhash.Range(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
        p_hashes, r_hashes = self.ordered(lambda c: rowhash.range_hashes(c, self.table, self.columns, pieces))
        for piece, p, q in zip(pieces, p_hashes, r_hashes):
            if p != q:
                self.bisect(piece, (p[0], q[0]), found)

    def confirm(self, candidates):
        """Keep the candidate keys that differ in every one of confirm_rounds re-reads."""
        if self.replica.kind not in (PHYSICAL, LOGICAL) or not candidates:
            return candidates
        remaining = dict((key, kind) for kind, key in candidates)
        for dummy in range(self.settings.confirm_rounds):
            keys = list(remaining)
            p_map, r_map = self.ordered(lambda c: rowhash.rows_by_key(c, self.table, self.columns, keys))
            now = dict((key, kind) for kind, key in diff_maps(p_map, r_map, keys))
            remaining = dict((k, now[k]) for k in keys if k in now)
            if not remaining:
                break
        return [(kind, key) for kind, key in candidates if key in remaining]


def diff_maps(p_map, r_map, keys=None):
    """[(kind, key)] from two {key: hash} maps."""
    out = []
    for key in keys if keys is not None else sorted(set(p_map) | set(r_map)):
        p, r = p_map.get(key), r_map.get(key)
        if p is None and r is None:
            continue
        if r is None:
            out.append(("missing_on_replica", key))
        elif p is None:
            out.append(("extra_on_replica", key))
        elif p != r:
            out.append(("different", key))
    return out


def plan_boundaries(conn, table, settings):
    estimated = table.estimated_rows
    if estimated < 0:
        estimated = None
    chunks = max(1, int(math.ceil((estimated or 0) / float(settings.chunk_size))))
    if estimated is None:
        # Never analyzed: count once so chunks are sized right.
        rows = rowhash.table_hash(conn, table, table.key or table.columns[:1])[0]
        chunks = max(1, int(math.ceil(rows / float(settings.chunk_size))))
        estimated = rows
    return rowhash.sample_boundaries(conn, table, chunks, estimated)


def compare_table(primary, replicas, table, settings, budgets, pool, progress=None):
    """Compare one table on the primary with every replica; returns per-replica results."""
    started = time.monotonic()
    results = {}
    replica_tables = {}
    for rep in replicas:
        described = describe_table(rep.conn, table.schema, table.name, [c.name for c in table.key] if table.key else None, where=" on replica %s" % rep.name)
        replica_tables[rep.name] = described
    if not table.key:
        return _compare_keyless(primary, replicas, table, replica_tables, settings, pool, started)
    boundaries = plan_boundaries(primary.conn, table, settings)
    ranges = rowhash.chunk_ranges(boundaries)
    pairs = {}
    for rep in replicas:
        rt = replica_tables[rep.name]
        if rt is None:
            results[rep.name] = {"table": table.display, "status": "missing_on_replica", "in_sync": False}
            continue
        pairs[rep.name] = TablePair(primary, rep, table, rt, settings, budgets[rep.name])
    if not pairs:
        return results
    # Step 2: one scan per node, all at once. Each replica is compared on the
    # columns it has with the primary's name and type; the primary is scanned
    # once per distinct column set (nearly always just one).
    column_sets = {}
    for pair in pairs.values():
        column_sets.setdefault(tuple(c.name for c in pair.columns), pair.columns)
    primary_futures = dict(
        (names, pool.submit(rowhash.chunk_hashes, primary.conn, table, columns, boundaries))
        for names, columns in column_sets.items()
    )
    futures = dict(
        (name, pool.submit(rowhash.chunk_hashes, pair.replica.conn, table, pair.columns, boundaries))
        for name, pair in pairs.items()
    )
    primary_by_set = dict((names, future.result()) for names, future in primary_futures.items())
    primary_rows = sum(v[0] for v in next(iter(primary_by_set.values())).values())
    empty = (0, "0")
    per_replica_chunks = {}
    for name in pairs:
        per_replica_chunks[name] = futures[name].result()

    # Steps 3-5 per replica, in parallel (each pair owns its connections' turn).
    def finish(name):
        pair = pairs[name]
        rep_chunks = per_replica_chunks[name]
        primary_chunks = primary_by_set[tuple(c.name for c in pair.columns)]
        p_list = [primary_chunks.get(i, empty) for i in range(len(ranges))]
        r_list = [rep_chunks.get(i, empty) for i in range(len(ranges))]
        replica_rows = sum(v[0] for v in rep_chunks.values())
        outcome = {
            "table": table.display,
            "key": [c.name for c in table.key],
            "key_source": table.key_source,
            "rows_primary": primary_rows,
            "rows_replica": replica_rows,
            "chunks": len(ranges),
            "chunks_differing": 0,
            "differences": {"missing_on_replica": [], "extra_on_replica": [], "different": []},
            "difference_count": 0,
            "truncated": False,
        }
        skipped = sorted(set(table.column_names) - set(c.name for c in pair.columns))
        if skipped:
            outcome["columns_not_compared"] = skipped
        try:
            candidates_by_chunk = []
            for rng, p, q in zip(ranges, p_list, r_list):
                if p != q:
                    # Bisection re-reads the chunk in order: a difference that was
                    # only replication lag does not survive its first step.
                    found = []
                    pair.bisect(rng, (p[0], q[0]), found)
                    candidates_by_chunk.append((rng, found))
            candidates = [c for rng, found in candidates_by_chunk for c in found]
            confirmed = pair.confirm(candidates)
            pair.budget["left"] += len(candidates) - len(confirmed)
            kept = set(key for kind, key in confirmed)
            differing = [rng for rng, found in candidates_by_chunk if any(key in kept for kind, key in found)]
            for kind, key in confirmed:
                outcome["differences"][kind].append(rowhash.key_dict(table.key, key))
            outcome["difference_count"] = len(confirmed)
            outcome["chunks_differing"] = len(differing)
            outcome["truncated"] = pair.budget["left"] <= 0 and bool(differing)
            outcome["in_sync"] = not confirmed and not skipped
            outcome["status"] = "in_sync" if outcome["in_sync"] else "differs"
            if differing:
                outcome["differing_ranges"] = [r.as_dict(table.key) for r in differing[:20]]
        except NotCaughtUp as exc:
            outcome["status"] = "not_confirmed"
            outcome["in_sync"] = None
            outcome["error"] = str(exc)
        finally:
            pair.close()
        outcome["queries"] = pair.queries + 1
        outcome["bisections"] = pair.bisections
        return name, outcome

    if len(pairs) == 1:
        done = [finish(next(iter(pairs)))]
    else:
        done = list(pool.map(finish, list(pairs)))
    elapsed = time.monotonic() - started
    for name, outcome in done:
        outcome["seconds"] = round(elapsed, 3)
        results[name] = outcome
    if progress:
        progress({"event": "table_done", "table": table.display, "rows": primary_rows, "seconds": round(elapsed, 3)})
    return results


def _compare_keyless(primary, replicas, table, replica_tables, settings, pool, started):
    results = {}
    if settings.on_missing_key == "skip":
        for rep in replicas:
            results[rep.name] = {"table": table.display, "status": "skipped", "in_sync": None, "reason": "no primary key or usable unique index"}
        return results
    if settings.on_missing_key != "table_hash":
        raise PostgresError(
            "table %s has no primary key and no unique index on NOT NULL columns: give key_columns for it, "
            "or set on_missing_key to table_hash (whole-table comparison) or skip" % table.display
        )
    p = rowhash.table_hash(primary.conn, table, table.columns)
    for rep in replicas:
        rt = replica_tables[rep.name]
        if rt is None:
            results[rep.name] = {"table": table.display, "status": "missing_on_replica", "in_sync": False}
            continue
        replica_cols = set(c.signature() for c in rt.columns)
        columns = [c for c in table.columns if c.signature() in replica_cols]
        if rep.kind in (PHYSICAL, LOGICAL):
            wait_applied(primary.conn, rep.conn, rep.kind, primary_lsn(primary.conn), settings.settle_timeout, rep.subscription, rep.name)
        q = rowhash.table_hash(rep.conn, table, columns)
        same = p == q
        results[rep.name] = {
            "table": table.display,
            "key": [],
            "key_source": None,
            "rows_primary": p[0],
            "rows_replica": q[0],
            "chunks": 1,
            "chunks_differing": 0 if same else 1,
            "differences": {"missing_on_replica": [], "extra_on_replica": [], "different": []},
            "difference_count": 0 if same else abs(p[0] - q[0]) or 1,
            "truncated": not same,
            "in_sync": same,
            "status": "in_sync" if same else "differs",
            "note": "compared as a whole table (no key): differing rows cannot be named",
            "seconds": round(time.monotonic() - started, 3),
        }
    return results
