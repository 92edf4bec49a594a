# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CSI VolumeSnapshot logic: take, restore, delete and prune PVC snapshots.

Works on plain dicts through ``k8s.Kube``; every function returns a result dict
or raises ``K8sError`` with a message that says what to do.

Replacing a PVC with a snapshot (``state=restored``, ``replace=true``) never
deletes anything before the restored data exists, and every step can be
resumed by running the module again (see :meth:`Runner.safe_replace`):

1. restore the snapshot into a temporary PVC ``<target>-restore-<hash>`` and
   wait until it is Bound; on failure delete it, the target is not touched;
2. journal the swap on the restored PV (label ``stateful.rollback/swap=pending``,
   annotation with the target's metadata and the original reclaim policies)
   and set its reclaim policy to Retain;
3. set the replaced PV's reclaim policy to Retain;
4. delete the temporary PVC (the restored PV is Released, kept);
5. delete the target PVC (the replaced PV is Released, kept);
6. pre-bind the restored PV to the target's name (claimRef without uid);
7. create the target PVC again with ``spec.volumeName`` = the restored PV, and
   wait until it is Bound;
8. label (keep) or hand back to its reclaim policy the replaced PV, restore
   the restored PV's reclaim policy and remove the journal.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import re
import time

from ansible_collections.stateful.rollback.plugins.module_utils.k8s import K8sError, parse_quantity, wait_for

SNAP_API = "snapshot.storage.k8s.io/v1"
SNAP_GROUP = "snapshot.storage.k8s.io"
DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
SOURCE_ANNOTATION = "stateful.rollback/restored-from"
CRD_HELP = ("install the external-snapshotter CRDs and snapshot controller: "
            "https://github.com/kubernetes-csi/external-snapshotter#usage")
POLL = 0.25

# Objects of an unfinished restore, found again by these on a rerun.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "stateful.rollback"
ROLE_LABEL = "stateful.rollback/role"
TEMP_ROLE = "restore-temp"
SWAP_LABEL = "stateful.rollback/swap"
TARGET_ANNOTATION = "stateful.rollback/restore-target"
JOURNAL_ANNOTATION = "stateful.rollback/swap-journal"
# A PVC re-bound to a restored PV keeps its snapshot reference here (a pre-bound PVC carries no dataSource).
DATA_SOURCE_ANNOTATION = "stateful.rollback/data-source"
# The replaced PV when kept.
REPLACED_LABEL = "stateful.rollback/replaced-by-snapshot"
REPLACED_PVC_ANNOTATION = "stateful.rollback/replaced-pvc"
REPLACED_AT_ANNOTATION = "stateful.rollback/replaced-at"
REPLACED_BY_ANNOTATION = "stateful.rollback/replaced-by-volume"
RECLAIM_ANNOTATION = "stateful.rollback/original-reclaim-policy"
# On a workload scaled down for a restore, until it is scaled back.
REPLICAS_ANNOTATION = "stateful.rollback/replicas-before-restore"
# Set by the PV controller and provisioners on a bound claim; not copied to the re-created claim.
CONTROLLER_ANNOTATION_PREFIXES = ("pv.kubernetes.io/", "volume.kubernetes.io/", "volume.beta.kubernetes.io/")
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_PREFIX = re.compile(r"^[a-z0-9][-a-z0-9.]*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SELECTOR_KEY = r"(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_SELECTOR_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_SELECTOR_TERM = re.compile(r"^\s*(?:!?\s*{k}|{k}\s*(?:==|!=|=)\s*{v}|{k}\s+(?:in|notin)\s*\(\s*{v}(?:\s*,\s*{v})*\s*\))\s*$".format(
    k=_SELECTOR_KEY, v=_SELECTOR_VALUE))
DNS_LABEL_HELP = "at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
DNS_SUBDOMAIN_HELP = "at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"


def _quoted(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def name_problem(option, value, label=False):
    """Why ``value`` is not a valid Kubernetes object name (a DNS-1123 label when ``label``), or None."""
    pattern, limit, help_text = (_DNS_LABEL, 63, DNS_LABEL_HELP) if label else (_DNS_SUBDOMAIN, 253, DNS_SUBDOMAIN_HELP)
    if not isinstance(value, str):
        return "%s must be a name (a string), got %s" % (option, type(value).__name__)
    if len(value) > limit:
        return "%s is %d characters long, over the limit of %d for a Kubernetes %s" % (
            option, len(value), limit, "namespace" if label else "object name")
    if not pattern.match(value):
        return "%s %s is not a valid Kubernetes %s: %s" % (option, _quoted(value), "namespace" if label else "name", help_text)
    return None


def label_problems(option, labels):
    """Why the keys and values of ``labels`` are not valid Kubernetes labels (a list, empty when valid)."""
    out = []
    for key, value in (labels or {}).items():
        prefix, _slash, name = str(key).rpartition("/")
        if (not isinstance(key, str) or not _LABEL_NAME.match(name) or len(name) > 63
                or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or (_slash and not prefix)):
            out.append("%s key %s is not a valid label key: an optional DNS subdomain prefix and '/', then at most 63 "
                       "letters, digits, '-', '_' and '.', starting and ending with a letter or digit" % (option, _quoted(key)))
        elif not isinstance(value, str):
            out.append("%s[%s] must be a string, got %s" % (option, key, type(value).__name__))
        elif len(value) > 63 or not _LABEL_VALUE.match(value):
            out.append("%s[%s] %s is not a valid label value: at most 63 letters, digits, '-', '_' and '.', starting and "
                       "ending with a letter or digit" % (option, key, _quoted(value)))
    return out


def selector_problem(option, value):
    """Why ``value`` is not a label selector (key=value, key!=value, key in (a,b), key notin (a), key, !key), or None."""
    if not isinstance(value, str) or not value.strip():
        return "%s must be a non-empty label selector such as app=db" % option
    terms, depth, start = [], 0, 0
    for index, char in enumerate(value):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(value[start:index])
            start = index + 1
    terms.append(value[start:])
    bad = [term for term in terms if not _SELECTOR_TERM.match(term)]
    if bad:
        return "%s %s is not a valid label selector: %s is not key=value, key!=value, key in (v1,v2), key notin (v1), " \
               "key or !key" % (option, _quoted(value), _quoted(bad[0].strip()))
    return None


def invalid_params(params):
    """Every Kubernetes name, label and selector option of pvc_snapshot / pvc_snapshot_info that the API would refuse.

    Checked before the first API request, so bad input fails with the option's name and touches nothing.
    """
    out = []
    # ansible-core's required_if counts an option given as null as given.
    needs = {"present": (("pvcs", "pvc_selector"), ("name", "name_prefix")), "restored": (("name",), ("target_pvc",)),
             "absent": (("name", "snapshot_selector"),), "pruned": (("snapshot_selector",),)}
    for options in needs.get(params.get("state"), ()):
        if all(params.get(option) in (None, []) for option in options):
            out.append("state=%s needs %s" % (params["state"], " or ".join(options)))
    if params.get("namespace") is not None:
        out.append(name_problem("namespace", params["namespace"], label=True))
    for option in ("name", "target_pvc", "volume_snapshot_class", "storage_class"):
        if params.get(option) is not None:
            out.append(name_problem(option, params[option]))
    for option in ("pvcs", "protect"):
        for index, value in enumerate(params.get(option) or []):
            out.append(name_problem("%s[%d]" % (option, index), value))
    if params.get("workload"):
        out.append(name_problem("workload.name", params["workload"].get("name")))
    prefix = params.get("name_prefix")
    if prefix is not None:
        if not isinstance(prefix, str) or not _NAME_PREFIX.match(prefix) or len(prefix) > 252:
            out.append("name_prefix %s is not a valid start of a Kubernetes name: at most 252 lowercase letters, digits, "
                       "'-' and '.', starting with a letter or digit" % _quoted(prefix))
    for option in ("pvc_selector", "snapshot_selector"):
        if params.get(option) is not None:
            out.append(selector_problem(option, params[option]))
    out.extend(label_problems("labels", params.get("labels")))
    if params.get("size") not in (None, ""):
        try:
            if parse_quantity(params["size"]) <= 0:
                out.append("size must be a positive quantity such as 10Gi, got %s" % _quoted(params["size"]))
        except (K8sError, ValueError, OverflowError):
            out.append("size %s is not a Kubernetes quantity such as 10Gi or 500M" % _quoted(params["size"]))
    return [problem for problem in out if problem]


def _meta(obj):
    return obj.get("metadata") or {}


def _status(obj):
    return obj.get("status") or {}


def _spec(obj):
    return obj.get("spec") or {}


def _annotations(obj):
    return _meta(obj or {}).get("annotations") or {}


def _digest(text, length=8):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def label_value(text):
    """``text`` when it is a valid label value, else a shortened form with a hash (stable, at most 63 characters)."""
    text = str(text)
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    head = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[:54].strip("-_.") or "x"
    return "%s-%s" % (head, _digest(text))


def temp_pvc_name(namespace, target, marker):
    """``<target>-restore-<hash>``: a valid DNS-1123 subdomain of at most 253 characters, stable per restore."""
    suffix = "-restore-%s" % _digest("%s/%s/%s" % (namespace, target, marker))
    return target[:253 - len(suffix)].rstrip("-.") + suffix


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def snapshot_facts(snap):
    """The documented shape of one snapshot in results."""
    meta, status, spec = _meta(snap), _status(snap), snap.get("spec") or {}
    fact = dict(
        name=meta.get("name"),
        namespace=meta.get("namespace"),
        source_pvc=(spec.get("source") or {}).get("persistentVolumeClaimName"),
        volume_snapshot_class=spec.get("volumeSnapshotClassName"),
        restore_size=status.get("restoreSize"),
        creation_time=status.get("creationTime") or meta.get("creationTimestamp"),
        ready_to_use=status.get("readyToUse") if "readyToUse" in status else None,
        content_name=status.get("boundVolumeSnapshotContentName"),
        labels=dict(meta.get("labels") or {}),
    )
    error = (status.get("error") or {}).get("message")
    if error:
        fact["error"] = error
    return fact


def pvc_facts(pvc):
    meta, spec, status = _meta(pvc), pvc.get("spec") or {}, _status(pvc)
    data_source = spec.get("dataSource")
    if not data_source and _annotations(pvc).get(DATA_SOURCE_ANNOTATION):
        try:
            data_source = json.loads(_annotations(pvc)[DATA_SOURCE_ANNOTATION])
        except ValueError:
            data_source = None
    return dict(
        name=meta.get("name"),
        namespace=meta.get("namespace"),
        phase=status.get("phase"),
        storage_class=spec.get("storageClassName"),
        size=((spec.get("resources") or {}).get("requests") or {}).get("storage"),
        capacity=(status.get("capacity") or {}).get("storage"),
        volume_name=spec.get("volumeName"),
        data_source=data_source,
        restored_from=_annotations(pvc).get(SOURCE_ANNOTATION),
    )


class Runner:
    def __init__(self, kube, params, check_mode=False):
        self.kube = kube
        self.p = params
        self.check_mode = check_mode
        self.namespace = params.get("namespace")
        self.started = time.monotonic()
        self.timings = {}
        self.changed = False
        self.before = {}
        self.after = {}
        # False while the target PVC is deleted and not yet Bound again (a workload must then stay down).
        self.target_intact = True

    # -- helpers ------------------------------------------------------------------------------
    def require_snapshot_api(self):
        for kind in ("VolumeSnapshot", "VolumeSnapshotClass"):
            if not self.kube.served(SNAP_API, kind):
                raise K8sError("the cluster does not serve %s (%s); %s" % (kind, SNAP_API, CRD_HELP))

    def get_snapshot(self, name):
        return self.kube.get(SNAP_API, "VolumeSnapshot", name, self.namespace)

    def get_pvc(self, name):
        return self.kube.get("v1", "PersistentVolumeClaim", name, self.namespace)

    def _timed(self, key, started):
        self.timings[key] = round(self.timings.get(key, 0) + time.monotonic() - started, 3)

    def result(self, **extra):
        self.timings["total_seconds"] = round(time.monotonic() - self.started, 3)
        out = dict(changed=self.changed, timings=self.timings, diff=dict(before=self.before, after=self.after))
        out.update(extra)
        return out

    def wait_ready(self, name):
        started = time.monotonic()
        ok, snap = wait_for(lambda: self.get_snapshot(name),
                            lambda s: s is None or _status(s).get("readyToUse") is True
                            or bool((_status(s).get("error") or {}).get("message")),
                            self.p["wait_timeout"], POLL)
        self._timed("wait_seconds", started)
        if snap is None:
            raise K8sError("VolumeSnapshot %s/%s disappeared while waiting for it to become ready" % (self.namespace, name))
        error = (_status(snap).get("error") or {}).get("message")
        if error:
            raise K8sError("VolumeSnapshot %s/%s failed: %s" % (self.namespace, name, error), snapshots=[snapshot_facts(snap)])
        if not ok:
            raise K8sError("timed out after %ss waiting for VolumeSnapshot %s/%s to become readyToUse; last status: %s"
                           % (self.p["wait_timeout"], self.namespace, name, _status(snap) or "none yet"),
                           snapshots=[snapshot_facts(snap)])
        return snap

    def wait_gone(self, kind, api_version, name):
        started = time.monotonic()
        ok, obj = wait_for(lambda: self.kube.get(api_version, kind, name, self.namespace), lambda o: o is None,
                           self.p["wait_timeout"], POLL)
        self._timed("wait_seconds", started)
        if not ok:
            raise K8sError("timed out after %ss waiting for %s %s/%s to be deleted; finalizers: %s"
                           % (self.p["wait_timeout"], kind, self.namespace, name, _meta(obj).get("finalizers")))

    # -- present --------------------------------------------------------------------------------
    def source_pvcs(self):
        if self.p.get("pvcs"):
            pvcs = []
            for name in self.p["pvcs"]:
                pvc = self.get_pvc(name)
                if pvc is None:
                    raise K8sError("PersistentVolumeClaim %s/%s not found" % (self.namespace, name))
                pvcs.append(pvc)
        else:
            pvcs = self.kube.list("v1", "PersistentVolumeClaim", self.namespace, label_selector=self.p["pvc_selector"])
            if not pvcs:
                raise K8sError("no PersistentVolumeClaim in namespace %s matches pvc_selector %r"
                               % (self.namespace, self.p["pvc_selector"]))
        for pvc in pvcs:
            phase = _status(pvc).get("phase")
            if phase != "Bound":
                raise K8sError("PersistentVolumeClaim %s/%s is %s, not Bound; only a bound claim can be snapshotted"
                               % (self.namespace, _meta(pvc)["name"], phase or "without a phase"))
        return sorted(pvcs, key=lambda c: _meta(c)["name"])

    def _snapshot_classes(self, classes_cache):
        """Every VolumeSnapshotClass, listed once per run."""
        if "__all__" not in classes_cache:
            classes_cache["__all__"] = self.kube.list(SNAP_API, "VolumeSnapshotClass")
        return classes_cache["__all__"]

    def snapshot_class_for(self, pvc, classes_cache):
        wanted = self.p.get("volume_snapshot_class")
        if wanted:
            # Found in the list, not read by name: the list is what every other path needs too, so the shipped RBAC
            # (list on volumesnapshotclasses, docs/k8s/rbac.yml) serves a named class as well.
            if not any(_meta(c).get("name") == wanted for c in self._snapshot_classes(classes_cache)):
                raise K8sError("VolumeSnapshotClass '%s' not found; set volume_snapshot_class to an existing class "
                               "or create it for the CSI driver of the PVC's StorageClass" % wanted)
            return wanted
        sc_name = (pvc.get("spec") or {}).get("storageClassName")
        pvc_name = _meta(pvc)["name"]
        if not sc_name:
            raise K8sError("PersistentVolumeClaim %s/%s has no storageClassName; set volume_snapshot_class"
                           % (self.namespace, pvc_name))
        storage_class = self.kube.get("storage.k8s.io/v1", "StorageClass", sc_name)
        if storage_class is None:
            raise K8sError("StorageClass '%s' of PersistentVolumeClaim %s/%s not found; set volume_snapshot_class"
                           % (sc_name, self.namespace, pvc_name))
        driver = storage_class.get("provisioner")
        defaults = sorted(_meta(c)["name"] for c in self._snapshot_classes(classes_cache)
                          if c.get("driver") == driver
                          and str(_meta(c).get("annotations", {}).get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true")
        if not defaults:
            raise K8sError("no default VolumeSnapshotClass for driver '%s' (StorageClass '%s' of PVC %s/%s); set "
                           "volume_snapshot_class or annotate a class with %s: \"true\""
                           % (driver, sc_name, self.namespace, pvc_name, DEFAULT_CLASS_ANNOTATION))
        if len(defaults) > 1:
            raise K8sError("several default VolumeSnapshotClasses for driver '%s' (%s); set volume_snapshot_class"
                           % (driver, ", ".join(defaults)))
        return defaults[0]

    def present(self):
        pvcs = self.source_pvcs()
        if self.p.get("name") and len(pvcs) > 1:
            raise K8sError("name can only be used with one PVC, but %d match (%s); use name_prefix"
                           % (len(pvcs), ", ".join(_meta(c)["name"] for c in pvcs)))
        labels = self.p.get("labels") or {}
        classes = {}
        plan = []
        for pvc in pvcs:
            pvc_name = _meta(pvc)["name"]
            snap_name = self.p["name"] if self.p.get("name") else "%s%s" % (self.p["name_prefix"], pvc_name)
            problem = name_problem("name_prefix + PVC name", snap_name)
            if problem:
                raise K8sError("%s; choose a shorter name_prefix" % problem)
            existing = self.get_snapshot(snap_name)
            if existing is not None:
                source = ((existing.get("spec") or {}).get("source") or {})
                other = source.get("persistentVolumeClaimName")
                if other != pvc_name:
                    raise K8sError("VolumeSnapshot %s/%s already exists with source %s, not PVC %s; choose another name "
                                   "or delete it first" % (self.namespace, snap_name,
                                                           "PVC %s" % other if other else "content %s"
                                                           % source.get("volumeSnapshotContentName"), pvc_name))
            plan.append((pvc, snap_name, existing))
        # Only now (every name checked) resolve classes and write.
        results = []
        for pvc, snap_name, existing in plan:
            pvc_name = _meta(pvc)["name"]
            if existing is not None:
                self.before[snap_name] = snapshot_facts(existing)
                missing = {k: v for k, v in labels.items() if (_meta(existing).get("labels") or {}).get(k) != v}
                if missing:
                    self.changed = True
                    if not self.check_mode:
                        existing = self.kube.patch(SNAP_API, "VolumeSnapshot", snap_name, {"metadata": {"labels": missing}},
                                                   self.namespace)
                    else:
                        existing = dict(existing, metadata=dict(_meta(existing), labels=dict(_meta(existing).get("labels") or {},
                                                                                             **missing)))
                snap = existing
            else:
                class_name = self.snapshot_class_for(pvc, classes)
                body = {
                    "apiVersion": SNAP_API,
                    "kind": "VolumeSnapshot",
                    "metadata": {"name": snap_name, "namespace": self.namespace, "labels": dict(labels)},
                    "spec": {"volumeSnapshotClassName": class_name, "source": {"persistentVolumeClaimName": pvc_name}},
                }
                self.changed = True
                if self.check_mode:
                    snap = body
                else:
                    started = time.monotonic()
                    snap = self.kube.create(SNAP_API, "VolumeSnapshot", body, self.namespace)
                    self._timed("create_seconds", started)
            if not self.check_mode and self.p["wait"] and _status(snap).get("readyToUse") is not True:
                snap = self.wait_ready(snap_name)
            facts = snapshot_facts(snap)
            self.after[snap_name] = facts
            results.append(facts)
        return self.result(snapshots=results)

    # -- restored -------------------------------------------------------------------------------
    def checkpoint(self, step):
        """Called after each step of a restore; a no-op (tests interrupt the module here)."""

    def pods_mounting(self, claim):
        pods = []
        for pod in self.kube.list("v1", "Pod", self.namespace):
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                if ((volume.get("persistentVolumeClaim") or volume.get("persistent_volume_claim") or {})
                        .get("claimName") == claim):
                    pods.append((_meta(pod)["name"], _status(pod).get("phase")))
        return pods

    def active_pods_mounting(self, claim):
        """(name, phase) of the pods that hold the claim (every phase but Succeeded and Failed)."""
        return [(pod, phase) for pod, phase in self.pods_mounting(claim) if phase not in ("Succeeded", "Failed")]

    def refuse_if_mounted(self, target):
        busy = self.active_pods_mounting(target)
        if busy:
            raise K8sError("refusing to replace PersistentVolumeClaim %s/%s: it is mounted by %s; scale the workload down "
                           "first, or name it in workload to let this module scale it down and back up"
                           % (self.namespace, target, ", ".join("%s pod %s" % (phase or "Pending", pod) for pod, phase in busy)),
                           pods=[pod for pod, phase in busy])

    def find_swap_volume(self, target):
        """The restored PV of an unfinished swap into ``target`` (journal annotation), or None."""
        wanted = "%s/%s" % (self.namespace, target)
        found = [pv for pv in self.kube.list("v1", "PersistentVolume", label_selector="%s=pending" % SWAP_LABEL)
                 if _annotations(pv).get(TARGET_ANNOTATION) == wanted and _annotations(pv).get(JOURNAL_ANNOTATION)]
        if len(found) > 1:
            raise K8sError("several PersistentVolumes hold an unfinished swap into PersistentVolumeClaim %s: %s; keep the "
                           "one to finish and remove the label %s from the others" % (
                               wanted, ", ".join(sorted(_meta(pv)["name"] for pv in found)), SWAP_LABEL))
        if not found:
            return None, None
        try:
            journal = json.loads(_annotations(found[0])[JOURNAL_ANNOTATION])
        except ValueError:
            raise K8sError("PersistentVolume %s has an unreadable %s annotation; finish the swap into %s by hand"
                           % (_meta(found[0])["name"], JOURNAL_ANNOTATION, wanted))
        return found[0], journal

    def find_temp_pvcs(self, target):
        wanted = "%s/%s" % (self.namespace, target)
        return [pvc for pvc in self.kube.list("v1", "PersistentVolumeClaim", self.namespace,
                                              label_selector="%s=%s" % (ROLE_LABEL, TEMP_ROLE))
                if _annotations(pvc).get(TARGET_ANNOTATION) == wanted]

    def restore_spec(self, facts, template, source_pvc, replacing):
        """spec of a PVC restored from the snapshot: class, access modes and volume mode of ``template``.

        The size is the largest of the snapshot's restoreSize, the size option and (when replacing) the
        target's request, written as given.
        """
        tspec = _spec(template or {})
        target_size = ((tspec.get("resources") or {}).get("requests") or {}).get("storage")
        texts = [facts["restore_size"], self.p.get("size")] + ([target_size] if replacing else [])
        candidates = [(parse_quantity(text), str(text)) for text in texts if text]
        size_text = max(candidates, key=lambda c: c[0])[1] if candidates else target_size
        if not size_text:
            raise K8sError("VolumeSnapshot %s/%s has no restoreSize; set size" % (self.namespace, facts["name"]))
        spec = {
            "accessModes": tspec.get("accessModes") or ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size_text}},
            "dataSource": {"apiGroup": SNAP_GROUP, "kind": "VolumeSnapshot", "name": facts["name"]},
        }
        if replacing:
            storage_class = self.p.get("storage_class") or tspec.get("storageClassName")
        else:
            storage_class = self.p.get("storage_class") or _spec(source_pvc or {}).get("storageClassName") \
                or tspec.get("storageClassName")
        if storage_class:
            spec["storageClassName"] = storage_class
        if tspec.get("volumeMode"):
            spec["volumeMode"] = tspec["volumeMode"]
        return spec

    def rebound_claim(self, existing, spec, volume_name, marker):
        """The target PVC as it is re-created on the restored PV: its labels and annotations, pre-bound, no dataSource."""
        meta = _meta(existing)
        labels = dict(meta.get("labels") or {})
        labels.update(self.p.get("labels") or {})
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                       if not k.startswith(CONTROLLER_ANNOTATION_PREFIXES)}
        annotations[SOURCE_ANNOTATION] = marker
        annotations[DATA_SOURCE_ANNOTATION] = json.dumps(spec["dataSource"], sort_keys=True)
        new_spec = {k: v for k, v in spec.items() if k != "dataSource"}
        new_spec["volumeName"] = volume_name
        if _spec(existing).get("volumeAttributesClassName"):
            new_spec["volumeAttributesClassName"] = _spec(existing)["volumeAttributesClassName"]
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": meta["name"], "namespace": self.namespace, "labels": labels, "annotations": annotations},
                "spec": new_spec}
        if meta.get("ownerReferences"):
            body["metadata"]["ownerReferences"] = meta["ownerReferences"]
        return body

    def wait_bound(self, name, volume_name=None):
        """Wait until the PVC is Bound (to ``volume_name`` when given); (ok, last object)."""
        started = time.monotonic()
        ok, pvc = wait_for(lambda: self.get_pvc(name),
                           lambda c: c is not None and _status(c).get("phase") == "Bound"
                           and (volume_name is None or _spec(c).get("volumeName") == volume_name),
                           self.p["wait_timeout"], POLL)
        self._timed("wait_seconds", started)
        return ok, pvc

    def set_reclaim_policy(self, pv_name, policy):
        pv = self.kube.get("v1", "PersistentVolume", pv_name)
        if pv is not None and _spec(pv).get("persistentVolumeReclaimPolicy") != policy:
            pv = self.kube.patch("v1", "PersistentVolume", pv_name, {"spec": {"persistentVolumeReclaimPolicy": policy}})
        return pv

    def restored(self):
        name, target = self.p["name"], self.p["target_pvc"]
        snap = self.get_snapshot(name)
        if snap is None:
            raise K8sError("VolumeSnapshot %s/%s not found" % (self.namespace, name))
        if _status(snap).get("readyToUse") is not True:
            if self.p["wait"] and not self.check_mode:
                snap = self.wait_ready(name)
            else:
                raise K8sError("VolumeSnapshot %s/%s is not readyToUse; status: %s" % (self.namespace, name, _status(snap)))
        facts = snapshot_facts(snap)
        marker = "%s/%s" % (name, _meta(snap).get("uid"))
        existing = self.get_pvc(target)
        self.before = pvc_facts(existing) if existing is not None else {}
        swap_pv, journal = self.find_swap_volume(target)
        leftovers = self.find_temp_pvcs(target)
        work = Workload(self, self.p["workload"], target) if self.p.get("workload") else None
        extra = dict(snapshots=[facts], replaced_volume=None, resumed=journal is not None)
        if work is not None:
            extra["workload"] = work.facts()

        # What the target is restored from once an unfinished swap is finished, and whether this run restores.
        will_exist = existing is not None or journal is not None
        restored_from = journal["marker"] if journal else _annotations(existing).get(SOURCE_ANNOTATION)
        needs_restore = not will_exist or restored_from != marker or (self.p.get("force") and journal is None)
        if needs_restore and will_exist and not self.p.get("replace"):
            if restored_from == marker:
                raise K8sError("PersistentVolumeClaim %s/%s is already restored from VolumeSnapshot %s; force: true restores "
                               "it again and needs replace: true" % (self.namespace, target, name))
            raise K8sError("PersistentVolumeClaim %s/%s already exists and was not restored from VolumeSnapshot %s; set "
                           "replace: true to replace it, or choose another target_pvc" % (self.namespace, target, name))
        rebound = journal is not None and existing is not None and _spec(existing).get("volumeName") == _meta(swap_pv)["name"]
        touches_target = needs_restore or (journal is not None and not rebound)
        unfinished = journal is not None or bool(leftovers) or (work is not None and work.recorded is not None)
        if not needs_restore and not unfinished:
            self.after = self.before
            return self.result(pvc=pvc_facts(existing), **extra)
        if work is None and existing is not None and touches_target:
            self.refuse_if_mounted(target)
        spec = None
        if needs_restore:
            source_pvc = self.get_pvc(facts["source_pvc"]) if facts["source_pvc"] else None
            template = existing if existing is not None else (source_pvc if journal is None else None)
            spec = self.restore_spec(facts, template, source_pvc, replacing=will_exist)
        self.changed = True
        if self.check_mode:
            if needs_restore:
                body = {"metadata": {"name": target, "namespace": self.namespace,
                                     "annotations": {SOURCE_ANNOTATION: marker}}, "spec": spec}
                self.after = pvc_facts(body)
            else:
                self.after = dict(self.before or {"name": target, "namespace": self.namespace}, restored_from=journal["marker"])
            return self.result(pvc=self.after, **extra)

        self.target_intact = True
        try:
            if work is not None and touches_target:
                work.scale_down()
            keep = temp_pvc_name(self.namespace, target, marker) if needs_restore else None
            for pvc in leftovers:
                if _meta(pvc)["name"] not in (keep, (journal or {}).get("temp_pvc")):
                    self.kube.delete("v1", "PersistentVolumeClaim", _meta(pvc)["name"], self.namespace)
            pvc = existing
            if journal is not None:
                pvc, extra["replaced_volume"] = self.finish_swap(swap_pv, journal)
            if needs_restore:
                existing = self.get_pvc(target)
                if existing is None:
                    pvc = self.create_restored(target, spec, marker)
                else:
                    pvc, extra["replaced_volume"] = self.safe_replace(existing, spec, marker)
        except K8sError as exc:
            if work is not None and work.scaled_down:
                raise work.compensate(exc, self.target_intact)
            raise
        if work is not None and work.recorded is not None:
            work.scale_up()
        self.after = pvc_facts(pvc)
        return self.result(pvc=self.after, **extra)

    def create_restored(self, target, spec, marker):
        """A new PVC from the snapshot (nothing is replaced)."""
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": target, "namespace": self.namespace, "labels": dict(self.p.get("labels") or {}),
                             "annotations": {SOURCE_ANNOTATION: marker}},
                "spec": spec}
        pvc = self.kube.create("v1", "PersistentVolumeClaim", body, self.namespace)
        if self.p["wait"] or self.p.get("workload"):
            ok, pvc = self.wait_bound(target)
            if not ok:
                raise K8sError("timed out after %ss waiting for PersistentVolumeClaim %s/%s restored from %s to be Bound; "
                               "phase %s; last events: %s" % (self.p["wait_timeout"], self.namespace, target,
                                                              spec["dataSource"]["name"], _status(pvc or {}).get("phase"),
                                                              self.last_events(target)),
                               pvc=pvc_facts(pvc or body))
        return pvc

    def safe_replace(self, existing, spec, marker):
        """Replace the existing PVC with the snapshot without ever losing data; (new PVC, kept replaced PV name).

        Steps 1-2 (see the module docstring): restore into a temporary PVC, then journal the swap on the
        restored PV; :meth:`finish_swap` does the rest. A failure in step 1 deletes the temporary PVC and
        leaves the target untouched.
        """
        target = _meta(existing)["name"]
        snapshot = spec["dataSource"]["name"]
        temp_name = temp_pvc_name(self.namespace, target, marker)
        temp = self.get_pvc(temp_name)
        if temp is not None and _meta(temp).get("deletionTimestamp"):
            self.wait_gone("PersistentVolumeClaim", "v1", temp_name)
            temp = None
        if temp is None:
            body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": temp_name, "namespace": self.namespace,
                                 "labels": {MANAGED_BY_LABEL: MANAGER, ROLE_LABEL: TEMP_ROLE},
                                 "annotations": {TARGET_ANNOTATION: "%s/%s" % (self.namespace, target),
                                                 SOURCE_ANNOTATION: marker}},
                    "spec": spec}
            try:
                self.kube.create("v1", "PersistentVolumeClaim", body, self.namespace)
            except K8sError as exc:
                raise K8sError("cannot restore VolumeSnapshot %s/%s: %s; PersistentVolumeClaim %s/%s was not changed"
                               % (self.namespace, snapshot, exc.msg, self.namespace, target))
        started = time.monotonic()
        ok, temp = self.wait_bound(temp_name)
        self._timed("restore_seconds", started)
        if not ok:
            events = self.last_events(temp_name)
            phase = _status(temp or {}).get("phase")
            self.kube.delete("v1", "PersistentVolumeClaim", temp_name, self.namespace)
            try:
                self.wait_gone("PersistentVolumeClaim", "v1", temp_name)
                cleanup = "the temporary PVC was deleted"
            except K8sError as exc:
                cleanup = "deleting the temporary PVC did not finish (%s)" % exc.msg
            raise K8sError("restoring VolumeSnapshot %s/%s failed: the temporary PersistentVolumeClaim %s was not Bound "
                           "after %ss (phase %s); last events: %s; %s; PersistentVolumeClaim %s/%s was not changed"
                           % (self.namespace, snapshot, temp_name, self.p["wait_timeout"], phase or "unknown",
                              "; ".join(events) or "none", cleanup, self.namespace, target),
                           pvc=pvc_facts(existing))
        self.checkpoint("temp-bound")
        new_name = _spec(temp)["volumeName"]
        new_pv = self.kube.get("v1", "PersistentVolume", new_name)
        if new_pv is None:
            raise K8sError("PersistentVolume %s of the temporary PersistentVolumeClaim %s/%s is gone; PersistentVolumeClaim "
                           "%s/%s was not changed" % (new_name, self.namespace, temp_name, self.namespace, target))
        old_name = _spec(existing).get("volumeName") if _status(existing).get("phase") == "Bound" else None
        old_pv = self.kube.get("v1", "PersistentVolume", old_name) if old_name else None
        journal = {
            "target": target, "target_uid": _meta(existing).get("uid"), "marker": marker, "snapshot": snapshot,
            "temp_pvc": temp_name, "old_volume": old_name if old_pv is not None else None,
            "old_reclaim_policy": _spec(old_pv or {}).get("persistentVolumeReclaimPolicy"),
            "new_reclaim_policy": _spec(new_pv).get("persistentVolumeReclaimPolicy") or "Delete",
            "claim": self.rebound_claim(existing, spec, new_name, marker),
        }
        # Step 2, in one write: from now on a rerun finds this PV and finishes the swap.
        new_pv = self.kube.patch("v1", "PersistentVolume", new_name, {
            "metadata": {"labels": {MANAGED_BY_LABEL: MANAGER, SWAP_LABEL: "pending"},
                         "annotations": {TARGET_ANNOTATION: "%s/%s" % (self.namespace, target),
                                         JOURNAL_ANNOTATION: json.dumps(journal, sort_keys=True)}},
            "spec": {"persistentVolumeReclaimPolicy": "Retain"}})
        self.checkpoint("journaled")
        return self.finish_swap(new_pv, journal)

    def finish_swap(self, new_pv, journal):
        """Steps 3-8 of a replace; each one checks whether it is already done, so a rerun resumes here.

        Returns (the target PVC, Bound to the restored PV; the replaced PV's name when it is kept).
        """
        target, new_name, old_name = journal["target"], _meta(new_pv)["name"], journal.get("old_volume")
        where = "%s/%s" % (self.namespace, target)
        retained = ", ".join(name for name in (new_name, old_name) if name)
        started = time.monotonic()
        # 3. The replaced volume outlives its claim.
        if old_name:
            self.set_reclaim_policy(old_name, "Retain")
        self.checkpoint("old-volume-retained")
        # 4. The temporary claim goes; the restored volume is kept (Retain) and becomes Released.
        if _spec(new_pv).get("persistentVolumeReclaimPolicy") != "Retain":
            self.set_reclaim_policy(new_name, "Retain")
        if self.get_pvc(journal["temp_pvc"]) is not None:
            self.kube.delete("v1", "PersistentVolumeClaim", journal["temp_pvc"], self.namespace)
            self.wait_gone("PersistentVolumeClaim", "v1", journal["temp_pvc"])
        self.checkpoint("temp-deleted")
        # 5. The target claim goes; the replaced volume is kept (Retain) and becomes Released.
        current = self.get_pvc(target)
        if current is not None and _spec(current).get("volumeName") != new_name:
            if _meta(current).get("uid") != journal["target_uid"]:
                raise K8sError("PersistentVolumeClaim %s was created again by someone else (volume %s) while its swap to the "
                               "restored PersistentVolume %s was unfinished; delete that claim and rerun to finish the swap "
                               "(PersistentVolumes %s are Retained)"
                               % (where, _spec(current).get("volumeName") or "none", new_name, retained))
            self.refuse_if_mounted(target)
            self.target_intact = False
            self.kube.delete("v1", "PersistentVolumeClaim", target, self.namespace)
            self.wait_gone("PersistentVolumeClaim", "v1", target)
            current = None
            self.checkpoint("target-deleted")
        if current is None:
            self.target_intact = False
            # 6. Pre-bind the restored volume to the target's name (claimRef without uid).
            pv = self.kube.get("v1", "PersistentVolume", new_name)
            if pv is None:
                raise K8sError("the restored PersistentVolume %s is gone before PersistentVolumeClaim %s was bound to it; "
                               "the replaced PersistentVolume %s is Retained" % (new_name, where, old_name or "(none)"))
            ref = _spec(pv).get("claimRef") or {}
            if (ref.get("name"), ref.get("namespace"), ref.get("uid")) != (target, self.namespace, None):
                self.kube.patch("v1", "PersistentVolume", new_name, {"spec": {"claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": self.namespace, "name": target,
                    "uid": None, "resourceVersion": None, "fieldPath": None}}})
            self.checkpoint("volume-prebound")
            # 7. The target claim again, on the restored volume.
            current = self.kube.create("v1", "PersistentVolumeClaim", journal["claim"], self.namespace)
            self.checkpoint("target-created")
        ok, current = self.wait_bound(target, new_name)
        if not ok:
            raise K8sError("timed out after %ss waiting for PersistentVolumeClaim %s to be Bound to the restored "
                           "PersistentVolume %s; phase %s; last events: %s; rerun to finish the swap (PersistentVolumes %s "
                           "are Retained)" % (self.p["wait_timeout"], where, new_name, _status(current or {}).get("phase"),
                                              "; ".join(self.last_events(target)) or "none", retained))
        self.target_intact = True
        self.checkpoint("target-bound")
        # 8. The replaced volume is kept (labelled) or handed back to its reclaim policy; then the journal goes.
        kept = self.finish_replaced_volume(old_name, journal, new_name)
        self.checkpoint("replaced-volume-done")
        self.kube.patch("v1", "PersistentVolume", new_name, {
            "metadata": {"labels": {MANAGED_BY_LABEL: None, SWAP_LABEL: None},
                         "annotations": {TARGET_ANNOTATION: None, JOURNAL_ANNOTATION: None, SOURCE_ANNOTATION: journal["marker"]}},
            "spec": {"persistentVolumeReclaimPolicy": journal.get("new_reclaim_policy") or "Delete"}})
        self._timed("swap_seconds", started)
        return current, kept

    def finish_replaced_volume(self, old_name, journal, new_name):
        if not old_name:
            return None
        pv = self.kube.get("v1", "PersistentVolume", old_name)
        if pv is None:
            return None
        original = journal.get("old_reclaim_policy") or "Delete"
        if not self.p.get("keep_replaced_volume", True) and original != "Retain":
            self.kube.patch("v1", "PersistentVolume", old_name, {"spec": {"persistentVolumeReclaimPolicy": original}})
            return None
        self.kube.patch("v1", "PersistentVolume", old_name, {
            "metadata": {"labels": {REPLACED_LABEL: label_value(journal["snapshot"])},
                         "annotations": {REPLACED_PVC_ANNOTATION: "%s/%s" % (self.namespace, journal["target"]),
                                         REPLACED_AT_ANNOTATION: _annotations(pv).get(REPLACED_AT_ANNOTATION) or _now(),
                                         REPLACED_BY_ANNOTATION: new_name, RECLAIM_ANNOTATION: original}},
            "spec": {"persistentVolumeReclaimPolicy": "Retain"}})
        return old_name

    def last_events(self, name):
        try:
            events = self.kube.list("v1", "Event", self.namespace, field_selector="involvedObject.name=%s" % name)
        except K8sError:
            return []
        return ["%s: %s" % (e.get("reason"), e.get("message")) for e in events[-3:]]

    # -- absent / pruned ------------------------------------------------------------------------
    def selected_snapshots(self):
        if self.p.get("name"):
            snap = self.get_snapshot(self.p["name"])
            return [snap] if snap else []
        return self.kube.list(SNAP_API, "VolumeSnapshot", self.namespace, label_selector=self.p["snapshot_selector"])

    def delete_all(self, snaps):
        names = [_meta(s)["name"] for s in snaps]
        if names:
            self.changed = True
        if self.check_mode or not names:
            return
        started = time.monotonic()
        for name in names:
            self.kube.delete(SNAP_API, "VolumeSnapshot", name, self.namespace)
        self._timed("delete_seconds", started)
        if self.p["wait"]:
            for name in names:
                self.wait_gone("VolumeSnapshot", SNAP_API, name)

    def absent(self):
        snaps = self.selected_snapshots()
        self.before = {_meta(s)["name"]: snapshot_facts(s) for s in snaps}
        self.delete_all(snaps)
        self.after = {}
        return self.result(snapshots=[snapshot_facts(s) for s in snaps])

    def pruned(self):
        keep, protect = self.p["keep"], set(self.p.get("protect") or [])
        snaps = self.kube.list(SNAP_API, "VolumeSnapshot", self.namespace, label_selector=self.p["snapshot_selector"])
        groups = {}
        for snap in snaps:
            groups.setdefault(snapshot_facts(snap)["source_pvc"] or "", []).append(snap)
        doomed = []
        for group in groups.values():
            group.sort(key=lambda s: (_meta(s).get("creationTimestamp") or "", _meta(s)["name"]), reverse=True)
            doomed.extend(s for s in group[keep:] if _meta(s)["name"] not in protect)
        doomed_names = set(_meta(s)["name"] for s in doomed)
        self.before = {_meta(s)["name"]: snapshot_facts(s) for s in snaps}
        self.after = {k: v for k, v in self.before.items() if k not in doomed_names}
        self.delete_all(doomed)
        kept = [self.before[n] for n in sorted(self.after)]
        return self.result(snapshots=[snapshot_facts(s) for s in doomed], kept=kept)


def selector_string(selector):
    """A label selector string for a LabelSelector dict (matchLabels and matchExpressions)."""
    parts = ["%s=%s" % (k, v) for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if operator == "In":
            parts.append("%s in (%s)" % (key, ",".join(values)))
        elif operator == "NotIn":
            parts.append("%s notin (%s)" % (key, ",".join(values)))
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append("!%s" % key)
    return ",".join(parts)


class Workload:
    """The StatefulSet or Deployment whose pods mount the restored PVC: scaled to 0 around the swap.

    The replica count it had is recorded on it (annotation ``stateful.rollback/replicas-before-restore``)
    in the same write that scales it down, so a rerun after an interruption scales it back to that count.
    """

    def __init__(self, runner, spec, claim):
        self.runner = runner
        self.kube = runner.kube
        self.namespace = runner.namespace
        self.kind, self.name, self.claim = spec["kind"], spec["name"], claim
        if self.kind not in WORKLOAD_KINDS:
            raise K8sError("workload.kind must be one of %s, got %r" % (", ".join(WORKLOAD_KINDS), self.kind))
        self.where = "%s %s/%s" % (self.kind, self.namespace, self.name)
        obj = self.get()
        if obj is None:
            raise K8sError("%s (workload) not found; set workload to the StatefulSet or Deployment whose pods mount "
                           "PersistentVolumeClaim %s/%s" % (self.where, self.namespace, claim))
        self.obj = obj
        recorded = _annotations(obj).get(REPLICAS_ANNOTATION)
        try:
            self.recorded = int(recorded) if recorded is not None else None
        except ValueError:
            raise K8sError("%s has an invalid %s annotation %r; set it to the replica count to restore, or remove it"
                           % (self.where, REPLICAS_ANNOTATION, recorded))
        replicas = _spec(obj).get("replicas")
        self.replicas = self.recorded if self.recorded is not None else (1 if replicas is None else int(replicas))
        self.scaled_down = False

    def get(self):
        return self.kube.get("apps/v1", self.kind, self.name, self.namespace)

    def facts(self):
        return dict(kind=self.kind, name=self.name, replicas=self.replicas)

    def foreign_pods(self):
        """Active pods mounting the claim that this workload does not own (its selector does not match them)."""
        own = set(_meta(p)["name"] for p in self.kube.list("v1", "Pod", self.namespace,
                                                           label_selector=selector_string(_spec(self.obj).get("selector"))))
        return [(pod, phase) for pod, phase in self.runner.active_pods_mounting(self.claim) if pod not in own]

    def scale_down(self):
        """Record the replica count and scale to 0 in one write; wait until no pod mounts the claim."""
        foreign = self.foreign_pods()
        if foreign:
            raise K8sError("refusing to restore PersistentVolumeClaim %s/%s: it is mounted by %s, which %s not part of %s; "
                           "stop %s first" % (self.namespace, self.claim,
                                              ", ".join("%s pod %s" % (phase or "Pending", pod) for pod, phase in foreign),
                                              "is" if len(foreign) == 1 else "are", self.where,
                                              "it" if len(foreign) == 1 else "them"), pods=[pod for pod, phase in foreign])
        started = time.monotonic()
        if self.recorded is None or _spec(self.obj).get("replicas") != 0:
            self.obj = self.kube.patch("apps/v1", self.kind, self.name, {
                "metadata": {"annotations": {REPLICAS_ANNOTATION: str(self.replicas)}}, "spec": {"replicas": 0}},
                self.namespace)
            self.recorded = self.replicas
        self.scaled_down = True
        self.runner.checkpoint("scaled-down")
        ok, busy = wait_for(lambda: self.runner.active_pods_mounting(self.claim), lambda pods: not pods,
                            self.runner.p["wait_timeout"], POLL)
        self.runner._timed("scale_down_seconds", started)
        if not ok:
            raise K8sError("timed out after %ss waiting for the pods of %s to stop; still mounting PersistentVolumeClaim %s/%s: "
                           "%s" % (self.runner.p["wait_timeout"], self.where, self.namespace, self.claim,
                                   ", ".join("%s (%s)" % (pod, phase) for pod, phase in busy)))

    def scale_up(self):
        """Scale back to the recorded count (dropping the record) and wait until that many pods are ready."""
        started = time.monotonic()
        self.obj = self.kube.patch("apps/v1", self.kind, self.name, {
            "metadata": {"annotations": {REPLICAS_ANNOTATION: None}}, "spec": {"replicas": self.replicas}}, self.namespace)
        self.recorded = None
        ok, obj = wait_for(self.get, self.ready, self.runner.p["wait_timeout"], POLL)
        self.runner._timed("scale_up_seconds", started)
        if not ok:
            status = _status(obj or {})
            raise K8sError("timed out after %ss waiting for %s to be back at %d ready replicas; readyReplicas %s, "
                           "observedGeneration %s of generation %s" % (
                               self.runner.p["wait_timeout"], self.where, self.replicas, status.get("readyReplicas", 0),
                               status.get("observedGeneration"), _meta(obj or {}).get("generation")))

    def ready(self, obj):
        if obj is None:
            return False
        status = _status(obj)
        return (int(status.get("observedGeneration") or 0) >= int(_meta(obj).get("generation") or 0)
                and int(status.get("readyReplicas") or 0) == self.replicas)

    def compensate(self, exc, target_intact):
        """The error to raise after a failed restore, having scaled the workload back up when that is safe."""
        if not target_intact:
            return K8sError("%s; %s was left at 0 replicas because PersistentVolumeClaim %s/%s is between its old and its "
                            "restored volume: rerun the task to finish the restore, which scales it back to %d"
                            % (exc.msg, self.where, self.namespace, self.claim, self.replicas), **exc.context)
        try:
            self.scale_up()
        except K8sError as err:
            return K8sError("%s; scaling %s back to %d replicas failed: %s; scale it up by hand"
                            % (exc.msg, self.where, self.replicas, err.msg), **exc.context)
        return K8sError("%s; %s was scaled back to %d replicas" % (exc.msg, self.where, self.replicas), **exc.context)


def run(kube, params, check_mode=False):
    """Bring snapshots or a restored PVC to params['state']; returns the module result."""
    runner = Runner(kube, params, check_mode=check_mode)
    runner.require_snapshot_api()
    return getattr(runner, params["state"])()


def info(kube, params):
    """Snapshots in a namespace (or all), by name or label selector, with their source PVC and readiness."""
    runner = Runner(kube, dict(params, wait=False, wait_timeout=0), check_mode=True)
    runner.require_snapshot_api()
    if params.get("name"):
        if not params.get("namespace"):
            raise K8sError("name requires namespace")
        snap = runner.get_snapshot(params["name"])
        snaps = [snap] if snap else []
    else:
        snaps = kube.list(SNAP_API, "VolumeSnapshot", params.get("namespace"), label_selector=params.get("snapshot_selector"))
    facts = sorted((snapshot_facts(s) for s in snaps), key=lambda f: (f["namespace"] or "", f["name"]))
    return dict(changed=False, snapshots=facts, timings={"total_seconds": round(time.monotonic() - runner.started, 3)})
