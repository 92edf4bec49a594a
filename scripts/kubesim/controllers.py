"""Simulated controllers, run by one background thread every ``tick`` seconds.

* namespace lifecycle (Terminating -> content deleted -> gone) and garbage
  collection by ownerReferences;
* PVC protection finalizer and PV reclaim (Delete removes the host directory);
* CSI-like provisioning: a PVC of a StorageClass whose provisioner is
  :data:`DRIVER` gets a PV backed by ``<data-dir>/volumes/<pv-name>/``, empty or
  copied from a VolumeSnapshot's content / a source PVC (``spec.dataSource``);
* snapshots: a VolumeSnapshot of a bound PVC copies the PV directory to
  ``<data-dir>/snapshots/<content-name>/`` and binds a VolumeSnapshotContent;
* StatefulSets and Deployments: PVCs from volumeClaimTemplates, pods, status;
  scale hooks (:meth:`Controllers.on_scale`) let real processes follow replicas;
* bare pods: Running once their PVCs are bound.

File copies and scale hooks run in worker threads, never under the store lock.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
import uuid
import zlib

from . import kinds
from .store import random_suffix
from .util import ApiError, now_rfc3339, parse_quantity

DRIVER = "hostpath.csi.stateful.rollback"
SNAPSHOT_BOUND_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"


def _cp_supports_reflink():
    cp_bin = shutil.which("cp")
    if not cp_bin:
        return None
    try:
        out = subprocess.run([cp_bin, "--help"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return cp_bin if "--reflink" in out else None


CP_REFLINK = _cp_supports_reflink()


def copy_tree(src, dst):
    """Copy directory ``src`` to the new path ``dst`` preserving modes, owners and times.

    Uses ``cp --reflink=auto -a`` when available, else shutil.copytree plus lchown.
    The copy goes to a temporary sibling first: ``dst`` appears complete or not at all.
    """
    if os.path.lexists(dst):
        raise OSError(errno.EEXIST, "target exists", dst)
    tmp = "%s.tmp-%s" % (dst, random_suffix(8))
    try:
        if CP_REFLINK:
            proc = subprocess.run([CP_REFLINK, "--reflink=auto", "-a", "--", src, tmp], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                err = errno.ENOSPC if "No space left" in proc.stderr else errno.EIO
                raise OSError(err, proc.stderr.strip() or "cp failed", src)
        else:
            shutil.copytree(src, tmp, symlinks=True)
            if hasattr(os, "lchown"):
                for base, dirs, files in os.walk(src):
                    rel = os.path.relpath(base, src)
                    for entry in [""] + dirs + files:
                        source = os.path.join(base, entry) if entry else base
                        target = os.path.normpath(os.path.join(tmp, rel, entry))
                        info = os.lstat(source)
                        try:
                            os.lchown(target, info.st_uid, info.st_gid)
                        except PermissionError:
                            pass
                        if not os.path.islink(source):
                            os.chmod(target, info.st_mode & 0o7777)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _hash(value, length=10):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


class ScaleEvent:
    """What a scale hook is called with.

    ``kind`` ("StatefulSet"/"Deployment"), ``namespace``, ``name``,
    ``old_replicas`` -> ``new_replicas``, ``reason`` ("scale", "rollout" when
    the pod template changed, "delete" when the workload is deleted), ``obj``
    (the workload), ``revision`` (the template's revision), ``pods`` (names of
    the pods started or stopped) and ``volumes``: {claimName: host directory}
    of the bound PVCs the pods mount (for StatefulSets, the per-ordinal claims
    of every ordinal below max(old, new)).
    """

    def __init__(self, kind, namespace, name, old_replicas, new_replicas, reason, obj, revision, pods, volumes):
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.old_replicas = old_replicas
        self.new_replicas = new_replicas
        self.reason = reason
        self.obj = obj
        self.revision = revision
        self.pods = pods
        self.volumes = volumes

    def __repr__(self):
        return "ScaleEvent(%s %s/%s %d->%d %s)" % (
            self.kind, self.namespace, self.name, self.old_replicas, self.new_replicas, self.reason)


class Controllers:
    def __init__(self, sim, tick=0.1):
        self.sim = sim
        self.store = sim.store
        self.faults = sim.faults
        self.tick = tick
        find = sim.registry.find
        self.r_ns = find("", "v1", "namespaces")
        self.r_pod = find("", "v1", "pods")
        self.r_pvc = find("", "v1", "persistentvolumeclaims")
        self.r_pv = find("", "v1", "persistentvolumes")
        self.r_event = find("", "v1", "events")
        self.r_sa = find("", "v1", "serviceaccounts")
        self.r_sc = find("storage.k8s.io", "v1", "storageclasses")
        self.r_vs = find(SNAPSHOT_GROUP, "v1", "volumesnapshots")
        self.r_vsc = find(SNAPSHOT_GROUP, "v1", "volumesnapshotcontents")
        self.r_vsclass = find(SNAPSHOT_GROUP, "v1", "volumesnapshotclasses")
        self.r_deploy = find("apps", "v1", "deployments")
        self.r_sts = find("apps", "v1", "statefulsets")
        self._lock = threading.Lock()
        self._busy = set()
        self._retry_at = {}
        self._event_memo = {}
        self._pod_signatures = {}
        self._workloads_state = {}
        self._hooks = {}
        self._snapshot_hooks = {}
        self._hook_ids = itertools.count(1)
        self._workers = []
        self._stop = threading.Event()
        self._thread = None
        self.errors = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name="kubesim-controllers", daemon=True)
        self._thread.start()

    def stop(self, timeout=10):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        for worker in list(self._workers):
            worker.join(max(0.1, timeout / 2))

    def _run(self):
        while not self._stop.wait(self.tick):
            try:
                self.sync_once()
            except Exception:  # keep the loop alive; errors are kept for inspection
                self.errors.append(traceback.format_exc())
                del self.errors[:-20]
                if self.sim.verbose:
                    sys.stderr.write(self.errors[-1])

    def sync_once(self):
        for step in (self._namespaces, self._garbage_collect, self._pvc_protection, self._reclaim, self._provision,
                     self._snapshots, self._workloads, self._bare_pods):
            step()

    def _spawn(self, key, func, *args):
        """Run ``func(*args)`` in a worker thread unless ``key`` is already busy."""
        with self._lock:
            if key in self._busy or self._retry_at.get(key, 0) > time.monotonic():
                return False
            self._busy.add(key)

        def work():
            try:
                func(*args)
            except Exception:
                self.errors.append(traceback.format_exc())
                if self.sim.verbose:
                    sys.stderr.write(self.errors[-1])
            finally:
                with self._lock:
                    self._busy.discard(key)

        thread = threading.Thread(target=work, name="kubesim-%s" % (key,), daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [thread]
        thread.start()
        return True

    def _backoff(self, key, seconds=2.0):
        with self._lock:
            self._retry_at[key] = time.monotonic() + seconds

    def is_busy(self, key):
        with self._lock:
            return key in self._busy

    # -- events ------------------------------------------------------------------------
    def event(self, obj, etype, reason, message, component="kubesim"):
        """Record a core/v1 Event about ``obj`` (repeats within 30 s are dropped)."""
        meta = obj.get("metadata", {})
        memo = (meta.get("uid"), reason, message)
        now = time.monotonic()
        if now - self._event_memo.get(memo, -1e9) < 30:
            return
        self._event_memo[memo] = now
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        involved = {"kind": obj.get("kind"), "name": meta.get("name"), "uid": meta.get("uid"),
                    "apiVersion": obj.get("apiVersion"), "resourceVersion": meta.get("resourceVersion")}
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        for existing in self.store.objects(self.r_event, namespace):
            inv = existing.get("involvedObject") or {}
            if inv.get("uid") == meta.get("uid") and existing.get("reason") == reason and existing.get("message") == message:
                def bump(ev):
                    ev["count"] = int(ev.get("count") or 1) + 1
                    ev["lastTimestamp"] = stamp
                self.store.mutate(self.r_event, namespace, existing["metadata"]["name"], bump)
                return
        body = {"metadata": {"name": "%s.%s" % (meta.get("name"), uuid.uuid4().hex[:16]), "namespace": namespace},
                "involvedObject": involved, "reason": reason, "message": message, "type": etype, "count": 1,
                "firstTimestamp": stamp, "lastTimestamp": stamp, "source": {"component": component},
                "reportingComponent": component, "reportingInstance": "kubesim"}
        try:
            self.store.create(self.r_event, namespace, body)
        except ApiError:
            pass  # namespace gone or terminating

    # -- paths ---------------------------------------------------------------------------
    def pv_path(self, pv):
        spec = pv.get("spec") or {}
        path = ((spec.get("csi") or {}).get("volumeAttributes") or {}).get("path") or (spec.get("hostPath") or {}).get("path")
        return path or os.path.join(self.sim.volumes_dir, pv["metadata"]["name"])

    def claim_path(self, namespace, claim):
        """Host directory of a bound PVC, or None."""
        pvc = self.store.try_get(self.r_pvc, namespace, claim)
        if not pvc or (pvc.get("status") or {}).get("phase") != "Bound":
            return None
        pv = self.store.try_get(self.r_pv, "", pvc["spec"].get("volumeName"))
        return self.pv_path(pv) if pv else None

    # -- namespaces, GC, protection ------------------------------------------------------
    def _namespaces(self):
        for nsobj in self.store.objects(self.r_ns):
            name = nsobj["metadata"]["name"]
            if not self.store.try_get(self.r_sa, name, "default") and not nsobj["metadata"].get("deletionTimestamp"):
                try:
                    self.store.create(self.r_sa, name, {"metadata": {"name": "default", "namespace": name}})
                except ApiError:
                    pass
            if not nsobj["metadata"].get("deletionTimestamp"):
                continue
            remaining = False
            for res in self.sim.registry.resources:
                if not res.namespaced:
                    continue
                for obj in self.store.objects(res, name):
                    remaining = True
                    if not obj["metadata"].get("deletionTimestamp"):
                        try:
                            self.store.delete(res, name, obj["metadata"]["name"])
                        except ApiError:
                            pass
            if not remaining:
                self.store.remove(self.r_ns, "", name)

    def _garbage_collect(self):
        objs = [(res, obj) for res in self.sim.registry.resources for obj in self.store.objects(res)]
        uids = {obj["metadata"].get("uid") for dummy, obj in objs}
        for res, obj in objs:
            refs = obj["metadata"].get("ownerReferences") or []
            if refs and not obj["metadata"].get("deletionTimestamp") and not any(r.get("uid") in uids for r in refs):
                try:
                    self.store.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                except ApiError:
                    pass

    def _claims_in_use(self):
        used = set()
        for pod in self.store.objects(self.r_pod):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for vol in (pod.get("spec") or {}).get("volumes") or []:
                claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    used.add((pod["metadata"]["namespace"], claim))
        return used

    def _pvc_protection(self):
        used = None
        for pvc in self.store.objects(self.r_pvc):
            meta = pvc["metadata"]
            if not meta.get("deletionTimestamp") or kinds.PVC_PROTECTION not in (meta.get("finalizers") or []):
                continue
            if used is None:
                used = self._claims_in_use()
            if (meta["namespace"], meta["name"]) in used:
                continue

            def release(obj):
                obj["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != kinds.PVC_PROTECTION]
            self.store.mutate(self.r_pvc, meta["namespace"], meta["name"], release)

    def _reclaim(self):
        """PVs whose claim is gone: Released (Retain) or deleted with their directory (Delete).

        As the real PV controller: the reclaim policy is read at reclaim time (so a
        policy patched later is honoured on the next pass), and a PV without a
        claimRef, or pre-bound to a claim by name only (claimRef without uid),
        is Available.
        """
        for pv in self.store.objects(self.r_pv):
            claim = (pv.get("spec") or {}).get("claimRef")
            phase = (pv.get("status") or {}).get("phase")
            if (not claim or not claim.get("uid")) and phase in ("Bound", "Released"):
                def available(obj):
                    obj.setdefault("status", {})["phase"] = "Available"
                self.store.mutate(self.r_pv, "", pv["metadata"]["name"], available)
                continue
            if not claim or phase not in ("Bound", "Released"):
                continue
            pvc = self.store.try_get(self.r_pvc, claim.get("namespace"), claim.get("name"))
            if pvc and pvc["metadata"]["uid"] == claim.get("uid"):
                continue
            name = pv["metadata"]["name"]
            if pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
                path = self.pv_path(pv)
                self.store.remove(self.r_pv, "", name)
                if os.path.realpath(path).startswith(os.path.realpath(self.sim.volumes_dir) + os.sep):
                    shutil.rmtree(path, ignore_errors=True)
            elif pv["status"].get("phase") != "Released":
                def released(obj):
                    obj["status"]["phase"] = "Released"
                self.store.mutate(self.r_pv, "", name, released)

    # -- provisioning --------------------------------------------------------------------
    def _bind(self, pv_name, pvc):
        meta = pvc["metadata"]
        claim_ref = {"kind": "PersistentVolumeClaim", "namespace": meta["namespace"], "name": meta["name"],
                     "uid": meta["uid"], "apiVersion": "v1", "resourceVersion": meta["resourceVersion"]}

        def bind_pv(pv):
            pv["spec"]["claimRef"] = claim_ref
            pv.setdefault("status", {})["phase"] = "Bound"
        pv = self.store.mutate(self.r_pv, "", pv_name, bind_pv)
        if pv is None:
            return

        def bind_pvc(obj):
            obj["spec"]["volumeName"] = pv_name
            ann = obj["metadata"].setdefault("annotations", {})
            ann["pv.kubernetes.io/bind-completed"] = "yes"
            ann["pv.kubernetes.io/bound-by-controller"] = "yes"
            provisioner = (pv["metadata"].get("annotations") or {}).get("pv.kubernetes.io/provisioned-by")
            if provisioner:
                ann["volume.beta.kubernetes.io/storage-provisioner"] = provisioner
                ann["volume.kubernetes.io/storage-provisioner"] = provisioner
            obj["status"] = {"phase": "Bound", "accessModes": pv["spec"].get("accessModes"),
                             "capacity": dict(pv["spec"].get("capacity") or {})}
        self.store.mutate(self.r_pvc, meta["namespace"], meta["name"], bind_pvc)

    @staticmethod
    def _claim_ref_matches(pv, pvc):
        """True when the PV's claimRef names this claim: pre-bound (no uid) or bound to this very claim."""
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        meta = pvc["metadata"]
        return (ref.get("name") == meta["name"] and (ref.get("namespace") or "") == meta["namespace"]
                and ref.get("uid") in (None, "", meta["uid"]))

    @staticmethod
    def _mismatch(pv, pvc):
        """Why the PV cannot back the claim (class, access modes, size), or None."""
        spec, pspec = pvc["spec"], pv.get("spec") or {}
        if (pspec.get("storageClassName") or "") != (spec.get("storageClassName") or ""):
            return "storageClassName does not match"
        if not set(spec.get("accessModes") or []) <= set(pspec.get("accessModes") or []):
            return "incompatible accessMode"
        try:
            want = parse_quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage", 0))
            if parse_quantity((pspec.get("capacity") or {}).get("storage", 0)) < want:
                return "requested PV is too small"
        except ValueError:
            return "invalid capacity"
        return None

    def _static_candidate(self, pvc):
        """An Available PV for the claim: one pre-bound to it first, else any unclaimed match."""
        free = None
        for pv in self.store.objects(self.r_pv):
            pspec = pv.get("spec") or {}
            if (pv.get("status") or {}).get("phase") != "Available" or self._mismatch(pv, pvc):
                continue
            if pspec.get("claimRef"):
                if self._claim_ref_matches(pv, pvc):
                    return pv
            elif free is None:
                free = pv
        return free

    def _prebound_volume(self, pvc):
        """The PV pre-bound to this claim by claimRef (name and namespace, no uid), or None."""
        for pv in self.store.objects(self.r_pv):
            ref = (pv.get("spec") or {}).get("claimRef") or {}
            if ref and not ref.get("uid") and self._claim_ref_matches(pv, pvc) and not self._mismatch(pv, pvc):
                return pv
        return None

    def _provision(self):
        pods = None
        for pvc in self.store.objects(self.r_pvc):
            meta, spec = pvc["metadata"], pvc.get("spec") or {}
            if meta.get("deletionTimestamp") or (pvc.get("status") or {}).get("phase") == "Bound":
                continue
            if self.is_busy(("pvc", meta["uid"])):
                continue
            ns, name = meta["namespace"], meta["name"]
            if spec.get("volumeName"):
                # Bind to that PV when it is unclaimed or its claimRef names this claim (pre-bound, or
                # bound to this uid); a PV Released by another claim stays with it.
                pv = self.store.try_get(self.r_pv, "", spec["volumeName"])
                ref = ((pv or {}).get("spec") or {}).get("claimRef") or {}
                reason = self._mismatch(pv, pvc) if pv else None
                if pv and not reason and (not ref or self._claim_ref_matches(pv, pvc)):
                    self._bind(spec["volumeName"], pvc)
                elif reason:
                    self.event(pvc, "Warning", "FailedBinding", "Cannot bind to requested volume \"%s\": %s"
                               % (spec["volumeName"], reason), "persistentvolume-controller")
                else:
                    self.event(pvc, "Warning", "FailedBinding", "volume \"%s\" is not available" % spec["volumeName"],
                               "persistentvolume-controller")
                continue
            prebound = self._prebound_volume(pvc)
            if prebound is not None:
                self._bind(prebound["metadata"]["name"], pvc)
                continue
            if self.faults.object_fault("pvc_pending", ns, name):
                self.event(pvc, "Normal", "ExternalProvisioning", "Waiting for a volume to be created either by the external "
                           "provisioner '%s' or manually by the system administrator" % DRIVER, "persistentvolume-controller")
                continue
            sc_name = spec.get("storageClassName")
            if not sc_name:
                pv = self._static_candidate(pvc)
                if pv:
                    self._bind(pv["metadata"]["name"], pvc)
                else:
                    self.event(pvc, "Normal", "FailedBinding", "no persistent volumes available for this claim and no storage "
                               "class is set", "persistentvolume-controller")
                continue
            sc = self.store.try_get(self.r_sc, "", sc_name)
            if sc is None:
                self.event(pvc, "Warning", "ProvisioningFailed", 'storageclass.storage.k8s.io "%s" not found' % sc_name,
                           "persistentvolume-controller")
                continue
            if sc.get("provisioner") != DRIVER:
                pv = self._static_candidate(pvc)
                if pv:
                    self._bind(pv["metadata"]["name"], pvc)
                else:
                    self.event(pvc, "Normal", "ExternalProvisioning", "Waiting for a volume to be created either by the "
                               "external provisioner '%s' or manually by the system administrator" % sc.get("provisioner"),
                               "persistentvolume-controller")
                continue
            if sc.get("volumeBindingMode") == "WaitForFirstConsumer":
                if pods is None:
                    pods = self._claims_in_use()
                if (ns, name) not in pods:
                    self.event(pvc, "Normal", "WaitForFirstConsumer", "waiting for first consumer to be created before binding",
                               "persistentvolume-controller")
                    continue
            source_dir = self._data_source(pvc)
            if source_dir is False:
                continue
            self._spawn(("pvc", meta["uid"]), self._provision_volume, pvc, sc, source_dir)

    def _data_source(self, pvc):
        """Host directory to copy a new volume from; None for an empty volume; False = not yet (event recorded)."""
        spec = pvc["spec"]
        source = spec.get("dataSourceRef") or spec.get("dataSource")
        if not source:
            return None
        ns = pvc["metadata"]["namespace"]
        kind, group, name = source.get("kind"), source.get("apiGroup") or "", source.get("name")
        want = parse_quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage", 0))
        if kind == "VolumeSnapshot" and group == SNAPSHOT_GROUP:
            snap = self.store.try_get(self.r_vs, ns, name)
            status = (snap or {}).get("status") or {}
            if snap is None:
                message = ('error getting handle for DataSource Type VolumeSnapshot by Name %s: error getting snapshot %s from '
                           'api server: volumesnapshots.snapshot.storage.k8s.io "%s" not found' % (name, name, name))
            elif not status.get("readyToUse"):
                message = "error getting handle for DataSource Type VolumeSnapshot by Name %s: snapshot %s is not Ready" % (
                    name, name)
            else:
                content = self.store.try_get(self.r_vsc, "", status.get("boundVolumeSnapshotContentName"))
                path = self.snapshot_path(content) if content else None
                size = parse_quantity(status.get("restoreSize") or 0)
                if not path or not os.path.isdir(path):
                    message = "snapshot %s has no content on the host" % name
                elif want < size:
                    message = "requested volume size %d is less than the size %d for the source snapshot %s" % (want, size, name)
                else:
                    return path
            self.event(pvc, "Warning", "ProvisioningFailed", "failed to provision volume with StorageClass \"%s\": %s"
                       % (spec.get("storageClassName"), message), DRIVER)
            return False
        if kind == "PersistentVolumeClaim" and group == "":
            path = self.claim_path(ns, name)
            if path and os.path.isdir(path):
                return path
            self.event(pvc, "Warning", "ProvisioningFailed", "source PVC %s is not bound" % name, DRIVER)
            return False
        self.event(pvc, "Warning", "ProvisioningFailed", "unsupported data source %s.%s" % (kind, group), DRIVER)
        return False

    def _provision_volume(self, pvc, sc, source_dir):
        meta, spec = pvc["metadata"], pvc["spec"]
        pv_name = "pvc-" + meta["uid"]
        target = os.path.join(self.sim.volumes_dir, pv_name)
        key = ("pvc", meta["uid"])
        self.event(pvc, "Normal", "Provisioning", 'External provisioner is provisioning volume for claim "%s/%s"'
                   % (meta["namespace"], meta["name"]), DRIVER)
        try:
            if os.path.isdir(target) and self.store.try_get(self.r_pv, "", pv_name) is None:
                shutil.rmtree(target)  # leftover of an earlier failed attempt
            if not os.path.isdir(target):
                if source_dir:
                    fault = self.faults.object_fault("restore_fail", meta["namespace"], meta["name"])
                    if fault:
                        raise OSError(errno.ENOSPC, fault["message"])
                    copy_tree(source_dir, target)
                else:
                    os.makedirs(target)
                    os.chmod(target, self.sim.volume_mode)
                    if self.sim.volume_owner is not None:
                        os.chown(target, *self.sim.volume_owner)
        except OSError as exc:
            self.event(pvc, "Warning", "ProvisioningFailed", 'failed to provision volume with StorageClass "%s": rpc error: '
                       "code = ResourceExhausted desc = %s" % (sc["metadata"]["name"], exc.strerror or exc), DRIVER)
            self._backoff(key)
            return
        if self.store.try_get(self.r_pvc, meta["namespace"], meta["name"]) is None:
            shutil.rmtree(target, ignore_errors=True)
            return
        request = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        claim_ref = {"kind": "PersistentVolumeClaim", "namespace": meta["namespace"], "name": meta["name"],
                     "uid": meta["uid"], "apiVersion": "v1"}
        pv = {"metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
              "spec": {"capacity": {"storage": request}, "accessModes": spec.get("accessModes"), "claimRef": claim_ref,
                       "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
                       "storageClassName": sc["metadata"]["name"], "volumeMode": spec.get("volumeMode", "Filesystem"),
                       "csi": {"driver": DRIVER, "volumeHandle": pv_name, "volumeAttributes": {"path": target}}}}
        try:
            self.store.create(self.r_pv, "", pv)
        except ApiError as exc:
            if exc.code != 409:
                raise
        self._bind(pv_name, pvc)
        self.event(pvc, "Normal", "ProvisioningSucceeded", "Successfully provisioned volume %s" % pv_name, DRIVER)

    # -- snapshots -----------------------------------------------------------------------
    def snapshot_path(self, content):
        handle = (content.get("status") or {}).get("snapshotHandle") or \
            ((content.get("spec") or {}).get("source") or {}).get("snapshotHandle") or content["metadata"]["name"]
        return os.path.join(self.sim.snapshots_dir, handle)

    def _snapshot_class(self, snap):
        name = (snap.get("spec") or {}).get("volumeSnapshotClassName")
        if name:
            return self.store.try_get(self.r_vsclass, "", name), name
        defaults = [c for c in self.store.objects(self.r_vsclass) if c.get("driver") == DRIVER and
                    (c["metadata"].get("annotations") or {}).get("snapshot.storage.kubernetes.io/is-default-class") == "true"]
        return (defaults[0], defaults[0]["metadata"]["name"]) if defaults else (None, None)

    def _set_snapshot_status(self, snap, status):
        meta = snap["metadata"]

        def update(obj):
            obj["status"] = status
        self.store.mutate(self.r_vs, meta["namespace"], meta["name"], update)

    def _snapshot_error(self, snap, message, reason="SnapshotCreationFailed"):
        current = (snap.get("status") or {}).get("error") or {}
        if current.get("message") != message:
            self._set_snapshot_status(snap, {"readyToUse": False, "error": {"message": message, "time": now_rfc3339()}})
        self.event(snap, "Warning", reason, message, "snapshot-controller")

    def _snapshots(self):
        for snap in self.store.objects(self.r_vs):
            meta, spec, status = snap["metadata"], snap.get("spec") or {}, snap.get("status") or {}
            if self.is_busy(("vs", meta["uid"])):
                continue
            if meta.get("deletionTimestamp"):
                self._delete_snapshot(snap)
                continue
            bound = status.get("boundVolumeSnapshotContentName")
            if bound and status.get("readyToUse"):
                continue
            if bound:
                if not self.faults.object_fault("snapshot_not_ready", meta["namespace"], meta["name"]):
                    self._mark_ready(snap, bound)
                continue
            source = spec.get("source") or {}
            if source.get("volumeSnapshotContentName"):
                self._bind_preprovisioned(snap, source["volumeSnapshotContentName"])
                continue
            sclass, class_name = self._snapshot_class(snap)
            if sclass is None:
                self._snapshot_error(snap, "Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io "
                                     '"%s" not found' % class_name if class_name else
                                     "Failed to get default snapshot class with error cannot find default snapshot class",
                                     "GetSnapshotClassFailed")
                continue
            fault = self.faults.object_fault("snapshot_error", meta["namespace"], meta["name"])
            if fault:
                self._snapshot_error(snap, fault["message"])
                continue
            claim = source.get("persistentVolumeClaimName")
            path = self.claim_path(meta["namespace"], claim)
            if not path or not os.path.isdir(path):
                self.event(snap, "Normal", "SnapshotPending", "waiting for the source PVC %s to be bound" % claim,
                           "snapshot-controller")
                continue
            self._spawn(("vs", meta["uid"]), self._take_snapshot, snap, sclass, path)

    def _take_snapshot(self, snap, sclass, source_dir):
        meta = snap["metadata"]
        content_name = "snapcontent-" + meta["uid"]
        pvc = self.store.try_get(self.r_pvc, meta["namespace"], snap["spec"]["source"]["persistentVolumeClaimName"])
        if pvc is None:
            return
        size = ((pvc.get("status") or {}).get("capacity") or {}).get("storage") or \
            pvc["spec"]["resources"]["requests"]["storage"]
        target = os.path.join(self.sim.snapshots_dir, content_name)
        if not os.path.isdir(target):
            try:
                with self._snapshot_guard(meta["namespace"], snap["spec"]["source"]["persistentVolumeClaimName"], source_dir):
                    copy_tree(source_dir, target)
            except OSError as exc:
                self._snapshot_error(snap, "Failed to create snapshot: %s" % (exc.strerror or exc))
                self._backoff(("vs", meta["uid"]))
                return
        if self.store.try_get(self.r_vs, meta["namespace"], meta["name"]) is None:
            shutil.rmtree(target, ignore_errors=True)
            return

        def add_finalizer(obj):
            finalizers = obj["metadata"].setdefault("finalizers", [])
            if SNAPSHOT_BOUND_FINALIZER not in finalizers:
                finalizers.append(SNAPSHOT_BOUND_FINALIZER)
            obj["spec"]["volumeSnapshotClassName"] = sclass["metadata"]["name"]
        self.store.mutate(self.r_vs, meta["namespace"], meta["name"], add_finalizer)
        pv = self.store.try_get(self.r_pv, "", pvc["spec"].get("volumeName")) or {}
        handle = ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle") or pvc["spec"].get("volumeName")
        content = {"metadata": {"name": content_name},
                   "spec": {"deletionPolicy": sclass.get("deletionPolicy") or "Delete", "driver": DRIVER,
                            "source": {"volumeHandle": handle}, "volumeSnapshotClassName": sclass["metadata"]["name"],
                            "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                                  "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}}}
        try:
            self.store.create(self.r_vsc, "", content)
        except ApiError as exc:
            if exc.code != 409:
                raise
        ready = not self.faults.object_fault("snapshot_not_ready", meta["namespace"], meta["name"])
        created = time.time()

        def content_status(obj):
            obj["status"] = {"creationTime": int(created * 1e9), "readyToUse": ready, "restoreSize": parse_quantity(size),
                             "snapshotHandle": content_name}
        self.store.mutate(self.r_vsc, "", content_name, content_status)
        self._set_snapshot_status(snap, {"boundVolumeSnapshotContentName": content_name, "readyToUse": ready,
                                         "restoreSize": size, "creationTime": now_rfc3339()})
        self.event(snap, "Normal", "SnapshotCreated", "Snapshot %s/%s was successfully created by the CSI driver."
                   % (meta["namespace"], meta["name"]), "snapshot-controller")
        if ready:
            self.event(snap, "Normal", "SnapshotReady", "Snapshot %s/%s is ready to use." % (meta["namespace"], meta["name"]),
                       "snapshot-controller")

    def _mark_ready(self, snap, content_name):
        def ready(obj):
            obj.setdefault("status", {})["readyToUse"] = True
        self.store.mutate(self.r_vsc, "", content_name, ready)
        self.store.mutate(self.r_vs, snap["metadata"]["namespace"], snap["metadata"]["name"], ready)
        self.event(snap, "Normal", "SnapshotReady", "Snapshot %s/%s is ready to use."
                   % (snap["metadata"]["namespace"], snap["metadata"]["name"]), "snapshot-controller")

    def _bind_preprovisioned(self, snap, content_name):
        content = self.store.try_get(self.r_vsc, "", content_name)
        if content is None:
            self._snapshot_error(snap, 'VolumeSnapshotContent "%s" not found' % content_name, "SnapshotContentMissing")
            return
        path = self.snapshot_path(content)
        if not os.path.isdir(path):
            self._snapshot_error(snap, "snapshot handle %s does not exist on the host" % os.path.basename(path))
            return
        cstatus = content.get("status") or {}
        if not cstatus.get("readyToUse"):
            def ready(obj):
                obj["status"] = {"creationTime": int(time.time() * 1e9), "readyToUse": True,
                                 "restoreSize": cstatus.get("restoreSize") or 0, "snapshotHandle": os.path.basename(path)}
            content = self.store.mutate(self.r_vsc, "", content_name, ready)
        size = content["status"].get("restoreSize") or 0
        self._set_snapshot_status(snap, {"boundVolumeSnapshotContentName": content_name, "readyToUse": True,
                                         "restoreSize": str(size), "creationTime": now_rfc3339()})

    def _delete_snapshot(self, snap):
        meta = snap["metadata"]
        content_name = (snap.get("status") or {}).get("boundVolumeSnapshotContentName")
        content = self.store.try_get(self.r_vsc, "", content_name) if content_name else None
        if content and not ((snap.get("spec") or {}).get("source") or {}).get("volumeSnapshotContentName"):
            if content["spec"].get("deletionPolicy", "Delete") == "Delete":
                path = self.snapshot_path(content)
                self.store.remove(self.r_vsc, "", content_name)
                if os.path.realpath(path).startswith(os.path.realpath(self.sim.snapshots_dir) + os.sep):
                    shutil.rmtree(path, ignore_errors=True)

        def release(obj):
            obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or []
                                             if f != SNAPSHOT_BOUND_FINALIZER]
        self.store.mutate(self.r_vs, meta["namespace"], meta["name"], release)

    # -- snapshot hooks --------------------------------------------------------------------
    def on_snapshot(self, namespace, claim, callback):
        """Wrap the copy of matching PVCs' volumes in ``callback(namespace, claim, path)``.

        The callback returns a context manager entered before the volume
        directory is copied and exited right after (also on failure): the place
        to quiesce a process writing to it, so that the copy is the point-in-time
        image a real CSI snapshot is. ``namespace`` and ``claim`` are fnmatch
        patterns. If entering it raises, the snapshot reports the error and is
        retried after a back-off. Returns an id for :meth:`remove_snapshot_hook`.
        """
        hook_id = next(self._hook_ids)
        with self._lock:
            self._snapshot_hooks[hook_id] = (namespace, claim, callback)
        return hook_id

    def remove_snapshot_hook(self, hook_id):
        with self._lock:
            self._snapshot_hooks.pop(hook_id, None)

    @contextlib.contextmanager
    def _snapshot_guard(self, namespace, claim, path):
        with self._lock:
            hooks = [cb for ns, name, cb in self._snapshot_hooks.values()
                     if fnmatch.fnmatchcase(namespace, ns) and fnmatch.fnmatchcase(claim or "", name)]
        with contextlib.ExitStack() as stack:
            for callback in hooks:
                try:
                    stack.enter_context(callback(namespace, claim, path))
                except OSError:
                    raise
                except Exception as exc:
                    raise OSError(errno.EIO, "snapshot hook failed: %s: %s" % (type(exc).__name__, exc))
            yield

    # -- scale hooks -----------------------------------------------------------------------
    def on_scale(self, kind, namespace, name, callback):
        """Call ``callback(ScaleEvent)`` when a matching workload's running replicas must change.

        ``kind`` is "StatefulSet" or "Deployment"; ``namespace`` and ``name`` are
        fnmatch patterns. The callback runs in a worker thread; until it returns,
        the new pods are not Ready (so ``wait: true`` waits for it). If it raises,
        the pods report CrashLoopBackOff with the message and it is retried after
        a back-off (1 s, doubling up to 10 s). Scale-down calls it before the
        pods are deleted. Returns an id for :meth:`remove_scale_hook`.
        """
        hook_id = next(self._hook_ids)
        with self._lock:
            self._hooks[hook_id] = (kind.lower(), namespace, name, callback)
        return hook_id

    def remove_scale_hook(self, hook_id):
        with self._lock:
            self._hooks.pop(hook_id, None)

    def _hook_for(self, kind, namespace, name):
        with self._lock:
            for hkind, hns, hname, callback in self._hooks.values():
                if hkind == kind.lower() and fnmatch.fnmatchcase(namespace, hns) and fnmatch.fnmatchcase(name, hname):
                    return callback
        return None

    # -- workloads -----------------------------------------------------------------------
    def _workloads(self):
        seen = set()
        for res in (self.r_sts, self.r_deploy):
            for work in self.store.objects(res):
                seen.add(work["metadata"]["uid"])
                self._sync_workload(res, work)
        with self._lock:
            gone = [(uid, st) for uid, st in self._workloads_state.items() if uid not in seen]
        for uid, state in gone:
            key = ("workload", uid)
            if self.is_busy(key):
                continue
            obj = state["obj"]
            callback = self._hook_for(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
            if callback and state["replicas"] > 0:
                event = ScaleEvent(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"], state["replicas"], 0,
                                   "delete", obj, state["revision"], state.get("pods") or [], state.get("volumes") or {})
                self._spawn(key, self._call_hook, uid, callback, event, 0, state["revision"], True)
            with self._lock:
                self._workloads_state.pop(uid, None)

    def _call_hook(self, uid, callback, event, replicas, revision, final=False):
        try:
            callback(event)
        except Exception as exc:
            with self._lock:
                state = self._workloads_state.get(uid)
                if state is not None:
                    state["error"] = "%s: %s" % (type(exc).__name__, exc)
                    state["failures"] = state.get("failures", 0) + 1
                    delay = min(10.0, 2.0 ** (state["failures"] - 1))
                    self._retry_at[("workload", uid)] = time.monotonic() + delay
                    if event.new_replicas:
                        # A failed start may have stopped the old replicas first (Recreate):
                        # none is acknowledged any more, so returning to the old spec calls
                        # the hook again instead of trusting processes that may be gone.
                        state["replicas"] = 0
            self.event(event.obj, "Warning", "ScaleHookFailed", "%s hook %d->%d failed: %s: %s" % (
                event.reason, event.old_replicas, event.new_replicas, type(exc).__name__, exc))
            if not final:
                return
        with self._lock:
            state = self._workloads_state.get(uid)
            if state is not None:
                state.update(replicas=replicas, revision=revision, error=None, failures=0)

    def _claim_names(self, work, ordinal):
        """PVC names the pod with this ordinal mounts: {volume name: claim name}."""
        spec = work["spec"]
        claims = {}
        for vol in ((spec.get("template") or {}).get("spec") or {}).get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                claims[vol["name"]] = claim
        if work["kind"] == "StatefulSet":
            for tpl in spec.get("volumeClaimTemplates") or []:
                tname = tpl["metadata"]["name"]
                claims[tname] = "%s-%s-%d" % (tname, work["metadata"]["name"], ordinal)
        return claims

    def _ensure_sts_claims(self, work, count):
        meta, spec = work["metadata"], work["spec"]
        labels = dict((spec.get("selector") or {}).get("matchLabels") or {})
        policy = (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenDeleted", "Retain")
        for ordinal in range(count):
            for tpl in spec.get("volumeClaimTemplates") or []:
                claim = "%s-%s-%d" % (tpl["metadata"]["name"], meta["name"], ordinal)
                if self.store.try_get(self.r_pvc, meta["namespace"], claim) is not None:
                    continue
                body = {"metadata": {"name": claim, "namespace": meta["namespace"],
                                     "labels": dict((tpl["metadata"].get("labels") or {}), **labels)},
                        "spec": dict(tpl.get("spec") or {})}
                if tpl["metadata"].get("annotations"):
                    body["metadata"]["annotations"] = dict(tpl["metadata"]["annotations"])
                if policy == "Delete":
                    body["metadata"]["ownerReferences"] = [self._owner_ref(work, controller=False)]
                try:
                    self.store.create(self.r_pvc, meta["namespace"], body)
                    self.event(work, "Normal", "SuccessfulCreate", "create Claim %s Pod %s-%d in StatefulSet %s success" % (
                        claim, meta["name"], ordinal, meta["name"]), "statefulset-controller")
                except ApiError as exc:
                    self.event(work, "Warning", "FailedCreate", "create Claim %s failed: %s" % (claim, exc.message),
                               "statefulset-controller")

    @staticmethod
    def _owner_ref(work, controller=True):
        ref = {"apiVersion": work["apiVersion"], "kind": work["kind"], "name": work["metadata"]["name"],
               "uid": work["metadata"]["uid"]}
        if controller:
            ref.update(controller=True, blockOwnerDeletion=True)
        return ref

    def _new_pod(self, work, pod_name, ordinal, revision):
        meta, spec = work["metadata"], work["spec"]
        template = spec.get("template") or {}
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        pod_spec = json.loads(json.dumps(template.get("spec") or {}))
        if work["kind"] == "StatefulSet":
            labels.update({"controller-revision-hash": revision, "statefulset.kubernetes.io/pod-name": pod_name,
                           "apps.kubernetes.io/pod-index": str(ordinal)})
            pod_spec["hostname"] = pod_name
            if spec.get("serviceName"):
                pod_spec["subdomain"] = spec["serviceName"]
            volumes = pod_spec.setdefault("volumes", [])
            names = {v.get("name") for v in volumes}
            for vol_name, claim in self._claim_names(work, ordinal).items():
                if vol_name not in names:
                    volumes.append({"name": vol_name, "persistentVolumeClaim": {"claimName": claim}})
        else:
            labels["pod-template-hash"] = revision.rsplit("-", 1)[-1]
        pod_spec.setdefault("restartPolicy", "Always")
        pod_spec.setdefault("serviceAccountName", "default")
        pod_spec.setdefault("nodeName", "kubesim-node")
        body = {"metadata": {"name": pod_name, "namespace": meta["namespace"], "labels": labels,
                             "ownerReferences": [self._owner_ref(work)]}, "spec": pod_spec}
        if tmeta.get("annotations"):
            body["metadata"]["annotations"] = dict(tmeta["annotations"])
        try:
            self.store.create(self.r_pod, meta["namespace"], body)
        except ApiError:
            pass

    def _sync_workload(self, res, work):
        meta, spec = work["metadata"], work.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        is_sts = work["kind"] == "StatefulSet"
        key = ("workload", uid)
        desired = 0 if meta.get("deletionTimestamp") else int(spec.get("replicas", 1) or 0)
        revision = "%s-%s" % (name, _hash(spec.get("template") or {}))
        with self._lock:
            state = self._workloads_state.setdefault(uid, {"replicas": 0, "revision": None, "error": None, "failures": 0})
            state["obj"] = work
            applied_replicas, applied_revision, error = state["replicas"], state["revision"], state["error"]
        if is_sts and desired:
            self._ensure_sts_claims(work, desired)
        pods = [p for p in self.store.objects(self.r_pod, ns)
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]
        # Reconcile the applied (hook-acknowledged) state with the spec.
        target_changed = (applied_replicas, applied_revision) != (desired, revision)
        if target_changed and not self.is_busy(key):
            callback = self._hook_for(work["kind"], ns, name)
            count = max(desired, applied_replicas)
            claims = {}
            for ordinal in range(count):
                for claim in self._claim_names(work, ordinal).values():
                    claims[claim] = self.claim_path(ns, claim)
            starting = desired > applied_replicas or (applied_revision not in (None, revision) and desired)
            if callback is None:
                if applied_revision is None or desired <= applied_replicas or all(claims.values()):
                    with self._lock:
                        state.update(replicas=desired, revision=revision, error=None)
                    applied_replicas, applied_revision = desired, revision
            elif not starting or all(claims.values()):
                reason = "rollout" if applied_revision not in (None, revision) else "scale"
                if is_sts:
                    pod_names = ["%s-%d" % (name, i) for i in range(min(desired, applied_replicas), count)]
                    if reason == "rollout":
                        pod_names = ["%s-%d" % (name, i) for i in range(count)]
                else:
                    pod_names = sorted(p["metadata"]["name"] for p in pods)
                event = ScaleEvent(work["kind"], ns, name, applied_replicas, desired, reason, work, revision, pod_names,
                                   {c: p for c, p in claims.items() if p})
                with self._lock:
                    state["pods"], state["volumes"] = pod_names, event.volumes
                self._spawn(key, self._call_hook, uid, callback, event, desired, revision)
        # Pods: keep max(desired, applied) of them; recreate those of a stale revision.
        count = max(desired, applied_replicas)
        keep_revisions = {revision, applied_revision}
        for pod in pods:
            pod_rev = (pod["metadata"].get("labels") or {}).get("controller-revision-hash" if is_sts else "pod-template-hash")
            full_rev = pod_rev if is_sts else "%s-%s" % (name, pod_rev)
            stale = full_rev not in keep_revisions or (applied_revision == revision and full_rev != revision)
            if is_sts:
                ordinal = int(pod["metadata"].get("labels", {}).get("apps.kubernetes.io/pod-index", "0"))
                extra = ordinal >= count
            else:
                extra = False
            if stale or extra:
                self._delete_pod(ns, pod["metadata"]["name"])
        pods = [p for p in self.store.objects(self.r_pod, ns)
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]
        if not meta.get("deletionTimestamp"):
            if is_sts:
                have = {p["metadata"]["name"] for p in pods}
                for ordinal in range(count):
                    pod_name = "%s-%d" % (name, ordinal)
                    if pod_name not in have:
                        rev = applied_revision if applied_revision and ordinal < applied_replicas else revision
                        self._new_pod(work, pod_name, ordinal, rev)
            else:
                current = sorted(p["metadata"]["name"] for p in pods if self._pod_revision(p, False, name) == revision)
                target = count if applied_revision == revision else desired
                for dummy in range(len(current), target):
                    self._new_pod(work, "%s-%s" % (revision, random_suffix()), 0, revision)
                for extra_pod in current[target:]:
                    self._delete_pod(ns, extra_pod)
            pods = [p for p in self.store.objects(self.r_pod, ns)
                    if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]
        # Pod readiness: acknowledged ordinals of the acknowledged revision, volumes bound.
        ready_names = set()
        applied_pods = sorted((p for p in pods if self._pod_revision(p, is_sts, name) == applied_revision),
                              key=lambda p: (int(p["metadata"]["labels"].get("apps.kubernetes.io/pod-index", 0)),
                                             p["metadata"]["name"]))
        for index, pod in enumerate(applied_pods):
            if index < applied_replicas:
                ready_names.add(pod["metadata"]["name"])
        ready = 0
        for pod in pods:
            allowed = pod["metadata"]["name"] in ready_names
            if self._set_pod_status(pod, allowed, error if not allowed else None):
                ready += 1
        self._set_workload_status(res, work, pods, ready, desired, revision, is_sts)

    def _delete_pod(self, namespace, name):
        try:
            self.store.delete(self.r_pod, namespace, name)
        except ApiError:
            pass

    @staticmethod
    def _pod_revision(pod, is_sts, name):
        labels = pod["metadata"].get("labels") or {}
        return labels.get("controller-revision-hash") if is_sts else "%s-%s" % (name, labels.get("pod-template-hash"))

    def _set_workload_status(self, res, work, pods, ready, desired, revision, is_sts):
        meta = work["metadata"]
        old = work.get("status") or {}
        updated = sum(1 for p in pods if self._pod_revision(p, is_sts, meta["name"]) == revision)
        if is_sts:
            current_rev = old.get("currentRevision") or revision
            if updated == len(pods) == desired and ready == desired:
                current_rev = revision
            current = sum(1 for p in pods if self._pod_revision(p, is_sts, meta["name"]) == current_rev)
            status = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods), "availableReplicas": ready,
                      "readyReplicas": ready, "currentReplicas": current, "updatedReplicas": updated,
                      "currentRevision": current_rev, "updateRevision": revision, "collisionCount": 0}
            status = {k: v for k, v in status.items() if v or k in ("replicas", "availableReplicas", "observedGeneration")}
        else:
            status = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods), "updatedReplicas": updated,
                      "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": max(desired - ready, 0)}
            status = {k: v for k, v in status.items() if v or k == "observedGeneration"}
            available = ready >= desired
            complete = available and updated == desired == len(pods)
            status["conditions"] = [
                self._condition(old, "Available", available, "MinimumReplicasAvailable" if available else
                                "MinimumReplicasUnavailable", "Deployment has minimum availability." if available else
                                "Deployment does not have minimum availability."),
                self._condition(old, "Progressing", True, "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                                'ReplicaSet "%s" has %s progressed.' % (revision, "successfully" if complete else "")),
            ]
        if status != old:
            def update(obj):
                obj["status"] = status
            self.store.mutate(res, meta["namespace"], meta["name"], update, subresource="status")

    @staticmethod
    def _condition(old_status, ctype, value, reason, message):
        value = "True" if value else "False"
        for cond in old_status.get("conditions") or []:
            if cond.get("type") == ctype and cond.get("status") == value and cond.get("reason") == reason:
                return cond
        stamp = now_rfc3339()
        return {"type": ctype, "status": value, "reason": reason, "message": message, "lastUpdateTime": stamp,
                "lastTransitionTime": stamp}

    # -- pods ----------------------------------------------------------------------------
    def _bare_pods(self):
        owned_kinds = ("StatefulSet", "Deployment")
        pods = self.store.objects(self.r_pod)
        uids = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._pod_signatures if u not in uids]:
            self._pod_signatures.pop(uid, None)
        for pod in pods:
            refs = pod["metadata"].get("ownerReferences") or []
            if not any(r.get("controller") and r.get("kind") in owned_kinds for r in refs):
                self._set_pod_status(pod, True, None)

    def _set_pod_status(self, pod, allowed, error):
        """Compute and store the pod's status; returns True when Ready."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        old = pod.get("status") or {}
        unbound = []
        for vol in spec.get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                pvc = self.store.try_get(self.r_pvc, meta["namespace"], claim)
                if not pvc or (pvc.get("status") or {}).get("phase") != "Bound":
                    unbound.append(claim)
        if meta.get("deletionTimestamp"):
            return False
        containers = spec.get("containers") or []
        if unbound:
            signature = ("Pending", "unbound")
        elif allowed:
            signature = ("Running", "ready")
        elif error:
            signature = ("Running", "error:" + error)
        else:
            signature = ("Pending", "starting")
        if self._pod_signatures.get(meta["uid"]) == signature and old.get("phase"):
            return signature[1] == "ready"
        stamp = now_rfc3339()
        num = zlib.crc32(("%s/%s" % (meta["namespace"], meta["name"])).encode())
        status = {"phase": signature[0], "qosClass": "BestEffort", "hostIP": "127.0.0.1",
                  "podIP": "10.244.%d.%d" % ((num >> 8) % 256, num % 254 + 1), "startTime": old.get("startTime") or stamp}
        status["podIPs"] = [{"ip": status["podIP"]}]
        if unbound:
            status = {"phase": "Pending", "qosClass": "BestEffort", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": stamp,
                "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims (%s)." % ", ".join(unbound)}]}
        else:
            ready = "True" if allowed else "False"
            status["conditions"] = [{"type": t, "status": s, "lastTransitionTime": stamp} for t, s in (
                ("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("Ready", ready),
                ("ContainersReady", ready), ("PodScheduled", "True"))]
            statuses = []
            for cont in containers:
                entry = {"name": cont.get("name"), "image": cont.get("image"), "imageID": "", "ready": allowed,
                         "started": allowed, "restartCount": 0,
                         "containerID": "kubesim://%s" % _hash([meta.get("uid"), cont.get("name")], 24)}
                if allowed:
                    entry["state"] = {"running": {"startedAt": stamp}}
                elif error:
                    entry["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": error}}
                    entry["restartCount"] = 1
                else:
                    entry["state"] = {"waiting": {"reason": "ContainerCreating"}}
                statuses.append(entry)
            status["containerStatuses"] = statuses

        def update(obj):
            obj["status"] = status
        self.store.mutate(self.r_pod, meta["namespace"], meta["name"], update, subresource="status")
        self._pod_signatures[meta["uid"]] = signature
        return signature[1] == "ready"
