# -*- coding: utf-8 -*-
"""pvc_snapshot and pvc_snapshot_info refuse Kubernetes names, labels and selectors that the API server would
refuse, before any API request (issue 9, "Bad input").

The modules talk to a kubesim (scripts/kubesim) started in this process on a free 127.0.0.1 port; the test counts
the TCP connections its HTTP server accepts. A refused name must leave that count at zero: nothing was asked,
nothing was changed. The counter is shown to work by the valid cases, which do reach the server.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

import pytest
import testkit
from kubernetes import client, config

from ansible_collections.stateful.rollback.plugins.modules import pvc_snapshot, pvc_snapshot_info
from kubesim import KubeSim  # scripts/ is on sys.path (tests/conftest.py)

NS = "names"
SNAP = ("snapshot.storage.k8s.io", "v1", "volumesnapshots")


class Counted:
    """A kubesim whose HTTP server counts the requests it receives (every request, discovery included)."""

    def __init__(self, sim):
        self.lock = threading.Lock()
        self.count = 0
        server = sim._server  # pylint: disable=protected-access
        counter = self

        class CountingHandler(server.RequestHandlerClass):
            def _dispatch(self, method):
                with counter.lock:
                    counter.count += 1
                return super(CountingHandler, self)._dispatch(method)

        self.handler = CountingHandler
        server.RequestHandlerClass = CountingHandler


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    server = KubeSim(str(tmp_path_factory.mktemp("kubesim-names")), tick=0.05).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kubeconfig(sim, tmp_path_factory):
    return sim.write_kubeconfig(str(tmp_path_factory.mktemp("kubesim-names-cfg") / "kubeconfig"))


@pytest.fixture(scope="module")
def custom(sim, kubeconfig):
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        core = client.CoreV1Api(api_client)
        core.create_namespace({"metadata": {"name": NS}})
        # A bound PVC whose name leaves no room for a name_prefix (253 characters at most for a snapshot name).
        core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "d" * 250}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        deadline = time.monotonic() + 15
        while core.read_namespaced_persistent_volume_claim("d" * 250, NS).status.phase != "Bound":
            assert time.monotonic() < deadline, "the PVC was not bound"
            time.sleep(0.05)
        yield client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def counter(sim):
    return Counted(sim)


@pytest.fixture
def counted(counter, custom):
    with counter.lock:
        counter.count = 0
    return counter


def run(capsys, module, kubeconfig, **args):
    return testkit.run_module(capsys, module, dict(kubeconfig=kubeconfig, **args))


BAD_SNAPSHOT_ARGS = [
    ({"namespace": "Names", "pvcs": ["data"], "name": "s"}, "namespace 'Names' is not a valid Kubernetes namespace"),
    ({"namespace": "n" * 64, "pvcs": ["data"], "name": "s"}, "namespace is 64 characters long, over the limit of 63"),
    ({"namespace": "na_mes", "pvcs": ["data"], "name": "s"}, "namespace 'na_mes' is not a valid Kubernetes namespace"),
    ({"namespace": "names.x", "pvcs": ["data"], "name": "s"}, "namespace 'names.x' is not a valid Kubernetes namespace"),
    ({"namespace": NS, "pvcs": ["Data"], "name": "s"}, "pvcs[0] 'Data' is not a valid Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data", "d" * 254], "name": "s"}, "pvcs[1] is 254 characters long, over the limit of 253"),
    ({"namespace": NS, "pvcs": ["data"], "name": "snap_1"}, "name 'snap_1' is not a valid Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data"], "name": "-snap"}, "name '-snap' is not a valid Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data"], "name": "snap."}, "name 'snap.' is not a valid Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data"], "name": "sn ap"}, "name 'sn ap' is not a valid Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data"], "name": "sn\u00e4p"}, "is not a valid Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s" * 254}, "name is 254 characters long, over the limit of 253"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s/../x"}, "name 's/../x' is not a valid Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data"], "name_prefix": "Pre-"}, "name_prefix 'Pre-' is not a valid start of a Kubernetes name"),
    ({"namespace": NS, "pvcs": ["data"], "name_prefix": "p" * 253}, "name_prefix 'ppp"),
    ({"namespace": NS, "pvc_selector": "app in (a", "name_prefix": "p-"}, "pvc_selector 'app in (a' is not a valid label selector"),
    ({"namespace": NS, "pvc_selector": "", "name_prefix": "p-"}, "pvc_selector must be a non-empty label selector"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s", "labels": {"App Name": "x"}}, "labels key 'App Name' is not a valid label key"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s", "labels": {"k" * 64: "x"}}, "is not a valid label key"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s", "labels": {"Example.com/app": "x"}}, "is not a valid label key"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s", "labels": {"app": "v" * 64}}, "labels[app] 'vvv"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s", "labels": {"app": "a b"}}, "labels[app] 'a b' is not a valid label value"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s", "labels": {"app": "-a"}}, "labels[app] '-a' is not a valid label value"),
    ({"namespace": NS, "pvcs": ["data"], "name": "s", "volume_snapshot_class": "CSI"}, "volume_snapshot_class 'CSI' is not a valid"),
    ({"namespace": NS, "state": "restored", "name": "s", "target_pvc": "Data"}, "target_pvc 'Data' is not a valid Kubernetes name"),
    ({"namespace": NS, "state": "restored", "name": "s", "target_pvc": "data", "storage_class": "fast_ssd"},
     "storage_class 'fast_ssd' is not a valid Kubernetes name"),
    ({"namespace": NS, "state": "restored", "name": "s", "target_pvc": "data", "workload": {"kind": "StatefulSet", "name": "DB"}},
     "workload.name 'DB' is not a valid Kubernetes name"),
    ({"namespace": NS, "state": "restored", "name": None, "target_pvc": "data"}, "state=restored needs name"),
    ({"namespace": NS, "state": "restored", "name": "s", "target_pvc": "data", "size": "lots"}, "size 'lots' is not a Kubernetes quantity"),
    ({"namespace": NS, "state": "restored", "name": "s", "target_pvc": "data", "size": "-1Gi"}, "size must be a positive quantity"),
    ({"namespace": NS, "state": "pruned", "snapshot_selector": "set=prune", "protect": ["ok", "Not-OK"]},
     "protect[1] 'Not-OK' is not a valid Kubernetes name"),
    ({"namespace": NS, "state": "pruned", "snapshot_selector": "set==(prune)"}, "snapshot_selector 'set==(prune)' is not a valid label selector"),
    ({"namespace": NS, "state": "absent", "snapshot_selector": "a=b,,c=d"}, "snapshot_selector 'a=b,,c=d' is not a valid label selector"),
    ({"namespace": NS, "state": "absent", "name": "x" * 300}, "name is 300 characters long, over the limit of 253"),
]


@pytest.mark.parametrize("args, fragment", BAD_SNAPSHOT_ARGS)
def test_pvc_snapshot_refuses_bad_names_before_any_request(capsys, kubeconfig, counted, custom, args, fragment):
    result = run(capsys, pvc_snapshot, kubeconfig, **args)
    assert result["failed"] is True
    assert fragment in result["msg"], result["msg"]
    assert counted.count == 0, "the module reached the API server"
    assert custom.list_namespaced_custom_object(SNAP[0], SNAP[1], NS, SNAP[2])["items"] == []


BAD_INFO_ARGS = [
    ({"namespace": "Names"}, "namespace 'Names' is not a valid Kubernetes namespace"),
    ({"namespace": "n" * 64}, "namespace is 64 characters long, over the limit of 63"),
    ({"namespace": NS, "name": "Snap"}, "name 'Snap' is not a valid Kubernetes name"),
    ({"namespace": NS, "name": "s" * 254}, "name is 254 characters long, over the limit of 253"),
    ({"namespace": NS, "name": "a\x00b"}, "is not a valid Kubernetes name"),
    ({"snapshot_selector": "app=(db)"}, "snapshot_selector 'app=(db)' is not a valid label selector"),
    ({"snapshot_selector": "app=" + "v" * 64}, "is not a valid label selector"),
    ({"snapshot_selector": "!"}, "snapshot_selector '!' is not a valid label selector"),
]


@pytest.mark.parametrize("args, fragment", BAD_INFO_ARGS)
def test_pvc_snapshot_info_refuses_bad_names_before_any_request(capsys, kubeconfig, counted, args, fragment):
    result = run(capsys, pvc_snapshot_info, kubeconfig, **args)
    assert result["failed"] is True
    assert fragment in result["msg"], result["msg"]
    assert counted.count == 0, "the module reached the API server"


@pytest.mark.parametrize("args", [
    {"namespace": NS, "name": "s" * 253},                     # the longest object name
    {"namespace": "n" * 63},                                  # the longest namespace
    {"namespace": NS, "name": "a.b-c.d9"},
    {"snapshot_selector": "app=db,tier!=web,env in (a, b),!legacy,example.com/role"},
    {"snapshot_selector": "app.kubernetes.io/name notin (x)"},
])
def test_valid_names_at_the_limits_reach_the_api(capsys, kubeconfig, counted, args):
    """The counter sees requests: valid names (at the limits) are asked for, and found to be absent."""
    result = run(capsys, pvc_snapshot_info, kubeconfig, **args)
    assert result.get("failed") is not True, result
    assert result["snapshots"] == []
    assert counted.count > 0


def test_generated_name_over_the_limit_is_refused_before_any_write(capsys, kubeconfig, counted, custom):
    """name_prefix + the PVC's name is only known after reading the PVC: refused before anything is written."""
    result = run(capsys, pvc_snapshot, kubeconfig, namespace=NS, pvcs=["d" * 250], name_prefix="snap-")
    assert result["failed"] is True
    assert result["msg"] == ("name_prefix + PVC name is 255 characters long, over the limit of 253 for a Kubernetes object "
                             "name; choose a shorter name_prefix"), result["msg"]
    assert counted.count > 0  # the PVC was read
    assert custom.list_namespaced_custom_object(SNAP[0], SNAP[1], NS, SNAP[2])["items"] == []


def test_unreachable_api_still_gets_the_validation_message(capsys, monkeypatch, tmp_path):
    """With nothing listening, the failure is the name's, not a connection error: validation comes first."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    result = testkit.run_module(capsys, pvc_snapshot, {"host": "http://127.0.0.1:1", "api_key": "token-0123456789", "namespace": "BAD",
                                                       "pvcs": ["data"], "name": "s"})
    assert result["failed"] is True
    assert result["msg"] == ("namespace 'BAD' is not a valid Kubernetes namespace: at most 63 lowercase letters, digits "
                             "and '-', starting and ending with a letter or digit")
