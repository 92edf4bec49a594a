# -*- coding: utf-8 -*-
"""No secret leaks at -vvv: the playbooks and the audit_log module run with a database password, a Kubernetes
bearer token and an HMAC key set to distinctive strings, and none of them may appear in what ansible-playbook
prints (stdout, stderr) or in anything written under the state directory (audit log, run records, baselines,
migration progress logs, the drill report), nor in the audit table.

A sandbox of its own: its app role's password is the database secret, and its kubesim requires a bearer token
for every change (anonymous requests may only read, which `scripts/sandbox status` and the demo app need), so the
playbooks run with a kubeconfig holding the token - the request log proves they used it. The demo shop
connects with a database role of its own, whose password is a fourth secret: its DSN is in the Secret
shop-database, which the Deployment references (secretKeyRef), so the roles that show the Deployment at -v never
show it; the install play that writes the Secret keeps its arguments out of the output (no_log).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request

import pytest
import sandbox as sandbox_lib  # scripts/ is on sys.path (tests/conftest.py)
import sandbox_kube
from testkit import BIN, REPO, manifest, playbook_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]

PORT_BASE = 27460
NAME = "pytest-no-secrets"
DB_PASSWORD = "pw-Nx7qDistinct-db-4711"
K8S_TOKEN = "tok-Kz9vDistinct-k8s-4712"
HMAC_KEY = "hmac-Wm3rDistinct-key-4713"
SHOP_PASSWORD = "shop-Qp5tDistinct-app-4714"
SECRETS = {"database password": DB_PASSWORD, "Kubernetes token": K8S_TOKEN, "HMAC key": HMAC_KEY,
           "the app's database password": SHOP_PASSWORD}

INSTALL_SHOP = """---
- name: Install the demo shop with release 1.0.0's image, connecting as the role shop_app
  hosts: all
  gather_facts: false
  tasks:
    - name: Create the shop's Deployment
      kubernetes.core.k8s:
        kubeconfig: "{{ stateful_rollback_kube.kubeconfig }}"
        state: present
        definition: "{{ lookup('ansible.builtin.template', repo ~ '/playbooks/demo/web.yml.j2') | from_yaml_all | list }}"
        wait: true
        wait_timeout: 120
      vars:
        demo_namespace: "{{ sandbox_env.SANDBOX_KUBE_NAMESPACE }}"
        demo_image: "{{ (sandbox_env.SANDBOX_APP_IMAGES | from_json)['1.0.0'] }}"
        demo_app_port: "{{ sandbox_env.SANDBOX_APP_PORT }}"
        demo_database_url: "{{ shop_dsn }}"
      no_log: true  # the Secret's URL carries the app's password
"""

AUDIT_LOG = """---
- name: Append to and verify the audit log, signed, in a file and a table
  hosts: all
  gather_facts: false
  module_defaults:
    group/stateful.rollback.postgres: "{{ stateful_rollback_db }}"
  tasks:
    - name: Append a signed record with secret-looking details
      stateful.rollback.audit_log:
        store: both
        path: "{{ stateful_rollback_state_dir }}/audit-module.jsonl"
        journal_schema: audit_secrets
        run: no-secrets
        stage: approval
        outcome: approved
        details: {step: test, login_password: "{{ stateful_rollback_db.login_password }}", api_key: "{{ k8s_token }}"}
        inputs: {db: "{{ stateful_rollback_db }}"}
        hmac_key: "{{ hmac_key }}"

    - name: Verify both chains with the key
      stateful.rollback.audit_log:
        state: verified
        store: both
        path: "{{ stateful_rollback_state_dir }}/audit-module.jsonl"
        journal_schema: audit_secrets
        hmac_key: "{{ hmac_key }}"
      register: verified

    - name: Check that the HMACs were checked
      ansible.builtin.assert:
        that: verified.hmac_checked
"""


class SecretSandbox:
    """The part of tests/conftest.py's Sandbox that testkit needs, for a sandbox with its own app password."""

    def __init__(self, config):
        self.config = config
        self.primary = dict(config.params("primary"))

    def env(self):
        return sandbox_lib.env(self.config)

    def sql(self, node, query, params=None, superuser=False):
        import psycopg2

        conn = psycopg2.connect(connect_timeout=5, **self.config.params(node, superuser=superuser))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            conn.close()


def kube_post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def secret_sandbox(tmp_path_factory):
    environ = {sandbox_lib.Config.ENV_VARS[f"{node}_port"]: str(PORT_BASE + offset) for offset, node in enumerate(sandbox_lib.NODES)}
    environ.update(SANDBOX_APP_PORT=str(PORT_BASE + 5), SANDBOX_DIR=os.path.join(sandbox_lib.DEFAULT_SANDBOX_DIR, NAME),
                   SANDBOX_APP_PASSWORD=DB_PASSWORD)
    config = sandbox_lib.Config.from_env(environ)
    try:
        sandbox_lib.up(config)
    except sandbox_lib.SandboxError as exc:
        if not isinstance(exc, sandbox_lib.SandboxConflict):
            sandbox_lib.down(config)
        pytest.fail(f"cannot start the sandbox {NAME}: {exc}", pytrace=False)
    try:
        sb = SecretSandbox(config)
        url = sandbox_kube.server_url(config)
        # From now on every change needs the token; anonymous clients may only read.
        kube_post(url, "/_kubesim/anonymous", {"user": "anonymous-reader", "rules": [{"verbs": ["get", "list", "watch"], "resources": ["*"]}]})
        kube_post(url, "/_kubesim/tokens", {"token": K8S_TOKEN, "user": "deployer"})
        kube_post(url, "/_kubesim/requests", {"record": True})
        kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"
        with open(sandbox_kube.kubeconfig_path(config), encoding="utf-8") as handle:
            doc = json.load(handle)
        for user in doc["users"]:
            user["user"] = {"token": K8S_TOKEN}
        kubeconfig.write_text(json.dumps(doc))
        kubeconfig.chmod(0o600)
        # The shop connects as a role of its own: its DSN is in its Deployment's spec.
        sb.sql("primary", "CREATE ROLE shop_app LOGIN PASSWORD %s IN ROLE app", (SHOP_PASSWORD,), superuser=True)
        sb.kube_url, sb.kubeconfig = url, str(kubeconfig)
        yield sb
    finally:
        sandbox_lib.down(config)


def run(sb, tmp_path, target, *args):
    """ansible-playbook -vvv (a playbook of the repo, or text written to tmp_path) with the secrets; (rc, output)."""
    if target.endswith(".yml") and "\n" not in target:
        path = "playbooks/" + target
    else:
        path = str(tmp_path / "playbook.yml")
        (tmp_path / "playbook.yml").write_text(target)
    values = {"stateful_rollback_kube": {"kubeconfig": sb.kubeconfig}, "stateful_rollback_audit_hmac_key": HMAC_KEY,
              "repo": REPO, "k8s_token": K8S_TOKEN, "hmac_key": HMAC_KEY,
              "shop_dsn": "postgresql://shop_app:%s@%s:%s/app" % (SHOP_PASSWORD, sb.primary["host"], sb.primary["port"])}
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-vvv", "-i", "inventories/sandbox", path, "-e", json.dumps(values)]
                          + list(args), cwd=REPO, env=playbook_env(sb, SANDBOX_APP_PASSWORD=DB_PASSWORD),
                          capture_output=True, text=True, timeout=3600, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def leaks(text):
    """[(secret, context)] of every secret found in ``text``."""
    found = []
    for what, secret in SECRETS.items():
        at = text.find(secret)
        if at >= 0:
            found.append((what, text[max(0, at - 300):at + 60]))
    return found


@pytest.fixture(scope="module")
def runs(secret_sandbox, tmp_path_factory):
    """The runs, in order, each asserted to succeed: {name: output}."""
    sb, outputs = secret_sandbox, {}
    for name, target, args in (
            ("install", INSTALL_SHOP, ()),
            ("drill.yml", "drill.yml", ("-e", "drill_fault=health_check", "-e", "drill_max_rto_seconds=3600")),
            ("deploy.yml 2.0.0", "deploy.yml", ("-e", manifest("2.0.0"))),
            ("rollback.yml", "rollback.yml", ()),
            ("audit_log", AUDIT_LOG, ())):
        rc, out = run(sb, tmp_path_factory.mktemp("play"), target, *args)
        assert rc == 0, "%s failed:\n%s" % (name, out[-6000:])
        outputs[name] = out
    return outputs


def test_the_secrets_were_in_use(secret_sandbox, runs):
    sb = secret_sandbox
    # The database password is the app role's: every run above connected with it.
    assert sb.primary["password"] == DB_PASSWORD
    # Changes went through the token: the deploys patched the Deployment as its user.
    requests = kube_post(sb.kube_url, "/_kubesim/requests", None)["requests"]
    writes = [r for r in requests if r.get("method") in ("PATCH", "PUT", "POST") and r.get("code", 500) < 300]
    assert writes and {r["user"] for r in writes} == {"deployer"}, writes[:5]
    # The shop connects with its own password, from the Secret its Deployment references.
    web = kube_post(sb.kube_url, "/apis/apps/v1/namespaces/sandbox/deployments/web", None)
    (database_url,) = [e for e in web["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "DATABASE_URL"]
    assert database_url == {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "shop-database", "key": "url"}}}
    secret = kube_post(sb.kube_url, "/api/v1/namespaces/sandbox/secrets/shop-database", None)
    assert SHOP_PASSWORD in base64.b64decode(secret["data"]["url"]).decode()
    # The roles' audit records are signed with the key.
    with open(os.path.join(sb.config.sandbox_dir, "state", "audit-log.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    assert records and all(r.get("hmac") for r in records)
    assert "rolled_back" in {r["details"].get("run_outcome") for r in records if r["stage"] == "run"}


@pytest.mark.parametrize("name", ["install", "drill.yml", "deploy.yml 2.0.0", "rollback.yml", "audit_log"])
def test_no_secret_in_the_output_at_vvv(runs, name):
    assert "<TASK" in runs[name] or "task path:" in runs[name]  # -vvv indeed
    assert leaks(runs[name]) == []


def test_no_secret_under_the_state_dir(secret_sandbox, runs):
    state = os.path.join(secret_sandbox.config.sandbox_dir, "state")
    seen = set()
    for root, dummy, files in os.walk(state):
        for name in files:
            path = os.path.join(root, name)
            with open(path, encoding="utf-8", errors="replace") as handle:
                assert leaks(handle.read()) == [], path
            seen.add(os.path.relpath(path, state).split(os.sep)[0])
    # What must have been checked: the roles' audit log, run records, the drill report, the module's own log.
    assert {"audit-log.jsonl", "runs", "drills", "audit-module.jsonl"} <= seen, seen
    assert os.path.exists(os.path.join(state, "drills", "latest.json"))


def test_no_secret_in_the_audit_table(secret_sandbox, runs):
    rows = secret_sandbox.sql("primary", "SELECT to_jsonb(a)::text FROM audit_secrets.audit_log a")
    assert len(rows) == 1
    assert leaks(rows[0][0]) == []
    assert '"hmac"' in rows[0][0] or "hmac" in rows[0][0]
