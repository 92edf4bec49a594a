"""In-memory object store with Kubernetes write semantics.

Every write bumps one global resourceVersion and appends a watch event
(ADDED / MODIFIED / DELETED) to a bounded history that watchers read.
"""

from __future__ import annotations

import base64
import collections
import copy
import json
import random
import re
import threading
import uuid

from .util import ApiError, already_exists, conflict, fields_match, labels_match, not_found, now_rfc3339, apply_patch

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
IMMUTABLE_META = ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp",
                  "deletionGracePeriodSeconds")


def random_suffix(length=5):
    return "".join(random.choice(_GEN_CHARS) for dummy in range(length))


def spec_part(obj):
    """Everything but metadata and status: a change here bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


class WatchEvent:
    __slots__ = ("rv", "res", "type", "obj", "old")

    def __init__(self, rv, res, etype, obj, old):
        self.rv = rv
        self.res = res
        self.type = etype
        self.obj = obj
        self.old = old


class Store:
    """Objects by resource key, then by (namespace, name)."""

    def __init__(self, registry, history=10000):
        self.registry = registry
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.data = {res.key: {} for res in registry.resources}
        self.rv = 0
        self.history = collections.deque(maxlen=history)
        # Admission hooks: fn(store, res, obj) on create, fn(store, res, old, new) on update.
        self.on_create = []
        self.on_update = []
        self.namespaces = registry.find("", "v1", "namespaces")

    # -- helpers -----------------------------------------------------------------------
    def _emit(self, etype, res, obj, old=None):
        # Stored objects are never edited in place (every write stores a new dict),
        # so events share them instead of copying.
        self.history.append(WatchEvent(int(obj["metadata"]["resourceVersion"]), res, etype, obj, old))
        self.changed.notify_all()

    def _bump(self):
        self.rv += 1
        return str(self.rv)

    def _has_finalizers(self, res, obj):
        if obj.get("metadata", {}).get("finalizers"):
            return True
        return res is self.namespaces and bool((obj.get("spec") or {}).get("finalizers"))

    def _get(self, res, ns, name):
        obj = self.data[res.key].get((ns or "", name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def check_namespace(self, ns, creating=True):
        nsobj = self.data[self.namespaces.key].get(("", ns))
        if nsobj is None:
            raise not_found(self.namespaces, ns)
        if creating and nsobj["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "unable to create new content in namespace %s because it is being terminated" % ns,
                           "Forbidden", {"name": ns, "kind": "namespaces",
                                         "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]})

    @staticmethod
    def _check_kind(res, body):
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        if body.get("kind") and body["kind"] != res.kind:
            raise ApiError(400, "the object provided is unrecognized (must be of type %s): kind %s" % (res.kind, body["kind"]))
        if body.get("apiVersion") and body["apiVersion"] != res.api_version:
            raise ApiError(400, "the API version in the data (%s) does not match the expected API version (%s)"
                           % (body["apiVersion"], res.api_version))
        if not isinstance(body.get("metadata", {}), dict):
            raise ApiError(400, "metadata must be an object")

    # -- persistence -------------------------------------------------------------------
    def dump(self):
        """JSON-able image of every object and the resourceVersion counter (no watch history)."""
        with self.lock:
            return {"resourceVersion": self.rv,
                    "objects": {key: [obj for dummy, obj in sorted(objs.items())] for key, objs in self.data.items() if objs}}

    def load(self, image):
        """Replace the contents with a :meth:`dump` image (resources unknown to the registry are dropped)."""
        with self.lock:
            for key in self.data:
                self.data[key] = {}
            for key, objs in (image.get("objects") or {}).items():
                if key not in self.data:
                    continue
                for obj in objs:
                    meta = obj.get("metadata") or {}
                    self.data[key][(meta.get("namespace") or "", meta.get("name"))] = obj
            self.rv = max(self.rv, int(image.get("resourceVersion") or 0))
            self.history.clear()

    # -- reads ---------------------------------------------------------------------------
    def get(self, res, ns, name):
        with self.lock:
            return copy.deepcopy(self._get(res, ns, name))

    def try_get(self, res, ns, name):
        with self.lock:
            obj = self.data[res.key].get((ns or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, res, ns=None):
        """All objects of a resource (copies), optionally in one namespace."""
        with self.lock:
            return [copy.deepcopy(o) for (ons, dummy), o in sorted(self.data[res.key].items()) if ns is None or ons == ns]

    @staticmethod
    def matches(obj, ns=None, label_reqs=None, field_reqs=None):
        meta = obj.get("metadata", {})
        if ns and meta.get("namespace") != ns:
            return False
        if label_reqs and not labels_match(label_reqs, meta.get("labels")):
            return False
        if field_reqs and not fields_match(field_reqs, obj):
            return False
        return True

    def list(self, res, ns=None, label_reqs=None, field_reqs=None, limit=None, cont=None):
        """(items, resourceVersion, continue token, remaining)."""
        with self.lock:
            keys = sorted(self.data[res.key])
            start = None
            if cont:
                try:
                    start = tuple(json.loads(base64.b64decode(cont).decode())["start"])
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "continue key is not valid: illegal base64 data")
            items = []
            for key in keys:
                if start is not None and key <= start:
                    continue
                obj = self.data[res.key][key]
                if self.matches(obj, ns, label_reqs, field_reqs):
                    items.append(copy.deepcopy(obj))
            token, remaining = None, None
            if limit and len(items) > limit:
                remaining = len(items) - limit
                items = items[:limit]
                last = items[-1]["metadata"]
                token = base64.b64encode(json.dumps({"start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            return items, str(self.rv), token, remaining

    # -- writes --------------------------------------------------------------------------
    def create(self, res, ns, body, dry_run=False):
        self._check_kind(res, body)
        obj = copy.deepcopy(body)
        obj["kind"] = res.kind
        obj["apiVersion"] = res.api_version
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
            ns = ns or meta.get("namespace") or "default"
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        name = meta.get("name")
        if not name:
            raise ApiError(422, "%s in version \"%s\" cannot be handled as a %s: metadata.name: Required value: "
                                "name or generateName is required" % (res.kind, res.version, res.kind), "Invalid")
        pattern = _LABEL if res is self.namespaces else _SUBDOMAIN
        if not isinstance(name, str) or len(name) > 253 or not pattern.match(name):
            raise ApiError(422, '%s "%s" is invalid: metadata.name: Invalid value: "%s": a lowercase RFC 1123 subdomain '
                                'must consist of lower case alphanumeric characters, \'-\' or \'.\'' % (res.kind, name, name),
                           "Invalid", {"name": str(name), "group": res.group, "kind": res.kind})
        if meta.get("resourceVersion"):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                    "managedFields", "selfLink"):
            meta.pop(key, None)
        with self.lock:
            if res.namespaced:
                self.check_namespace(ns)
            if (ns if res.namespaced else "", name) in self.data[res.key]:
                raise already_exists(res, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            if res.has_status():
                obj.pop("status", None)
            for hook in self.on_create:
                hook(self, res, obj)
            if dry_run:
                return obj
            meta["resourceVersion"] = self._bump()
            self.data[res.key][(ns if res.namespaced else "", name)] = obj
            self._emit("ADDED", res, obj)
            return copy.deepcopy(obj)

    def _prepare_update(self, res, old, body, subresource):
        if subresource == "status":
            new = copy.deepcopy(old)
            if body.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = copy.deepcopy(body["status"])
            return new
        new = copy.deepcopy(body)
        new["kind"] = res.kind
        new["apiVersion"] = res.api_version
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        for key in IMMUTABLE_META:
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if res.has_status():
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        for hook in self.on_update:
            hook(self, res, old, new)
        if spec_part(new) != spec_part(old):
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        return new

    def _commit(self, res, old, new, dry_run=False):
        if new == old:
            return copy.deepcopy(old)
        if dry_run:
            return new
        new["metadata"]["resourceVersion"] = self._bump()
        key = (new["metadata"].get("namespace", ""), new["metadata"]["name"])
        if new["metadata"].get("deletionTimestamp") and not self._has_finalizers(res, new):
            del self.data[res.key][key]
            self._emit("DELETED", res, new, old)
        else:
            self.data[res.key][key] = new
            self._emit("MODIFIED", res, new, old)
        return copy.deepcopy(new)

    def update(self, res, ns, name, body, subresource=None, dry_run=False):
        self._check_kind(res, body)
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise ApiError(400, "the name of the object (%s) does not match the name on the URL (%s)" % (meta["name"], name))
        if res.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
        with self.lock:
            old = self._get(res, ns, name)
            if meta.get("resourceVersion") and str(meta["resourceVersion"]) != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                               % (meta["uid"], old["metadata"]["uid"]), "Conflict")
            return self._commit(res, old, self._prepare_update(res, old, body, subresource), dry_run)

    def patch(self, res, ns, name, body, content_type, subresource=None, dry_run=False):
        with self.lock:
            old = self._get(res, ns, name)
            patched = apply_patch(old, body, content_type, crd=res.crd)
            if not isinstance(patched, dict):
                raise ApiError(422, "the patched object is not a JSON object")
            meta = patched.get("metadata") or {}
            if str(meta.get("resourceVersion") or old["metadata"]["resourceVersion"]) != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                               % (meta["uid"], old["metadata"]["uid"]), "Conflict")
            self._check_kind(res, patched)
            return self._commit(res, old, self._prepare_update(res, old, patched, subresource), dry_run)

    def mutate(self, res, ns, name, func, subresource=None):
        """Controller-side read-modify-write: ``func(obj)`` edits a copy in place.

        Returns the stored object (a copy) or None when it does not exist.
        With subresource='status' only the status part of the edit is kept.
        """
        with self.lock:
            old = self.data[res.key].get((ns or "", name))
            if old is None:
                return None
            new = copy.deepcopy(old)
            func(new)
            if subresource == "status":
                merged = copy.deepcopy(old)
                if new.get("status") is None:
                    merged.pop("status", None)
                else:
                    merged["status"] = new["status"]
                new = merged
            elif spec_part(new) != spec_part(old):
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
            return self._commit(res, old, new)

    def delete(self, res, ns, name, options=None, dry_run=False):
        """Returns (object, gone): gone is False while finalizers hold it."""
        options = options or {}
        with self.lock:
            old = self._get(res, ns, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                               % (pre["uid"], old["metadata"]["uid"]), "Conflict")
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object "
                                    "meta: %s" % (pre["resourceVersion"], old["metadata"]["resourceVersion"]), "Conflict")
            if options.get("propagationPolicy") == "Orphan" and not dry_run:
                self._orphan(old["metadata"]["uid"])
            if self._has_finalizers(res, old):
                if old["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(old), False
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                if res is self.namespaces:
                    new.setdefault("status", {})["phase"] = "Terminating"
                return self._commit(res, old, new, dry_run), False
            if dry_run:
                return copy.deepcopy(old), True
            return self._remove(res, old), True

    def _remove(self, res, old):
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = self._bump()
        del self.data[res.key][(old["metadata"].get("namespace", ""), old["metadata"]["name"])]
        self._emit("DELETED", res, gone, old)
        return copy.deepcopy(gone)

    def remove(self, res, ns, name):
        """Controller-side removal ignoring finalizers (e.g. a finished namespace)."""
        with self.lock:
            old = self.data[res.key].get((ns or "", name))
            return self._remove(res, old) if old is not None else None

    def _orphan(self, uid):
        for res in self.registry.resources:
            for key, obj in list(self.data[res.key].items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid] or None
                    if new["metadata"]["ownerReferences"] is None:
                        del new["metadata"]["ownerReferences"]
                    self._commit(res, self.data[res.key][key], new)

    def uid_exists(self, uid):
        with self.lock:
            return any(o["metadata"].get("uid") == uid for res in self.registry.resources for o in self.data[res.key].values())

    # -- watch ---------------------------------------------------------------------------
    def events_after(self, res, rv):
        """Events of ``res`` with resourceVersion > rv; raises ApiError(410) when they fell out of the history."""
        with self.lock:
            if self.history and self.history[0].rv > rv + 1 and rv < self.rv:
                raise ApiError(410, "too old resource version: %d (%d)" % (rv, self.history[0].rv - 1), "Expired")
            return [e for e in self.history if e.rv > rv and e.res is res]
