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
    existing PVC of that name (refused while a Running pod mounts it), and waits until the PVC is Bound.
  - O(state=absent) deletes the snapshots named O(name) or matched by O(snapshot_selector) and waits until they are gone.
  - O(state=pruned) keeps, among the snapshots matched by O(snapshot_selector), the newest O(keep) per source PVC and
    deletes the others, never those named in O(protect).
  - Transient API errors (HTTP 429 and 5xx, connection errors) are retried a few times with exponential backoff.
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
      - With O(state=restored), replace an existing O(target_pvc) (delete it, then recreate it from the snapshot).
      - Refused while a Running pod mounts it. A PVC already restored from this very snapshot (same uid) is left alone.
    type: bool
    default: false
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
    description: Wait until snapshots are readyToUse, restored PVCs are Bound, and deleted objects are gone.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for each object.
    type: int
    default: 300
notes:
  - Needs the external-snapshotter CRDs and snapshot controller in the cluster, and a CSI driver that supports snapshots.
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
  description: With O(state=restored), the restored PVC.
  returned: when state is restored
  type: dict
  sample: {name: data-restored, namespace: shop, phase: Bound, storage_class: standard, size: 1Gi, capacity: 1Gi,
           volume_name: pvc-1234, data_source: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}}
diff:
  description: Snapshots (or the PVC) before and after.
  returned: always
  type: dict
  sample: {before: {}, after: {snap: {name: snap, ready_to_use: true}}}
timings:
  description: Wall-clock seconds (total, and time spent creating, deleting and waiting).
  returned: always
  type: dict
  sample: {total_seconds: 2.1, wait_seconds: 1.8}
"""

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module
from ansible_collections.stateful.rollback.plugins.module_utils.k8s import (
    HAS_KUBERNETES,
    KUBERNETES_IMP_ERR,
    K8sError,
    connect,
    k8s_auth_argument_spec,
)
from ansible_collections.stateful.rollback.plugins.module_utils.snapshots import run


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
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMP_ERR)
    if module.params["keep"] < 0:
        module.fail_json(msg="keep must not be negative, got %s" % module.params["keep"])
    if module.params["wait_timeout"] < 0:
        module.fail_json(msg="wait_timeout must not be negative, got %s" % module.params["wait_timeout"])
    try:
        result = run(connect(module.params), module.params, check_mode=module.check_mode)
    except K8sError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
