# -*- coding: utf-8 -*-
"""replication_parity against the real sandbox: a PostgreSQL primary, a streaming
physical standby and a logical subscriber on 127.0.0.1 (tests/conftest.py).
Nothing here is mocked."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import random
import threading
import time

import pytest
from testkit import login_options as conn_options

from ansible_collections.stateful.rollback.plugins.module_utils.parity_runner import ParityFailure, run

pytestmark = pytest.mark.integration


def replicas(sandbox, names=("standby", "subscriber")):
    out = []
    for name in names:
        params = getattr(sandbox, name)
        out.append(dict(name=name, login_host=params["host"], login_port=int(params["port"])))
    return out


def parity(sandbox, **kwargs):
    params = dict(conn_options(sandbox.primary), mode="parity", replicas=replicas(sandbox), settle_timeout=20)
    params.update(kwargs)
    return run(params)


def failing(sandbox, **kwargs):
    with pytest.raises(ParityFailure) as err:
        parity(sandbox, **kwargs)
    return err.value


@pytest.fixture
def items(sandbox):
    """A fresh replicated table with 3000 rows on all three nodes."""
    sandbox.drop_table("parity_items")
    sandbox.create_table(
        "CREATE TABLE parity_items (id bigint PRIMARY KEY, sku text NOT NULL, qty int NOT NULL, "
        "price numeric(10,2), updated_at timestamptz NOT NULL DEFAULT '2026-01-01')"
    )
    sandbox.sql(
        "primary",
        "INSERT INTO parity_items SELECT i, 'sku-' || i, i % 17, i * 0.25 FROM generate_series(1, 3000) i",
    )
    sandbox.wait_standby_caught_up()
    sandbox.wait_subscriber_caught_up()
    yield "parity_items"
    sandbox.drop_table("parity_items")


def by_name(result, name):
    return next(r for r in result["replicas"] if r["name"] == name)


def table_result(result, replica, table):
    return next(t for t in by_name(result, replica)["tables"] if t["table"] == table)


def test_health_reports_both_kinds_streaming(sandbox):
    result = run(dict(conn_options(sandbox.primary), mode="health", replicas=replicas(sandbox),
                      max_lag_bytes=64 * 1024 * 1024, max_lag_seconds=60))
    standby, subscriber = by_name(result, "standby"), by_name(result, "subscriber")
    assert result["healthy"] is True
    assert standby["kind"] == "physical" and standby["state"] == "streaming" and standby["replay_paused"] is False
    assert subscriber["kind"] == "logical" and subscriber["state"] == "streaming"
    sub = subscriber["subscriptions"][0]
    assert sub["name"] == "stateful_sub" and sub["enabled"] is True
    assert {"table": "public.orders", "state": "ready", "sync_lsn": sub["tables"][1]["sync_lsn"]} in sub["tables"]
    slot_names = {s["name"]: s for s in result["slots"]}
    assert slot_names["standby_slot"]["active"] is True and slot_names["standby_slot"]["type"] == "physical"
    assert any(s["type"] == "logical" and s["active"] for s in result["slots"])
    assert all(s["retained_bytes"] >= 0 for s in result["slots"])


def test_all_replicas_in_sync(sandbox, items):
    result = parity(sandbox, tables=["public.customers", "orders", items])
    assert result["in_sync"] is True and result["difference_count"] == 0
    for name in ("standby", "subscriber"):
        rep = by_name(result, name)
        assert rep["in_sync"] is True
        assert [t["status"] for t in rep["tables"]] == ["in_sync"] * 3
    orders = table_result(result, "subscriber", "public.orders")
    assert orders["rows_primary"] == orders["rows_replica"] == 5000
    assert result["rows_compared"] >= 9000 and result["rows_per_second"] > 0


def test_subscriber_divergence_found_with_exact_keys(sandbox, items):
    # Rows changed behind the subscription's back, on the subscriber only.
    sandbox.sql("subscriber", "DELETE FROM parity_items WHERE id = 1234", superuser=True)
    sandbox.sql("subscriber", "INSERT INTO parity_items (id, sku, qty) VALUES (900001, 'ghost', 1)", superuser=True)
    sandbox.sql("subscriber", "UPDATE parity_items SET qty = qty + 1 WHERE id = 2999", superuser=True)
    failure = failing(sandbox, tables=[items], chunk_size=500, leaf_rows=40)
    assert "parity_items on subscriber" in failure.msg and "1 missing on replica" in failure.msg
    result = failure.result
    assert result["in_sync"] is False and by_name(result, "standby")["in_sync"] is True
    diff = table_result(result, "subscriber", "public.parity_items")
    assert diff["differences"] == {
        "missing_on_replica": [{"id": 1234}],
        "extra_on_replica": [{"id": 900001}],
        "different": [{"id": 2999}],
    }
    assert diff["rows_primary"] == 3000 and diff["rows_replica"] == 3000 and diff["truncated"] is False
    # Report only, without failing.
    report = parity(sandbox, tables=[items], fail_on_difference=False)
    assert report["in_sync"] is False and report["difference_count"] == 3


def test_max_differences_truncates(sandbox, items):
    sandbox.sql("subscriber", "UPDATE parity_items SET qty = -1 WHERE id <= 50", superuser=True)
    result = failing(sandbox, tables=[items], max_differences=5).result
    diff = table_result(result, "subscriber", "public.parity_items")
    assert len(diff["differences"]["different"]) == 5 and diff["truncated"] is True


def test_paused_standby_is_lag_not_a_data_difference(sandbox, items):
    sandbox.sql("standby", "SELECT pg_wal_replay_pause()", superuser=True)
    try:
        sandbox.sql("primary", "UPDATE parity_items SET qty = qty + 100 WHERE id % 10 = 0")
        sandbox.wait_subscriber_caught_up()
        health = None
        with pytest.raises(ParityFailure) as err:
            run(dict(conn_options(sandbox.primary), mode="health", replicas=replicas(sandbox), max_lag_bytes=0))
        health = err.value.result
        assert "replica standby" in err.value.msg and "exceeds max_lag_bytes=0" in err.value.msg
        standby = by_name(health, "standby")
        assert standby["replay_paused"] is True and standby["lag_bytes"] > 0
        assert "paused" in standby["state"]
        # Parity cannot confirm the standby: it fails clearly and reports no data difference.
        failure = failing(sandbox, tables=[items], settle_timeout=2)
        assert "replica standby did not apply" in failure.msg and "WAL replay is paused" in failure.msg
        entry = by_name(failure.result, "standby")
        assert entry["in_sync"] is None and entry["difference_count"] == 0
        assert by_name(failure.result, "subscriber")["in_sync"] is True
    finally:
        sandbox.sql("standby", "SELECT pg_wal_replay_resume()", superuser=True)
    # Once it catches up, the same comparison is clean.
    result = parity(sandbox, tables=[items])
    assert result["in_sync"] is True and by_name(result, "standby")["in_sync"] is True


def test_concurrent_writes_give_no_false_difference(sandbox, items):
    stop = threading.Event()
    errors, writes = [], [0]

    def writer():
        rng = random.Random(7)
        conn = sandbox.connect("primary")
        try:
            with conn.cursor() as cur:
                next_id = 100000
                while not stop.is_set():
                    choice = rng.random()
                    if choice < 0.4:
                        cur.execute("UPDATE parity_items SET qty = qty + 1, updated_at = now() WHERE id = %s", (rng.randint(1, 3000),))
                    elif choice < 0.8:
                        next_id += 1
                        cur.execute("INSERT INTO parity_items (id, sku, qty) VALUES (%s, 'new', 0)", (next_id,))
                    else:
                        cur.execute("DELETE FROM parity_items WHERE id = %s", (rng.randint(1, 3000),))
                    writes[0] += 1
                    time.sleep(0.002)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        results = [parity(sandbox, tables=[items], chunk_size=200, leaf_rows=20) for dummy in range(3)]
    finally:
        stop.set()
        thread.join(30)
    assert not errors and writes[0] > 50
    for result in results:
        assert result["in_sync"] is True, json.dumps(result["replicas"], default=str)[:2000]
        assert result["difference_count"] == 0


def test_table_or_column_missing_on_a_replica_is_a_difference(sandbox, items):
    # A table created on the primary only (the standby gets it through WAL, the subscriber does not).
    sandbox.sql("primary", "CREATE TABLE parity_primary_only (id int PRIMARY KEY)")
    try:
        sandbox.wait_standby_caught_up()
        result = failing(sandbox, tables=["parity_primary_only"]).result
        assert table_result(result, "subscriber", "public.parity_primary_only")["status"] == "missing_on_replica"
        assert table_result(result, "standby", "public.parity_primary_only")["status"] == "in_sync"
    finally:
        sandbox.sql("primary", "DROP TABLE parity_primary_only")
    # A column the subscriber lacks cannot be compared: reported, not silently skipped.
    sandbox.sql("primary", "ALTER TABLE parity_items ADD COLUMN note text")
    try:
        sandbox.wait_standby_caught_up()
        failure = failing(sandbox, tables=[items])
        diff = table_result(failure.result, "subscriber", "public.parity_items")
        assert diff["columns_not_compared"] == ["note"] and diff["in_sync"] is False
        assert "columns differ: note" in failure.msg
        assert by_name(failure.result, "standby")["in_sync"] is True
    finally:
        sandbox.sql("primary", "ALTER TABLE parity_items DROP COLUMN note")


def test_baseline_compare_after_change_and_after_undo(sandbox, items, tmp_path):
    path = str(tmp_path / "baseline.json")
    primary = conn_options(sandbox.primary)
    captured = run(dict(primary, mode="baseline_capture", baseline_path=path, tables=[items, "orders"]))
    assert captured["changed"] is True and captured["fingerprint"]["tables"] == {"public.parity_items": 3000, "public.orders": 5000}
    again = run(dict(primary, mode="baseline_capture", baseline_path=path, tables=[items, "orders"]))
    assert again["changed"] is False  # same content is not rewritten
    assert run(dict(primary, mode="baseline_compare", baseline_path=path))["in_sync"] is True

    sandbox.sql("primary", "UPDATE parity_items SET sku = 'changed' WHERE id = 77")
    sandbox.sql("primary", "DELETE FROM parity_items WHERE id = 78")
    sandbox.sql("primary", "ALTER TABLE parity_items ADD COLUMN note text")
    with pytest.raises(ParityFailure) as err:
        run(dict(primary, mode="baseline_compare", baseline_path=path))
    comparison = err.value.result["comparison"]
    assert "database differs from the baseline" in err.value.msg
    assert comparison["schema"]["added"] == ["column public.parity_items.note"]
    table = next(t for t in comparison["tables"] if t["table"] == "public.parity_items")
    assert table["differences"] == {"missing": [{"id": 78}], "extra": [], "different": [{"id": 77}]}
    assert table["rows_baseline"] == 3000 and table["rows_now"] == 2999

    # Undo the change: the database equals the baseline again.
    sandbox.sql("primary", "ALTER TABLE parity_items DROP COLUMN note")
    sandbox.sql("primary", "UPDATE parity_items SET sku = 'sku-77' WHERE id = 77")
    sandbox.sql("primary", "INSERT INTO parity_items VALUES (78, 'sku-78', 78 % 17, 78 * 0.25, '2026-01-01')")
    result = run(dict(primary, mode="baseline_compare", baseline_path=path))
    assert result["in_sync"] is True and result["comparison"]["schema"]["same"] is True
    # The restored primary is also what the replicas hold.
    assert parity(sandbox, tables=[items])["in_sync"] is True


def test_baseline_large_table_reports_ranges(sandbox, items, tmp_path):
    primary = conn_options(sandbox.primary)
    baseline = run(dict(primary, mode="baseline_capture", tables=[items], baseline_row_limit=100, chunk_size=500))["baseline"]
    sandbox.sql("primary", "UPDATE parity_items SET qty = 0 WHERE id = 1600")
    result = run(dict(primary, mode="baseline_compare", baseline=baseline, fail_on_difference=False))
    table = result["comparison"]["tables"][0]
    assert result["in_sync"] is False and table["exact_keys"] is False and table["chunks_differing"] == 1
    rng = table["differing_ranges"][0]
    assert rng["from"]["id"] <= 1600 < rng["to"]["id"]


def test_invariants_detect_sequence_behind_and_orphans(sandbox):
    sandbox.drop_table("inv_child")
    sandbox.drop_table("inv_parent")
    sandbox.create_table("CREATE TABLE inv_parent (id serial PRIMARY KEY, name text)")
    sandbox.create_table("CREATE TABLE inv_child (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, parent_id int)")
    try:
        primary = conn_options(sandbox.primary)
        sandbox.sql("primary", "INSERT INTO inv_parent (name) SELECT 'p' || i FROM generate_series(1, 5) i")
        sandbox.sql("primary", "INSERT INTO inv_child (parent_id) VALUES (1), (2), (NULL)")
        ok = run(dict(primary, mode="health", replicas=replicas(sandbox), tables=["inv_parent", "inv_child"], invariants=["all"]))
        assert ok["invariants"]["ok"] is True
        # Rows written with explicit ids (as a restore or a bad backfill does) leave the sequence behind,
        # and a NOT VALID foreign key added over orphans.
        sandbox.sql("primary", "INSERT INTO inv_parent (id, name) VALUES (40, 'explicit')")
        sandbox.sql("primary", "INSERT INTO inv_child (parent_id) VALUES (999), (998)")
        sandbox.sql("primary", "ALTER TABLE inv_child ADD CONSTRAINT inv_child_parent_fk FOREIGN KEY (parent_id) "
                               "REFERENCES inv_parent (id) NOT VALID")
        with pytest.raises(ParityFailure) as err:
            run(dict(primary, mode="baseline_capture", tables=["inv_parent", "inv_child"], invariants=["all"]))
        msg, report = err.value.msg, err.value.result["invariants"]
        assert "sequence public.inv_parent_id_seq is behind public.inv_parent.id: next value 6, column max 40" in msg
        assert "2 orphan row(s) in public.inv_child violate foreign key inv_child_parent_fk (NOT VALID)" in msg
        fk = report["foreign_keys"][0]
        assert fk["validated"] is False and sorted(s["parent_id"] for s in fk["sample"]) == ["998", "999"]
        identity = next(s for s in report["sequences"] if s["table"] == "public.inv_child")
        assert identity["ok"] is True
        counts = dict((r["table"], r["rows"]) for r in report["row_counts"])
        assert counts == {"public.inv_parent": 6, "public.inv_child": 5}
    finally:
        sandbox.drop_table("inv_child")
        sandbox.drop_table("inv_parent")


def test_unique_keys_invariant_with_key_columns(sandbox):
    sandbox.drop_table("nokey_events")
    sandbox.create_table("CREATE TABLE nokey_events (event_id int, payload text)")
    try:
        sandbox.sql("primary", "INSERT INTO nokey_events VALUES (1, 'a'), (2, 'b'), (2, 'dup')")
        sandbox.wait_standby_caught_up()
        sandbox.wait_subscriber_caught_up()
        with pytest.raises(ParityFailure) as err:
            parity(sandbox, tables=["nokey_events"], key_columns={"nokey_events": ["event_id"]}, invariants=["unique_keys"])
        assert "duplicate keys in public.nokey_events" in err.value.msg
        # Without a key: a clear error, or a whole-table comparison when asked for.
        failure = failing(sandbox, tables=["nokey_events"])
        assert "table public.nokey_events has no primary key" in failure.msg and "key_columns" in failure.msg
        result = parity(sandbox, tables=["nokey_events"], on_missing_key="table_hash")
        assert result["in_sync"] is True
        assert table_result(result, "subscriber", "public.nokey_events")["rows_replica"] == 3
        sandbox.sql("subscriber", "DELETE FROM nokey_events WHERE payload = 'dup'", superuser=True)
        assert failing(sandbox, tables=["nokey_events"], on_missing_key="table_hash").result["in_sync"] is False
        skipped = parity(sandbox, tables=["nokey_events"], on_missing_key="skip")
        assert table_result(skipped, "standby", "public.nokey_events")["status"] == "skipped"
    finally:
        sandbox.drop_table("nokey_events")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(tables=["public.no_such_table"]), "table public.no_such_table does not exist on the primary"),
        (dict(tables=['orders; DROP TABLE customers']), 'table public."orders; drop table customers" does not exist'),
        (dict(tables=['a.b.c']), "malformed table name 'a.b.c'"),
        (dict(key_columns={"orders": ["nope"]}, tables=["orders"]), "key_columns for public.orders name columns that do not exist: nope"),
        (dict(key_columns={"customers": ["id"]}, tables=["orders"]), "key_columns names tables that are not compared: public.customers"),
        (dict(replicas=[]), "mode parity needs at least one entry in replicas"),
        (dict(mode="baseline_compare", baseline_path="/nonexistent/b.json"), "cannot read baseline_path /nonexistent/b.json"),
        (dict(mode="baseline_compare", baseline={"format": "other"}), "not a stateful.rollback baseline"),
    ],
)
def test_bad_input_gives_clear_error(sandbox, kwargs, fragment):
    failure = failing(sandbox, **kwargs)
    assert fragment in failure.msg
    assert sandbox.sql("primary", "SELECT count(*) FROM customers")[0][0] == 1000  # the victim survives


def test_unreachable_replica_and_wrong_password(sandbox):
    failure = failing(sandbox, replicas=[dict(name="ghost", login_host="127.0.0.1", login_port=1)])
    assert failure.msg.startswith("replica ghost: unable to connect to database:")
    wrong = dict(conn_options(sandbox.primary), login_password="not-the-password-42", mode="health", replicas=replicas(sandbox))
    with pytest.raises(ParityFailure) as err:
        run(wrong)
    assert err.value.msg.startswith("primary: unable to connect to database:")
    assert "password authentication failed" in err.value.msg
    assert "not-the-password-42" not in err.value.msg


def test_standby_given_as_primary_is_refused(sandbox):
    params = dict(conn_options(sandbox.standby), mode="parity", replicas=replicas(sandbox, ["subscriber"]))
    with pytest.raises(ParityFailure) as err:
        run(params)
    assert "is in recovery: point login_host/port at the primary" in err.value.msg
