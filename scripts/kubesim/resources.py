"""The resource types kubesim serves, and the discovery documents built from them."""

from __future__ import annotations

import hashlib

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUB_VERBS = ["get", "patch", "update"]


class Resource:
    """One API resource (``group/version/plural``)."""

    def __init__(self, group, version, plural, kind, namespaced, short_names=(), subresources=("status",), crd=False,
                 verbs=None, categories=()):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.singular = kind.lower()
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.subresources = tuple(subresources)
        # A CustomResourceDefinition in a real cluster: no strategic merge patch,
        # kind/apiVersion kept in list items.
        self.crd = crd
        self.verbs = list(verbs or ALL_VERBS)
        self.categories = list(categories)

    @property
    def key(self):
        return "%s/%s" % (self.group, self.plural)

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def prefix(self):
        return "/apis/%s/%s" % (self.group, self.version) if self.group else "/api/%s" % self.version

    def has_status(self):
        return "status" in self.subresources

    def discovery(self):
        """APIResource entries (the resource and its subresources)."""
        entry = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
            "storageVersionHash": hashlib.sha256(self.key.encode()).hexdigest()[:12],
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        out = [entry]
        for sub in self.subresources:
            if sub == "scale":
                out.append({"name": "%s/scale" % self.plural, "singularName": "", "namespaced": self.namespaced,
                            "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": list(SUB_VERBS)})
            else:
                out.append({"name": "%s/%s" % (self.plural, sub), "singularName": "", "namespaced": self.namespaced,
                            "kind": self.kind, "verbs": list(SUB_VERBS)})
        return out

    def __repr__(self):
        return "Resource(%s)" % self.key


def R(*args, **kwargs):  # pylint: disable=invalid-name
    return Resource(*args, **kwargs)


RESOURCES = [
    R("", "v1", "namespaces", "Namespace", False, ["ns"], verbs=["create", "delete", "get", "list", "patch", "update", "watch"]),
    R("", "v1", "pods", "Pod", True, ["po"], categories=["all"]),
    R("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"]),
    R("", "v1", "persistentvolumes", "PersistentVolume", False, ["pv"]),
    R("", "v1", "configmaps", "ConfigMap", True, ["cm"], subresources=()),
    R("", "v1", "secrets", "Secret", True, subresources=()),
    R("", "v1", "services", "Service", True, ["svc"], categories=["all"]),
    R("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"], subresources=()),
    R("", "v1", "events", "Event", True, ["ev"], subresources=()),
    R("apps", "v1", "deployments", "Deployment", True, ["deploy"], subresources=("status", "scale"), categories=["all"]),
    R("apps", "v1", "statefulsets", "StatefulSet", True, ["sts"], subresources=("status", "scale"), categories=["all"]),
    R("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ["sc"], subresources=()),
    R("coordination.k8s.io", "v1", "leases", "Lease", True, subresources=()),
    R("rbac.authorization.k8s.io", "v1", "roles", "Role", True, subresources=()),
    R("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, subresources=()),
    R("snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot", True, ["vs"], crd=True),
    R("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", "VolumeSnapshotContent", False, ["vsc", "vscs"], crd=True),
    R("snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", "VolumeSnapshotClass", False, ["vsclass", "vsclasses"],
      subresources=(), crd=True),
]


class Registry:
    """Lookup of resources by group/version/plural and by kind."""

    def __init__(self, resources=None):
        self.resources = list(resources or RESOURCES)
        self._by_path = {(r.group, r.version, r.plural): r for r in self.resources}
        self._by_kind = {}
        for res in self.resources:
            self._by_kind.setdefault(res.kind.lower(), res)

    def find(self, group, version, plural):
        return self._by_path.get((group, version, plural))

    def by_kind(self, kind):
        return self._by_kind.get(kind.lower())

    def groups(self):
        """{group: [versions]} in registration order (core group is '')."""
        out = {}
        for res in self.resources:
            versions = out.setdefault(res.group, [])
            if res.version not in versions:
                versions.append(res.version)
        return out

    # -- discovery documents -----------------------------------------------------
    def api_versions(self, server_address):
        return {"kind": "APIVersions", "versions": self.groups().get("", []),
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}

    def api_group(self, group):
        versions = self.groups().get(group)
        if not versions:
            return None
        gvs = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def api_group_list(self):
        groups = [self.api_group(g) for g in self.groups() if g]
        for group in groups:
            del group["kind"]
            del group["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_resource_list(self, group, version):
        found = [r for r in self.resources if r.group == group and r.version == version]
        if not found:
            return None
        entries = []
        for res in found:
            entries.extend(res.discovery())
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": found[0].api_version, "resources": entries}
