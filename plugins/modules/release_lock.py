#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: release_lock
short_description: One deploy, rollback or drill at a time per target, through a Kubernetes Lease
version_added: 0.1.0
description:
  - Takes or gives back a C(coordination.k8s.io/v1) Lease that says which run is changing a target (a namespace and
    its database) right now. The deploy, rollback and drill playbooks take it before they change anything, so that
    a second run started at the same time is refused before it snapshots, migrates or rolls back anything.
  - "O(state=acquired): the Lease is created, or taken when it is free (given back), expired (not renewed for
    C(spec.leaseDurationSeconds)) or held by a run whose C(ansible-playbook) process on this controller has ended.
    When another live run holds it, the module waits up to O(wait_timeout) seconds, then fails with a message naming
    the holder, what it does, where and since when; nothing is changed. Taking the Lease again with the same
    O(holder) keeps it (C(changed=false))."
  - "Writes are guarded by the Lease's C(resourceVersion): of two runs taking it at the same moment exactly one wins;
    the other reads it again and is refused."
  - "With O(keep_alive=true) (the default) a keeper process, detached from the task, renews the Lease every third of
    O(lease_duration) for as long as the C(ansible-playbook) run lives (or the process O(owner_pid)). When that
    process ends, however it ends (finished, failed or killed), the keeper gives the Lease back, so a killed run
    never blocks its rerun. If the controller itself disappears, the Lease expires after O(lease_duration)."
  - O(state=released) gives the Lease back when O(holder) holds it (the object is kept, with no holder) and stops
    the keeper; when somebody else holds it, nothing is changed.
  - Kubernetes names are checked before any API request. Transient API errors (HTTP 429 and 5xx, connection errors)
    are retried with exponential backoff.
  - The Lease needs the verbs C(get), C(create) and C(update) on C(leases.coordination.k8s.io) in the namespace
    (see C(docs/k8s/rbac.yml)).
author:
  - stateful.rollback maintainers (@stateful-rollback)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    description: Reports whether the Lease would be taken or given back; writes nothing and starts no keeper. A Lease
      held by another live run fails in check mode too.
  diff_mode:
    support: full
    description: The holder and operation before and after.
requirements:
  - kubernetes >= 24.2.0
options:
  state:
    description: Take the Lease (V(acquired)) or give it back (V(released)).
    type: str
    choices: [acquired, released]
    default: acquired
  namespace:
    description: Namespace of the Lease (the target's namespace).
    type: str
    required: true
  name:
    description: Name of the Lease; one per target that must not see two operations at once.
    type: str
    default: stateful-rollback
  holder:
    description:
      - "Who holds the Lease (C(spec.holderIdentity)): an identity unique to this run, such as its run id."
      - Taking the Lease again with the same holder keeps it; only this holder can give it back.
    type: str
    required: true
  operation:
    description: What the holder does (for example C(deploy 2.0.0)), shown to a run that is refused.
    type: str
  lease_duration:
    description:
      - Seconds a holder may go without renewing before others may take the Lease (C(spec.leaseDurationSeconds)),
        from 5 to 3600.
    type: int
    default: 60
  wait_timeout:
    description: Seconds to wait for another run's Lease to be given back or to expire before failing. V(0) fails at once.
    type: int
    default: 0
  keep_alive:
    description:
      - Start a keeper process that renews the Lease while the C(ansible-playbook) run (or O(owner_pid)) lives and
        gives it back when that process ends.
      - With V(false), the Lease expires O(lease_duration) seconds after this task unless it is taken again.
    type: bool
    default: true
  owner_pid:
    description:
      - The process whose life the Lease follows. Default is the C(ansible-playbook) process running this task; when
        none is found (the module runs outside C(ansible-playbook)), no keeper is started and a warning says so.
    type: int
"""

EXAMPLES = r"""
- name: Take the target's lock before changing anything
  stateful.rollback.release_lock:
    namespace: shop
    holder: "{{ run_id }}"
    operation: "deploy {{ release_version }}"
    wait_timeout: 0
  register: lock

- name: Give it back at the end (the keeper would do it anyway when ansible-playbook ends)
  stateful.rollback.release_lock:
    namespace: shop
    holder: "{{ run_id }}"
    state: released
  when: lock is succeeded
"""

RETURN = r"""
acquired:
  description: Whether this run holds the Lease after the task.
  returned: always
  type: bool
  sample: true
lease:
  description: The Lease after the task (before it, in check mode); null when it does not exist.
  returned: always
  type: dict
  contains:
    name:
      description: Lease name.
      type: str
      sample: stateful-rollback
    namespace:
      description: Lease namespace.
      type: str
      sample: shop
    holder:
      description: C(spec.holderIdentity); null when free.
      type: str
      sample: 20261125T221501Z-4f2a
    operation:
      description: What the holder does.
      type: str
      sample: deploy 2.0.0
    controller:
      description: Host name of the controller the holder runs on.
      type: str
      sample: awx-task-0
    acquired_at:
      description: C(spec.acquireTime).
      type: str
      sample: "2026-11-25T22:15:01.123456Z"
    renewed_at:
      description: C(spec.renewTime).
      type: str
      sample: "2026-11-25T22:15:21.123456Z"
    duration_seconds:
      description: C(spec.leaseDurationSeconds).
      type: int
      sample: 60
    expires_in_seconds:
      description: Seconds until the Lease expires unless renewed; null when free.
      type: float
      sample: 59.9
    transitions:
      description: C(spec.leaseTransitions), how many times the Lease changed hands.
      type: int
      sample: 3
  sample: {name: stateful-rollback, namespace: shop, holder: 20261125T221501Z-4f2a, transitions: 3}
previous_holder:
  description: The holder whose Lease this run took over, and why it no longer held it; null otherwise.
  returned: always
  type: dict
  sample: {holder: 20261125T210000Z-77aa, operation: deploy 2.0.0, why: its process 4242 on this controller has ended}
keeper:
  description: The keeper process renewing the Lease (C(pid)) and the process it follows (C(owner_pid)); null when none.
  returned: always
  type: dict
  sample: {pid: 5120, owner_pid: 4242}
waited_seconds:
  description: Seconds spent waiting for another holder.
  returned: always
  type: float
  sample: 0.0
"""

from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module
from ansible_collections.stateful.rollback.plugins.module_utils.k8s import k8s_auth_argument_spec, run_module
from ansible_collections.stateful.rollback.plugins.module_utils.leases import invalid_params, run


def argument_spec():
    spec = k8s_auth_argument_spec()
    spec.update(
        state=dict(type="str", choices=["acquired", "released"], default="acquired"),
        namespace=dict(type="str", required=True),
        name=dict(type="str", default="stateful-rollback"),
        holder=dict(type="str", required=True),
        operation=dict(type="str"),
        lease_duration=dict(type="int", default=60),
        wait_timeout=dict(type="int", default=0),
        keep_alive=dict(type="bool", default=True),
        owner_pid=dict(type="int"),
    )
    return spec


def main():
    module = ansible_module(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, lambda kube: run(kube, module.params, check_mode=module.check_mode), invalid_params)


if __name__ == "__main__":
    main()
