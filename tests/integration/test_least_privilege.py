# -*- coding: utf-8 -*-
"""docs/k8s/rbac.yml is enough for the playbooks, and no more than enough.

On a sandbox of its own, kubesim enforces bearer tokens: the playbooks run with
the token of the ServiceAccount the manifests create, whose rules are exactly
those of its Role (in the app's namespace only) and ClusterRole
(``kubesim.rbac.token_rules``). The test harness keeps an admin token, and the
demo app reads its feature flags without a token, as ``system:anonymous`` with
``get`` on that one ConfigMap (on a cluster it would use its own
ServiceAccount, which is not the deployer's business).

With only those permissions, the restore path (drill.yml, fault corruption:
release 3.0.0 restored from its pre-release snapshot), a good deploy (2.0.0)
and a failing one that rolls back (2.1.0) all pass, and kubesim's request log
shows that every permission the manifests grant was used. A call outside them
(deleting a Secret, a snapshot in another namespace) gets 403 and fails with
the API server's message naming the verb and resource.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml
from testkit import BIN, REPO, app_version, ledger, manifest, playbook, playbook_env

import sandbox_kube  # scripts/ is on sys.path (tests/conftest.py)
from kubesim import rbac
from kubesim.resources import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWN_SANDBOX_PORT_BASE = 27500
OWN_SANDBOX_NAME = "pytest-least-privilege"

RBAC_MANIFEST = os.path.join(REPO, "docs", "k8s", "rbac.yml")
PLACEHOLDER_NAMESPACE = "shop"  # what docs/k8s/rbac.yml says to replace
NAMESPACE = "sandbox"
SERVICE_ACCOUNT = "stateful-rollback"
USER = rbac.service_account_user(NAMESPACE, SERVICE_ACCOUNT)
ADMIN_TOKEN = "least-privilege-test-admin"
DEPLOYER_TOKEN = "least-privilege-test-deployer"
# Requests of the ServiceAccount during the playbook runs (the request log, taken after each run).
LOG = []


def rbac_documents(namespace=NAMESPACE):
    """The shipped manifests for ``namespace``, changed the way their header says (sed on ``namespace: shop``)."""
    with open(RBAC_MANIFEST, encoding="utf-8") as handle:
        text = handle.read()
    text = re.sub(r"(?m)^(\s*namespace: )%s$" % PLACEHOLDER_NAMESPACE, r"\g<1>" + namespace, text)
    return rbac.flatten(yaml.safe_load_all(text))


def granted(docs):
    """{(apiGroup, resource[/subresource], verb)} the manifests grant."""
    out = set()
    for doc in docs:
        for rule in doc.get("rules") or []:
            out.update((group, resource, verb) for group in rule["apiGroups"] for resource in rule["resources"]
                       for verb in rule["verbs"])
    return out


# -- the manifests alone -------------------------------------------------------------------------------------
def test_manifests_are_shipped_and_every_rule_names_a_real_resource_and_its_step():
    with open(os.path.join(REPO, "galaxy.yml"), encoding="utf-8") as handle:
        ignored = yaml.safe_load(handle)["build_ignore"]
    path = os.path.relpath(RBAC_MANIFEST, REPO)
    assert not [pattern for pattern in ignored if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch("docs", pattern)
                or fnmatch.fnmatch("docs/k8s", pattern)], "galaxy.yml build_ignore leaves %s out of the collection" % path
    docs = rbac_documents(PLACEHOLDER_NAMESPACE)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            assert doc["metadata"]["namespace"] == PLACEHOLDER_NAMESPACE
    registry = Registry()
    for doc in docs:
        for rule in doc.get("rules") or []:
            assert "*" not in rule["verbs"] + rule["apiGroups"] + rule["resources"], rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    plural, _sep, sub = resource.partition("/")
                    res = registry.find(group, "v1", plural)
                    assert res is not None, "%s: no resource %s in API group %r" % (doc["metadata"]["name"], plural, group)
                    assert not sub or sub in res.subresources, resource
                    assert res.namespaced == (doc["kind"] == "Role"), "%s belongs in the %s" % (
                        resource, "Role" if res.namespaced else "ClusterRole")
                    assert set(rule["verbs"]) <= set(res.verbs), (resource, rule["verbs"])
    # Each rule says which step needs it: a comment right above it.
    with open(RBAC_MANIFEST, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    rules = [index for index, line in enumerate(lines) if line.startswith("- apiGroups:")]
    assert len(rules) == sum(len(doc.get("rules") or []) for doc in docs)
    uncommented = [lines[index] for index in rules if not lines[index - 1].startswith("#")]
    assert not uncommented, uncommented
    # The rules kubesim enforces for the ServiceAccount: the Role's in its namespace only, the ClusterRole's anywhere.
    rules = rbac.token_rules(rbac_documents(), NAMESPACE, SERVICE_ACCOUNT)
    assert {rule.get("namespaces", ["*"])[0] for rule in rules} == {NAMESPACE, "*"}


# -- on the sandbox ------------------------------------------------------------------------------------------
def kube(sb, method, path, body=None, token=ADMIN_TOKEN, content_type="application/json"):
    """(code, decoded body) of one request to the sandbox's kubesim."""
    with open(os.path.join(sb.config.sandbox_dir, "kubeconfig"), encoding="utf-8") as handle:
        server = json.load(handle)["clusters"][0]["cluster"]["server"]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def take_log(sb):
    """The ServiceAccount's requests since the last call (kept in LOG); fails on any request without a known token."""
    code, body = kube(sb, "DELETE", "/_kubesim/requests")
    assert code == 200, body
    unauthenticated = [r for r in body["requests"] if r["code"] == 401]
    assert not unauthenticated, unauthenticated[:5]
    mine = [r for r in body["requests"] if r["user"] == USER and r["resource"]]  # not discovery (needs no rule)
    LOG.extend(mine)
    return mine


def forbidden(requests):
    """'verb group/resource[/sub] namespace/name' of each request answered 403."""
    out = []
    for r in requests:
        if r["code"] == 403:
            sub = "/" + r["subresource"] if r["subresource"] else ""
            out.append("%s %s/%s%s %s/%s" % (r["verb"], r["group"], r["resource"], sub, r["namespace"], r["name"]))
    return out


@pytest.fixture(scope="module")
def guarded(own_sandbox):
    """The sandbox with the shop installed (by the admin), then tokens on: the playbooks get the deployer's only."""
    sb = own_sandbox
    env = sb.env()
    sandbox_kube.install_shop(sb.config)
    code, body = kube(sb, "POST", "/api/v1/namespaces/%s/secrets" % NAMESPACE,
                      {"metadata": {"name": "app-credentials"}, "stringData": {"password": "s3cret"}}, token=None)
    assert code in (201, 409), body
    rules = rbac.token_rules(rbac_documents(), NAMESPACE, SERVICE_ACCOUNT)
    for path, body in (("/_kubesim/tokens", {"token": ADMIN_TOKEN, "user": "test-admin"}),
                       ("/_kubesim/tokens", {"token": DEPLOYER_TOKEN, "user": USER, "rules": rules}),
                       # The app's own identity: read its flags, nothing else.
                       ("/_kubesim/anonymous", {"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"],
                                                           "namespaces": [NAMESPACE], "resourceNames": ["feature-flags"]}]}),
                       ("/_kubesim/requests", {"record": True})):
        code, answer = kube(sb, "POST", path, body)
        assert code == 201, answer
    # The inventory's kubeconfig (scripts/sandbox env) now carries the deployer's token: the playbooks run unchanged.
    kubeconfig = env["KUBECONFIG"]
    with open(kubeconfig, encoding="utf-8") as handle:
        config = json.load(handle)
    config["users"][0]["user"] = {"token": DEPLOYER_TOKEN}
    with open(kubeconfig, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    assert kube(sb, "GET", "/api/v1/namespaces/%s/secrets" % NAMESPACE, token=None)[0] == 403
    assert kube(sb, "GET", "/api/v1/namespaces/%s/secrets/app-credentials" % NAMESPACE, token=DEPLOYER_TOKEN)[0] == 403
    take_log(sb)
    LOG.clear()
    return sb


def run(sb, name, *extra):
    started = time.monotonic()
    rc, out = playbook(sb, name, *extra, timeout=1800, env={"K8S_AUTH_KUBECONFIG": sb.env()["KUBECONFIG"]})
    print("%s %s: rc %d in %.0f s" % (name, " ".join(extra), rc, time.monotonic() - started))
    return rc, out, take_log(sb)


@pytest.mark.timeout(2400)
def test_restore_path_passes_with_only_the_shipped_permissions(guarded):
    # The subject here is permissions, not speed: RTO on a busy machine is drill.yml's own tests' business.
    rc, out, requests = run(guarded, "drill.yml", "-e", "drill_fault=corruption", "-e", "drill_max_rto_seconds=3600")
    assert not forbidden(requests), forbidden(requests)
    assert rc == 0, out[-6000:]
    with open(os.path.join(guarded.config.sandbox_dir, "state", "drills", "latest.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["outcome"] == "passed" and report["rollback"]["path"] == "restore", report
    assert app_version(guarded) == "1.0.0" and ledger(guarded)["3.0.0"][0] == "rolled_back"
    assert {r["resource"] for r in requests if r["verb"] == "create"} >= {"volumesnapshots", "persistentvolumeclaims"}


@pytest.mark.timeout(1800)
def test_good_deploy_passes_with_only_the_shipped_permissions(guarded):
    rc, out, requests = run(guarded, "deploy.yml", "-e", manifest("2.0.0"))
    assert not forbidden(requests), forbidden(requests)
    assert rc == 0, out[-6000:]
    assert app_version(guarded) == "2.0.0" and ledger(guarded)["2.0.0"] == ("verified", True)


@pytest.mark.timeout(1800)
def test_failing_deploy_rolls_back_with_only_the_shipped_permissions(guarded):
    # Two paths a first attempt at a release takes, set up by the admin: the app had no flags ConfigMap yet (the
    # rollback deletes the one the deploy created), and an earlier attempt left a snapshot under the name this
    # run's snapshot takes (the snapshot stage deletes it first).
    flags = "/api/v1/namespaces/%s/configmaps/feature-flags" % NAMESPACE
    assert kube(guarded, "DELETE", flags)[0] == 200
    snapshots = "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/volumesnapshots" % NAMESPACE
    code, body = kube(guarded, "POST", snapshots, {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "db-2.1.0-data-db-0"},
        "spec": {"source": {"persistentVolumeClaimName": "data-db-0"}}})
    assert code == 201, body
    stale_uid = body["metadata"]["uid"]
    deadline = time.monotonic() + 120
    while not (kube(guarded, "GET", snapshots + "/db-2.1.0-data-db-0")[1].get("status") or {}).get("readyToUse"):
        assert time.monotonic() < deadline, "the stale snapshot did not become ready"
        time.sleep(0.5)
    take_log(guarded)

    rc, out, requests = run(guarded, "deploy.yml", "-e", manifest("2.1.0"))
    assert not forbidden(requests), forbidden(requests)
    assert rc != 0 and "release 2.1.0 did not deploy" in out and "verified: yes" in out, out[-6000:]
    assert app_version(guarded) == "2.0.0" and ledger(guarded)["2.1.0"][0] == "rolled_back"
    assert kube(guarded, "GET", flags)[0] == 404
    code, snapshot = kube(guarded, "GET", snapshots + "/db-2.1.0-data-db-0")
    assert code == 200 and snapshot["metadata"]["uid"] != stale_uid
    assert {(r["resource"], r["verb"]) for r in requests} >= {("configmaps", "delete"), ("volumesnapshots", "delete")}


FORBIDDEN_PLAYBOOK = """\
- name: Calls the shipped RBAC does not allow
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Delete a Secret
      kubernetes.core.k8s:
        kubeconfig: "{{ kubeconfig }}"
        api_version: v1
        kind: Secret
        namespace: sandbox
        name: app-credentials
        state: absent
      when: call == 'secret'

    - name: Snapshot a PVC in another namespace
      stateful.rollback.pvc_snapshot:
        kubeconfig: "{{ kubeconfig }}"
        namespace: default
        pvcs: [data-db-0]
        name_prefix: stolen-
      when: call == 'snapshot'
"""


@pytest.mark.parametrize("call, message", [
    ("secret", 'secrets "app-credentials" is forbidden: User "%s" cannot get resource "secrets" in API group "" '
               'in the namespace "sandbox"' % USER),
    ("snapshot", 'is forbidden: User "%s" cannot get resource "persistentvolumeclaims" in API group "" '
                 'in the namespace "default"' % USER),
])
def test_a_call_outside_the_rules_gets_403_and_a_clear_failure(guarded, tmp_path, call, message):
    path = tmp_path / "forbidden.yml"
    path.write_text(FORBIDDEN_PLAYBOOK)
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(path), "-e", "call=" + call,
                           "-e", "kubeconfig=" + guarded.env()["KUBECONFIG"]],
                          cwd=REPO, env=playbook_env(guarded), capture_output=True, text=True, timeout=600, check=False)
    out = (proc.stdout + proc.stderr).replace('\\"', '"')  # kubernetes.core prints the Status body as JSON
    assert proc.returncode != 0 and message in out, out[-4000:]
    requests = take_log(guarded)
    LOG[len(LOG) - len(requests):] = []  # not the playbooks' own calls
    assert forbidden(requests), requests
    assert kube(guarded, "GET", "/api/v1/namespaces/sandbox/secrets/app-credentials")[0] == 200
    code, snapshots = kube(guarded, "GET", "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots")
    assert code == 200 and snapshots["items"] == []


def test_every_permission_the_manifests_grant_was_used():
    if not LOG:
        pytest.skip("needs the playbook runs above")
    used = {(r["group"], r["resource"] + ("/" + r["subresource"] if r["subresource"] else ""), r["verb"])
            for r in LOG if r["code"] not in (401, 403)}
    docs = rbac_documents()
    unused = sorted(granted(docs) - used)
    assert not unused, "granted but never used by deploy.yml, rollback (revert and restore) and drill.yml: %s" % unused
    assert not forbidden(LOG)
