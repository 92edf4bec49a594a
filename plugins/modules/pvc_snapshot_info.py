#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pvc_snapshot_info
short_description: List CSI VolumeSnapshots with their source PVC and readiness
version_added: 0.1.0
description:
  - Lists C(snapshot.storage.k8s.io/v1) VolumeSnapshots in a namespace (or in all namespaces), by name or label selector,
    with the PVC each was taken of, its size, content and whether it is ready to restore.
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
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing is changed.
requirements:
  - kubernetes >= 24.2.0
options:
  namespace:
    description: Namespace to list. Default is all namespaces.
    type: str
  name:
    description: Only this snapshot (needs O(namespace)).
    type: str
  snapshot_selector:
    description: Label selector of the snapshots, for example C(release=1.4.2).
    type: str
seealso:
  - module: stateful.rollback.pvc_snapshot
"""

EXAMPLES = r"""
- name: List the release snapshots
  stateful.rollback.pvc_snapshot_info:
    namespace: shop
    snapshot_selector: release=1.4.2
  register: found

- name: Fail unless every snapshot is ready
  ansible.builtin.assert:
    that: found.snapshots | rejectattr('ready_to_use') | list | length == 0
"""

RETURN = r"""
snapshots:
  description: The snapshots found, sorted by namespace and name.
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
      description: Whether it can be restored.
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
timings:
  description: Wall-clock seconds.
  returned: always
  type: dict
  sample: {total_seconds: 0.05}
"""

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module
from ansible_collections.stateful.rollback.plugins.module_utils.k8s import k8s_auth_argument_spec, run_module
from ansible_collections.stateful.rollback.plugins.module_utils.snapshots import invalid_params, info


def argument_spec():
    spec = k8s_auth_argument_spec()
    spec.update(
        namespace=dict(type="str"),
        name=dict(type="str"),
        snapshot_selector=dict(type="str"),
    )
    return spec


def main():
    module = ansible_module(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("name", "snapshot_selector")],
        required_by={"name": "namespace"},
    )
    run_module(module, lambda kube: info(kube, module.params), invalid_params)


if __name__ == "__main__":
    main()
