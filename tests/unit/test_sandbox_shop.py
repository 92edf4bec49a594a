"""The demo shop's database URL stays out of what anyone can read.

* playbooks/demo/web.yml.j2 puts it in a Secret and the Deployment references it (secretKeyRef), so the roles that
  show the Deployment (deploy, rollback, at -v) never show it;
* the sandbox's Deployment hook resolves the container's environment as a kubelet does (scripts/sandbox_kube.py
  ``container_env``), failing like one on a missing Secret or key;
* the demo app hands psql the URL without its password (PGPASSWORD instead): a child's argv is public.

A stand-in for the emulator's store (a dict) serves ``container_env``: it only reads objects.
"""

from __future__ import annotations

import base64

import pytest

import demo_app  # scripts/ is on sys.path (tests/conftest.py)
import sandbox as sandbox_lib
import sandbox_kube

SECRET_URL = "postgresql://shop:s%40cret-4715@127.0.0.1:24320/app"


class Store:
    """What container_env reads of kubesim: ``get(kind, namespace, name)``."""

    def __init__(self, objects):
        self.objects = objects

    def get(self, kind, namespace, name):
        return self.objects.get((kind, namespace, name))


def secret(data):
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_the_template_keeps_the_url_in_a_secret_the_deployment_references():
    objects = sandbox_kube.shop_objects(sandbox_lib.Config(), "2.0.0", SECRET_URL)
    assert [o["kind"] for o in objects] == ["Secret", "Deployment"]
    secret_obj, deployment = objects
    assert secret_obj["metadata"]["name"] == "shop-database" and secret_obj["stringData"] == {"url": SECRET_URL}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == sandbox_kube.image_ref("2.0.0")
    assert {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "shop-database", "key": "url"}}} in container["env"]
    assert "s%40cret-4715" not in repr(deployment)


def test_container_env_resolves_values_secrets_and_configmaps():
    store = Store({("Secret", "sandbox", "db"): secret({"url": SECRET_URL}),
                   ("ConfigMap", "sandbox", "cfg"): {"data": {"mode": "fast"}}})
    container = {"env": [
        {"name": "PORT", "value": "24380"},
        {"name": "EMPTY"},
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}}},
    ]}
    assert sandbox_kube.container_env(store, "sandbox", container) == {
        "PORT": "24380", "EMPTY": "", "DATABASE_URL": SECRET_URL, "MODE": "fast"}


@pytest.mark.parametrize("ref, message", [
    ({"secretKeyRef": {"name": "nope", "key": "url"}}, 'CreateContainerConfigError: secret "nope" not found'),
    ({"secretKeyRef": {"name": "db", "key": "password"}}, "CreateContainerConfigError: couldn't find key password in Secret sandbox/db"),
    ({"configMapKeyRef": {"name": "cfg", "key": "url"}}, 'CreateContainerConfigError: configmap "cfg" not found'),
])
def test_container_env_fails_like_a_kubelet_on_a_missing_secret_or_key(ref, message):
    store = Store({("Secret", "sandbox", "db"): secret({"url": SECRET_URL})})
    with pytest.raises(RuntimeError) as err:
        sandbox_kube.container_env(store, "sandbox", {"env": [{"name": "X", "valueFrom": ref}]})
    assert str(err.value) == message


@pytest.mark.parametrize("url, psql_url, password", [
    (SECRET_URL, "postgresql://shop@127.0.0.1:24320/app", "s@cret-4715"),
    ("postgresql://127.0.0.1:24320/app?sslmode=disable", "postgresql://127.0.0.1:24320/app?sslmode=disable", None),
    ("host=127.0.0.1 port=24320 dbname=app", "host=127.0.0.1 port=24320 dbname=app", None),
])
def test_the_demo_app_gives_psql_the_password_in_its_environment(url, psql_url, password, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    app = demo_app.App("1.0.0", url, "psql")
    assert app.database_url == psql_url
    assert app.psql_env.get("PGPASSWORD") == password
