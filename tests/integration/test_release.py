# -*- coding: utf-8 -*-
"""stateful.rollback.release against the real sandbox primary: the release ledger
(recorded, promoted, info), check and diff modes, tamper refusal, concurrent
writers in separate processes, and one run through ansible-playbook."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import testkit
import yaml

from ansible_collections.stateful.rollback.plugins.module_utils.manifest import load_release
from ansible_collections.stateful.rollback.plugins.modules import release as release_module

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
RELEASES = os.path.join(REPO, "tests", "data", "releases")
V1 = os.path.join(RELEASES, "demo-1.0.0", "release.yml")
V2 = os.path.join(RELEASES, "demo-2.0.0", "release.yml")
MODULE_FILE = os.path.join(REPO, "plugins", "modules", "release.py")
DEFAULT_SCHEMA = "stateful_rollback"
_SCHEMAS = itertools.count(1)


@pytest.fixture(scope="module")
def ledger_db(sandbox):
    """The sandbox primary; every ledger schema the tests made is dropped at the end."""
    made = []
    sandbox.sql("primary", "DROP TABLE IF EXISTS stateful_rollback.release_ledger")
    yield made
    for schema in made + [DEFAULT_SCHEMA]:
        sandbox.sql("primary", 'DROP SCHEMA IF EXISTS "%s" CASCADE' % schema)


@pytest.fixture
def schema(ledger_db):
    """A ledger schema of the test's own (independent of test order)."""
    name = "sr_release_test_%d_%d" % (os.getpid(), next(_SCHEMAS))
    ledger_db.append(name)
    return name


def conn_options(sandbox, **extra):
    return testkit.login_options(sandbox.primary, **extra)


def run_module(capsys, args, check_mode=False, diff=False):
    return testkit.run_module(capsys, release_module, args, check_mode=check_mode, diff=diff)


def ledger(capsys, sandbox, schema, check_mode=False, diff=False, **args):
    return run_module(capsys, conn_options(sandbox, journal_schema=schema, recorded_by="tester@ci", **args),
                      check_mode=check_mode, diff=diff)


def rows(sandbox, schema):
    return sandbox.sql("primary", 'SELECT version, outcome, known_good, snapshots, history FROM "%s".release_ledger ORDER BY id' % schema)


def schema_exists(sandbox, schema):
    return bool(sandbox.sql("primary", "SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]))


def copy_release(tmp_path, name="demo-1.0.0"):
    target = tmp_path / name
    shutil.copytree(os.path.join(RELEASES, name), str(target))
    return target


# --- without a database ---------------------------------------------------------------


def test_validated_needs_no_database(capsys):
    result = run_module(capsys, {"state": "validated", "manifest": V2, "login_port": 1})
    assert result.get("failed") is not True, result
    assert result["changed"] is False and result["state"] == "validated"
    assert result["manifest"]["version"] == "2.0.0"
    assert result["manifest"]["digest"] == load_release(V2).digest
    assert result["manifest"]["images"]["StatefulSet/worker/worker"] == "sha256:" + "4" * 64
    assert [m["id"] for m in result["manifest"]["migrations"]] == ["002-customer-full-name", "003-drop-legacy-audit"]


def test_validated_lists_every_error(capsys, tmp_path):
    bad = tmp_path / "release.yml"
    bad.write_text(yaml.safe_dump({
        "version": "2.0.0", "color": "blue",
        "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": "demo:2.0"}}]},
        "migrations": [{"id": "001", "up": "../../etc/passwd", "irreversible": True}],
    }))
    result = run_module(capsys, {"state": "validated", "manifest": str(bad)})
    assert result["failed"] is True
    assert result["errors"] == [
        "app.workloads[0].containers.web: image 'demo:2.0' is not pinned by digest (expected <repo>[:<tag>]@sha256:<64 hex>)",
        "color: unknown field (allowed: app, feature_flags, health_checks, invariants, migrations, version)",
        "migrations[0].reason: required when irreversible is true: say why it cannot be undone",
        "migrations[0].up: '../../etc/passwd' resolves to %s, outside the manifest's directory %s"
        % (os.path.realpath(str(tmp_path / "../../etc/passwd")), os.path.realpath(str(tmp_path))),
    ]
    assert result["msg"].startswith("%s is not a valid release manifest (4 errors): app.workloads[0]" % bad)


def test_bad_schema_name_is_refused_before_connecting(capsys):
    result = run_module(capsys, {"state": "info", "journal_schema": "x; DROP TABLE y", "login_port": 1})
    assert result["failed"] is True and "journal_schema 'x; DROP TABLE y' is not a valid schema name" in result["msg"]


# --- the ledger -------------------------------------------------------------------------


def test_info_before_the_ledger_exists_creates_nothing(capsys, sandbox, schema):
    result = ledger(capsys, sandbox, schema, state="info", version="1.0.0")
    assert result.get("failed") is not True, result
    assert result["changed"] is False and result["exists"] is False
    assert result["current"] is None and result["last_known_good"] is None
    assert result["history"] == [] and result["release"] is None
    assert result["ledger"] == "%s.release_ledger" % schema
    assert not schema_exists(sandbox, schema)


def test_recorded_then_unchanged(capsys, sandbox, schema):
    first = ledger(capsys, sandbox, schema, state="recorded", manifest=V1, snapshots=["snap-a"], baseline_path="/tmp/b.json")
    assert first.get("failed") is not True, first
    assert first["changed"] is True and first["state"] == "recorded"
    row = first["release"]
    manifest = load_release(V1)
    assert row["version"] == "1.0.0" and row["outcome"] == "pending" and row["known_good"] is False
    assert row["manifest_digest"] == manifest.digest and row["manifest_path"] == V1
    assert row["image_digests"] == {"Deployment/web/web": "sha256:" + "1" * 64}
    assert row["migration_checksums"] == manifest.checksums()
    assert row["manifest"]["migrations"][0]["id"] == "001-customer-nickname" and "path" not in row["manifest"]
    assert row["snapshots"] == ["snap-a"] and row["baseline_path"] == "/tmp/b.json"
    assert row["recorded_by"] == "tester@ci" and row["recorded_at"].endswith("Z") and row["promoted_at"] is None
    assert [(e["event"], e["outcome"], e["by"]) for e in row["history"]] == [("recorded", "pending", "tester@ci")]
    assert first["changes"] == ["recorded 1.0.0 (%s)" % manifest.digest, "snapshots + snap-a", "baseline_path None -> /tmp/b.json"]
    again = ledger(capsys, sandbox, schema, state="recorded", manifest=V1, snapshots=["snap-a"], baseline_path="/tmp/b.json")
    assert again["changed"] is False and again["changes"] == [] and again["release"] == row
    # The version alone (no manifest) addresses the recorded release as well.
    by_version = ledger(capsys, sandbox, schema, state="recorded", version="1.0.0", snapshots=["snap-a"])
    assert by_version["changed"] is False
    assert len(rows(sandbox, schema)) == 1


def test_a_changed_manifest_is_refused(capsys, sandbox, schema, tmp_path):
    copy = copy_release(tmp_path)
    recorded = ledger(capsys, sandbox, schema, state="recorded", manifest=str(copy / "release.yml"))
    assert recorded["changed"] is True
    digest = recorded["release"]["manifest_digest"]
    script = copy / "migrations" / "001-customer-nickname.up.sql"
    script.write_text(script.read_text() + "UPDATE customers SET nickname = 'x';\n")
    now = load_release(str(copy / "release.yml")).digest
    refused = ledger(capsys, sandbox, schema, state="recorded", manifest=str(copy / "release.yml"), outcome="deployed")
    assert refused["failed"] is True
    assert refused["msg"] == (
        "release 1.0.0 is already recorded with digest %s, the manifest now hashes to %s; a release is immutable - "
        "bump the version" % (digest, now)
    )
    promote = ledger(capsys, sandbox, schema, state="promoted", manifest=str(copy / "release.yml"))
    assert promote["failed"] is True and "cannot promote 1.0.0: it is recorded with digest %s" % digest in promote["msg"]
    info = ledger(capsys, sandbox, schema, state="info", manifest=str(copy / "release.yml"))
    assert info["manifest_matches"] is False and info["release"]["manifest_digest"] == digest
    assert rows(sandbox, schema)[0][1] == "pending"  # nothing was written


def test_version_must_match_the_manifest(capsys, sandbox, schema):
    result = ledger(capsys, sandbox, schema, state="recorded", manifest=V1, version="1.0.1")
    assert result["failed"] is True and result["msg"].startswith("version 1.0.1 does not match the manifest's version 1.0.0")
    unknown = ledger(capsys, sandbox, schema, state="recorded", version="7.0.0", outcome="deployed")
    assert unknown["failed"] is True
    assert unknown["msg"] == "release 7.0.0 is not recorded in %s.release_ledger; give its manifest to record it" % schema


def test_check_mode_writes_nothing(capsys, sandbox, schema):
    fresh = ledger(capsys, sandbox, schema, state="recorded", manifest=V2, outcome="deployed", check_mode=True, diff=True)
    assert fresh.get("failed") is not True, fresh
    assert fresh["changed"] is True and fresh["release"]["outcome"] == "deployed" and fresh["release"]["id"] is None
    assert fresh["diff"]["before"] == {} and fresh["diff"]["after"]["version"] == "2.0.0"
    assert not schema_exists(sandbox, schema)  # not even the schema
    ledger(capsys, sandbox, schema, state="recorded", manifest=V2)
    before = rows(sandbox, schema)
    change = ledger(capsys, sandbox, schema, state="recorded", version="2.0.0", outcome="failed", snapshots=["s1"], check_mode=True)
    assert change["changed"] is True and change["changes"] == ["outcome pending -> failed", "snapshots + s1"]
    assert change["release"]["outcome"] == "failed" and change["release"]["snapshots"] == ["s1"]
    promote = ledger(capsys, sandbox, schema, state="promoted", version="2.0.0", check_mode=True)
    assert promote["changed"] is True and promote["release"]["known_good"] is True
    assert rows(sandbox, schema) == before


def test_outcomes_snapshots_history_and_diff(capsys, sandbox, schema):
    ledger(capsys, sandbox, schema, state="recorded", manifest=V2, snapshots=["pre-a"], note="release train 12")
    deployed = ledger(capsys, sandbox, schema, state="recorded", version="2.0.0", outcome="deployed",
                      snapshots=["pre-a", "pre-b", "pre-b"], note="rolled out", diff=True)
    assert deployed["changed"] is True
    assert deployed["changes"] == ["outcome pending -> deployed", "snapshots + pre-b"]
    before, after = deployed["diff"]["before"], deployed["diff"]["after"]
    assert (before["outcome"], after["outcome"]) == ("pending", "deployed")
    assert (before["snapshots"], after["snapshots"]) == (["pre-a"], ["pre-a", "pre-b"])
    assert after == deployed["release"]
    events = after["history"]
    assert [(e["event"], e["outcome"], e["note"]) for e in events] == [
        ("recorded", "pending", "release train 12"),
        ("outcome", "deployed", "rolled out"),
        ("snapshots", "deployed", "rolled out"),
    ]
    assert events[2]["snapshots"] == ["pre-b"] and events[0]["at"] <= events[1]["at"]
    same = ledger(capsys, sandbox, schema, state="recorded", version="2.0.0", outcome="deployed", snapshots=["pre-b"], diff=True)
    assert same["changed"] is False and "diff" not in same
    promoted = ledger(capsys, sandbox, schema, state="promoted", version="2.0.0")
    assert promoted["release"]["known_good"] is True
    rolled = ledger(capsys, sandbox, schema, state="recorded", version="2.0.0", outcome="rolled_back", note="INC-7")
    assert rolled["changes"] == ["outcome verified -> rolled_back", "known_good true -> false"]
    assert rolled["release"]["known_good"] is False and rolled["release"]["history"][-1]["note"] == "INC-7"


def test_promoted(capsys, sandbox, schema):
    ledger(capsys, sandbox, schema, state="recorded", manifest=V1, outcome="deployed")
    promoted = ledger(capsys, sandbox, schema, state="promoted", version="1.0.0", note="smoke green", diff=True)
    assert promoted.get("failed") is not True, promoted
    assert promoted["changed"] is True and promoted["changes"] == ["outcome deployed -> verified", "known_good false -> true"]
    row = promoted["release"]
    assert row["outcome"] == "verified" and row["known_good"] is True
    assert row["promoted_by"] == "tester@ci" and row["promoted_at"].endswith("Z")
    assert row["history"][-1] == {"event": "promoted", "outcome": "verified", "at": row["promoted_at"], "by": "tester@ci", "note": "smoke green"}
    assert promoted["diff"]["before"]["known_good"] is False
    again = ledger(capsys, sandbox, schema, state="promoted", manifest=V1)
    assert again["changed"] is False and again["release"] == row
    missing = ledger(capsys, sandbox, schema, state="promoted", version="9.9.9")
    assert missing["failed"] is True
    assert missing["msg"] == "cannot promote 9.9.9: it is not recorded in %s.release_ledger (record it with state=recorded first)" % schema
    ledger(capsys, sandbox, schema, state="recorded", manifest=V2, outcome="rolled_back")
    refused = ledger(capsys, sandbox, schema, state="promoted", version="2.0.0")
    assert refused["failed"] is True and refused["msg"] == "cannot promote 2.0.0: its outcome is rolled_back"
    ledger(capsys, sandbox, schema, state="recorded", version="2.0.0", outcome="failed")
    failed = ledger(capsys, sandbox, schema, state="promoted", version="2.0.0")
    assert failed["msg"] == "cannot promote 2.0.0: its outcome is failed"


def test_info_current_last_known_good_and_history(capsys, sandbox, schema, tmp_path):
    releases = {}
    for version in ("1.0.0", "1.1.0", "2.0.0", "2.1.0"):
        copy = copy_release(tmp_path / version.replace(".", "_"))
        text = (copy / "release.yml").read_text().replace('version: "1.0.0"', 'version: "%s"' % version)
        (copy / "release.yml").write_text(text)
        releases[version] = str(copy / "release.yml")
        assert ledger(capsys, sandbox, schema, state="recorded", manifest=releases[version])["changed"] is True
        time.sleep(0.01)
    ledger(capsys, sandbox, schema, state="promoted", version="1.0.0")
    ledger(capsys, sandbox, schema, state="promoted", version="1.1.0")
    ledger(capsys, sandbox, schema, state="recorded", version="2.0.0", outcome="deployed")
    ledger(capsys, sandbox, schema, state="recorded", version="2.1.0", outcome="rolled_back")
    info = ledger(capsys, sandbox, schema, state="info")
    assert info["changed"] is False and info["exists"] is True
    assert info["current"]["version"] == "2.0.0"  # 2.1.0 was rolled back
    assert info["last_known_good"]["version"] == "1.1.0"
    assert [r["version"] for r in info["history"]] == ["2.1.0", "2.0.0", "1.1.0", "1.0.0"]
    assert info["release"] is None and "manifest_matches" not in info
    limited = ledger(capsys, sandbox, schema, state="info", history_limit=2, manifest=releases["1.1.0"])
    assert [r["version"] for r in limited["history"]] == ["2.1.0", "2.0.0"]
    assert limited["release"]["version"] == "1.1.0" and limited["manifest_matches"] is True
    assert limited["manifest"]["version"] == "1.1.0"
    ledger(capsys, sandbox, schema, state="recorded", version="2.0.0", outcome="failed")
    assert ledger(capsys, sandbox, schema, state="info")["current"]["version"] == "1.1.0"


def spawn_writers(sandbox, schema, tmp_path, manifest, count=8):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".collections"))
    procs = []
    for index in range(count):
        args = tmp_path / ("args-%s-%d.json" % (os.path.basename(os.path.dirname(manifest)), index))
        args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": conn_options(
            sandbox, state="recorded", manifest=manifest, journal_schema=schema, snapshots=["snap-%d" % index],
            recorded_by="writer-%d" % index)}))
        procs.append(subprocess.Popen([sys.executable, MODULE_FILE, str(args)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def collect(procs):
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        results.append(json.loads(out))
    return results


def check_one_row(results, sandbox, schema, version):
    assert all(r["changed"] is True for r in results)
    assert sum(1 for r in results if r["changes"][0].startswith("recorded %s" % version)) == 1
    found = [r for r in rows(sandbox, schema) if r[0] == version]
    assert len(found) == 1
    (version, outcome, known_good, snapshots, history), = found
    assert (outcome, known_good) == ("pending", False)
    assert sorted(snapshots) == ["snap-%d" % i for i in range(8)]
    assert [e["event"] for e in history] == ["recorded"] + ["snapshots"] * 7
    assert sorted(e["by"] for e in history) == ["writer-%d" % i for i in range(8)]


def test_concurrent_recording_in_separate_processes(sandbox, schema, tmp_path):
    """Eight processes record the same new release at once, each with its own snapshot:
    one row, no snapshot and no event lost."""
    # Into a ledger that does not exist yet (they all start together, best effort).
    check_one_row(collect(spawn_writers(sandbox, schema, tmp_path, V2)), sandbox, schema, "2.0.0")
    # Deterministic overlap: the test holds the table so that every writer is inside its
    # transaction and waiting before the first one may go on.
    holder = sandbox.connect("primary")
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            cur.execute('LOCK TABLE "%s".release_ledger IN EXCLUSIVE MODE' % schema)
        procs = spawn_writers(sandbox, schema, tmp_path, V1)
        deadline = time.monotonic() + 60
        while True:
            waiting = sandbox.sql("primary", "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                  " AND wait_event_type = 'Lock'", ["stateful.rollback.release"])[0][0]
            if waiting == 8:
                break
            assert time.monotonic() < deadline, "writers did not all wait (%d)" % waiting
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.05)
        holder.commit()
    finally:
        holder.close()
    check_one_row(collect(procs), sandbox, schema, "1.0.0")


def test_through_ansible_playbook(sandbox, ledger_db, tmp_path):
    """The default schema, as operators use it: validated, recorded twice, check and diff, promoted, info."""
    sandbox.sql("primary", "DROP TABLE IF EXISTS stateful_rollback.release_ledger")
    conn = conn_options(sandbox)
    common = dict(conn)
    tasks = [
        ("validated", {"state": "validated", "manifest": V1}),
        ("recorded", dict(common, state="recorded", manifest=V1, snapshots=["pre-1.0.0"])),
        ("again", dict(common, state="recorded", manifest=V1, snapshots=["pre-1.0.0"])),
        ("checked", dict(common, state="recorded", version="1.0.0", outcome="deployed")),
        ("deployed", dict(common, state="recorded", version="1.0.0", outcome="deployed")),
        ("promoted", dict(common, state="promoted", version="1.0.0", note="green")),
        ("info", dict(common, state="info")),
        ("refused", dict(common, state="promoted", version="3.0.0")),
    ]
    body = []
    for key, args in tasks:
        task = {"name": key, "stateful.rollback.release": args, "register": key, "ignore_errors": key == "refused"}
        if key == "checked":
            task.update(check_mode=True, diff=True)
        body.append(task)
    out = tmp_path / "results.json"
    body.append({"name": "Save the results", "ansible.builtin.copy": {
        "dest": str(out), "mode": "0600",
        "content": "{{ {%s} | to_json }}" % ", ".join("'%s': %s" % (k, k) for k, dummy in tasks)}})
    playbook = tmp_path / "release.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": body}], sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               AWX_HOST="https://awx.example", JOB_ID="4242", USER="deployer")
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "--diff", str(playbook)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    results = json.loads(out.read_text())
    assert results["validated"]["manifest"]["version"] == "1.0.0" and results["validated"]["changed"] is False
    assert results["recorded"]["changed"] is True and results["again"]["changed"] is False
    assert results["checked"]["changed"] is True and results["checked"]["release"]["outcome"] == "deployed"
    assert results["deployed"]["changed"] is True  # check mode wrote nothing
    assert results["promoted"]["release"]["known_good"] is True
    assert results["promoted"]["release"]["recorded_by"].startswith("deployer@")
    assert results["promoted"]["release"]["recorded_by"].endswith(" (AWX job 4242)")
    info = results["info"]
    assert info["ledger"] == "stateful_rollback.release_ledger"
    assert info["current"]["version"] == "1.0.0" and info["last_known_good"]["version"] == "1.0.0"
    assert results["refused"]["failed"] is True and "cannot promote 3.0.0: it is not recorded" in results["refused"]["msg"]
    assert "-    outcome: pending\n+    outcome: deployed\n" in output  # the --diff of the check
    assert sandbox.params("primary")["password"] not in output
    assert [r[1] for r in rows(sandbox, DEFAULT_SCHEMA)] == ["verified"]
    # A replica (physical standby) carries the ledger with the data.
    sandbox.wait_standby_caught_up()
    assert sandbox.sql("standby", "SELECT version, known_good FROM stateful_rollback.release_ledger") == [("1.0.0", True)]
