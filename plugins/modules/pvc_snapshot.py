#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pvc_snapshot
short_description: Take, restore, delete and prune CSI VolumeSnapshots of PersistentVolumeClaims
version_added: 0.1.0
description:
  - Manages C(snapshot.storage.k8s.io/v1) VolumeSnapshots of PersistentVolumeClaims, the storage half of a rollback.
  - O(state=present) snapshots the PVCs named in O(pvcs) or matched by O(pvc_selector) and waits until each snapshot is
    C(readyToUse). An existing snapshot of the same name and source is left alone (labels from O(labels) are added);
    one of the same name but another source is an error naming both.
  - O(state=restored) restores snapshot O(name) into a new PVC O(target_pvc), or with O(replace=true) replaces an
    existing PVC of that name, and waits until the PVC is Bound.
  - "A replace never deletes data before the restored copy exists: the snapshot is restored into a temporary PVC
    C(<target_pvc>-restore-<hash>) first. Only once that PVC is Bound are both volumes set to reclaim policy Retain,
    the temporary PVC and the target PVC deleted, and the target PVC created again, with the same labels and
    annotations, bound to the restored volume (C(spec.volumeName)). If the restore fails or times out, the temporary
    PVC is deleted, the target PVC and its volume are not changed, and the task fails with the last events of the
    temporary PVC."
  - "Every step of a replace is journaled on the restored PersistentVolume (label C(stateful.rollback/swap=pending)),
    so when the module is interrupted (for example between the deletion and the re-creation of the target PVC),
    running the same task again finishes the swap instead of starting over."
  - The replaced volume is kept (reclaim policy Retain, label C(stateful.rollback/replaced-by-snapshot)) unless
    O(keep_replaced_volume=false); see O(keep_replaced_volume).
  - A PVC mounted by a pod (other than Succeeded or Failed) is not replaced; name its StatefulSet or Deployment in
    O(workload) to have it scaled to 0 during the restore and back up afterwards.
  - "Idempotence: the restored PVC is annotated C(stateful.rollback/restored-from: <snapshot>/<snapshot uid>). A PVC
    carrying the annotation of this very snapshot object (same name and uid) is left alone (C(changed=false), no
    workload is scaled), unless O(force=true). A snapshot deleted and taken again under the same name has another
    uid, so it is restored. What an interrupted run left behind (a temporary PVC, an unfinished swap, a workload this
    module scaled down) is finished or removed first, and that reports C(changed=true)."
  - O(state=absent) deletes the snapshots named O(name) or matched by O(snapshot_selector) and waits until they are gone.
  - O(state=pruned) keeps, among the snapshots matched by O(snapshot_selector), the newest O(keep) per source PVC and
    deletes the others, never those named in O(protect).
  - Transient API errors (HTTP 429 and 5xx, connection errors) are retried a few times with exponential backoff.
  - "Names, labels and selectors the API server would refuse (a namespace that is not a DNS-1123 label of at most 63
    characters, an object name that is not a DNS-1123 subdomain of at most 253, an invalid label key or value, a
    malformed label selector) fail before the first API request, naming the option."
author:
  - stateful.rollback maintainers (@stateful-rollback)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    description: Reports what would be created, replaced or deleted, and changes nothing.
  diff_mode:
    support: full
    description: Returns the snapshots (or the restored PVC) before and after.
requirements:
  - kubernetes >= 24.2.0
options:
  state:
    description:
      - What to do. See the description.
    type: str
    default: present
    choices: [ present, restored, absent, pruned ]
  namespace:
    description: Namespace of the PVCs and snapshots.
    type: str
    required: true
  pvcs:
    description: Names of the PVCs to snapshot with O(state=present).
    type: list
    elements: str
  pvc_selector:
    description: Label selector (for example C(app=db,tier!=cache)) of the PVCs to snapshot with O(state=present).
    type: str
  name:
    description:
      - With O(state=present), the snapshot's name; only when one PVC is snapshotted.
      - With O(state=restored), the snapshot to restore. With O(state=absent), the snapshot to delete.
    type: str
  name_prefix:
    description: With O(state=present), snapshots are named C(<name_prefix><pvc name>).
    type: str
  volume_snapshot_class:
    description:
      - VolumeSnapshotClass of new snapshots.
      - Default is the class annotated C(snapshot.storage.kubernetes.io/is-default-class=true) whose driver is the
        provisioner of the PVC's StorageClass.
    type: str
  labels:
    description: Labels put on new snapshots (added to existing ones), or on the PVC created by O(state=restored).
    type: dict
    default: {}
  target_pvc:
    description: With O(state=restored), the PVC to create from the snapshot.
    type: str
  replace:
    description:
      - With O(state=restored), replace an existing O(target_pvc) by the snapshot (restore first, then swap the volumes;
        see the description).
      - Refused while a pod mounts it, unless O(workload) names the workload to scale down.
      - A PVC already restored from this very snapshot (same uid) is left alone, unless O(force=true).
      - A replace always waits for each step (within O(wait_timeout) each), whatever O(wait) says.
    type: bool
    default: false
  force:
    description:
      - With O(state=restored), restore even if O(target_pvc) is already annotated as restored from this very snapshot,
        for example to roll back a second time to the same snapshot after new writes. Needs O(replace=true).
      - "Not idempotent, by design: every run with O(force=true) restores (and scales O(workload)) again. Finishing a
        swap that an interrupted run left behind counts as the restore of that run."
    type: bool
    default: false
  keep_replaced_volume:
    description:
      - With O(state=restored) and O(replace=true), what happens to the volume the target PVC had.
      - V(true) keeps that PersistentVolume (reclaim policy Retain, status Released) with the label
        C(stateful.rollback/replaced-by-snapshot=<snapshot>) and the annotations C(stateful.rollback/replaced-pvc)
        (namespace/name of the PVC it belonged to), C(stateful.rollback/replaced-at) (UTC time),
        C(stateful.rollback/replaced-by-volume) and C(stateful.rollback/original-reclaim-policy), so the rollback can
        itself be rolled back. Its name is returned as RV(replaced_volume).
      - Kept volumes are the operator's to clean up; O(state=pruned) and O(state=absent) only delete snapshots and never
        touch them. To reclaim one, set its C(persistentVolumeReclaimPolicy) back to its original policy (or delete
        it); to use it again, clear its C(spec.claimRef) and create a PVC with C(spec.volumeName) set to it.
      - V(false) gives the volume back its original reclaim policy once the swap is done (with Delete, the cluster
        deletes it and its data).
    type: bool
    default: true
  workload:
    description:
      - With O(state=restored), the StatefulSet or Deployment (in O(namespace)) whose pods mount O(target_pvc).
      - When a restore is needed, it is scaled to 0 (its replica count is recorded in its annotation
        C(stateful.rollback/replicas-before-restore)), the module waits until no pod mounts the PVC, restores, scales it
        back to the recorded count and waits until C(readyReplicas) equals that count and C(observedGeneration) is
        current, each wait within O(wait_timeout).
      - If the restore fails while the target PVC is intact, the workload is scaled back up before the task fails
        (the message says so). If it fails in the middle of the swap, the workload stays at 0 and the message says
        to rerun the task, which finishes the swap and scales it back to the recorded count.
      - When no restore is needed (see the idempotence rule in the description), nothing is scaled.
      - A pod that mounts the PVC but does not match the workload's selector makes the task fail before anything is
        scaled.
    type: dict
    suboptions:
      kind:
        description: Kind of the workload.
        type: str
        required: true
        choices: [ StatefulSet, Deployment ]
      name:
        description: Name of the workload.
        type: str
        required: true
  size:
    description: With O(state=restored), minimum size of the new PVC; the size is the larger of this and the snapshot's restoreSize.
    type: str
  storage_class:
    description: With O(state=restored), StorageClass of the new PVC. Default is the source PVC's class.
    type: str
  snapshot_selector:
    description: Label selector of the snapshots to delete (O(state=absent)) or prune (O(state=pruned)).
    type: str
  keep:
    description: With O(state=pruned), how many of the newest snapshots to keep per source PVC.
    type: int
    default: 1
  protect:
    description: With O(state=pruned), snapshot names never deleted.
    type: list
    elements: str
    default: []
  wait:
    description:
      - Wait until snapshots are readyToUse, restored PVCs are Bound, and deleted objects are gone.
      - A replace (O(replace=true)) or a restore with O(workload) always waits.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for each object.
    type: int
    default: 300
notes:
  - Needs the external-snapshotter CRDs and snapshot controller in the cluster, and a CSI driver that supports snapshots.
  - "A replace reads, lists and patches PersistentVolumes (cluster-scoped): the credentials need get, list and patch on
    C(persistentvolumes), besides the namespaced PVCs, pods, events and (with O(workload)) StatefulSets or Deployments."
  - "Objects an interrupted replace leaves behind carry the label C(app.kubernetes.io/managed-by: stateful.rollback):
    the temporary PVC (C(stateful.rollback/role=restore-temp)) and the restored PersistentVolume
    (C(stateful.rollback/swap=pending), with the journal in the annotation C(stateful.rollback/swap-journal)). Rerun the
    task to finish; do not delete them by hand."
  - "A PVC re-created on the restored volume has no C(spec.dataSource) (a pre-bound PVC must not have one); the snapshot
    reference is in its annotation C(stateful.rollback/data-source) and is returned as RV(pvc.data_source)."
seealso:
  - module: stateful.rollback.pvc_snapshot_info
  - name: Kubernetes volume snapshots
    description: Concepts of VolumeSnapshot, VolumeSnapshotContent and VolumeSnapshotClass.
    link: https://kubernetes.io/docs/concepts/storage/volume-snapshots/
"""

EXAMPLES = r"""
- name: Snapshot the database volumes before the release
  stateful.rollback.pvc_snapshot:
    namespace: shop
    pvc_selector: app=postgres
    name_prefix: pre-1-4-2-
    labels:
      release: 1.4.2
  register: snaps

- name: Restore the snapshot into a new PVC
  stateful.rollback.pvc_snapshot:
    state: restored
    namespace: shop
    name: pre-1-4-2-data-postgres-0
    target_pvc: data-postgres-0-restored
    size: 20Gi

- name: Replace the PVC of the scaled-down StatefulSet with the snapshot
  stateful.rollback.pvc_snapshot:
    state: restored
    namespace: shop
    name: pre-1-4-2-data-postgres-0
    target_pvc: data-postgres-0
    replace: true

- name: Roll the PVC of StatefulSet db back to the snapshot (scaled to 0 and back up around the restore)
  stateful.rollback.pvc_snapshot:
    state: restored
    namespace: shop
    name: pre-1-4-2-data-db-0
    target_pvc: data-db-0
    replace: true
    workload:
      kind: StatefulSet
      name: db
    wait_timeout: 600
  register: rollback

- name: Show the volume that was replaced (kept with reclaim policy Retain)
  ansible.builtin.debug:
    msg: "data-db-0 now on {{ rollback.pvc.volume_name }}; the old data is on {{ rollback.replaced_volume }}"

- name: Roll back to the same snapshot a second time, after new writes
  stateful.rollback.pvc_snapshot:
    state: restored
    namespace: shop
    name: pre-1-4-2-data-db-0
    target_pvc: data-db-0
    replace: true
    force: true
    keep_replaced_volume: false
    workload:
      kind: StatefulSet
      name: db

- name: Keep the two newest release snapshots per PVC
  stateful.rollback.pvc_snapshot:
    state: pruned
    namespace: shop
    snapshot_selector: release
    keep: 2
    protect: [golden-data-postgres-0]

- name: Delete the release snapshots
  stateful.rollback.pvc_snapshot:
    state: absent
    namespace: shop
    snapshot_selector: release=1.4.2
"""

RETURN = r"""
changed:
  description: Whether anything was (or, in check mode, would be) created, patched or deleted.
  returned: always
  type: bool
  sample: true
snapshots:
  description:
    - O(state=present) the snapshots taken or found; O(state=restored) the snapshot restored;
      O(state=absent) and O(state=pruned) the snapshots deleted.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Snapshot name.
      type: str
      sample: pre-1-4-2-data-postgres-0
    namespace:
      description: Snapshot namespace.
      type: str
      sample: shop
    source_pvc:
      description: The PVC the snapshot was taken of.
      type: str
      sample: data-postgres-0
    volume_snapshot_class:
      description: The snapshot's class.
      type: str
      sample: csi-hostpath-snapclass
    restore_size:
      description: Minimum size of a volume restored from it.
      type: str
      sample: 1Gi
    creation_time:
      description: When the snapshot was cut (or the object created).
      type: str
      sample: "2026-01-01T10:00:00Z"
    ready_to_use:
      description: Whether it can be restored; null while unknown (check mode).
      type: bool
      sample: true
    content_name:
      description: The bound VolumeSnapshotContent.
      type: str
      sample: snapcontent-0d6f3f4e
    labels:
      description: Snapshot labels.
      type: dict
      sample: {release: 1.4.2}
    error:
      description: The snapshot's C(status.error.message), when set.
      type: str
      sample: "rpc error: code = Internal"
kept:
  description: With O(state=pruned), the snapshots kept.
  returned: when state is pruned
  type: list
  elements: dict
  sample: [{name: pre-1-4-3-data-postgres-0, source_pvc: data-postgres-0, ready_to_use: true}]
pvc:
  description:
    - With O(state=restored), the restored PVC.
    - RV(pvc.data_source) comes from C(spec.dataSource), or for a PVC re-created on a restored volume from its
      annotation C(stateful.rollback/data-source).
  returned: when state is restored
  type: dict
  contains:
    name:
      description: PVC name.
      type: str
      sample: data-db-0
    namespace:
      description: PVC namespace.
      type: str
      sample: shop
    phase:
      description: PVC phase (null in check mode).
      type: str
      sample: Bound
    storage_class:
      description: StorageClass of the PVC.
      type: str
      sample: standard
    size:
      description: Requested size.
      type: str
      sample: 1Gi
    capacity:
      description: Capacity of the bound volume.
      type: str
      sample: 1Gi
    volume_name:
      description: The bound PersistentVolume.
      type: str
      sample: pvc-0d6f3f4e
    data_source:
      description: The snapshot the PVC was restored from.
      type: dict
      sample: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}
    restored_from:
      description: The annotation C(stateful.rollback/restored-from), C(<snapshot>/<snapshot uid>).
      type: str
      sample: pre-1-4-2-data-db-0/5b0f6c1e-3f0a-4c8e-9d1b-2a7e9c3d4f5a
replaced_volume:
  description:
    - With O(state=restored), the PersistentVolume the target PVC had before the replace, when it is kept (see
      O(keep_replaced_volume)); null when nothing was replaced or the volume was handed back to its reclaim policy.
  returned: when state is restored
  type: str
  sample: pvc-7c1d0a9b
resumed:
  description: With O(state=restored), whether this run finished a swap that an interrupted run had left unfinished.
  returned: when state is restored
  type: bool
  sample: false
workload:
  description: With O(workload), the workload and the replica count it was (or would be) scaled back to.
  returned: when state is restored and workload is set
  type: dict
  contains:
    kind:
      description: StatefulSet or Deployment.
      type: str
      sample: StatefulSet
    name:
      description: Workload name.
      type: str
      sample: db
    replicas:
      description: Replica count before the restore, restored afterwards.
      type: int
      sample: 3
diff:
  description: Snapshots (or the PVC) before and after.
  returned: always
  type: dict
  sample: {before: {}, after: {snap: {name: snap, ready_to_use: true}}}
timings:
  description:
    - Wall-clock seconds; C(total_seconds) always, the others when the step ran.
    - C(create_seconds), C(delete_seconds) and C(wait_seconds) (all waits); with O(state=restored) also
      C(restore_seconds) (until the temporary PVC is Bound), C(swap_seconds) (steps after that), and with O(workload)
      C(scale_down_seconds) (until no pod mounts the PVC) and C(scale_up_seconds) (until the workload is ready again).
  returned: always
  type: dict
  sample: {total_seconds: 9.4, wait_seconds: 3.1, restore_seconds: 1.2, swap_seconds: 1.9, scale_down_seconds: 0.8,
           scale_up_seconds: 4.3}
"""

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module
from ansible_collections.stateful.rollback.plugins.module_utils.k8s import k8s_auth_argument_spec, run_module
from ansible_collections.stateful.rollback.plugins.module_utils.snapshots import invalid_params, run


def argument_spec():
    spec = k8s_auth_argument_spec()
    spec.update(
        state=dict(type="str", default="present", choices=["present", "restored", "absent", "pruned"]),
        namespace=dict(type="str", required=True),
        pvcs=dict(type="list", elements="str"),
        pvc_selector=dict(type="str"),
        name=dict(type="str"),
        name_prefix=dict(type="str"),
        volume_snapshot_class=dict(type="str"),
        labels=dict(type="dict", default={}),
        target_pvc=dict(type="str"),
        replace=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        keep_replaced_volume=dict(type="bool", default=True),
        workload=dict(type="dict", options=dict(
            kind=dict(type="str", required=True, choices=["StatefulSet", "Deployment"]),
            name=dict(type="str", required=True),
        )),
        size=dict(type="str"),
        storage_class=dict(type="str"),
        snapshot_selector=dict(type="str"),
        keep=dict(type="int", default=1),
        protect=dict(type="list", elements="str", default=[]),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=300),
    )
    return spec


def main():
    module = ansible_module(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("pvcs", "pvc_selector"), ("name", "name_prefix"), ("name", "snapshot_selector")],
        required_if=[
            ("state", "present", ("pvcs", "pvc_selector"), True),
            ("state", "present", ("name", "name_prefix"), True),
            ("state", "restored", ("name", "target_pvc")),
            ("state", "absent", ("name", "snapshot_selector"), True),
            ("state", "pruned", ("snapshot_selector",)),
        ],
    )
    if module.params["keep"] < 0:
        module.fail_json(msg="keep must not be negative, got %s" % module.params["keep"])
    if module.params["workload"] and module.params["state"] != "restored":
        module.fail_json(msg="workload is only used with state=restored")
    if module.params["wait_timeout"] < 0:
        module.fail_json(msg="wait_timeout must not be negative, got %s" % module.params["wait_timeout"])
    run_module(module, lambda kube: run(kube, module.params, check_mode=module.check_mode), invalid_params)


if __name__ == "__main__":
    main()
