# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CSI VolumeSnapshot logic: take, restore, delete and prune PVC snapshots.

Works on plain dicts through ``k8s.Kube``; every function returns a result dict
or raises ``K8sError`` with a message that says what to do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.stateful.rollback.plugins.module_utils.k8s import K8sError, parse_quantity, wait_for

SNAP_API = "snapshot.storage.k8s.io/v1"
SNAP_GROUP = "snapshot.storage.k8s.io"
DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
SOURCE_ANNOTATION = "stateful.rollback/restored-from"
CRD_HELP = ("install the external-snapshotter CRDs and snapshot controller: "
            "https://github.com/kubernetes-csi/external-snapshotter#usage")
POLL = 0.25


def _meta(obj):
    return obj.get("metadata") or {}


def _status(obj):
    return obj.get("status") or {}


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
    return dict(
        name=meta.get("name"),
        namespace=meta.get("namespace"),
        phase=status.get("phase"),
        storage_class=spec.get("storageClassName"),
        size=((spec.get("resources") or {}).get("requests") or {}).get("storage"),
        capacity=(status.get("capacity") or {}).get("storage"),
        volume_name=spec.get("volumeName"),
        data_source=spec.get("dataSource"),
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

    def snapshot_class_for(self, pvc, classes_cache):
        wanted = self.p.get("volume_snapshot_class")
        if wanted:
            if wanted not in classes_cache:
                classes_cache[wanted] = self.kube.get(SNAP_API, "VolumeSnapshotClass", wanted)
            if classes_cache[wanted] is None:
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
        if "__all__" not in classes_cache:
            classes_cache["__all__"] = self.kube.list(SNAP_API, "VolumeSnapshotClass")
        defaults = sorted(_meta(c)["name"] for c in classes_cache["__all__"]
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
    def pods_mounting(self, claim):
        pods = []
        for pod in self.kube.list("v1", "Pod", self.namespace):
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                if ((volume.get("persistentVolumeClaim") or volume.get("persistent_volume_claim") or {})
                        .get("claimName") == claim):
                    pods.append((_meta(pod)["name"], _status(pod).get("phase")))
        return pods

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
        source_pvc = self.get_pvc(facts["source_pvc"]) if facts["source_pvc"] else None
        existing = self.get_pvc(target)
        marker = "%s/%s" % (name, _meta(snap).get("uid"))
        if existing is not None:
            self.before = pvc_facts(existing)
            restored_from = (_meta(existing).get("annotations") or {}).get(SOURCE_ANNOTATION)
            if restored_from == marker:
                self.after = self.before
                return self.result(snapshots=[facts], pvc=pvc_facts(existing))
            if not self.p["replace"]:
                raise K8sError("PersistentVolumeClaim %s/%s already exists and was not restored from VolumeSnapshot %s; set "
                               "replace: true to replace it, or choose another target_pvc" % (self.namespace, target, name))
            running = [pod for pod, phase in self.pods_mounting(target) if phase == "Running"]
            if running:
                raise K8sError("refusing to replace PersistentVolumeClaim %s/%s: it is mounted by Running pod %s; scale the "
                               "workload down first" % (self.namespace, target, ", ".join(running)),
                               pods=running)
        template = existing or source_pvc or {}
        tspec = template.get("spec") or {}
        # The larger of the snapshot's restoreSize and the size option, written as given.
        candidates = [(parse_quantity(text), str(text)) for text in (facts["restore_size"], self.p.get("size")) if text]
        if candidates:
            size_text = max(candidates, key=lambda c: c[0])[1]
        else:
            size_text = ((tspec.get("resources") or {}).get("requests") or {}).get("storage")
        if not size_text:
            raise K8sError("VolumeSnapshot %s/%s has no restoreSize; set size" % (self.namespace, name))
        spec = {
            "accessModes": tspec.get("accessModes") or ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size_text}},
            "dataSource": {"apiGroup": SNAP_GROUP, "kind": "VolumeSnapshot", "name": name},
        }
        storage_class = self.p.get("storage_class") or ((source_pvc or {}).get("spec") or {}).get("storageClassName") \
            or tspec.get("storageClassName")
        if storage_class:
            spec["storageClassName"] = storage_class
        if tspec.get("volumeMode"):
            spec["volumeMode"] = tspec["volumeMode"]
        labels = dict(self.p.get("labels") or {})
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": target, "namespace": self.namespace, "labels": labels,
                             "annotations": {SOURCE_ANNOTATION: marker}},
                "spec": spec}
        self.changed = True
        if self.check_mode:
            self.after = pvc_facts(body)
            return self.result(snapshots=[facts], pvc=self.after)
        if existing is not None:
            started = time.monotonic()
            self.kube.delete("v1", "PersistentVolumeClaim", target, self.namespace)
            self.wait_gone("PersistentVolumeClaim", "v1", target)
            self._timed("delete_seconds", started)
        pvc = self.kube.create("v1", "PersistentVolumeClaim", body, self.namespace)
        if self.p["wait"]:
            started = time.monotonic()
            ok, pvc = wait_for(lambda: self.get_pvc(target), lambda c: c is not None and _status(c).get("phase") == "Bound",
                               self.p["wait_timeout"], POLL)
            self._timed("wait_seconds", started)
            if not ok:
                raise K8sError("timed out after %ss waiting for PersistentVolumeClaim %s/%s restored from %s to be Bound; "
                               "phase %s; last events: %s" % (self.p["wait_timeout"], self.namespace, target, name,
                                                              _status(pvc or {}).get("phase"), self.last_events(target)),
                               pvc=pvc_facts(pvc or body))
        self.after = pvc_facts(pvc)
        return self.result(snapshots=[facts], pvc=self.after)

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
