# -*- coding: utf-8 -*-
"""The rollback paths end to end on a sandbox of their own, with real ansible-playbook runs.

* A manual ``playbooks/rollback.yml`` after a good, promoted release (2.0.0): back to the ledger's last
  known-good release with the rows written meanwhile kept, a rerun (with the target named) changing
  nothing, and a target the ledger does not know refused with a clear message.
* A manual rollback while a replica is unreachable: refused before any change, naming it; with
  ``stateful_rollback_rollback_allow_diverged_replicas`` it rolls back and leaves that replica out of the verification.
* A rollback interrupted by SIGKILL (the deploy of 2.1.0, whose rescue reverts with down scripts, killed
  once the rollback has started): ``playbooks/rollback.yml`` finishes the job, and a second run changes
  nothing.
* An irreversible release (3.0.0 drops ``customers.name``) whose data is corrupted after its migrations:
  the rescue restores the database's PVC from the release's snapshot, losing nothing the snapshot held,
  and brings back the schema, the replicas (standby and subscriber rebuilt, in parity), the app on
  1.0.0 and a consistent ledger; the PVC is bound to the restored volume and the old one is kept.

Everything is real but the Kubernetes API server (kubesim on 127.0.0.1): the PostgreSQL primary
(StatefulSet sandbox/db on PVC data-db-0), its streaming standby and logical subscriber, the demo app
processes behind Deployment sandbox/web, and ansible-playbook with the inventory inventories/sandbox.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import sandbox_kube  # scripts/sandbox_kube.py (tests/conftest.py puts scripts/ on sys.path)
from testkit import REPO, app_version, closed_port, columns, ledger, manifest, playbook, playbook_command, playbook_env, recap_changed

# Each test runs three to four playbooks of minutes each on a loaded machine (setup included in the first).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

OWN_SANDBOX_PORT_BASE = 27200
OWN_SANDBOX_NAME = "pytest-rollback-e2e"

# 3.0.0 drops a column on purpose: the preflight refuses it unless these rules are accepted (as
# playbooks/drill.yml's corruption fault does).
ACCEPT_DROP = json.dumps({"stateful_rollback_preflight_ignore_rules": ["drop-column", "drop-column-data"]})
# A failing release's rollout gives up sooner (the drill's setting): the rescue is what these tests are about.
FAST_ROLLOUT = "stateful_rollback_deploy_wait_timeout=30"
FLAGS_1_0_0 = {"new_checkout": "false"}


# -- helpers ----------------------------------------------------------------------------------------------
def shared_vars(sb, directory):
    """A vars file with the shared variables exactly as inventories/sandbox computes them, computed once.

    The inventory runs `scripts/sandbox env --json` at every reference to one of them (seconds each on a
    loaded machine, and deploy.yml references them in every task); given as extra vars they are the same
    values, templated once. Rendered from the inventory's own group_vars, so they cannot drift from it.
    """
    import jinja2.nativetypes
    import yaml

    with open(os.path.join(REPO, "inventories", "sandbox", "group_vars", "sandbox.yml"), encoding="utf-8") as handle:
        group_vars = yaml.safe_load(handle)
    env = jinja2.nativetypes.NativeEnvironment()
    context = {"sandbox_env": sb.env()}

    def render(value):
        if isinstance(value, dict):
            return {k: render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v) for v in value]
        return env.from_string(value).render(context) if isinstance(value, str) else value

    resolved = {k: render(v) for k, v in group_vars.items() if k.startswith("stateful_rollback_")}
    assert {"stateful_rollback_db", "stateful_rollback_kube", "stateful_rollback_state_dir"} <= set(resolved), resolved.keys()
    path = os.path.join(str(directory), "shared_vars.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(resolved, handle)
    return path


def run(sb, name, *extra):
    """ansible-playbook playbooks/<name> on the sandbox with the shared variables resolved once."""
    return playbook(sb, name, "-e", "@" + sb.vars_file, *extra, timeout=1500)


def state_dir(sb):
    return os.path.join(sb.config.sandbox_dir, "state")


# The audit role's JSON-lines log (audit-log.jsonl; audit.jsonl before the audit_log module wrote it).
AUDIT_FILES = ("audit-log.jsonl", "audit.jsonl")


class AuditTail:
    """The audit records appended to the state directory's audit log(s) since this object was made."""

    def __init__(self, sb):
        self.paths = [os.path.join(state_dir(sb), name) for name in AUDIT_FILES]
        self.offsets = {p: os.path.getsize(p) if os.path.exists(p) else 0 for p in self.paths}

    def new(self):
        records = []
        for path in self.paths:
            if not os.path.exists(path):
                continue
            with open(path, "rb") as handle:
                handle.seek(self.offsets[path])
                data = handle.read()
            complete = data[:data.rfind(b"\n") + 1]
            self.offsets[path] += len(complete)
            records += [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
        return records


def audit_log(sb):
    """Every record of the audit log written last."""
    paths = [p for p in (os.path.join(state_dir(sb), n) for n in AUDIT_FILES) if os.path.exists(p)]
    assert paths, "no audit log in %s" % state_dir(sb)
    with open(max(paths, key=os.path.getmtime), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_record(sb, suffix):
    """The newest run record (<state dir>/runs/<id>.json) whose id ends with ``suffix``."""
    paths = sorted(glob.glob(os.path.join(state_dir(sb), "runs", "*%s.json" % suffix)))
    assert paths, "no run record *%s.json in %s" % (suffix, state_dir(sb))
    with open(paths[-1], encoding="utf-8") as handle:
        return json.load(handle)


def flags(sb):
    cm = sandbox_kube.api(sb.config, "GET", "/api/v1/namespaces/%s/configmaps/feature-flags" % sb.env()["SANDBOX_KUBE_NAMESPACE"])
    return None if cm is None else cm.get("data") or {}


def pvc(sb, name="data-db-0"):
    return sandbox_kube.api(sb.config, "GET", "/api/v1/namespaces/%s/persistentvolumeclaims/%s" % (sb.env()["SANDBOX_KUBE_NAMESPACE"], name))


def digest(sb, table, node="primary"):
    """(row count, md5 of every row in key order): the exact content of a table."""
    return tuple(sb.sql(node, "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM %s t" % table)[0])


def parity(sb):
    """replication_parity mode=parity over the standby and the subscriber (the journal schema is not published)."""
    from ansible_collections.stateful.rollback.plugins.module_utils.parity_runner import run as parity_run

    primary = sb.primary
    replicas = [dict(name=n, login_host=sb.params(n)["host"], login_port=int(sb.params(n)["port"])) for n in ("standby", "subscriber")]
    return parity_run(dict(login_host=primary["host"], login_port=int(primary["port"]), login_user=primary["user"],
                           login_password=primary["password"], login_db=primary["dbname"], mode="parity", settle_timeout=30,
                           exclude_schemas=["stateful_rollback"], replicas=replicas))


def assert_back_on_1_0_0(sb):
    """App, schema on every node, flags, ledger and replicas as release 1.0.0 left them."""
    assert app_version(sb) == "1.0.0"
    for node in ("primary", "standby", "subscriber"):
        assert columns(sb, node) == ["id", "email", "name", "created_at"], node
    assert sb.sql("primary", "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_status_idx'") == [(0,)]
    assert flags(sb) == FLAGS_1_0_0
    # The ledger's `current` as the release module reads it: the newest release still running.
    current = sb.sql("primary", "SELECT version FROM stateful_rollback.release_ledger WHERE outcome IN ('deployed', 'verified') "
                                "ORDER BY recorded_at DESC, id DESC LIMIT 1")
    assert current == [("1.0.0",)]
    assert ledger(sb)["1.0.0"] == ("verified", True)
    result = parity(sb)
    assert result["in_sync"], json.dumps(result)[:3000]


def start_playbook(sb, name, *extra, log):
    """ansible-playbook in a process group of its own: a SIGKILL of the group takes its modules with it."""
    out = open(log, "w+", encoding="utf-8")
    proc = subprocess.Popen(playbook_command(name, "-e", "@" + sb.vars_file, *extra), cwd=REPO, env=playbook_env(sb), stdout=out,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.out = out
    return proc


def output(proc):
    proc.out.seek(0)
    return proc.out.read()


# -- the shop: installed, 1.0.0 deployed and promoted ------------------------------------------------------
@pytest.fixture(scope="module")
def shop(own_sandbox, tmp_path_factory):
    # `scripts/sandbox down` deletes the databases and volumes but not the state directory the playbooks
    # write (audit log, run records, baselines): start from an empty one.
    shutil.rmtree(state_dir(own_sandbox), ignore_errors=True)
    own_sandbox.vars_file = shared_vars(own_sandbox, tmp_path_factory.mktemp("rollback-e2e"))
    sandbox_kube.install_shop(own_sandbox.config)
    rc, out = run(own_sandbox, "deploy.yml", "-e", manifest("1.0.0"))
    assert rc == 0, out[-6000:]
    assert app_version(own_sandbox) == "1.0.0" and ledger(own_sandbox)["1.0.0"] == ("verified", True)
    assert flags(own_sandbox) == FLAGS_1_0_0
    return own_sandbox


def test_manual_rollback_returns_to_last_known_good_keeping_the_rows_written_since(shop):
    rc, out = run(shop, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    assert app_version(shop) == "2.0.0" and ledger(shop)["2.0.0"] == ("verified", True)
    # Rows written while 2.0.0 runs (full_name is 2.0.0's; email and name are 1.0.0's too).
    shop.sql("primary", "INSERT INTO customers (email, name, full_name) VALUES ('during-2@example.com', 'During Two', 'During Two Full')")
    shop.sql("primary", "INSERT INTO orders (customer_id, amount, status) SELECT id, 42.50, 'paid' FROM customers "
                        "WHERE email = 'during-2@example.com'")
    shop.sql("primary", "UPDATE customers SET name = 'Renamed Under 2.0' WHERE email = 'customer7@example.com'")
    before = {t: shop.sql("primary", "SELECT %s FROM %s ORDER BY id" % (cols, t))
              for t, cols in (("customers", "id, email, name, created_at"), ("orders", "*"))}

    rc, out = run(shop, "rollback.yml")
    assert rc == 0, out[-6000:]
    assert_back_on_1_0_0(shop)
    assert ledger(shop)["2.0.0"] == ("rolled_back", False)
    for t, cols in (("customers", "id, email, name, created_at"), ("orders", "*")):
        assert shop.sql("primary", "SELECT %s FROM %s ORDER BY id" % (cols, t)) == before[t], t
    record = run_record(shop, "rollback-to-last-known-good")
    assert record["outcome"] == "rolled_back"
    rollback = record["rollback"]
    assert (rollback["from"], rollback["to"], rollback["source"], rollback["path"]) == ("2.0.0", "1.0.0", "ledger", "revert")
    steps = {s["step"]: s for s in rollback["steps"]}
    assert {k: s["outcome"] for k, s in steps.items()} == {
        "precheck": "ok", "flags": "compensated", "workloads": "compensated", "schema": "compensated", "verify": "ok", "ledger": "ok"}
    # The rows written under 2.0.0 differ from its pre-release baseline: the verification compared the schema.
    assert steps["verify"]["details"]["tables_changed_since_baseline"] == ["public.customers", "public.orders"]
    assert steps["verify"]["details"]["compared"].startswith("the schema only")

    # Converged: a rerun, with the target named, changes nothing.
    rc, out = run(shop, "rollback.yml", "-e", "stateful_rollback_rollback_to=1.0.0")
    assert rc == 0, out[-6000:]
    assert recap_changed(out) == 0, out[-6000:]
    assert_back_on_1_0_0(shop)

    # A target the ledger does not know is refused before anything changes.
    rc, out = run(shop, "rollback.yml", "-e", "stateful_rollback_rollback_to=9.9.9")
    assert rc != 0
    assert "Release 9.9.9 is not in the release ledger" in out and "known releases: " in out, out[-4000:]
    assert "Traceback" not in out
    assert app_version(shop) == "1.0.0"


def test_unreachable_replica_refuses_the_rollback_and_the_override_leaves_it_out(shop, tmp_path):
    rc, out = run(shop, "deploy.yml", "-e", manifest("2.0.0"))
    assert rc == 0, out[-6000:]
    before = {"flags": flags(shop), "columns": columns(shop, "primary"), "image": app_version(shop)}
    assert before["image"] == "2.0.0" and "full_name" in before["columns"]
    # The inventory's replicas plus one that cannot be reached.
    with open(shop.vars_file, encoding="utf-8") as handle:
        replicas = json.load(handle)["stateful_rollback_replicas"]
    ghost = {"name": "ghost", "login_host": "127.0.0.1", "login_port": closed_port()}
    replicas_file = tmp_path / "replicas.json"
    replicas_file.write_text(json.dumps({"stateful_rollback_replicas": replicas + [ghost]}))

    rc, out = run(shop, "rollback.yml", "-e", "@%s" % replicas_file)
    assert rc != 0, out[-6000:]
    flat = " ".join(out.split())
    assert "rollback refused before any change" in flat and "replicas could not be checked against the primary" in flat, out[-6000:]
    assert "replica ghost could not be checked" in flat and "allow_diverged_replicas=true" in flat, out[-6000:]
    assert "Traceback" not in out
    # Nothing changed: image, flags, schema and ledger are 2.0.0's.
    assert {"flags": flags(shop), "columns": columns(shop, "primary"), "image": app_version(shop)} == before
    assert ledger(shop)["2.0.0"] == ("verified", True)
    record = run_record(shop, "rollback-to-last-known-good")
    assert (record["outcome"], record["failure"]["stage"]) == ("failed", "rollback_precheck"), record["failure"]
    (precheck,) = record["rollback"]["steps"]
    assert (precheck["step"], precheck["outcome"], precheck["details"]["in_sync"]) == ("precheck", "failed", None), precheck
    assert [u["replica"] for u in precheck["details"]["unchecked"]] == ["ghost"], precheck
    assert precheck["details"]["diverged"] == [] and precheck["details"]["excluded_from_verify"] == []

    # The override rolls back, the real replicas verified, the unreachable one left out (and named).
    rc, out = run(shop, "rollback.yml", "-e", "@%s" % replicas_file, "-e", "stateful_rollback_rollback_allow_diverged_replicas=true")
    assert rc == 0, out[-6000:]
    assert "ghost left out of the verification" in " ".join(out.split()), out[-6000:]
    assert_back_on_1_0_0(shop)
    assert ledger(shop)["2.0.0"] == ("rolled_back", False)
    steps = {s["step"]: s for s in run_record(shop, "rollback-to-last-known-good")["rollback"]["steps"]}
    assert steps["precheck"]["outcome"] == "overridden" and steps["precheck"]["details"]["excluded_from_verify"] == ["ghost"]
    assert steps["verify"]["outcome"] == "ok" and steps["ledger"]["outcome"] == "ok", steps


def test_interrupted_rollback_converges_with_rollback_playbook(shop, tmp_path):
    down_steps = "SELECT count(*) FROM stateful_rollback.migration_journal WHERE release_version = '2.1.0' AND direction = 'down'"
    reverted_before = shop.sql("primary", down_steps)[0][0]
    tail = AuditTail(shop)
    proc = start_playbook(shop, "deploy.yml", "-e", manifest("2.1.0"), "-e", FAST_ROLLOUT, log=str(tmp_path / "deploy.log"))
    seen, killed = [], None
    try:
        # Kill once the rescue's rollback is under way: one of its steps recorded, or its down scripts running.
        deadline = time.monotonic() + 1500
        while proc.poll() is None and time.monotonic() < deadline:
            seen += [r["stage"] for r in tail.new() if r.get("release") == "2.1.0"]
            if any(s.startswith("rollback_") for s in seen):
                killed = "after the rollback step %s" % [s for s in seen if s.startswith("rollback_")][-1]
            elif "migrate" in seen and shop.sql("primary", down_steps)[0][0] > reverted_before:
                killed = "while the down scripts run"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    log = output(proc)
    assert killed and proc.returncode == -signal.SIGKILL, "the deploy ended before its rollback could be interrupted:\n" + log[-6000:]
    assert "deploy" in seen, seen
    # Interrupted: the rollback never finished (no final record, the ledger does not say rolled back).
    assert "rollback" not in seen and "rollback_ledger" not in seen, seen
    assert ledger(shop)["2.1.0"][0] != "rolled_back"

    rc, out = run(shop, "rollback.yml")
    assert rc == 0, out[-6000:]
    assert_back_on_1_0_0(shop)
    assert "loyalty_tier" not in columns(shop, "subscriber")
    assert ledger(shop)["2.1.0"] == ("rolled_back", False)
    rollback = run_record(shop, "rollback-to-last-known-good")["rollback"]
    assert (rollback["from"], rollback["to"], rollback["path"], rollback["outcome"]) == ("2.1.0", "1.0.0", "revert", "ok")

    rc, out = run(shop, "rollback.yml")
    assert rc == 0, out[-6000:]
    assert recap_changed(out) == 0, out[-6000:]
    assert_back_on_1_0_0(shop)


def test_irreversible_release_is_restored_from_its_snapshot_losing_nothing_it_held(shop, tmp_path):
    # Known rows, written before the release (so before its snapshot).
    tag = "known-%d" % time.time()
    shop.sql("primary", "INSERT INTO customers (email, name) SELECT format('%%s-%%s@example.com', %s, g), format('Known %%s', g) "
                        "FROM generate_series(1, 50) g", (tag,))
    shop.sql("primary", "INSERT INTO orders (customer_id, amount, status) SELECT id, 10 + id %% 7, 'new' FROM customers "
                        "WHERE email LIKE %s", (tag + "-%",))
    held = {t: digest(shop, t) for t in ("customers", "orders")}
    volume_before = pvc(shop)["spec"]["volumeName"]

    # The fault, as playbooks/drill.yml's corruption: once 3.0.0's migrations are applied, order amounts are
    # negated behind its back, so its verification fails (order-amounts-positive). A row is also written
    # after the snapshot: the restore gives it up by design.
    tail = AuditTail(shop)
    events = {}

    def fault():
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and "corrupted" not in events and "stop" not in events:
            for r in tail.new():
                if r.get("release") != "3.0.0" or r.get("outcome") != "ok":
                    continue
                if r["stage"] == "snapshot":
                    shop.sql("primary", "INSERT INTO customers (email) VALUES (%s)", (tag + "-after@example.com",))
                    events["written"] = True
                if r["stage"] == "migrate":
                    events["corrupted"] = shop.sql(
                        "primary", "UPDATE orders SET amount = -amount WHERE id IN "
                                   "(SELECT id FROM orders WHERE amount > 0 ORDER BY id LIMIT 5) RETURNING id")
            time.sleep(0.1)

    watcher = threading.Thread(target=fault, daemon=True)
    watcher.start()
    try:
        rc, out = run(shop, "deploy.yml", "-e", manifest("3.0.0"), "-e", ACCEPT_DROP)
    finally:
        events["stop"] = True
        watcher.join(timeout=30)
    assert rc != 0, out[-6000:]
    assert events.get("written") and len(events.get("corrupted") or []) == 5, (events, out[-6000:])

    record = run_record(shop, "-3.0.0")
    assert record["outcome"] == "rolled_back", json.dumps(record)[:4000]
    assert record["failure"]["stage"] == "verify", record["failure"]
    assert "005-drop-customer-name" in record["migrations_applied"]
    rollback = record["rollback"]
    assert (rollback["path"], rollback["needs_restore"], rollback["restored"], rollback["outcome"]) == ("restore", True, True, "ok")
    assert [i["id"] for i in rollback["irreversible"]] == ["005-drop-customer-name"]
    assert rollback["rpo_bytes"] > 0
    steps = {s["step"]: s["outcome"] for s in rollback["steps"]}
    assert steps["restore"] == "compensated" and steps["verify"] == "ok" and steps["ledger"] == "ok", steps
    restore_records = [r for r in audit_log(shop) if r["run"] == record["id"] and r["stage"] == "rollback_restore"]
    assert [r["outcome"] for r in restore_records] == ["compensated"]
    assert restore_records[0]["details"]["snapshots"] == record["snapshots"] == ["db-3.0.0-data-db-0"]

    # Exactly what the snapshot held: every row written before it, the corruption and the later write gone.
    assert {t: digest(shop, t) for t in ("customers", "orders")} == held
    assert shop.sql("primary", "SELECT count(*) FROM customers WHERE email = %s", (tag + "-after@example.com",)) == [(0,)]
    assert shop.sql("primary", "SELECT count(*), count(DISTINCT o.id) FROM customers c JOIN orders o ON o.customer_id = c.id "
                               "WHERE c.email LIKE %s AND c.name LIKE 'Known %%'", (tag + "-%",)) == [(50, 50)]
    assert shop.sql("primary", "SELECT count(*) FROM orders WHERE amount <= 0") == [(0,)]
    # The replicas were rebuilt from the restored primary and hold the same rows.
    for node in ("standby", "subscriber"):
        assert {t: digest(shop, t, node) for t in ("customers", "orders")} == held, node
    assert_back_on_1_0_0(shop)
    assert ledger(shop)["3.0.0"] == ("rolled_back", False)

    # The PVC is bound to the restored volume; the volume it had is kept.
    claim = pvc(shop)
    assert claim["metadata"]["annotations"]["stateful.rollback/restored-from"].startswith("db-3.0.0-data-db-0/")
    assert claim["spec"]["volumeName"] != volume_before
    old = sandbox_kube.api(shop.config, "GET", "/api/v1/persistentvolumes/%s" % volume_before)
    assert old is not None and old["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert old["metadata"]["labels"]["stateful.rollback/replaced-by-snapshot"] == "db-3.0.0-data-db-0"
