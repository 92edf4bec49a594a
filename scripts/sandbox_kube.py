"""The sandbox's Kubernetes side: a kubesim daemon in which the primary runs as a StatefulSet.

``scripts/sandbox up`` starts kubesim (scripts/kubesim, the Kubernetes API
emulator) as a background process that keeps its objects in
``<sandbox>/kube/store.json`` and writes ``<sandbox>/kubeconfig``. In it:

* namespace ``sandbox``, StatefulSet ``db`` (1 replica) with the
  volumeClaimTemplate ``data``, hence the PVC ``data-db-0``;
* the primary's data directory **is** that PVC's volume:
  ``<sandbox>/primary/data`` is a symlink to ``<volume>/pgdata``;
* a scale hook makes the StatefulSet drive the real server: scaling ``db`` to 0
  stops the primary cleanly (``pg_ctl stop -m fast``); scaling it to 1 starts
  it on whatever volume ``data-db-0`` is bound to *now*;
* a snapshot hook freezes that PostgreSQL (SIGSTOP of the postmaster and its
  children, SIGCONT afterwards) while kubesim copies the volume, so a
  VolumeSnapshot is the atomic, crash-consistent image a CSI driver takes.

So ``pvc_snapshot state=present`` -> change data -> scale ``db`` to 0 ->
``pvc_snapshot state=restored replace=true`` -> scale to 1 brings the old rows
back. When the primary starts on a *different* volume than last time (a
restore), its WAL history no longer matches its replicas': the standby would
stream from a position it already passed, and the subscriber would skip
changes it believes it has applied. The hook therefore fences both (stops them)
before starting the primary, then rebuilds them from it: the standby with a
fresh ``pg_basebackup``, the subscriber with a new schema copy and a new
subscription that copies every table again. ``scripts/sandbox resync`` does the
same rebuild on demand.

Only the stdlib is used (the sandbox runs under a plain ``python3``), but for
``shop_objects``/``install_shop``: the tests' and benchmarks' way to install the
demo shop, which also needs jinja2 and PyYAML (both in the repository's .venv).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

import sandbox as sb

NAMESPACE = "sandbox"
STATEFULSET = "db"
CLAIM_TEMPLATE = "data"
PVC = f"{CLAIM_TEMPLATE}-{STATEFULSET}-0"
PGDATA = "pgdata"
KUBE_SUBDIR = "kube"
KUBECONFIG = "kubeconfig"
PID_FILE = "kubesim.pid"
LOG_FILE = "kubesim.log"
VOLUME_RECORD = "volume"  # in the primary's node dir: the volume it last ran on
STORAGE = "2Gi"
SERVE_COMMAND = "kube-serve"
APPS_SUBDIR = "apps"
# The sandbox's "image registry": the demo application (scripts/demo_app.py) in
# these versions, each addressed by a digest derived from its version.
APP_REPOSITORY = "demo.local/shop"
APP_VERSIONS = ("1.0.0", "1.1.0", "2.0.0", "2.1.0", "3.0.0")


# --------------------------------------------------------------------------
# paths and the daemon process
# --------------------------------------------------------------------------


def kube_dir(config: "sb.Config") -> str:
    return os.path.join(config.sandbox_dir, KUBE_SUBDIR)


def kubeconfig_path(config: "sb.Config") -> str:
    return os.path.join(config.sandbox_dir, KUBECONFIG)


def _pid_file(config: "sb.Config") -> str:
    return os.path.join(kube_dir(config), PID_FILE)


def log_file(config: "sb.Config") -> str:
    return os.path.join(kube_dir(config), LOG_FILE)


def daemon_pid(config: "sb.Config") -> Optional[int]:
    """PID of this sandbox's kubesim daemon if it is alive (checked against its command line)."""
    try:
        with open(_pid_file(config), encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read().split(b"\0")
    except (OSError, ValueError):
        return None
    if SERVE_COMMAND not in argv or not any(a.endswith("sandbox.py") for a in argv):
        return None
    marker = f"SANDBOX_DIR={config.sandbox_dir}".encode()
    return pid if marker in environ else None


def server_url(config: "sb.Config") -> Optional[str]:
    """The API server URL written in the kubeconfig (kubesim writes it as JSON, which is YAML)."""
    try:
        with open(kubeconfig_path(config), encoding="utf-8") as handle:
            doc = json.load(handle)
        return doc["clusters"][0]["cluster"]["server"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _config_env(config: "sb.Config") -> Dict[str, str]:
    environ = dict(os.environ)
    for field, var in sb.Config.ENV_VARS.items():
        value = getattr(config, field)
        if value is not None:
            environ[var] = str(value)
    return environ


def start_daemon(config: "sb.Config") -> bool:
    """Start kubesim for this sandbox unless it runs. True if it was started."""
    if daemon_pid(config) and _answers(config):
        return False
    directory = kube_dir(config)
    sb._mkdir(directory, 0o755)
    marker = os.path.join(directory, sb.NODE_MARKER)
    if not os.path.exists(marker):
        if os.listdir(directory):
            raise sb.SandboxConflict(f"{directory} exists but was not created by the sandbox; refusing to use it")
        sb._write_file(marker, "kube\n", 0o644)
    try:
        os.unlink(kubeconfig_path(config))  # the daemon writes a fresh one once it listens
    except FileNotFoundError:
        pass
    sb.log("starting the Kubernetes API emulator (kubesim)")
    with open(log_file(config), "ab") as log:
        proc = subprocess.Popen([sys.executable, os.path.abspath(sb.__file__), SERVE_COMMAND],
                                env=_config_env(config), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=config.sandbox_dir, start_new_session=True)
    deadline = time.monotonic() + min(config.timeout, 60)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise sb.SandboxError(f"kubesim exited with status {proc.returncode}" + _log_tail(config))
        if server_url(config) and _answers(config):
            return True
        time.sleep(0.1)
    raise sb.SandboxError("kubesim did not start listening within 60 s" + _log_tail(config))


def stop_daemon(config: "sb.Config") -> bool:
    """SIGTERM our kubesim (it saves its objects and exits). True if it was running."""
    pid = daemon_pid(config)
    if not pid:
        return False
    sb.log("stopping kubesim")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not daemon_pid(config):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)  # our own, verified pid
    return True


def _log_tail(config: "sb.Config", lines: int = 15) -> str:
    try:
        with open(log_file(config), encoding="utf-8", errors="replace") as handle:
            tail = handle.read().splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- last lines of " + log_file(config) + " ---\n" + "\n".join(tail) if tail else ""


# --------------------------------------------------------------------------
# a minimal JSON client (stdlib)
# --------------------------------------------------------------------------


def api(config: "sb.Config", method: str, path: str, body: Optional[dict] = None,
        content_type: str = "application/json", timeout: float = 15) -> Optional[dict]:
    """One API request; returns the decoded body, or None for 404."""
    url = server_url(config)
    if not url:
        raise sb.SandboxError(f"no kubeconfig at {kubeconfig_path(config)}; is kubesim running?")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        try:
            message = json.loads(exc.read()).get("message")
        except (ValueError, AttributeError):
            message = None
        raise sb.SandboxError(f"kubesim: {method} {path} answered {exc.code}: {message or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise sb.SandboxError(f"kubesim: {method} {path} failed: {exc}") from None


def _answers(config: "sb.Config") -> bool:
    try:
        return bool(api(config, "GET", "/version", timeout=3))
    except sb.SandboxError:
        return False


def _ensure(config: "sb.Config", collection: str, name: str, body: dict) -> dict:
    current = api(config, "GET", f"{collection}/{name}")
    if current is not None:
        return current
    return api(config, "POST", collection, body)


# --------------------------------------------------------------------------
# the database's objects
# --------------------------------------------------------------------------

_PVC_PATH = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"
_STS_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets"
_LABELS = {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": STATEFULSET,
           "app.kubernetes.io/part-of": "stateful-rollback-sandbox"}


def _pvc_spec() -> dict:
    return {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
            "resources": {"requests": {"storage": STORAGE}}}


def _statefulset(replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": STATEFULSET, "namespace": NAMESPACE, "labels": dict(_LABELS),
                     "annotations": {"sandbox.stateful.rollback/runs": "the sandbox primary (scripts/sandbox scale hook)"}},
        "spec": {
            "replicas": replicas, "serviceName": STATEFULSET,
            "selector": {"matchLabels": dict(_LABELS)},
            "template": {"metadata": {"labels": dict(_LABELS)}, "spec": {"containers": [{
                "name": "postgres", "image": "postgres:15",
                "ports": [{"name": "postgresql", "containerPort": 5432}],
                "volumeMounts": [{"name": CLAIM_TEMPLATE, "mountPath": "/var/lib/postgresql/data"}],
                "env": [{"name": "PGDATA", "value": f"/var/lib/postgresql/data/{PGDATA}"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": CLAIM_TEMPLATE, "labels": dict(_LABELS)},
                                      "spec": _pvc_spec()}],
        },
    }


def ensure_namespace(config: "sb.Config") -> None:
    _ensure(config, "/api/v1/namespaces", NAMESPACE, {"metadata": {"name": NAMESPACE}})


def claim_volume(config: "sb.Config", claim: str = PVC) -> Optional[str]:
    """Host directory of the volume ``claim`` is bound to, or None."""
    pvc = api(config, "GET", f"{_PVC_PATH}/{claim}")
    if not pvc or (pvc.get("status") or {}).get("phase") != "Bound":
        return None
    pv = api(config, "GET", f"/api/v1/persistentvolumes/{pvc['spec'].get('volumeName')}")
    path = (((pv or {}).get("spec") or {}).get("csi") or {}).get("volumeAttributes", {}).get("path")
    return path if path and os.path.isdir(path) else None


def ensure_db_volume(config: "sb.Config") -> str:
    """Create the PVC data-db-0 (as the StatefulSet would) and return its bound volume's directory."""
    ensure_namespace(config)
    _ensure(config, _PVC_PATH, PVC, {"metadata": {"name": PVC, "labels": dict(_LABELS)}, "spec": _pvc_spec()})
    found: List[str] = []

    def bound():
        path = claim_volume(config)
        if path:
            found.append(path)
            return []
        return [f"PVC {NAMESPACE}/{PVC} is not Bound yet"]
    sb._wait(f"PVC {NAMESPACE}/{PVC} to be bound", bound, config.timeout)
    return found[-1]


def statefulset(config: "sb.Config") -> Optional[dict]:
    return api(config, "GET", f"{_STS_PATH}/{STATEFULSET}")


def ensure_statefulset(config: "sb.Config") -> List[str]:
    """StatefulSet db exists with at least one replica. Returns the actions taken."""
    sts = statefulset(config)
    if sts is None:
        api(config, "POST", _STS_PATH, _statefulset(1))
        return [f"created StatefulSet {NAMESPACE}/{STATEFULSET}"]
    if int((sts.get("spec") or {}).get("replicas", 1) or 0) < 1:
        api(config, "PATCH", f"{_STS_PATH}/{STATEFULSET}", {"spec": {"replicas": 1}},
            content_type="application/merge-patch+json")
        return [f"scaled StatefulSet {NAMESPACE}/{STATEFULSET} to 1"]
    return []


def wait_db_ready(config: "sb.Config") -> None:
    def problems():
        sts = statefulset(config) or {}
        want = int((sts.get("spec") or {}).get("replicas", 1) or 0)
        status = sts.get("status") or {}
        if status.get("readyReplicas", 0) != want or status.get("observedGeneration") != sts["metadata"].get("generation"):
            return [f"StatefulSet {STATEFULSET}: {status.get('readyReplicas', 0)}/{want} ready"]
        if want and not sb._postmaster_info(config, "primary"):
            return ["primary is not running"]
        return []
    sb._wait(f"StatefulSet {NAMESPACE}/{STATEFULSET} to be ready", problems, config.timeout)


def status(config: "sb.Config") -> dict:
    """The Kubernetes side for `sandbox status`."""
    pid = daemon_pid(config)
    out = {"running": bool(pid), "pid": pid, "url": server_url(config) if pid else None,
           "kubeconfig": kubeconfig_path(config), "namespace": NAMESPACE, "statefulset": STATEFULSET, "pvc": PVC,
           "replicas": None, "ready_replicas": None, "volume": None,
           "apps": {os.path.basename(path)[:-4]: pid for path, pid in _app_pids(config).items()}}
    if pid:
        try:
            sts = statefulset(config) or {}
            out["replicas"] = (sts.get("spec") or {}).get("replicas")
            out["ready_replicas"] = (sts.get("status") or {}).get("readyReplicas", 0)
            out["volume"] = claim_volume(config)
        except sb.SandboxError as exc:
            out["error"] = str(exc)
    return out


# --------------------------------------------------------------------------
# the primary on the PVC
# --------------------------------------------------------------------------


def prepare_primary_data_dir(config: "sb.Config", volume: str) -> None:
    """Point <sandbox>/primary/data at an empty <volume>/pgdata for initdb."""
    target = os.path.join(volume, PGDATA)
    if os.path.lexists(target):
        sb.log(f"clearing {target} (left by an unfinished build)")
        shutil.rmtree(target)
    sb._mkdir(target, 0o700)
    _point_data_dir(config, target)
    _record_volume(config, volume)


def _point_data_dir(config: "sb.Config", target: str) -> None:
    link = config.data_dir("primary")
    tmp = link + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _record_volume(config: "sb.Config", volume: str) -> None:
    sb._write_file(os.path.join(config.node_dir("primary"), VOLUME_RECORD), volume + "\n", 0o644)


def _recorded_volume(config: "sb.Config") -> Optional[str]:
    try:
        with open(os.path.join(config.node_dir("primary"), VOLUME_RECORD), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def resync_replicas(config: "sb.Config", bindir: Optional[str] = None) -> None:
    """Rebuild the standby (pg_basebackup) and the subscriber (schema copy + new subscription) from the primary."""
    bindir = bindir or sb.find_bindir(config)
    for node in ("subscriber", "standby"):
        sb._wipe_node(config, node, bindir)
    sb._provision_standby(config, bindir)
    sb._provision_subscriber(config, bindir)
    sb._wait("the rebuilt replicas to catch up", lambda: sb._health(config, bindir), config.timeout, interval=0.2)


def on_db_scale(config: "sb.Config", event) -> None:
    """kubesim scale hook of StatefulSet sandbox/db: run the primary on the PVC's current volume."""
    bindir = sb.find_bindir(config)
    if event.new_replicas == 0:
        with sb._Lock(config, config.timeout):
            sb._stop_node(config, "primary", bindir)
        return
    volume = event.volumes.get(PVC)
    if not volume:
        raise RuntimeError(f"PVC {PVC} is not bound")
    target = os.path.join(volume, PGDATA)
    if not os.path.isfile(os.path.join(target, "PG_VERSION")):
        raise RuntimeError(f"the volume of PVC {PVC} ({volume}) holds no PostgreSQL data directory ({PGDATA}/PG_VERSION)")

    def running_here():
        same = os.path.realpath(config.data_dir("primary")) == os.path.realpath(target)
        return same and sb._postmaster_info(config, "primary") and event.reason != "rollout"

    if running_here():
        _record_volume(config, volume)
        return
    with sb._Lock(config, config.timeout):
        if running_here():  # `sandbox up` started it meanwhile
            _record_volume(config, volume)
            return
        previous = _recorded_volume(config)
        restored = previous is not None and os.path.realpath(previous) != os.path.realpath(volume)
        if sb._postmaster_info(config, "primary"):
            sb._stop_node(config, "primary", bindir)
        if restored:
            sb.log(f"primary moves to volume {volume} (was {previous}): fencing the standby and the subscriber")
            for node in ("standby", "subscriber"):
                if sb._postmaster_info(config, node):
                    sb._stop_node(config, node, bindir)
            # The copy holds the pid file of the server it was taken from; that server is stopped.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(target, "postmaster.pid"))
        _point_data_dir(config, target)
        sb._start_node(config, "primary", bindir)
        _record_volume(config, volume)
        if restored and sb._is_provisioned(config, "standby"):
            sb.log("rebuilding the standby and the subscriber from the restored primary")
            resync_replicas(config, bindir)


# --------------------------------------------------------------------------
# snapshots: freeze the server while its volume is copied
# --------------------------------------------------------------------------


def _children(pid: int) -> List[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t", "Z", "X")
    except (OSError, IndexError):
        return True


def _postmaster_in(directory: str) -> Optional[int]:
    """PID of the postmaster whose working directory is ``directory`` (postgres chdirs to its data dir)."""
    try:
        with open(os.path.join(directory, "postmaster.pid"), encoding="utf-8") as handle:
            pid = int(handle.readline().strip())
        if os.path.realpath(f"/proc/{pid}/cwd") != os.path.realpath(directory):
            return None
    except (OSError, ValueError):
        return None
    return pid


@contextlib.contextmanager
def freeze(namespace: str, claim: str, path: str):
    """Hold the PostgreSQL running on this volume still (SIGSTOP) while the snapshot copies it."""
    pid = _postmaster_in(os.path.join(path, PGDATA))
    if pid is None:
        yield
        return
    frozen: List[int] = []
    try:
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)
        deadline = time.monotonic() + 5
        while not _stopped(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        for child in _children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                frozen.append(child)
        for child in frozen[1:]:
            while not _stopped(child) and time.monotonic() < deadline:
                time.sleep(0.005)
        yield
    finally:
        for proc in reversed(frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc, signal.SIGCONT)


# --------------------------------------------------------------------------
# the demo application: Deployments in namespace sandbox run scripts/demo_app.py
# --------------------------------------------------------------------------


def image_digest(version: str) -> str:
    return "sha256:" + hashlib.sha256(f"stateful-rollback demo shop {version}".encode()).hexdigest()


def image_ref(version: str) -> str:
    """The pinned image reference of a demo app version, e.g. demo.local/shop:2.0.0@sha256:..."""
    return f"{APP_REPOSITORY}:{version}@{image_digest(version)}"


def images() -> Dict[str, str]:
    return {version: image_ref(version) for version in APP_VERSIONS}


def version_for(image: str) -> Optional[str]:
    """The demo app version an image reference pins, or None (not in the sandbox's registry)."""
    repo, sep, digest = (image or "").partition("@")
    if not sep or repo.split(":", 1)[0] != APP_REPOSITORY:
        return None
    for version in APP_VERSIONS:
        if image_digest(version) == digest:
            return version
    return None


def _apps_dir(config: "sb.Config") -> str:
    return os.path.join(config.sandbox_dir, APPS_SUBDIR)


def _app_pids(config: "sb.Config", prefix: str = "") -> Dict[str, int]:
    """{pid file: pid} of the demo app processes still alive (checked against their command line)."""
    out = {}
    directory = _apps_dir(config)
    if not os.path.isdir(directory):
        return out
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".pid") or not entry.startswith(prefix):
            continue
        path = os.path.join(directory, entry)
        try:
            with open(path, encoding="utf-8") as handle:
                pid = int(handle.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.unlink(path)
            continue
        if any(a.endswith(b"demo_app.py") for a in argv):
            out[path] = pid
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return out


def stop_apps(config: "sb.Config", prefix: str = "") -> List[int]:
    """Stop the demo app processes whose pid file starts with ``prefix`` (all by default)."""
    pids = _app_pids(config, prefix)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for path, pid in pids.items():
        while os.path.exists(f"/proc/{pid}") and _stopped(pid) is False and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}") and not _stopped(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.unlink(path)
    return list(pids.values())


def _probe(url: str) -> tuple:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


def container_env(sim, namespace: str, container: dict) -> dict:
    """The container's environment as a kubelet builds it: ``value``, or ``valueFrom`` a Secret's or a
    ConfigMap's key (``secretKeyRef`` / ``configMapKeyRef``, read from the emulator's store). A missing
    object or key fails like the kubelet's CreateContainerConfigError, unless the reference is optional."""
    env = {}
    for entry in container.get("env") or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            continue
        source = entry.get("valueFrom") or {}
        for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = source.get(field)
            if not isinstance(ref, dict):
                continue
            obj = sim.get(kind, namespace, ref.get("name") or "") if sim is not None else None
            data = (obj or {}).get("data") or {}
            if ref.get("key") not in data:
                if ref.get("optional"):
                    break
                what = f'{kind.lower()} "{ref.get("name")}" not found' if obj is None else \
                    f'couldn\'t find key {ref.get("key")} in {kind} {namespace}/{ref.get("name")}'
                raise RuntimeError(f"CreateContainerConfigError: {what}")
            value = data[ref["key"]]
            env[entry["name"]] = base64.b64decode(value).decode() if kind == "Secret" else value
            break
        else:
            env[entry["name"]] = entry.get("value") or ""
    return env


def on_app_scale(config: "sb.Config", event, sim=None) -> None:
    """kubesim scale hook of Deployments in namespace sandbox: run the image's demo app version per replica.

    Recreate semantics: the old processes stop before the new ones start (they
    share the port). A readinessProbe with ``httpGet.path`` is honoured: the
    hook waits up to 15 s for HTTP 200 and fails like a failed probe otherwise,
    so the rollout does not complete and ``wait: true`` times out.
    """
    prefix = f"{event.namespace}.{event.name}."
    stop_apps(config, prefix)
    if event.new_replicas == 0:
        return
    containers = (((event.obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        raise RuntimeError("the pod template has no container")
    container = containers[0]
    image = container.get("image") or ""
    version = version_for(image)
    if version is None:
        raise RuntimeError(f'Failed to pull image "{image}": not found in the sandbox registry; '
                           "`scripts/sandbox images` lists the images it has (pinned by digest)")
    env = container_env(sim, event.namespace, container)
    try:
        port = int(env.get("PORT") or 0)
    except ValueError:
        port = 0
    if not port:
        raise RuntimeError("container env PORT (the port the demo app listens on) is not set")
    database_url = env.get("DATABASE_URL") or config.dsn("primary")
    flags = env.get("FLAGS_CONFIGMAP")
    flags_url = f"{server_url(config)}/api/v1/namespaces/{event.namespace}/configmaps/{flags}" if flags else None
    psql = os.path.join(sb.find_bindir(config), "psql")
    sb._mkdir(_apps_dir(config), 0o755)
    probe_path = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
    for index in range(event.new_replicas):
        argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_app.py"),
                "--version", version, "--port", str(port + index), "--host", config.host, "--psql", psql]
        if flags_url:
            argv += ["--flags-url", flags_url]
        # The database URL (with its password) goes in the environment, as in a container: not in argv, which
        # every local user can read in `ps`.
        with open(os.path.join(_apps_dir(config), f"{prefix}{index}.log"), "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                    env=dict(os.environ, DATABASE_URL=database_url))
        sb._write_file(os.path.join(_apps_dir(config), f"{prefix}{index}.pid"), f"{proc.pid}\n", 0o644)
    for index in range(event.new_replicas):
        url = f"http://{config.host}:{port + index}{probe_path or '/version'}"
        deadline = time.monotonic() + 15
        code, body = None, ""
        while time.monotonic() < deadline:
            code, body = _probe(url)
            if code == 200 or (code is not None and not probe_path):
                break
            time.sleep(0.2)
        if code != 200 and (probe_path or code is None):
            stop_apps(config, prefix)
            raise RuntimeError(f"Readiness probe failed: HTTP probe failed with statuscode: {code}: {body.strip()[:300]}")


def shop_objects(config: "sb.Config", version: str = "1.0.0", database_url: Optional[str] = None) -> List[dict]:
    """The demo shop's Secret and Deployment (playbooks/demo/web.yml.j2) for image ``version``, connecting
    with ``database_url`` (default: the primary's app DSN)."""
    import jinja2  # pylint: disable=import-outside-toplevel
    import yaml  # pylint: disable=import-outside-toplevel

    template = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "playbooks", "demo", "web.yml.j2")
    with open(template, encoding="utf-8") as handle:
        text = jinja2.Template(handle.read()).render(
            demo_namespace=NAMESPACE, demo_image=image_ref(version), demo_app_port=config.app_port,
            demo_database_url=database_url or config.dsn("primary"))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def install_shop(config: "sb.Config", version: str = "1.0.0", database_url: Optional[str] = None,
                 timeout: float = 120) -> None:
    """Install the demo shop as the first play of playbooks/demo.yml does (once: an existing Deployment is
    kept), then wait until its /healthz answers 200."""
    for obj in shop_objects(config, version, database_url):
        plural = {"Secret": "secrets", "Deployment": "deployments"}[obj["kind"]]
        prefix = "/api/v1" if obj["apiVersion"] == "v1" else "/apis/" + obj["apiVersion"]
        _ensure(config, f"{prefix}/namespaces/{NAMESPACE}/{plural}", obj["metadata"]["name"], obj)
    url = f"http://{config.host}:{config.app_port}/healthz"
    deadline = time.monotonic() + timeout
    code, body = _probe(url)
    while code != 200:
        if time.monotonic() > deadline:
            raise sb.SandboxError(f"the demo shop did not answer {url} with 200 within {timeout:.0f} s "
                                  f"(last: {code} {body.strip()[:300]})")
        time.sleep(0.3)
        code, body = _probe(url)


# --------------------------------------------------------------------------
# the daemon (`sandbox.py kube-serve`, started by start_daemon)
# --------------------------------------------------------------------------


def serve(config: "sb.Config") -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from kubesim import KubeSim  # pylint: disable=import-outside-toplevel

    with open(_pid_file(config) + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(_pid_file(config) + ".tmp", _pid_file(config))
    sim = KubeSim(kube_dir(config), host=config.host, port=config.kube_port, persist=True)
    sim.on_scale("StatefulSet", NAMESPACE, STATEFULSET, lambda event: on_db_scale(config, event))
    sim.on_snapshot(NAMESPACE, "*", freeze)
    sim.on_scale("Deployment", NAMESPACE, "*", lambda event: on_app_scale(config, event, sim))
    sim.start()
    sim.write_kubeconfig(kubeconfig_path(config), namespace=NAMESPACE, context="stateful-rollback-sandbox")
    print(f"kubesim listening on {sim.url}", flush=True)
    done = []
    signal.signal(signal.SIGTERM, lambda signum, frame: done.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: done.append(signum))
    while not done:
        time.sleep(0.2)
    sim.stop()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_pid_file(config))
    return 0
