"""Per-kind defaulting, admission and validation (the parts tests are likely to notice)."""

from __future__ import annotations

import base64
import copy
import zlib

from .util import ApiError, labels_match, parse_label_selector, parse_quantity, selector_to_string

DEFAULT_SC_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def default_storage_class(store):
    res = store.registry.find("storage.k8s.io", "v1", "storageclasses")
    defaults = [sc for sc in store.objects(res)
                if (sc["metadata"].get("annotations") or {}).get(DEFAULT_SC_ANNOTATION) == "true"]
    return defaults[-1]["metadata"]["name"] if defaults else None


def _invalid(res, obj, field, message):
    name = obj.get("metadata", {}).get("name", "")
    return ApiError(422, '%s.%s "%s" is invalid: %s: %s' % (res.kind, res.group or "core", name, field, message)
                    if res.group else '%s "%s" is invalid: %s: %s' % (res.kind, name, field, message), "Invalid",
                    {"name": name, "group": res.group, "kind": res.kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]})


def _check_selector(res, obj):
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        raise _invalid(res, obj, "spec.selector", "Required value")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not labels_match(parse_label_selector(selector_to_string(selector)), labels):
        raise _invalid(res, obj, "spec.template.metadata.labels",
                       "Invalid value: %r: `selector` does not match template `labels`" % (labels,))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
    if not containers:
        raise _invalid(res, obj, "spec.template.spec.containers", "Required value")


def _encode_string_data(obj):
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def apply_defaults(store, res, obj, creating):
    """Defaulting that the real API server applies on every write."""
    kind = res.kind
    spec = obj.get("spec")
    if kind == "Secret":
        obj.setdefault("type", "Opaque")
        _encode_string_data(obj)
    elif kind == "Namespace":
        obj.setdefault("metadata", {}).setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "PersistentVolumeClaim" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    elif kind == "PersistentVolume" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    elif kind == "StorageClass":
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")
    elif kind == "VolumeSnapshotContent" and isinstance(spec, dict):
        spec.setdefault("deletionPolicy", "Delete")
    elif kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif kind == "StatefulSet" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        if spec["updateStrategy"].get("type") == "RollingUpdate":
            spec["updateStrategy"].setdefault("rollingUpdate", {"partition": 0})
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        for template in spec.get("volumeClaimTemplates") or []:
            template.setdefault("apiVersion", "v1")
            template.setdefault("kind", "PersistentVolumeClaim")
            template.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    elif kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if creating and spec.get("clusterIP") != "None" and not spec.get("clusterIP"):
            num = zlib.crc32(("%s/%s" % (obj["metadata"].get("namespace"), obj["metadata"]["name"])).encode())
            spec["clusterIP"] = "10.96.%d.%d" % ((num >> 8) % 256, num % 254 + 1)
        if spec.get("clusterIP"):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])


def on_create(store, res, obj):
    apply_defaults(store, res, obj, True)
    kind = res.kind
    spec = obj.get("spec")
    if kind == "Namespace":
        obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
        obj["status"] = {"phase": "Active"}
    elif kind == "PersistentVolumeClaim":
        if not isinstance(spec, dict) or not spec.get("accessModes"):
            raise _invalid(res, obj, "spec.accessModes", "Required value: at least 1 access mode is required")
        try:
            parse_quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
        except ValueError:
            raise _invalid(res, obj, "spec.resources[storage]", "Required value")
        if spec.get("storageClassName") is None:
            default = default_storage_class(store)
            if default:
                spec["storageClassName"] = default
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if PVC_PROTECTION not in finalizers:
            finalizers.append(PVC_PROTECTION)
        obj["status"] = {"phase": "Pending"}
    elif kind == "PersistentVolume":
        obj["status"] = {"phase": "Available"}
    elif kind == "Pod":
        if not isinstance(spec, dict) or not spec.get("containers"):
            raise _invalid(res, obj, "spec.containers", "Required value")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("serviceAccountName", "default")
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif kind in ("Deployment", "StatefulSet"):
        _check_selector(res, obj)
        obj["status"] = {"replicas": 0, "availableReplicas": 0} if kind == "StatefulSet" else {}
    elif kind == "VolumeSnapshot":
        source = (spec or {}).get("source") or {}
        if bool(source.get("persistentVolumeClaimName")) == bool(source.get("volumeSnapshotContentName")):
            raise _invalid(res, obj, "spec.source",
                           "exactly one of persistentVolumeClaimName and volumeSnapshotContentName must be set")


def on_update(store, res, old, new):
    apply_defaults(store, res, new, False)
    kind = res.kind
    spec, old_spec = new.get("spec"), old.get("spec") or {}
    if kind == "Namespace":
        new["spec"] = copy.deepcopy(old_spec)  # spec.finalizers change only through /finalize
    elif kind == "PersistentVolumeClaim" and isinstance(spec, dict):
        for key in ("storageClassName", "volumeName", "volumeMode"):
            if key not in spec and key in old_spec:
                spec[key] = old_spec[key]
        strip = ("resources", "volumeAttributesClassName")
        if {k: v for k, v in spec.items() if k not in strip} != {k: v for k, v in old_spec.items() if k not in strip}:
            raise _invalid(res, new, "spec", "Forbidden: spec is immutable after creation except resources.requests and "
                                             "volumeAttributesClassName for bound claims")
    elif kind == "StatefulSet" and isinstance(spec, dict):
        _check_selector(res, new)
        changed = sorted(k for k in set(spec) | set(old_spec) if k not in STS_MUTABLE and spec.get(k) != old_spec.get(k))
        if changed:
            raise _invalid(res, new, "spec", "Forbidden: updates to statefulset spec for fields other than 'replicas', "
                                             "'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' "
                                             "and 'minReadySeconds' are forbidden")
    elif kind == "Deployment" and isinstance(spec, dict):
        _check_selector(res, new)
        if spec.get("selector") != old_spec.get("selector"):
            raise _invalid(res, new, "spec.selector", "Invalid value: field is immutable")


def install(store):
    store.on_create.append(on_create)
    store.on_update.append(on_update)
