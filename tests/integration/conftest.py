"""Fixtures shared by the Kubernetes-side integration tests: a Kubernetes API
emulator (scripts/kubesim) on 127.0.0.1 per test module, its kubeconfig and
clients of the official ``kubernetes`` library talking to it over HTTP.

A module may set ``KUBESIM_TICK`` (seconds between controller passes) to
make the simulated controllers react faster."""

import pytest
from kubernetes import client, config

from kubesim import KubeSim  # scripts/ is on sys.path (tests/conftest.py)


@pytest.fixture(scope="module")
def sim(request, tmp_path_factory):
    options = {}
    tick = getattr(request.module, "KUBESIM_TICK", None)
    if tick is not None:
        options["tick"] = tick
    server = KubeSim(str(tmp_path_factory.mktemp("kubesim-data")), **options).start()
    yield server
    server.stop()
    assert not server.controllers.errors, server.controllers.errors


@pytest.fixture(scope="module")
def kubeconfig(sim, tmp_path_factory):
    return sim.write_kubeconfig(str(tmp_path_factory.mktemp("kubesim-cfg") / "kubeconfig"))


@pytest.fixture(scope="module")
def api(kubeconfig):
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        yield api_client


@pytest.fixture(scope="module")
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api):
    return client.AppsV1Api(api)


@pytest.fixture(scope="module")
def custom(api):
    return client.CustomObjectsApi(api)
