# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replication state: what a replica is, how far it has applied, how far behind it is.

Physical standbys report their replay position themselves
(``pg_last_wal_replay_lsn()``). A logical subscriber's applied position is
the best of three witnesses: its replication origin's ``remote_lsn`` (the
primary commit it applied last), ``pg_stat_subscription.latest_end_lsn``
(advanced by keepalives once it is idle and caught up) and, on the primary,
the subscription slot's ``confirmed_flush_lsn``. Every query here needs no
more than ``pg_monitor``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    PostgresError,
    fetch_all,
    fetch_one,
    fetch_value,
    int_to_lsn,
    lsn_to_int,
)

PHYSICAL = "physical"
LOGICAL = "logical"
STANDALONE = "standalone"

SYNC_STATES = {
    "i": "initialize",
    "d": "copying data",
    "f": "finished copy",
    "s": "synchronized",
    "r": "ready",
}


class NotCaughtUp(PostgresError):
    """A replica did not apply up to the wanted position in time."""


def primary_lsn(conn):
    return lsn_to_int(fetch_value(conn, "SELECT pg_catalog.pg_current_wal_lsn()::text"))


def is_in_recovery(conn):
    return bool(fetch_value(conn, "SELECT pg_catalog.pg_is_in_recovery()"))


def subscriptions(conn, wanted=None):
    """[(name, slot name, enabled)] of the subscriptions in the connected database."""
    rows = fetch_all(
        conn,
        "SELECT s.subname, s.subslotname, s.subenabled FROM pg_catalog.pg_subscription s "
        "WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
        "ORDER BY 1",
    )
    if wanted:
        rows = [r for r in rows if r[0] == wanted]
        if not rows:
            raise PostgresError("subscription %r does not exist on the replica" % (wanted,))
    return rows


def detect_kind(conn, subscription=None):
    if is_in_recovery(conn):
        return PHYSICAL
    if subscriptions(conn, subscription):
        return LOGICAL
    return STANDALONE


def applied_lsn(primary, replica, kind, subscription=None):
    """Highest primary LSN the replica is known to have applied (None if unknown)."""
    if kind == PHYSICAL:
        return lsn_to_int(fetch_value(replica, "SELECT pg_catalog.pg_last_wal_replay_lsn()::text"))
    if kind != LOGICAL:
        return None
    positions = []
    for name, slot, _enabled in subscriptions(replica, subscription):
        witnesses = []
        row = fetch_one(
            replica,
            "SELECT max(latest_end_lsn)::text FROM pg_catalog.pg_stat_subscription WHERE subname = %s",
            (name,),
        )
        witnesses.append(lsn_to_int(row[0]) if row else None)
        if fetch_value(replica, "SELECT has_table_privilege('pg_catalog.pg_replication_origin_status', 'SELECT')"):
            # Readable by superusers only, unless granted: an extra witness, not a requirement.
            witnesses.append(
                lsn_to_int(
                    fetch_value(
                        replica,
                        "SELECT o.remote_lsn::text FROM pg_catalog.pg_replication_origin_status o "
                        "JOIN pg_catalog.pg_subscription s ON o.external_id = 'pg_' || s.oid::text "
                        "WHERE s.subname = %s",
                        (name,),
                    )
                )
            )
        if slot:
            witnesses.append(
                lsn_to_int(
                    fetch_value(
                        primary,
                        "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                        (slot,),
                    )
                )
            )
        known = [w for w in witnesses if w is not None]
        positions.append(max(known) if known else None)
    if not positions or None in positions:
        return None
    return min(positions)


def wait_applied(primary, replica, kind, target, timeout, subscription=None, name="replica"):
    """Block until the replica applied ``target``; NotCaughtUp after ``timeout`` s."""
    if kind not in (PHYSICAL, LOGICAL) or target is None:
        return 0.0
    started = time.monotonic()
    delay = 0.01
    while True:
        position = applied_lsn(primary, replica, kind, subscription)
        if position is not None and position >= target:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            detail = ""
            if kind == PHYSICAL and fetch_value(replica, "SELECT pg_catalog.pg_is_wal_replay_paused()"):
                detail = " (WAL replay is paused on it)"
            raise NotCaughtUp(
                "replica %s did not apply the primary's changes up to %s within settle_timeout=%ss: "
                "it is at %s%s; parity could not be confirmed"
                % (name, int_to_lsn(target), timeout, int_to_lsn(position) or "an unknown position", detail)
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _seconds(value):
    return None if value is None else round(float(value), 3)


def physical_health(primary, replica, name, application_name=None):
    current = primary_lsn(primary)
    row = fetch_one(
        replica,
        "SELECT pg_catalog.pg_last_wal_receive_lsn()::text, pg_catalog.pg_last_wal_replay_lsn()::text, "
        "pg_catalog.pg_get_wal_replay_pause_state(), "
        "CASE WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() THEN 0 "
        "ELSE extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp()) END, "
        "(SELECT status FROM pg_catalog.pg_stat_wal_receiver LIMIT 1), "
        "(SELECT slot_name FROM pg_catalog.pg_stat_wal_receiver LIMIT 1)",
    )
    receive, replay, pause_state, lag_seconds, receiver_status, slot = row
    replay_int = lsn_to_int(replay)
    state = receiver_status or "disconnected"
    if pause_state and pause_state != "not paused":
        state = "replay %s" % pause_state
    result = {
        "name": name,
        "kind": PHYSICAL,
        "state": state,
        "receive_lsn": receive,
        "replay_lsn": replay,
        "lag_bytes": None if replay_int is None else max(current - replay_int, 0),
        "lag_seconds": _seconds(lag_seconds) if lag_seconds is not None else 0.0,
        "replay_paused": bool(pause_state and pause_state != "not paused"),
        "slot_name": slot,
        "streaming": receiver_status == "streaming",
    }
    return result


def logical_health(primary, replica, name, subscription=None):
    current = primary_lsn(primary)
    subs = []
    worst_bytes, worst_seconds = 0, 0.0
    all_ok = True
    for subname, slot, enabled in subscriptions(replica, subscription):
        stat = fetch_one(
            replica,
            "SELECT count(pid) FILTER (WHERE relid IS NULL), max(received_lsn)::text, max(latest_end_lsn)::text, "
            "extract(epoch FROM now() - max(last_msg_receipt_time)) "
            "FROM pg_catalog.pg_stat_subscription WHERE subname = %s",
            (subname,),
        )
        workers, received, latest_end, since_msg = stat
        tables = [
            {"table": "%s.%s" % (r[0], r[1]), "state": SYNC_STATES.get(r[2], r[2]), "sync_lsn": r[3]}
            for r in fetch_all(
                replica,
                "SELECT n.nspname, c.relname, sr.srsubstate, sr.srsublsn::text "
                "FROM pg_catalog.pg_subscription_rel sr "
                "JOIN pg_catalog.pg_subscription s ON s.oid = sr.srsubid "
                "JOIN pg_catalog.pg_class c ON c.oid = sr.srrelid "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE s.subname = %s ORDER BY 1, 2",
                (subname,),
            )
        ]
        confirmed, lag_seconds = None, None
        if slot:
            slot_row = fetch_one(
                primary,
                "SELECT s.confirmed_flush_lsn::text, extract(epoch FROM r.replay_lag) "
                "FROM pg_catalog.pg_replication_slots s "
                "LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid "
                "WHERE s.slot_name = %s",
                (slot,),
            )
            if slot_row:
                confirmed, lag_seconds = slot_row
        applied = applied_lsn(primary, replica, LOGICAL, subname)
        lag_bytes = None if applied is None else max(current - applied, 0)
        not_ready = [t["table"] for t in tables if t["state"] != "ready"]
        state = "streaming" if workers else ("disabled" if not enabled else "stopped")
        ok = bool(workers) and enabled and not not_ready
        all_ok = all_ok and ok
        worst_bytes = None if lag_bytes is None or worst_bytes is None else max(worst_bytes, lag_bytes)
        worst_seconds = max(worst_seconds, _seconds(lag_seconds) or 0.0)
        subs.append(
            {
                "name": subname,
                "slot_name": slot,
                "enabled": bool(enabled),
                "state": state,
                "received_lsn": received,
                "latest_end_lsn": latest_end,
                "confirmed_flush_lsn": confirmed,
                "lag_bytes": lag_bytes,
                "lag_seconds": _seconds(lag_seconds) or 0.0,
                "seconds_since_last_message": _seconds(since_msg),
                "tables": tables,
                "tables_not_ready": not_ready,
            }
        )
    return {
        "name": name,
        "kind": LOGICAL,
        "state": "streaming" if all_ok else ", ".join(sorted(set(s["state"] for s in subs if s["state"] != "streaming")) or ["tables not ready"]),
        "streaming": all_ok,
        "lag_bytes": worst_bytes,
        "lag_seconds": worst_seconds,
        "subscriptions": subs,
    }


def slots(primary):
    rows = fetch_all(
        primary,
        "SELECT slot_name, slot_type, database, active, restart_lsn::text, confirmed_flush_lsn::text, "
        "wal_status, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::bigint "
        "FROM pg_catalog.pg_replication_slots ORDER BY slot_name",
    )
    return [
        {
            "name": r[0],
            "type": r[1],
            "database": r[2],
            "active": bool(r[3]),
            "restart_lsn": r[4],
            "confirmed_flush_lsn": r[5],
            "wal_status": r[6],
            "retained_bytes": None if r[7] is None else int(r[7]),
        }
        for r in rows
    ]
