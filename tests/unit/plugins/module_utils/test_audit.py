# -*- coding: utf-8 -*-
"""Pure logic of module_utils/audit.py: canonical JSON, hashes, chains built and verified in memory,
tampering detected at the right position with the right reason, secret stripping, and the file store
on a temporary directory (the table store is in tests/integration/test_audit_log.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import hashlib
import hmac
import json
import os

import pytest

from ansible_collections.stateful.rollback.plugins.module_utils import audit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
NOW = datetime.datetime(2026, 11, 25, 16, 15, 2, 123456, tzinfo=datetime.timezone.utc)
ENV = {"USER": "deploy"}


def entry(stage="stage", **kwargs):
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("environ", ENV)
    return audit.new_entry(stage, **kwargs)[0]


def build(count, key=None):
    records, last = [], None
    for index in range(count):
        last = audit.chain(entry("stage-%d" % (index + 1), details={"n": index + 1}), last, key)
        records.append(last)
    return records


def rehash(record, key=None):
    """What a forger without the key does after an edit: recompute hash (and an hmac with ``key``)."""
    record = {k: v for k, v in record.items() if k not in ("hash", "hmac")}
    record["hash"] = audit.record_hash(record)
    if key:
        record["hmac"] = audit.record_hmac(record, key)
    return record


def broken(records, key=None):
    result = audit.verify_records(records, key)
    assert not result.valid
    return result.first_broken.position, result.first_broken.seq, result.first_broken.reason


# --- canonical JSON and hashes ---------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8():
    value = {"b": [1, 2.5, None, True], "a": {"z": "é€", "y": "line\u2028sep"}, "c": ""}
    assert audit.canonical_json(value) == '{"a":{"y":"line\u2028sep","z":"é€"},"b":[1,2.5,null,true],"c":""}'.encode("utf-8")
    assert audit.canonical_json({"b": 1, "a": 2}) == audit.canonical_json({"a": 2, "b": 1})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"x": float("-inf")}])
def test_canonical_json_refuses_values_json_cannot_hold(value):
    with pytest.raises(audit.AuditError, match="cannot store a value that JSON cannot represent exactly"):
        audit.canonical_json(value)


def test_hash_and_hmac_cover_the_record_without_hash_and_hmac():
    record = {"seq": 1, "prev_hash": audit.ZERO_HASH, "stage": "x", "hash": "ignored", "hmac": "ignored"}
    covered = b'{"prev_hash":"' + audit.ZERO_HASH.encode() + b'","seq":1,"stage":"x"}'
    assert audit.record_hash(record) == hashlib.sha256(covered).hexdigest()
    assert audit.record_hmac(record, "k3y") == hmac.new(b"k3y", covered, hashlib.sha256).hexdigest()


def test_inputs_digest_is_of_the_canonical_json_and_inputs_are_not_stored():
    inputs = {"replicas": 2, "db": {"login_password": "hunter2", "host": "db"}}
    expected = "sha256:" + hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert audit.inputs_digest(inputs) == expected
    assert audit.inputs_digest({"db": {"host": "db", "login_password": "hunter2"}, "replicas": 2}) == expected
    assert audit.inputs_digest(None) is None
    record = audit.chain(entry(inputs=inputs), None)
    assert record["inputs_digest"] == expected
    assert "hunter2" not in json.dumps(record) and "inputs" not in record


# --- records -----------------------------------------------------------------------------------


def test_new_entry_fields_times_and_defaults():
    made, dropped = audit.new_entry("snapshot", outcome="compensated", run="r1", playbook="deploy.yml", release="2.1.0",
                                    started_at="2026-11-25T17:15:00.120+01:00", changed=True, details={"lsn": "0/1"},
                                    now=NOW, environ={"USER": "deploy", "AWX_JOB_ID": "812"})
    assert dropped == []
    assert made == {
        "v": 1, "time": "2026-11-25T16:15:02.123Z", "run": "r1", "playbook": "deploy.yml", "stage": "snapshot",
        "release": "2.1.0", "outcome": "compensated", "actor": made["actor"], "awx_job_id": "812",
        "started_at": "2026-11-25T16:15:00.120Z", "ended_at": "2026-11-25T16:15:02.123Z", "seconds": 2.003,
        "changed": True, "inputs_digest": None, "details": {"lsn": "0/1"}, "error": None,
    }
    assert made["actor"].startswith("deploy@") and made["actor"].endswith(" (AWX job 812)")
    plain = audit.new_entry("x", now=NOW, environ={"USER": "u", "JOB_ID": "7"})[0]
    assert plain["awx_job_id"] is None and plain["actor"].endswith(" (job 7)")  # not AWX without AWX_HOST
    assert audit.new_entry("x", now=NOW, environ={"USER": "u", "JOB_ID": "7", "AWX_HOST": "h"})[0]["awx_job_id"] == "7"
    given = audit.new_entry("x", actor="alice", job_id="9", started_at="2026-11-25T16:00:00Z",
                            ended_at="2026-11-25 16:00:30", seconds=12.5, now=NOW, environ=ENV)[0]
    assert (given["actor"], given["awx_job_id"], given["seconds"], given["ended_at"]) == ("alice", "9", 12.5, "2026-11-25T16:00:30.000Z")
    assert audit.new_entry("x", now=NOW, environ=ENV)[0]["details"] == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"stage": " "}, "stage must be a non-empty name"),
    ({"outcome": "done"}, "outcome must be one of ok, failed, skipped, compensated, approved, refused, overridden"),
    ({"started_at": "yesterday"}, "started_at must be an ISO 8601 time"),
    ({"started_at": "2026-13-40T00:00:00Z"}, "started_at is not a valid time"),
    ({"started_at": "2026-11-25T16:15:00Z", "ended_at": "2026-11-25T16:14:00Z"}, "ended_at (2026-11-25T16:14:00.000Z) is before started_at"),
    ({"seconds": -1}, "seconds must be a non-negative number"),
    ({"seconds": float("inf")}, "seconds must be a non-negative number"),
    ({"seconds": float("nan")}, "seconds must be a non-negative number"),
    ({"details": ["x"]}, "details must be a dict, got list"),
    ({"inputs": "x"}, "inputs must be a dict, got str"),
    ({"error": 3}, "error must be a string, a dict or a list, got int"),
    ({"details": {"ratio": float("nan")}}, "cannot store a value that JSON cannot represent exactly"),
])
def test_new_entry_refuses_bad_fields(kwargs, message):
    kwargs = dict(kwargs)
    stage = kwargs.pop("stage", "x")
    with pytest.raises(audit.AuditError) as info:
        audit.new_entry(stage, now=NOW, environ=ENV, **kwargs)
    assert message in str(info.value)


def test_chain_links_records():
    first, second = build(2)
    assert (first["seq"], first["prev_hash"]) == (1, audit.ZERO_HASH)
    assert (second["seq"], second["prev_hash"]) == (2, first["hash"])
    assert first["hash"] == audit.record_hash(first) and "hmac" not in first
    assert list(first) == [k for k in audit.FIELDS if k in first]
    signed = audit.chain(entry(), first, "key")
    assert signed["hmac"] == audit.record_hmac(signed, "key")


# --- secrets -----------------------------------------------------------------------------------


def test_strip_secrets_recursively_and_reports_the_paths():
    details = {
        "password": "p", "DB_PASSWD": "p", "client_secret": "s", "token": "t", "api_key": "k", "ApiKey": "k",
        "hmac_key": "h", "private_key": "pk", "credentials": {"x": 1},
        "db": {"login_password": "p", "host": "db", "replicas": [{"name": "r", "Token": "t"}, "plain"]},
        "url": "postgresql://app:app-secret@db:5432/app", "keyspace": "k1", "monkey": 1,
    }
    clean, dropped = audit.strip_secrets(details)
    assert clean == {"db": {"host": "db", "replicas": [{"name": "r"}, "plain"]},
                     "url": "postgresql://app:********@db:5432/app", "keyspace": "k1", "monkey": 1}
    assert dropped == ["details.password", "details.DB_PASSWD", "details.client_secret", "details.token", "details.api_key",
                       "details.ApiKey", "details.hmac_key", "details.private_key", "details.credentials",
                       "details.db.login_password", "details.db.replicas[0].Token"]
    assert "app-secret" not in json.dumps(clean)


def test_new_entry_strips_details_and_error():
    made, dropped = audit.new_entry("x", details={"token": "t", "ok": 1}, error={"msg": "boom", "password": "p"},
                                    now=NOW, environ=ENV)
    assert made["details"] == {"ok": 1} and made["error"] == {"msg": "boom"}
    assert dropped == ["details.token", "error.password"]
    assert audit.new_entry("x", error="failed: https://u:pw@h/x", now=NOW, environ=ENV)[0]["error"] == "failed: https://u:********@h/x"


# --- verification in memory --------------------------------------------------------------------


def test_intact_chains_verify():
    for count in (0, 1, 7):
        records = build(count)
        result = audit.verify_records(records)
        assert result.valid and result.records == count and not result.hmac_checked
        assert result.last_hash == (records[-1]["hash"] if count else None)
    records = build(5, key="k")
    result = audit.verify_records(records, "k")
    assert result.valid and result.hmac_checked and result.last_seq == 5 and result.last_hash == records[-1]["hash"]
    assert audit.verify_records(records).valid  # without the key: hashes only


@pytest.mark.parametrize("index", [0, 3, 6])
def test_edit_is_found_where_it_happened(index):
    records = build(7)
    records[index]["outcome"] = "failed"
    assert broken(records) == (index + 1, index + 1, "edited")


def test_edit_with_a_recomputed_hash_breaks_the_next_link_or_the_hmac():
    records = build(5)
    records[2] = rehash(dict(records[2], outcome="failed"))
    assert broken(records) == (4, 4, "replaced")
    signed = build(5, key="k")
    signed[2] = rehash(dict(signed[2], outcome="failed"), key="not-the-key")
    assert broken(signed, "k") == (3, 3, "hmac_mismatch")


def test_last_record_edited_with_recomputed_hash_needs_the_hmac():
    records = build(4, key="k")
    records[3] = rehash(dict(records[3], outcome="approved"))  # forger drops the hmac he cannot make
    assert audit.verify_records(records).valid  # a hash chain alone cannot see this
    assert broken(records, "k") == (4, 4, "hmac_missing")


@pytest.mark.parametrize("deleted, expected", [([2], (3, 4, "deleted")), ([3, 4, 5], (4, 7, "deleted")), ([6], None)])
def test_deletion_is_found_at_the_gap(deleted, expected):
    records = [r for r in build(7) if r["seq"] - 1 not in deleted]
    if expected is None:  # removing the last record: invisible to the chain, by design (see last_hash)
        assert audit.verify_records(records).valid
    else:
        assert broken(records) == expected
        assert "missing" in audit.verify_records(records).first_broken.detail


def test_reordering_is_found_where_the_order_breaks():
    records = build(6)
    swapped = records[:2] + [records[3], records[2]] + records[4:]
    assert broken(swapped) == (3, 4, "reordered")
    moved_to_end = [records[0]] + records[2:] + [records[1]]
    assert broken(moved_to_end) == (2, 3, "reordered")
    moved_to_front = [records[4]] + records[:4] + records[5:]
    assert broken(moved_to_front) == (1, 5, "reordered")
    backwards = records[:4] + [records[1]]
    assert broken(backwards) == (5, 2, "reordered")


def test_truncate_then_append_is_found_at_the_first_record():
    records = build(6)
    kept = records[3:]
    kept.append(audit.chain(entry("appended later"), kept[-1]))
    assert broken(kept) == (1, 4, "truncated")
    assert "3 record(s) before it are missing" in audit.verify_records(kept).first_broken.detail
    # A first record that claims seq 1 but links to something.
    fake = rehash(dict(records[0], prev_hash="a" * 64))
    assert broken([fake] + records[1:]) == (1, 1, "truncated")


def test_wrong_key_and_forged_records():
    records = build(3, key="right")
    assert broken(records, "wrong") == (1, 1, "hmac_mismatch")
    unsigned = build(3)
    assert broken(unsigned, "right") == (1, 1, "hmac_missing")
    forged = copy.deepcopy(records)
    forged[1]["hmac"] = "0" * 64
    assert broken(forged, "right") == (2, 2, "hmac_mismatch")
    forged[1]["hmac"] = 42
    assert broken(forged, "right") == (2, 2, "hmac_mismatch")


def test_duplicates_forks_and_malformed_records():
    records = build(4)
    assert broken(records[:3] + [records[2]] + records[3:]) == (4, 3, "duplicated")
    fork = audit.chain(entry("other writer"), records[1])
    assert broken(records[:3] + [fork] + records[3:]) == (4, 3, "forked")
    for bad in ({"seq": "1"}, {"seq": True}, dict(records[1], hash="XYZ"), dict(records[1], prev_hash=None), []):
        result = audit.verify_records(records[:1] + [bad] + records[1:])
        assert (result.first_broken.position, result.first_broken.reason) == (2, "malformed")


def test_verifier_reports_only_the_first_break_and_counts_all():
    records = build(8)
    records[1]["stage"] = "edited"
    records[5]["stage"] = "edited too"
    result = audit.verify_records(records)
    assert (result.first_broken.position, result.records, result.last_seq) == (2, 8, 8)


# --- appending: the last record -------------------------------------------------------------------


def test_check_last_refuses_what_it_must_not_link_to():
    unsigned, signed = build(2)[-1], build(2, key="k")[-1]
    audit.check_last(None, None, "x")
    audit.check_last(unsigned, None, "x")
    audit.check_last(signed, "k", "x")
    cases = [
        (dict(unsigned, stage="edited"), None, "does not hash to its hash - it was edited"),
        (unsigned, "k", "cannot append with hmac_key: the chain's records are not signed"),
        (signed, None, "cannot append without hmac_key: the chain's records are signed"),
        (signed, "other", "does not match hmac_key - a wrong key, or a forged record"),
        ({"seq": 0}, None, "is not an audit record (seq is not a positive integer)"),
    ]
    for last, key, message in cases:
        with pytest.raises(audit.AuditError) as info:
            audit.check_last(last, key, "line 2 of f")
        assert message in str(info.value), str(info.value)


# --- the file store ----------------------------------------------------------------------------


def write_lines(path, records):
    path.write_text("".join(audit.stored_line(r) for r in records), encoding="utf-8")


def test_file_store_appends_and_verifies(tmp_path):
    path = tmp_path / "deep" / "dir" / "audit.jsonl"
    store = audit.FileStore(str(path))
    made = []
    for index in range(3):
        record, last, created = store.append(entry("s%d" % index, details={"sep": "a\u2028b\nc"}), hmac_key="k")
        assert created is (index == 0) and (last is None) is (index == 0)
        made.append(record)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert [json.loads(line) for line in lines[:-1]] == made
    assert oct(path.stat().st_mode & 0o777) in (oct(0o640 & ~_umask()), oct(0o640))
    result = store.verify(hmac_key="k")
    assert (result["valid"], result["records"], result["last_hash"], result["exists"]) == (True, 3, made[-1]["hash"], True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_file_store_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "new" / "audit.jsonl"
    store = audit.FileStore(str(path))
    record, last, created = store.append(entry(), check_mode=True)
    assert (record["seq"], last, created) == (1, None, True)
    assert not (tmp_path / "new").exists()
    store.append(entry())
    before = path.read_bytes()
    record, last, created = store.append(entry(), check_mode=True)
    assert (record["seq"], last["seq"], created) == (2, 1, False) and path.read_bytes() == before


def test_file_store_refuses_to_append_after_a_truncated_write(tmp_path):
    path = tmp_path / "audit.jsonl"
    records = build(3)
    write_lines(path, records)
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])  # the last write was cut short
    store = audit.FileStore(str(path))
    with pytest.raises(audit.AuditError) as info:
        store.append(entry())
    assert "its last line (3) does not end with a newline - an interrupted write" in str(info.value)
    assert path.read_bytes() == whole[:-25]
    result = store.verify()
    assert result["first_broken"]["position"] == 3 and result["first_broken"]["reason"] == "incomplete"
    assert "the record is cut short" in result["first_broken"]["detail"]
    path.write_bytes(whole[:-1])  # only the newline is missing: the record is whole
    assert "add the newline to repair it" in store.verify()["first_broken"]["detail"]
    path.write_bytes(whole + b'{"seq": 4, "stage": "no hash"}\n')
    with pytest.raises(audit.AuditError, match="is not an audit record"):
        store.append(entry())
    path.write_bytes(whole + b'{"seq": 4,\n')
    with pytest.raises(audit.AuditError, match=r"its last line \(4\) is not a whole JSON record"):
        store.append(entry())


def test_file_store_reports_malformed_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    records = build(3)
    lines = [audit.stored_line(r) for r in records]
    store = audit.FileStore(str(path))
    for bad, detail in [("\n", "empty line"), ("not json\n", "not a JSON record"),
                        ('{"seq": 2, "seq": 2}\n', "duplicate key 'seq'"), ("[1]\n", "not a JSON object"),
                        ('{"x": NaN}\n', "NaN is not allowed")]:
        path.write_text(lines[0] + bad + "".join(lines[1:]), encoding="utf-8")
        result = store.verify()
        assert (result["first_broken"]["position"], result["first_broken"]["reason"]) == (2, "malformed")
        assert detail in result["first_broken"]["detail"]
        assert result["records"] == 4


def test_file_store_missing_and_empty(tmp_path):
    store = audit.FileStore(str(tmp_path / "audit.jsonl"))
    with pytest.raises(audit.AuditError, match="does not exist \\(set missing_ok=true"):
        store.verify()
    assert store.verify(missing_ok=True) == {"store": "file", "valid": True, "records": 0, "last_seq": None, "last_hash": None,
                                             "first_broken": None, "hmac_checked": False, "exists": False,
                                             "path": str(tmp_path / "audit.jsonl")}
    (tmp_path / "audit.jsonl").write_bytes(b"")
    assert store.verify()["valid"] is True and store.verify()["records"] == 0
    record = store.append(entry())[0]
    assert record["seq"] == 1


def test_file_store_last_line_of_a_long_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    store = audit.FileStore(str(path))
    store.append(entry(details={"blob": "x" * 200000}))
    record = store.append(entry(details={"blob": "y" * 70000}))[0]
    assert store.append(entry())[1] == record


def test_broken_message_names_position_and_reason():
    records = build(3)
    records[1]["stage"] = "x"
    verification = audit.verification_dict(audit.verify_records(records), "file", "line", path="/x/audit.jsonl")
    assert audit.broken_message("/x/audit.jsonl", verification["first_broken"]).startswith(
        "audit log /x/audit.jsonl is broken at line 2 (seq 2): edited - ")


# --- the table's definitions -------------------------------------------------------------------


def test_privileges_script_creates_what_the_module_creates():
    with open(os.path.join(REPO, "docs", "sql", "audit-log-privileges.sql"), encoding="utf-8") as handle:
        script = handle.read()
    names = dict(table=':"schema".audit_log', function=':"schema".audit_log_append_only')
    for ddl in (audit.TABLE_DDL, audit.FUNCTION_DDL, audit.ROW_TRIGGER_DDL, audit.TRUNCATE_TRIGGER_DDL):
        assert ddl.format(**names) + ";" in script, ddl
    assert "GRANT INSERT, SELECT ON :\"schema\".audit_log TO :\"executor\";" in script
    assert "REVOKE UPDATE, DELETE, TRUNCATE ON :\"schema\".audit_log FROM PUBLIC;" in script


def test_rows_are_checked_against_their_record():
    record = build(1)[0]
    row = {c: record.get(c) for c in audit.MIRRORED}
    row.update(time=audit.parse_time(record["time"], "time"), record=audit.stored_line(record)[:-1])
    assert audit._parse_row(row) == (record, None)
    assert audit._parse_row(dict(row, outcome="failed"))[1][0] == "edited"
    assert "column outcome is 'failed' but the row's record says 'ok'" in audit._parse_row(dict(row, outcome="failed"))[1][1]
    assert audit._parse_row(dict(row, time=NOW + datetime.timedelta(seconds=1)))[1][0] == "edited"
    assert audit._parse_row(dict(row, record="{"))[1][0] == "malformed"


def test_table_name_is_checked():
    assert audit.table_name("stateful_rollback_audit") == "stateful_rollback_audit.audit_log"
    with pytest.raises(audit.AuditError, match="is not a valid schema name"):
        audit.table_name("x; DROP TABLE y")
