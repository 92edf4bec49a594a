"""The HTTP front end (Kubernetes REST protocol) and the :class:`KubeSim` API."""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from . import kinds
from .controllers import DRIVER, Controllers
from .faults import Faults
from .resources import Registry
from .store import Store
from .util import ApiError, apply_patch, parse_field_selector, parse_label_selector, selector_to_string, status_body

VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-kubesim", "gitCommit": "0" * 40, "gitTreeState": "clean",
           "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64",
           "emulationMajor": "1", "emulationMinor": "31"}
ADMIN_PREFIX = "/_kubesim"
ANONYMOUS = "system:anonymous"
REQUEST_LOG_SIZE = 100000


class _Route:
    def __init__(self, verb, res=None, namespace=None, name=None, sub=None, discovery=None):
        self.verb = verb
        self.res = res
        self.namespace = namespace
        self.name = name
        self.sub = sub
        self.discovery = discovery


def _first(query, key, default=None):
    values = query.get(key)
    return values[0] if values else default


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubesim/1"

    # -- plumbing ----------------------------------------------------------------------
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        if self.server.sim.verbose:
            sys.stderr.write("kubesim: %s %s\n" % (self.address_string(), format % args))

    def send_response(self, code, message=None):
        self.sent_code = code  # for the request log
        # Logged before the answer goes out: a client that reads the log right after its request finds it there.
        self._log_request(code)
        super().send_response(code, message)

    def _log_request(self, code):
        pending, self.pending_log = getattr(self, "pending_log", None), None
        if pending is not None:
            self.server.sim.record_request(pending["method"], pending["path"], pending["route"], pending["user"], code)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def _json(raw, required=True):
        if not raw:
            if required:
                raise ApiError(400, "the request body is empty")
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "the request body is not valid JSON: %s" % exc)

    def _dispatch(self, method):
        sim = self.server.sim
        url = urlsplit(self.path)
        path = "/" + url.path.strip("/")
        query = parse_qs(url.query)
        self.sent_code = None
        # What the request log gets (see _log_request): completed as the request is understood.
        self.pending_log = pending = {"method": method, "path": path, "route": None, "user": None}
        try:
            raw = self._read_body()
            if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                self.pending_log = None  # the emulator's own endpoints are not logged
                self._admin(method, path, raw)
                return
            pending["route"] = route = self._route(method, path, query)
            pending["user"] = user = sim.authenticate(self.headers.get("Authorization"))
            fault = sim.faults.take_request_fault(route.verb, method, path, route.discovery is not None)
            if fault:
                self._apply_fault(fault)
            if route.discovery is not None:
                if route.discovery == "__text__":
                    self._send_text(200, "ok")
                else:
                    self._send_json(200, route.discovery)
                return
            sim.authorize(user, route)
            self._serve(method, route, query, raw)
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in kubesim: answer like an API server would
            if sim.verbose:
                traceback.print_exc()
            self._send_json(500, status_body(500, "Internal error occurred: %s: %s" % (type(exc).__name__, exc)))
        finally:
            self._log_request(self.sent_code)  # when no answer was sent (the client went away)

    def _apply_fault(self, fault):
        sim = self.server.sim
        if fault["type"] == "api_timeout":
            sim.stopping.wait(float(fault.get("seconds") or 0))
            if fault.get("then") == "process":
                return
            raise ApiError(504, "Timeout: request did not complete within the allotted timeout (emulated by kubesim)",
                           "Timeout", {"retryAfterSeconds": 1})
        code = int(fault.get("code") or 500)
        raise ApiError(code, fault.get("message") or "Internal error occurred: emulated fault (kubesim)")

    # -- routing -------------------------------------------------------------------------
    def _route(self, method, path, query):
        sim = self.server.sim
        reg = sim.registry
        segs = [unquote(s) for s in path.strip("/").split("/") if s]
        hidden = sim.faults.hidden_groups()
        not_found = ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if len(segs) >= 2 and segs[0] == "apis" and segs[1] in hidden:
            raise not_found
        if method == "GET":
            if path == "/version":
                return _Route("get", discovery=dict(VERSION))
            if path in ("/healthz", "/livez", "/readyz"):
                return _Route("get", discovery="__text__")
            if segs == ["api"]:
                return _Route("get", discovery=reg.api_versions("%s:%d" % sim.address))
            if segs == ["apis"]:
                groups = reg.api_group_list()
                if hidden:
                    groups = dict(groups, groups=[g for g in groups["groups"] if g["name"] not in hidden])
                return _Route("get", discovery=groups)
            doc = None
            if len(segs) == 2 and segs[0] == "api":
                doc = reg.api_resource_list("", segs[1])
            elif len(segs) == 2 and segs[0] == "apis":
                doc = reg.api_group(segs[1])
            elif len(segs) == 3 and segs[0] == "apis":
                doc = reg.api_resource_list(segs[1], segs[2])
            if doc is not None:
                return _Route("get", discovery=doc)
        if len(segs) >= 3 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 4 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise not_found
        watch = False
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = reg.find(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise not_found
        res = reg.find(group, version, rest[0])
        if res is None:
            raise not_found
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (not res.namespaced and namespace is not None) or (sub and sub not in res.subresources):
            raise not_found
        if res.namespaced and namespace is None and name is not None:
            raise not_found
        if watch or (method == "GET" and _first(query, "watch", "") in ("true", "1")):
            if method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return _Route("watch", res, namespace, name)
        verbs = {"GET": ("get", "list"), "POST": (None, "create"), "PUT": ("update", None), "PATCH": ("patch", None),
                 "DELETE": ("delete", "deletecollection")}
        verb = verbs.get(method, (None, None))[0 if name else 1]
        if verb is None or verb not in res.verbs or (verb == "create" and res.namespaced and namespace is None):
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        return _Route(verb, res, namespace, name, sub)

    # -- resources -------------------------------------------------------------------------
    def _serve(self, method, route, query, raw):
        store = self.server.sim.store
        res, ns, name, sub = route.res, route.namespace, route.name, route.sub
        dry_run = bool(query.get("dryRun"))
        if route.verb == "get":
            obj = store.get(res, ns, name)
            self._send_json(200, self._scale_view(obj) if sub == "scale" else obj)
        elif route.verb == "list":
            self._list(res, ns, query)
        elif route.verb == "watch":
            if name:
                query.setdefault("fieldSelector", []).append("metadata.name=%s" % name)
            self._watch(res, ns, query)
        elif route.verb == "create":
            self._send_json(201, store.create(res, ns, self._json(raw), dry_run=dry_run))
        elif route.verb == "update":
            body = self._json(raw)
            if sub == "scale":
                self._send_json(200, self._update_scale(res, ns, name, body, None))
            else:
                self._send_json(200, store.update(res, ns, name, body, subresource=sub, dry_run=dry_run))
        elif route.verb == "patch":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype.startswith("application/apply-patch"):
                raise ApiError(415, "server-side apply (%s) is not supported by kubesim; use a JSON merge, strategic merge "
                                    "or JSON patch, or a client-side apply" % ctype, "UnsupportedMediaType")
            body = self._json(raw)
            if sub == "scale":
                self._send_json(200, self._update_scale(res, ns, name, body, ctype))
            else:
                self._send_json(200, store.patch(res, ns, name, body, ctype, subresource=sub, dry_run=dry_run))
        elif route.verb == "delete":
            options = self._delete_options(query, raw)
            obj, gone = store.delete(res, ns, name, options, dry_run=dry_run)
            if gone and res.kind != "Pod":
                self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                      "details": {"name": name, "group": res.group, "kind": res.plural,
                                                  "uid": obj["metadata"]["uid"]}})
            else:
                self._send_json(200, obj)
        elif route.verb == "deletecollection":
            options = self._delete_options(query, raw)
            label_reqs = parse_label_selector(_first(query, "labelSelector", ""))
            field_reqs = parse_field_selector(_first(query, "fieldSelector", ""))
            items, dummy, dummy2, dummy3 = store.list(res, ns, label_reqs, field_reqs)
            deleted = []
            for item in items:
                try:
                    obj, dummy = store.delete(res, item["metadata"].get("namespace"), item["metadata"]["name"], options,
                                              dry_run=dry_run)
                    deleted.append(obj)
                except ApiError as exc:
                    if exc.code != 404:
                        raise
            self._send_json(200, self._list_body(res, deleted, str(store.rv)))

    @staticmethod
    def _list_body(res, items, rv, token=None, remaining=None):
        if not res.crd:
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        meta = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        return {"kind": res.kind + "List", "apiVersion": res.api_version, "metadata": meta, "items": items}

    def _list(self, res, ns, query):
        store = self.server.sim.store
        label_reqs = parse_label_selector(_first(query, "labelSelector", ""))
        field_reqs = parse_field_selector(_first(query, "fieldSelector", ""))
        limit = int(_first(query, "limit", "0") or 0)
        items, rv, token, remaining = store.list(res, ns, label_reqs, field_reqs, limit or None, _first(query, "continue"))
        self._send_json(200, self._list_body(res, items, rv, token, remaining))

    def _delete_options(self, query, raw):
        options = self._json(raw, required=False) or {}
        if not isinstance(options, dict):
            raise ApiError(400, "DeleteOptions must be a JSON object")
        if _first(query, "propagationPolicy"):
            options["propagationPolicy"] = _first(query, "propagationPolicy")
        policy = options.get("propagationPolicy")
        if policy and policy not in ("Orphan", "Background", "Foreground"):
            raise ApiError(422, "DeleteOptions.propagationPolicy: Unsupported value: %r" % policy, "Invalid")
        return options

    # -- scale subresource -------------------------------------------------------------------
    @staticmethod
    def _scale_view(obj):
        meta = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in meta},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": selector_to_string((obj.get("spec") or {}).get("selector"))}}

    def _update_scale(self, res, ns, name, body, ctype):
        store = self.server.sim.store
        with store.lock:
            obj = store.get(res, ns, name)
            view = self._scale_view(obj)
            new = apply_patch(view, body, ctype) if ctype else body
            if not isinstance(new, dict):
                raise ApiError(400, "the body must be a Scale object")
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if rv and str(rv) != obj["metadata"]["resourceVersion"]:
                raise ApiError(409, 'Operation cannot be fulfilled on %s.%s "%s": the object has been modified; please apply '
                                    'your changes to the latest version and try again' % (res.plural, res.group, name),
                               "Conflict", {"name": name, "group": res.group, "kind": res.plural})
            replicas = (new.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise ApiError(422, 'Scale.autoscaling "%s" is invalid: spec.replicas: Invalid value: %r: must be greater '
                                    'than or equal to 0' % (name, replicas), "Invalid")

            def scale(target):
                target["spec"]["replicas"] = replicas
            return self._scale_view(store.mutate(res, ns, name, scale))

    # -- watch ---------------------------------------------------------------------------------
    def _write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, res, ns, query):
        sim = self.server.sim
        store = sim.store
        label_reqs = parse_label_selector(_first(query, "labelSelector", ""))
        field_reqs = parse_field_selector(_first(query, "fieldSelector", ""))
        timeout = float(_first(query, "timeoutSeconds", "0") or 0) or 1800.0
        since = _first(query, "resourceVersion", "")
        with store.lock:
            if since in ("", "0"):
                last = store.rv
                initial = store.list(res, ns, label_reqs, field_reqs)[0]
            else:
                try:
                    last = int(since)
                except ValueError:
                    raise ApiError(400, "invalid resourceVersion %r" % since)
                initial = []
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        # The connection stays usable after the terminating chunk (clients pool it).
        for obj in initial:
            self._write_chunk(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while not sim.stopping.is_set() and time.monotonic() < deadline:
            with store.changed:
                try:
                    events = store.events_after(res, last)
                except ApiError as exc:
                    self._write_chunk(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
                    break
                if not events:
                    store.changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                    continue
                last = store.rv
            for event in events:
                now_match = Store.matches(event.obj, ns, label_reqs, field_reqs)
                was_match = event.old is not None and Store.matches(event.old, ns, label_reqs, field_reqs)
                etype = None
                if event.type == "ADDED" and now_match:
                    etype = "ADDED"
                elif event.type == "MODIFIED":
                    etype = "MODIFIED" if now_match and was_match else "ADDED" if now_match else "DELETED" if was_match else None
                elif event.type == "DELETED" and (was_match or now_match):
                    etype = "DELETED"
                if etype:
                    self._write_chunk(json.dumps({"type": etype, "object": event.obj}).encode() + b"\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- admin -----------------------------------------------------------------------------------
    def _admin(self, method, path, raw):
        sim = self.server.sim
        rest = path[len(ADMIN_PREFIX):].strip("/").split("/")
        if rest[0] == "healthz":
            self._send_text(200, "ok")
        elif rest[0] == "faults" and method == "GET":
            self._send_json(200, {"faults": sim.faults.list()})
        elif rest[0] == "faults" and method == "POST":
            body = self._json(raw)
            specs = body if isinstance(body, list) else [body]
            self._send_json(201, {"faults": [sim.faults.add(spec) for spec in specs]})
        elif rest[0] == "faults" and method == "DELETE":
            sim.faults.clear(int(rest[1]) if len(rest) > 1 else None)
            self._send_json(200, {"faults": sim.faults.list()})
        elif rest[0] == "tokens" and method == "POST":
            body = self._json(raw)
            if not isinstance(body, dict) or not body.get("token") or not isinstance(body["token"], str):
                raise ApiError(400, 'POST /_kubesim/tokens takes {"token": "...", "user": "...", "rules": [...]}')
            sim.add_token(body["token"], body.get("rules"), body.get("user"))
            self._send_json(201, {"token": body["token"]})
        elif rest[0] == "anonymous" and method == "POST":
            body = self._json(raw)
            if not isinstance(body, dict):
                raise ApiError(400, 'POST /_kubesim/anonymous takes {"rules": [...], "user": "..."}')
            sim.allow_anonymous(body.get("rules") or [], body.get("user") or ANONYMOUS)
            self._send_json(201, {"user": sim.anonymous["user"]})
        elif rest[0] == "requests" and method == "GET":
            self._send_json(200, {"recording": sim.request_log is not None, "requests": sim.requests()})
        elif rest[0] == "requests" and method == "POST":
            body = self._json(raw, required=False) or {}
            sim.record_requests(bool(body.get("record", True)) if isinstance(body, dict) else True)
            self._send_json(201, {"recording": sim.request_log is not None})
        elif rest[0] == "requests" and method == "DELETE":
            self._send_json(200, {"recording": sim.request_log is not None, "requests": sim.requests(clear=True)})
        elif rest[0] == "errors" and method == "GET":
            self._send_json(200, {"errors": list(sim.controllers.errors)})
        else:
            raise ApiError(404, "unknown kubesim admin endpoint %s %s" % (method, path))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim = None


class KubeSim:
    """A Kubernetes API emulator on 127.0.0.1.

    >>> sim = KubeSim("/tmp/data").start()
    >>> sim.write_kubeconfig("/tmp/kubeconfig")
    >>> sim.stop()
    """

    def __init__(self, data_dir, host="127.0.0.1", port=0, tick=0.1, verbose=False, volume_mode=0o777, volume_owner=None,
                 persist=False):
        self.data_dir = os.path.abspath(data_dir)
        # persist=True: objects survive a restart in <data_dir>/store.json (the role etcd plays).
        self.state_file = os.path.join(self.data_dir, "store.json") if persist else None
        self._saved_rv = None
        self._saver = None
        self.volumes_dir = os.path.join(self.data_dir, "volumes")
        self.snapshots_dir = os.path.join(self.data_dir, "snapshots")
        self.host = host
        self.port = port
        self.verbose = verbose
        self.volume_mode = volume_mode
        self.volume_owner = volume_owner
        self.registry = Registry()
        self.store = Store(self.registry)
        kinds.install(self.store)
        self.faults = Faults()
        self.controllers = Controllers(self, tick)
        self.tokens = {}
        # Requests without a token once tokens exist: None = 401; else {"user", "rules"} (see allow_anonymous).
        self.anonymous = None
        # The request log (see record_requests): None = not recording.
        self.request_log = None
        self._log_lock = threading.Lock()
        # Optional authorizer(user, verb, resource, subresource, namespace, name) -> bool, consulted before token rules.
        self.authorizer = None
        self.stopping = threading.Event()
        self._server = None
        self._thread = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        os.makedirs(self.volumes_dir, exist_ok=True)
        os.makedirs(self.snapshots_dir, exist_ok=True)
        self._load()
        self._bootstrap()
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sim = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="kubesim-http", daemon=True)
        self._thread.start()
        self.controllers.start()
        if self.state_file:
            self._saver = threading.Thread(target=self._save_loop, name="kubesim-persist", daemon=True)
            self._saver.start()
        return self

    # -- persistence ----------------------------------------------------------------------------
    def _load(self):
        if not self.state_file or not os.path.exists(self.state_file):
            return
        with open(self.state_file, encoding="utf-8") as handle:
            image = json.load(handle)
        self.store.load(image)
        # No process survived with the emulator: workloads are not ready until
        # their controllers (and scale hooks) have brought the replicas back.
        for plural in ("statefulsets", "deployments"):
            res = self.registry.find("apps", "v1", plural)
            for obj in self.store.data[res.key].values():
                status = obj.get("status") or {}
                for key in ("readyReplicas", "availableReplicas", "currentReplicas", "updatedReplicas"):
                    status.pop(key, None)
        self._saved_rv = None

    def save(self):
        """Write the store to ``store.json`` now (atomically); a no-op without ``persist``."""
        if not self.state_file:
            return
        image = self.store.dump()
        if image["resourceVersion"] == self._saved_rv:
            return
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(image, handle, separators=(",", ":"))
        os.replace(tmp, self.state_file)
        self._saved_rv = image["resourceVersion"]

    def _save_loop(self):
        while not self.stopping.wait(0.2):
            try:
                self.save()
            except (OSError, ValueError) as exc:
                if self.verbose:
                    print("kubesim: cannot save %s: %s" % (self.state_file, exc), file=sys.stderr)

    def stop(self):
        self.stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self.controllers.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
        if self._saver is not None:
            self._saver.join(5)
            self._saver = None
        self.save()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return self.host, self.port

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def _bootstrap(self):
        find = self.registry.find
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._ensure(find("", "v1", "namespaces"), None, {"metadata": {"name": name}})
        self._ensure(find("", "v1", "services"), "default", {
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}})
        self._ensure(find("storage.k8s.io", "v1", "storageclasses"), None, {
            "metadata": {"name": "standard", "annotations": {kinds.DEFAULT_SC_ANNOTATION: "true"}},
            "provisioner": DRIVER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "allowVolumeExpansion": True})
        self._ensure(find("snapshot.storage.k8s.io", "v1", "volumesnapshotclasses"), None, {
            "metadata": {"name": "csi-hostpath-snapclass",
                         "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": DRIVER, "deletionPolicy": "Delete"})

    def _ensure(self, res, namespace, body):
        try:
            self.store.create(res, namespace, body)
        except ApiError as exc:
            if exc.code != 409:
                raise

    # -- kubeconfig and auth -------------------------------------------------------------------
    def write_kubeconfig(self, path, token=None, namespace="default", context="kubesim"):
        """Write a kubeconfig (JSON, which is YAML) for this server; returns the path."""
        user = {"token": token} if token else {}
        config = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                  "clusters": [{"name": context, "cluster": {"server": self.url}}],
                  "users": [{"name": context, "user": user}],
                  "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
                  "current-context": context}
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w") as handle:
            json.dump(config, handle, indent=2)
        os.chmod(path, 0o600)
        return path

    def add_token(self, token, rules=None, user=None):
        """Accept bearer ``token``. Once any token exists, requests without a known one get 401.

        ``rules`` (None = everything) are RBAC-like dicts: ``verbs``, ``apiGroups``
        (default any), ``resources`` (plural or "plural/subresource"), optional
        ``namespaces`` and ``resourceNames``; "*" matches anything. A request no
        rule allows gets 403 Forbidden.
        """
        self.tokens[token] = {"user": user or "kubesim-user-%d" % (len(self.tokens) + 1), "rules": rules}

    def allow_anonymous(self, rules, user=ANONYMOUS):
        """Serve requests that carry no token (once tokens exist) as ``user`` with ``rules``, as an API server with
        anonymous authentication does; ``rules=None`` allows everything. A request with an unknown token still gets 401."""
        self.anonymous = {"user": user, "rules": rules}

    def authenticate(self, header):
        if not self.tokens:
            return {"user": "kubesim-admin", "rules": None}
        token = header[7:].strip() if header and header.lower().startswith("bearer ") else None
        if token is None and self.anonymous is not None:
            return self.anonymous
        entry = self.tokens.get(token) if token else None
        if entry is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return entry

    # -- request log ----------------------------------------------------------------------------
    def record_requests(self, on=True):
        """Start (or stop) keeping a log of API requests; :meth:`requests` returns it."""
        with self._log_lock:
            if not on:
                self.request_log = None
            elif self.request_log is None:
                self.request_log = collections.deque(maxlen=REQUEST_LOG_SIZE)

    def requests(self, clear=False):
        """The logged requests, oldest first (dicts: time, user, method, path, verb, group, resource, subresource,
        namespace, name, code; discovery requests have ``resource`` None). ``clear`` empties the log."""
        with self._log_lock:
            entries = list(self.request_log or ())
            if clear and self.request_log is not None:
                self.request_log.clear()
        return entries

    def record_request(self, method, path, route, user, code):
        if self.request_log is None and not self.verbose:
            return
        res = getattr(route, "res", None)
        entry = {"time": time.time(), "user": (user or {}).get("user"), "method": method, "path": path,
                 "verb": getattr(route, "verb", None), "group": res.group if res else None,
                 "resource": res.plural if res else None, "subresource": getattr(route, "sub", None),
                 "namespace": getattr(route, "namespace", None), "name": getattr(route, "name", None), "code": code}
        with self._log_lock:
            if self.request_log is not None:
                self.request_log.append(entry)
        if self.verbose and res is not None:
            sys.stderr.write("kubesim: %s %s %s %s/%s%s %s -> %d\n" % (
                entry["user"], entry["verb"], res.group or "core", entry["namespace"] or "-", res.plural,
                "/" + entry["subresource"] if entry["subresource"] else "", entry["name"] or "", code or 0))

    def authorize(self, user, route):
        res = route.res
        allowed = None
        if self.authorizer is not None:
            allowed = self.authorizer(user["user"], route.verb, res, route.sub, route.namespace, route.name)
        if allowed is None:
            allowed = user["rules"] is None or any(self._rule_allows(rule, route) for rule in user["rules"])
        if allowed:
            return
        what = '%s "%s"' % (res.plural, route.name) if route.name else res.plural
        where = ' in the namespace "%s"' % route.namespace if route.namespace else " at the cluster scope"
        resource = "%s/%s" % (res.plural, route.sub) if route.sub else res.plural
        raise ApiError(403, '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s"%s'
                       % (what, user["user"], route.verb, resource, res.group, where), "Forbidden",
                       {"name": route.name or "", "group": res.group, "kind": res.plural})

    @staticmethod
    def _rule_allows(rule, route):
        def has(key, value, default=("*",)):
            values = rule.get(key) or list(default)
            return "*" in values or value in values
        resource = "%s/%s" % (route.res.plural, route.sub) if route.sub else route.res.plural
        if not has("verbs", route.verb, ()) or not has("apiGroups", route.res.group):
            return False
        if not has("resources", resource, ()):
            return False
        if rule.get("namespaces") and not has("namespaces", route.namespace or ""):
            return False
        if rule.get("resourceNames") and not has("resourceNames", route.name or ""):
            return False
        return True

    # -- hooks and helpers ---------------------------------------------------------------------
    def on_snapshot(self, namespace, claim, callback):
        """See :meth:`kubesim.controllers.Controllers.on_snapshot`."""
        return self.controllers.on_snapshot(namespace, claim, callback)

    def remove_snapshot_hook(self, hook_id):
        self.controllers.remove_snapshot_hook(hook_id)

    def on_scale(self, kind, namespace, name, callback):
        """See :meth:`kubesim.controllers.Controllers.on_scale`."""
        return self.controllers.on_scale(kind, namespace, name, callback)

    def remove_scale_hook(self, hook_id):
        self.controllers.remove_scale_hook(hook_id)

    def volume_path(self, namespace, claim):
        """Host directory of a bound PVC (None while it is not bound)."""
        return self.controllers.claim_path(namespace, claim)

    def snapshot_path(self, namespace, snapshot):
        """Host directory holding a bound VolumeSnapshot's data (None while unbound)."""
        snap = self.store.try_get(self.controllers.r_vs, namespace, snapshot)
        name = ((snap or {}).get("status") or {}).get("boundVolumeSnapshotContentName")
        content = self.store.try_get(self.controllers.r_vsc, "", name) if name else None
        return self.controllers.snapshot_path(content) if content else None

    def get(self, kind, namespace, name):
        """The stored object (a copy) or None; ``kind`` as in ``StatefulSet``."""
        return self.store.try_get(self.registry.by_kind(kind), namespace, name)

    def wait_for(self, predicate, timeout=10.0, interval=0.05):
        """Poll ``predicate()`` until truthy; returns its value or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met within %.1f s" % timeout)
            time.sleep(interval)
