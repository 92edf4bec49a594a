"""Fault knobs: API errors and timeouts, snapshot and volume failures.

Every knob is a plain dict (what ``GET /_kubesim/faults`` shows, and what
``POST /_kubesim/faults`` accepts), kept by :class:`Faults`:

``{"type": "api_error", "count": 1, "code": 500, "verb": null, "path": null, "message": null, "discovery": false}``
    The next ``count`` matching API requests answer ``code`` with a Status body
    (``count: null`` = until cleared). ``verb`` matches the Kubernetes verb (get,
    list, watch, create, update, patch, delete, deletecollection) or the HTTP
    method; ``path`` is a regular expression searched in the URL path. Discovery
    requests (/api, /apis, /version, ...) only match with ``discovery: true``.
``{"type": "api_timeout", "count": 1, "seconds": 30, "then": "fail", ...}``
    Same matching; the request sleeps ``seconds`` first, then answers 504
    without applying anything (``then: "fail"``) or is served normally
    (``then: "process"``, the ambiguous "did my write happen?" case).
``{"type": "snapshot_error", "name": "pattern", "namespace": null, "message": "..."}``
    VolumeSnapshots whose name matches the fnmatch pattern get
    ``status.error.message`` and ``readyToUse: false``; no data is copied.
``{"type": "snapshot_not_ready", "name": "pattern", "seconds": null}``
    Matching snapshots stay ``readyToUse: false`` (for ``seconds``, or forever).
``{"type": "pvc_pending", "name": "pattern", "seconds": null}``
    Matching PVCs are not provisioned (stay Pending, with an event).
``{"type": "hide_group", "group": "snapshot.storage.k8s.io"}``
    The API group is not served: discovery omits it and every request under
    ``/apis/<group>`` answers 404, as on a cluster where its CRDs are not
    installed. Objects already stored are kept and reappear when cleared.
``{"type": "restore_fail", "name": "pattern", "message": "No space left on device"}``
    Provisioning matching PVCs from a snapshot (or a clone) fails like a full
    disk: the PVC stays Pending with a ProvisioningFailed event, the partial
    copy is removed, the source is untouched. Cleared = the next try succeeds.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import threading
import time

from .util import ApiError

DEFAULTS = {
    "api_error": {"count": 1, "code": 500, "verb": None, "path": None, "message": None, "discovery": False},
    "api_timeout": {"count": 1, "seconds": 30.0, "then": "fail", "verb": None, "path": None, "discovery": False},
    "snapshot_error": {"name": "*", "namespace": None, "message": "Failed to create snapshot: emulated CSI driver error"},
    "snapshot_not_ready": {"name": "*", "namespace": None, "seconds": None},
    "pvc_pending": {"name": "*", "namespace": None, "seconds": None},
    "restore_fail": {"name": "*", "namespace": None, "message": "No space left on device"},
    "hide_group": {"group": "snapshot.storage.k8s.io"},
}


class Faults:
    """Thread-safe list of active fault knobs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._faults = []
        self._ids = itertools.count(1)

    # -- generic ---------------------------------------------------------------------
    def add(self, spec):
        """Add a knob from a dict (see module doc); returns the stored knob (with ``id``)."""
        if not isinstance(spec, dict) or spec.get("type") not in DEFAULTS:
            given = spec.get("type") if isinstance(spec, dict) else spec
            raise ApiError(400, "unknown fault type %r; known: %s" % (given, ", ".join(sorted(DEFAULTS))))
        unknown = set(spec) - set(DEFAULTS[spec["type"]]) - {"type", "id"}
        if unknown:
            raise ApiError(400, "unknown fields for fault %s: %s" % (spec["type"], ", ".join(sorted(unknown))))
        fault = dict(DEFAULTS[spec["type"]])
        fault.update(spec)
        if fault.get("path"):
            try:
                re.compile(fault["path"])
            except re.error as exc:
                raise ApiError(400, "invalid path regular expression: %s" % exc)
        with self._lock:
            fault["id"] = next(self._ids)
            fault["added"] = time.monotonic()
            self._faults.append(fault)
            return dict(fault)

    def list(self):
        with self._lock:
            return [dict(f) for f in self._faults]

    def clear(self, fault_id=None):
        with self._lock:
            self._faults = [f for f in self._faults if fault_id is not None and f["id"] != fault_id]

    # -- convenience -----------------------------------------------------------------
    def api_error(self, count=1, code=500, verb=None, path=None, message=None, discovery=False):
        return self.add({"type": "api_error", "count": count, "code": code, "verb": verb, "path": path,
                         "message": message, "discovery": discovery})

    def api_timeout(self, count=1, seconds=30.0, then="fail", verb=None, path=None, discovery=False):
        return self.add({"type": "api_timeout", "count": count, "seconds": seconds, "then": then, "verb": verb,
                         "path": path, "discovery": discovery})

    def snapshot_error(self, name="*", message=None, namespace=None):
        spec = {"type": "snapshot_error", "name": name, "namespace": namespace}
        if message:
            spec["message"] = message
        return self.add(spec)

    def snapshot_not_ready(self, name="*", seconds=None, namespace=None):
        return self.add({"type": "snapshot_not_ready", "name": name, "seconds": seconds, "namespace": namespace})

    def pvc_pending(self, name="*", seconds=None, namespace=None):
        return self.add({"type": "pvc_pending", "name": name, "seconds": seconds, "namespace": namespace})

    def restore_fail(self, name="*", message="No space left on device", namespace=None):
        return self.add({"type": "restore_fail", "name": name, "message": message, "namespace": namespace})

    def hide_group(self, group="snapshot.storage.k8s.io"):
        return self.add({"type": "hide_group", "group": group})

    # -- used by the server and the controllers --------------------------------------
    def hidden_groups(self):
        """API groups a hide_group knob takes out of service."""
        with self._lock:
            return {f["group"] for f in self._faults if f["type"] == "hide_group"}

    def take_request_fault(self, verb, method, path, discovery):
        """The api_error/api_timeout knob for this request (its count is consumed), or None."""
        with self._lock:
            for fault in self._faults:
                if fault["type"] not in ("api_error", "api_timeout"):
                    continue
                if discovery and not fault.get("discovery"):
                    continue
                if fault.get("verb") and fault["verb"].lower() not in ((verb or "").lower(), method.lower()):
                    continue
                if fault.get("path") and not re.search(fault["path"], path):
                    continue
                if fault.get("count") is not None:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self._faults.remove(fault)
                return dict(fault)
        return None

    def object_fault(self, ftype, namespace, name):
        """The first active knob of ``ftype`` matching the object, or None (expired delays are ignored)."""
        with self._lock:
            for fault in self._faults:
                if fault["type"] != ftype:
                    continue
                if fault.get("namespace") and fault["namespace"] != namespace:
                    continue
                if not fnmatch.fnmatchcase(name, fault.get("name") or "*"):
                    continue
                if fault.get("seconds") is not None and time.monotonic() - fault["added"] >= float(fault["seconds"]):
                    continue
                return dict(fault)
        return None
