# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tamper-evident, append-only audit log: a SHA-256 hash chain in a JSON-lines file or a table.

Record format (version 1 of roles/README.md, plus the chain fields)::

    {"v": 1, "seq": 7, "time": "2026-11-25T16:15:02.123Z", "run": "...", "playbook": "deploy.yml",
     "stage": "snapshot", "release": "2.1.0", "outcome": "ok", "actor": "deploy@ci-3 (AWX job 812)",
     "awx_job_id": "812", "started_at": "...", "ended_at": "...", "seconds": 1.9, "changed": true,
     "inputs_digest": "sha256:...", "details": {...}, "error": null,
     "prev_hash": "<hash of record 6, or 64 zeros for record 1>", "hash": "<64 hex>", "hmac": "<64 hex>"}

An appender may add ``figures`` (the stage's key figures, module_utils/metrics.py) after ``details``;
records without it are unchanged.

``hash`` is SHA-256 over the canonical JSON of the record without ``hash`` and
``hmac`` (keys sorted, separators ``,`` and ``:``, UTF-8, no ASCII escaping,
no NaN/Infinity); ``hmac`` (optional) is HMAC-SHA256 with a key kept outside
the store over the same bytes. A chain is either signed from its first record
or not at all: appending with a key to an unsigned chain, or without one to a
signed chain, is refused.

Appending takes an exclusive lock (``flock`` on the file; a transaction-level
advisory lock for the table), reads only the last record, refuses to link to
a last record that is incomplete or does not hash to its ``hash``, and writes
one record. Verifying walks the whole chain and reports the first broken link
with its position and the reason (see ``REASONS``).

What the chain detects, and what it cannot on its own: any edit, deletion,
reordering, duplication or removal of leading records is found. Removing
records from the end, or rewriting the whole chain with recomputed hashes, is
not - unless records carry an HMAC (the key never in the store) and/or the
last hash is kept somewhere else and compared.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import fcntl
import hashlib
import hmac as hmac_lib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Optional

from ansible_collections.stateful.rollback.plugins.module_utils.ledger import (
    LedgerError,
    check_schema_name,
    default_recorded_by,
)
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import sql, table_exists

try:
    from psycopg2 import errors as pg_errors
except ImportError:  # pragma: no cover - only without psycopg2 (the module reports it for the table store)
    pg_errors = None

FORMAT_VERSION = 1
ZERO_HASH = "0" * 64
OUTCOMES = ("ok", "failed", "skipped", "compensated", "approved", "refused", "overridden")
STORES = ("file", "table", "both")
TABLE = "audit_log"
DEFAULT_SCHEMA = "stateful_rollback"
# pg_advisory_xact_lock(LOCK_CLASS, hashtext('<schema>.audit_log')): 'SRAU' (stateful rollback audit).
LOCK_CLASS = 0x53524155
# Key names whose values never reach a record (searched case-insensitively anywhere in the name,
# at any depth). A superset of the audit role's stateful_rollback_audit_secret_keys.
SECRET_KEY_PATTERN = r"password|passwd|secret|token|api_?key|hmac_key|private_?key|credential"
_SECRET_KEY = re.compile(SECRET_KEY_PATTERN, re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@/\s]+@")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Field order of a stored record (readability only: hashes are over sorted keys).
FIELDS = (
    "v", "seq", "time", "run", "playbook", "stage", "release", "outcome", "actor", "awx_job_id",
    "started_at", "ended_at", "seconds", "changed", "inputs_digest", "details", "figures", "error",
    "prev_hash", "hash", "hmac",
)
UNHASHED = ("hash", "hmac")

# Reasons of a broken link (first_broken.reason).
REASONS = {
    "malformed": "the line or row is not a complete audit record (not JSON, duplicate keys, missing seq/prev_hash/hash)",
    "incomplete": "the last line does not end with a newline: an interrupted write",
    "edited": "the record does not hash to its hash: its content was changed after it was written",
    "hmac_missing": "an HMAC key was given but the record carries no hmac",
    "hmac_mismatch": "the record's hmac does not match: a wrong hmac_key, or the record was forged with a recomputed hash",
    "truncated": "the first record does not start the chain (seq 1, prev_hash zeros): records before it were removed",
    "deleted": "seq jumps forward and the missing records never appear: they were deleted",
    "reordered": "seq does not follow its predecessor and the missing records appear later: records were moved",
    "duplicated": "the same record appears twice in a row",
    "forked": "two different records carry the same seq and link to the same predecessor: concurrent writers without the lock",
    "replaced": "seq follows but prev_hash is not the hash of the record before it: that record was replaced or rewritten",
}

# The table: created by the module when missing, or beforehand by docs/sql/audit-log-privileges.sql
# (same definitions; tests/unit/plugins/module_utils/test_audit.py keeps them identical).
TABLE_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    "time" timestamptz NOT NULL,
    run text,
    stage text,
    release text,
    outcome text,
    actor text,
    prev_hash text NOT NULL UNIQUE CHECK (prev_hash ~ '^[0-9a-f]{{64}}$'),
    hash text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{{64}}$'),
    hmac text CHECK (hmac ~ '^[0-9a-f]{{64}}$'),
    record text NOT NULL
)"""
TRIGGER_FUNCTION_BODY = """
BEGIN
    RAISE EXCEPTION 'audit log %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'records are only ever inserted; the hash chain (stateful.rollback.audit_log state=verified) detects changes made around this trigger';
END
"""
FUNCTION_DDL = "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $audit$" + TRIGGER_FUNCTION_BODY + "$audit$"
ROW_TRIGGER_DDL = "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"
TRUNCATE_TRIGGER_DDL = "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
TRIGGERS = ("audit_log_append_only", "audit_log_no_truncate")
FUNCTION = "audit_log_append_only"
COLUMNS = ("seq", "time", "run", "stage", "release", "outcome", "actor", "prev_hash", "hash", "hmac", "record")
# Columns that repeat a field of the record (for queries); verification checks they agree with it.
MIRRORED = ("seq", "time", "run", "stage", "release", "outcome", "actor", "prev_hash", "hash", "hmac")


class AuditError(Exception):
    """A refusal or failure whose message is meant for the operator as it is."""


# --- canonical form, hashes ---------------------------------------------------------------------


def canonical_json(value):
    """The canonical bytes of ``value``: sorted keys, no whitespace, UTF-8, no NaN/Infinity."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise AuditError("cannot store a value that JSON cannot represent exactly: %s" % exc)
    except TypeError as exc:
        raise AuditError("cannot store a value that is not JSON: %s" % exc)
    return text.encode("utf-8")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def hashed_bytes(record):
    """The bytes that ``hash`` and ``hmac`` cover: the record without them, canonical."""
    return canonical_json({k: v for k, v in record.items() if k not in UNHASHED})


def record_hash(record):
    return sha256_hex(hashed_bytes(record))


def record_hmac(record, key):
    if isinstance(key, str):
        key = key.encode("utf-8")
    return hmac_lib.new(key, hashed_bytes(record), hashlib.sha256).hexdigest()


def inputs_digest(inputs):
    """``sha256:<hex>`` of the canonical JSON of ``inputs`` (None stays None). The inputs are never stored."""
    if inputs is None:
        return None
    return "sha256:" + sha256_hex(canonical_json(inputs))


def stored_line(record):
    """A record as one line of the file (and the ``record`` column): compact JSON in FIELDS order, with newline."""
    ordered = {k: record[k] for k in FIELDS if k in record}
    ordered.update((k, v) for k, v in record.items() if k not in ordered)
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"


# --- secrets ------------------------------------------------------------------------------------


def looks_secret(key):
    return bool(_SECRET_KEY.search(str(key)))


def strip_secrets(value, path="details"):
    """(value without secret-named keys at any depth and with URL passwords masked, [dropped key paths])."""
    dropped = []

    def clean(item, where):
        if isinstance(item, dict):
            out = {}
            for key, sub in item.items():
                here = "%s.%s" % (where, key)
                if looks_secret(key):
                    dropped.append(here)
                else:
                    out[str(key)] = clean(sub, here)
            return out
        if isinstance(item, (list, tuple)):
            return [clean(sub, "%s[%d]" % (where, index)) for index, sub in enumerate(item)]
        if isinstance(item, str):
            return _URL_PASSWORD.sub(r"\1:********@", item)
        return item

    return clean(value, path), dropped


# --- times --------------------------------------------------------------------------------------


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(value):
    """ISO 8601 UTC with milliseconds and Z, as the audit role writes it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?(Z|z|[+-]\d{2}:?\d{2})?$")


def parse_time(text, name):
    """A datetime (UTC when no offset is given) from ISO 8601 text; AuditError naming ``name`` otherwise."""
    match = _ISO.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise AuditError("%s must be an ISO 8601 time such as 2026-11-25T16:15:02.123Z, got %r" % (name, text))
    date, clock, fraction, zone = match.groups()
    if clock.count(":") == 1:
        clock += ":00"
    fraction = (fraction or ".0")[1:7].ljust(6, "0")
    if zone in (None, "Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        value = datetime.datetime.fromisoformat("%sT%s.%s%s" % (date, clock, fraction, zone))
    except ValueError as exc:
        raise AuditError("%s is not a valid time (%s): %r" % (name, exc, text))
    return value.astimezone(datetime.timezone.utc)


# --- building records ---------------------------------------------------------------------------


def awx_job_id(environ=None):
    """The AWX/AAP job id of this run, as default_recorded_by reads it (JOB_ID counts only with AWX_HOST)."""
    environ = os.environ if environ is None else environ
    if environ.get("AWX_JOB_ID"):
        return environ["AWX_JOB_ID"]
    if environ.get("JOB_ID") and environ.get("AWX_HOST"):
        return environ["JOB_ID"]
    return None


def default_actor(environ=None, hostname=None):
    """``user@host`` with the AWX job, exactly as the release ledger's recorded_by (one helper for both)."""
    return default_recorded_by(environ, hostname=hostname)


def new_entry(stage, outcome="ok", run=None, playbook=None, release=None, actor=None, job_id=None,
              started_at=None, ended_at=None, seconds=None, changed=False, details=None, error=None,
              inputs=None, now=None, environ=None, figures=None):
    """The record's content before chaining (no seq/prev_hash/hash), and the secret key paths dropped.

    ``time`` is ``now`` (UTC). ``ended_at`` defaults to ``time`` when ``started_at`` is given, and
    ``seconds`` to their difference. Secret-named keys of ``details`` and ``error`` are dropped.
    ``figures`` (the key figures of the stage, module_utils/metrics.py) is stored only when given.
    """
    if not isinstance(stage, str) or not stage.strip():
        raise AuditError("stage must be a non-empty name (preflight, snapshot, migrate, deploy, verify, rollback, run, ...)")
    if outcome not in OUTCOMES:
        raise AuditError("outcome must be one of %s, got %r" % (", ".join(OUTCOMES), outcome))
    if details is not None and not isinstance(details, dict):
        raise AuditError("details must be a dict, got %s" % type(details).__name__)
    if inputs is not None and not isinstance(inputs, dict):
        raise AuditError("inputs must be a dict, got %s" % type(inputs).__name__)
    if figures is not None and not isinstance(figures, dict):
        raise AuditError("figures must be a dict, got %s" % type(figures).__name__)
    if error is not None and not isinstance(error, (str, dict, list)):
        raise AuditError("error must be a string, a dict or a list, got %s" % type(error).__name__)
    now = now or utc_now()
    start = parse_time(started_at, "started_at") if started_at is not None else None
    end = parse_time(ended_at, "ended_at") if ended_at is not None else (now if start is not None else None)
    if start is not None and end is not None and end < start:
        raise AuditError("ended_at (%s) is before started_at (%s)" % (iso(end), iso(start)))
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise AuditError("seconds must be a non-negative number, got %r" % (seconds,))
    elif start is not None and end is not None:
        seconds = round((end - start).total_seconds(), 3)
    clean_details, dropped = strip_secrets(details or {}, "details")
    clean_error, dropped_error = strip_secrets(error, "error")
    entry = {
        "v": FORMAT_VERSION,
        "time": iso(now),
        "run": run,
        "playbook": playbook,
        "stage": stage,
        "release": release,
        "outcome": outcome,
        "actor": actor or default_actor(environ),
        "awx_job_id": job_id if job_id is not None else awx_job_id(environ),
        "started_at": iso(start) if start is not None else None,
        "ended_at": iso(end) if end is not None else None,
        "seconds": seconds,
        "changed": bool(changed),
        "inputs_digest": inputs_digest(inputs),
        "details": clean_details,
        "error": clean_error,
    }
    if figures is not None:
        entry["figures"] = figures
    canonical_json(entry)  # refuse NaN and the like now, with the message, not half-way through a write
    return entry, dropped + dropped_error


def chain(entry, last, hmac_key=None):
    """The record that follows ``last`` (None: the first record), with seq, prev_hash, hash (and hmac)."""
    record = {k: v for k, v in entry.items() if k not in ("seq", "prev_hash") + UNHASHED}
    record["seq"] = 1 if last is None else last["seq"] + 1
    record["prev_hash"] = ZERO_HASH if last is None else last["hash"]
    record["hash"] = record_hash(record)
    if hmac_key:
        record["hmac"] = record_hmac(record, hmac_key)
    return {k: record[k] for k in FIELDS if k in record}


def check_last(last, hmac_key, where):
    """Refuse to link to ``last`` unless it is a whole record that hashes right and is signed as we sign.

    ``where`` names it in messages (``line 12 of /x/audit.jsonl``).
    """
    if last is None:
        return
    problem = shape_problem(last)
    if problem:
        raise AuditError("cannot append: the last record (%s) is not an audit record (%s); run state=verified and repair "
                         "the store first" % (where, problem))
    if record_hash(last) != last["hash"]:
        raise AuditError("cannot append: the last record (%s, seq %s) does not hash to its hash - it was edited; run "
                         "state=verified to see the damage" % (where, last["seq"]))
    signed = "hmac" in last
    if hmac_key and not signed:
        raise AuditError("cannot append with hmac_key: the chain's records are not signed (last record %s, seq %s); a "
                         "chain is signed from its first record or not at all - start a new store to sign records"
                         % (where, last["seq"]))
    if signed and not hmac_key:
        raise AuditError("cannot append without hmac_key: the chain's records are signed (last record %s, seq %s); give "
                         "the same hmac_key" % (where, last["seq"]))
    if signed and not hmac_lib.compare_digest(str(last["hmac"]), record_hmac(last, hmac_key)):
        raise AuditError("cannot append: the last record's hmac (%s, seq %s) does not match hmac_key - a wrong key, or a "
                         "forged record" % (where, last["seq"]))


def shape_problem(record):
    """What makes ``record`` not a chained record (None when it is one)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    seq = record.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "seq is not a positive integer"
    for key in ("prev_hash", "hash"):
        if not isinstance(record.get(key), str) or not _HEX64.match(record[key]):
            return "%s is not 64 lower-case hex digits" % key
    return None


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key %r" % key)
        out[key] = value
    return out


def _no_constant(name):
    raise ValueError("%s is not allowed" % name)


def parse_record(text):
    """A record from its JSON text: ValueError for anything that is not one exact JSON object."""
    value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


# --- verification -------------------------------------------------------------------------------


@dataclass
class Break:
    position: int
    seq: Optional[int]
    reason: str
    detail: str

    def as_dict(self, store, unit):
        return {"store": store, "position": self.position, "unit": unit, "seq": self.seq, "reason": self.reason,
                "detail": self.detail}


@dataclass
class Verification:
    records: int = 0
    last_hash: Optional[str] = None
    last_seq: Optional[int] = None
    first_broken: Optional[Break] = None
    hmac_checked: bool = False

    @property
    def valid(self):
        return self.first_broken is None


class ChainVerifier:
    """Walks records in stored order (``feed``) and keeps the first broken link.

    A forward jump of ``seq`` (or a first record after seq 1) is settled later: when a skipped seq turns
    up further on the records were reordered, otherwise they were deleted (truncated). Memory stays constant.
    """

    def __init__(self, hmac_key=None):
        self.hmac_key = hmac_key
        self.result = Verification(hmac_checked=bool(hmac_key))
        self.prev = None
        self._gap = None  # (Break, lowest missing seq, highest missing seq) of a pending forward jump

    def _break(self, position, seq, reason, detail):
        if self.result.first_broken is None and self._gap is None:
            self.result.first_broken = Break(position, seq, reason, detail)

    def feed(self, position, record=None, problem=None):
        """One record (or, with ``problem`` = (reason, detail), a line or row that is not one)."""
        self.result.records += 1
        if problem is not None:
            self._break(position, None, problem[0], problem[1])
            self.prev = None
            self.result.last_hash = self.result.last_seq = None
            return
        shape = shape_problem(record)
        if shape:
            self._break(position, None, "malformed", "not an audit record: %s" % shape)
            self.prev = None
            self.result.last_hash = self.result.last_seq = None
            return
        seq = record["seq"]
        self.result.last_hash, self.result.last_seq = record["hash"], seq
        if self._gap is not None and self._gap[1] <= seq <= self._gap[2]:
            pending = self._gap[0]
            self._gap = None
            if self.result.first_broken is None:
                pending.reason = "reordered"
                pending.detail = ("records are out of order: seq %d comes before seq %d, which is at position %d"
                                  % (pending.seq, seq, position))
                self.result.first_broken = pending
        if self.result.first_broken is not None or self._gap is not None:
            self.prev = record
            return
        actual = record_hash(record)
        if actual != record["hash"]:
            self._break(position, seq, "edited", "content does not hash to its hash (%s...): changed after it was written"
                        % record["hash"][:12])
        elif self.hmac_key and "hmac" not in record:
            self._break(position, seq, "hmac_missing", "hmac_key given but the record carries no hmac")
        elif self.hmac_key and not (isinstance(record["hmac"], str)
                                    and hmac_lib.compare_digest(record["hmac"], record_hmac(record, self.hmac_key))):
            self._break(position, seq, "hmac_mismatch", "hmac does not match: a wrong hmac_key, or a forged record")
        else:
            self._link(position, record)
        self.prev = record

    def _link(self, position, record):
        seq, prev = record["seq"], self.prev
        if prev is None:  # the first record
            if seq != 1:
                # Truncated, unless the missing seqs turn up later (then reordered): settled by feed/finish.
                self._gap = (Break(position, seq, "truncated", "the first record has seq %d: %d record(s) before it are "
                                   "missing" % (seq, seq - 1)), 1, seq - 1)
            elif record["prev_hash"] != ZERO_HASH:
                self._break(position, seq, "truncated", "the first record's prev_hash is %s..., not zeros: records "
                            "before it are missing" % record["prev_hash"][:12])
            return
        expected = prev["seq"] + 1
        if seq == expected:
            if record["prev_hash"] != prev["hash"]:
                self._break(position, seq, "replaced", "prev_hash %s... is not the hash %s... of seq %d before it: that "
                            "record was replaced or rewritten" % (record["prev_hash"][:12], prev["hash"][:12], prev["seq"]))
        elif seq > expected:
            # Deleted, unless the missing seqs turn up later (then reordered): settled by feed/finish.
            self._gap = (Break(position, seq, "deleted", "seq jumps from %d to %d: record(s) %s missing"
                               % (prev["seq"], seq, _span(expected, seq - 1))), expected, seq - 1)
        elif seq == prev["seq"] and record["hash"] == prev["hash"]:
            self._break(position, seq, "duplicated", "the record of seq %d is repeated" % seq)
        elif seq == prev["seq"] and record["prev_hash"] == prev["prev_hash"]:
            self._break(position, seq, "forked", "two different records with seq %d follow the same record" % seq)
        else:
            self._break(position, seq, "reordered", "seq %d follows seq %d: records are out of order" % (seq, prev["seq"]))

    def finish(self):
        if self._gap is not None:
            if self.result.first_broken is None:
                self.result.first_broken = self._gap[0]
            self._gap = None
        return self.result


def _span(low, high):
    return str(low) if low == high else "%d-%d" % (low, high)


def verify_records(records, hmac_key=None):
    """Verify an in-memory list of records (positions are 1-based indexes)."""
    verifier = ChainVerifier(hmac_key)
    for position, record in enumerate(records, 1):
        verifier.feed(position, record)
    return verifier.finish()


def verification_dict(result, store, unit, **extra):
    out = {
        "store": store,
        "valid": result.valid,
        "records": result.records,
        "last_seq": result.last_seq,
        "last_hash": result.last_hash,
        "first_broken": result.first_broken.as_dict(store, unit) if result.first_broken else None,
        "hmac_checked": result.hmac_checked,
    }
    out.update(extra)
    return out


def broken_message(name, broken):
    """``audit log /x/audit.jsonl is broken at line 5 (seq 5): edited - ...``"""
    seq = "" if broken["seq"] is None else " (seq %s)" % broken["seq"]
    where = "%s %d%s" % (broken["unit"], broken["position"], seq)
    return "audit log %s is broken at %s: %s - %s" % (name, where, broken["reason"], broken["detail"])


# --- the file store -----------------------------------------------------------------------------


class FileStore:
    """A JSON-lines file; writers hold ``flock(LOCK_EX)`` on it, readers ``LOCK_SH``."""

    name = "file"
    unit = "line"

    def __init__(self, path):
        self.path = path

    def _line_count(self, fd):
        count, offset = 0, 0
        while True:
            chunk = os.pread(fd, 1 << 20, offset)
            if not chunk:
                return count
            count += chunk.count(b"\n")
            offset += len(chunk)

    def _last_line(self, fd):
        """(the last record or None, where) of an open file; AuditError when the last line is not whole."""
        size = os.fstat(fd).st_size
        if size == 0:
            return None, self.path
        if os.pread(fd, 1, size - 1) != b"\n":
            line = self._line_count(fd) + 1
            raise AuditError("cannot append to %s: its last line (%d) does not end with a newline - an interrupted "
                             "write. Run state=verified; if that line is a whole record, add the newline, otherwise "
                             "move it out of the file" % (self.path, line))
        # Read backwards from the final newline to the one before it.
        start = size - 1
        tail = b""
        while start > 0:
            step = min(1 << 16, start)
            start -= step
            chunk = os.pread(fd, step, start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                tail = chunk[cut + 1:] + tail
                break
            tail = chunk + tail
        try:
            record = parse_record(tail.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise AuditError("cannot append to %s: its last line (%d) is not a whole JSON record (%s) - a truncated "
                             "write? Run state=verified and repair the file first" % (self.path, self._line_count(fd), exc))
        return record, "the last line of %s" % self.path

    def last(self):
        """(last record or None, where) without writing (check mode); a missing file has none."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None, self.path
            raise AuditError("cannot read %s: %s" % (self.path, exc.strerror))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return self._last_line(fd)
        finally:
            os.close(fd)

    def append(self, entry, hmac_key=None, check_mode=False):
        """Chain ``entry`` after the last record and write it; returns (record, last record or None, created)."""
        if check_mode:
            last, where = self.last()
            check_last(last, hmac_key, where)
            return chain(entry, last, hmac_key), last, not os.path.exists(self.path)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, 0o750)
            except OSError as exc:
                if not os.path.isdir(directory):
                    raise AuditError("cannot create the directory of %s: %s" % (self.path, exc.strerror))
        flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        while True:
            created = False
            try:
                try:
                    fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o640)
                    created = True
                except FileExistsError:
                    fd = os.open(self.path, flags)
            except OSError as exc:
                raise AuditError("cannot open %s for appending: %s" % (self.path, exc.strerror))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # Another process may have replaced the file (rotation) while we waited for the lock.
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except OSError:
                    same = False
                if not same:
                    continue
                last, where = self._last_line(fd)
                check_last(last, hmac_key, where)
                record = chain(entry, last, hmac_key)
                data = stored_line(record).encode("utf-8")
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
                if created:
                    _fsync_directory(directory)
                return record, last, created
            finally:
                os.close(fd)  # also releases the lock

    def verify(self, hmac_key=None, missing_ok=False):
        try:
            handle = open(self.path, "rb")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                if missing_ok:
                    return verification_dict(Verification(hmac_checked=bool(hmac_key)), self.name, self.unit,
                                             exists=False, path=self.path)
                raise AuditError("audit log %s does not exist (set missing_ok=true to accept a log not written yet)"
                                 % self.path)
            raise AuditError("cannot read %s: %s" % (self.path, exc.strerror))
        verifier = ChainVerifier(hmac_key)
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            for line, raw in enumerate(handle, 1):
                verifier.feed(line, *_parse_line(raw))
        return verification_dict(verifier.finish(), self.name, self.unit, exists=True, path=self.path)


def _fsync_directory(directory):
    """Make a new file's directory entry durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_line(raw):
    """(record, None) or (None, (reason, detail)) for one raw line of the file."""
    if not raw.endswith(b"\n"):
        try:
            parse_record(raw.decode("utf-8"))
            whole = "the record is whole: add the newline to repair it"
        except ValueError:
            whole = "the record is cut short"
        return None, ("incomplete", "the last line does not end with a newline (an interrupted write); %s" % whole)
    if raw.strip() == b"":
        return None, ("malformed", "empty line")
    try:
        return parse_record(raw[:-1].decode("utf-8")), None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, ("malformed", "not a JSON record: %s" % exc)


# --- the table store ----------------------------------------------------------------------------


def table_name(schema):
    """``<schema>.audit_log`` when ``schema`` is a plain identifier; AuditError naming journal_schema otherwise."""
    try:
        return "%s.%s" % (check_schema_name(schema), TABLE)
    except LedgerError as exc:
        raise AuditError(str(exc))


class TableStore:
    """``<schema>.audit_log`` (``conn``: a psycopg2 connection in autocommit mode, as postgres.connect leaves it)."""

    name = "table"
    unit = "row"

    def __init__(self, conn, schema=DEFAULT_SCHEMA):
        self.conn = conn
        self.qualified = table_name(schema)
        self.schema = schema
        self.table = sql.Identifier(self.schema, TABLE)
        self.function = sql.Identifier(self.schema, FUNCTION)

    # -- plumbing --------------------------------------------------------------------------------
    def _transaction(self, work, read_only=False):
        """``work(cur)`` in one transaction (committed on success, rolled back on any error)."""
        conn = self.conn
        conn.autocommit = False
        conn.readonly = read_only
        try:
            with conn.cursor() as cur:
                result = work(cur)
            conn.commit()
            return result
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            if not conn.closed:
                conn.readonly = None
                conn.autocommit = True

    def _exists(self, cur):
        return table_exists(cur, self.schema, TABLE)

    def _lock(self, cur):
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, self.qualified))

    def _create(self, cur):
        cur.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (self.schema,))
        if cur.fetchone() is None:
            # Other writers of the schema (journal, ledger) do not take our lock: a concurrent
            # CREATE SCHEMA makes ours fail with a unique violation; then the schema exists.
            cur.execute("SAVEPOINT audit_schema")
            try:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            except pg_errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT audit_schema")
            cur.execute("RELEASE SAVEPOINT audit_schema")
        names = dict(table=self.table, function=self.function)
        cur.execute(sql.SQL(TABLE_DDL).format(**names))
        cur.execute(sql.SQL(FUNCTION_DDL).format(**names))
        cur.execute(sql.SQL(ROW_TRIGGER_DDL).format(**names))
        cur.execute(sql.SQL(TRUNCATE_TRIGGER_DDL).format(**names))
        cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(self.table),
                    ("stateful.rollback audit log (format 1): append-only, SHA-256 hash chain over the record column",))

    def _last(self, cur):
        cur.execute(sql.SQL("SELECT seq, record FROM {} ORDER BY seq DESC LIMIT 1").format(self.table))
        row = cur.fetchone()
        if row is None:
            return None, self.qualified
        where = "seq %s of %s" % (row[0], self.qualified)
        try:
            record = parse_record(row[1])
        except ValueError as exc:
            raise AuditError("cannot append to %s: the record of its last row (seq %s) is not a JSON record (%s); run "
                             "state=verified" % (self.qualified, row[0], exc))
        if record.get("seq") != row[0]:
            raise AuditError("cannot append to %s: the last row's seq column (%s) disagrees with its record (%r) - it "
                             "was edited; run state=verified" % (self.qualified, row[0], record.get("seq")))
        return record, where

    # -- operations ------------------------------------------------------------------------------
    def exists(self):
        return self._transaction(self._exists, read_only=True)

    def append(self, entry, hmac_key=None, check_mode=False):
        """Chain ``entry`` after the last row and insert it; returns (record, last record or None, created)."""

        def work(cur):
            created = False
            if not check_mode:
                self._lock(cur)
            if not self._exists(cur):
                if check_mode:
                    return chain(entry, None, hmac_key), None, True
                self._create(cur)
                created = True
            last, where = self._last(cur)
            check_last(last, hmac_key, where)
            record = chain(entry, last, hmac_key)
            if not check_mode:
                values = [record.get(c) for c in MIRRORED] + [stored_line(record)[:-1]]
                cur.execute(
                    sql.SQL("INSERT INTO {table} ({cols}) VALUES ({vals})").format(
                        table=self.table,
                        cols=sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS),
                        vals=sql.SQL(", ").join(sql.Placeholder() for dummy in COLUMNS),
                    ),
                    values,
                )
            return record, last, created

        return self._transaction(work, read_only=check_mode)

    def guard(self, cur):
        """Whether both append-only triggers exist and are enabled (the owner can disable them)."""
        cur.execute(
            "SELECT t.tgname FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND NOT t.tgisinternal AND t.tgenabled <> 'D'",
            (self.schema, TABLE),
        )
        enabled = {row[0] for row in cur.fetchall()}
        return all(name in enabled for name in TRIGGERS)

    def verify(self, hmac_key=None, missing_ok=False, batch=2000):
        def work(cur):
            if not self._exists(cur):
                if missing_ok:
                    return verification_dict(Verification(hmac_checked=bool(hmac_key)), self.name, self.unit,
                                             exists=False, table=self.qualified, append_only=None)
                raise AuditError("audit table %s does not exist (set missing_ok=true to accept a log not written yet)"
                                 % self.qualified)
            append_only = self.guard(cur)
            verifier = ChainVerifier(hmac_key)
            with self.conn.cursor(name="stateful_rollback_audit_verify") as rows:
                rows.itersize = batch
                rows.execute(sql.SQL("SELECT {cols} FROM {table} ORDER BY seq").format(
                    cols=sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS), table=self.table))
                for position, row in enumerate(rows, 1):
                    verifier.feed(position, *_parse_row(dict(zip(COLUMNS, row))))
            return verification_dict(verifier.finish(), self.name, self.unit, exists=True, table=self.qualified,
                                     append_only=append_only)

        return self._transaction(work, read_only=True)


def _parse_row(row):
    """(record, None) or (None, (reason, detail)) for one row: its record, checked against its columns."""
    try:
        record = parse_record(row["record"])
    except (TypeError, ValueError) as exc:
        return None, ("malformed", "the record column is not a JSON record: %s" % exc)
    for column in MIRRORED:
        stored, said = row[column], record.get(column)
        if column == "time":
            try:
                same = said is not None and stored == parse_time(said, "time")
            except AuditError:
                same = False
        else:
            same = stored == said
        if not same:
            detail = "column %s is %r but the row's record says %r: the row was changed after it was written" % (
                column, _show(stored), _show(said))
            return None, ("edited", detail)
    return record, None


def _show(value):
    return iso(value) if isinstance(value, datetime.datetime) else value


__all__ = [
    "AuditError",
    "ChainVerifier",
    "FileStore",
    "OUTCOMES",
    "REASONS",
    "STORES",
    "TableStore",
    "ZERO_HASH",
    "broken_message",
    "canonical_json",
    "chain",
    "check_last",
    "inputs_digest",
    "new_entry",
    "record_hash",
    "record_hmac",
    "strip_secrets",
    "verify_records",
]
