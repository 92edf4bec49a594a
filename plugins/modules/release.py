#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: release
short_description: Validate release manifests and keep the release ledger of a PostgreSQL-backed app
version_added: 0.1.0
description:
  - A release manifest (C(release.yml)) is the single source of truth of one release, for rolling out and rolling back
    alike. It pins every container image by digest, lists the database migrations in order with their rollback
    scripts (or marks them irreversible with a reason), and carries feature flags, invariants and health checks.
    Its JSON Schema is published in the collection as C(meta/release.schema.json).
  - "O(state=validated) reads and validates a manifest without any database and returns its summary and digest. Every
    problem is reported at once, each naming its field path, for example
    C(app.workloads[0].containers.web: image 'demo:2.0' is not pinned by digest). SQL files that PostgreSQL's
    parser (pglast) refuses are reported with the line of the syntax error."
  - The manifest digest is the SHA-256 of the manifest with every referenced SQL file replaced by its path and
    SHA-256, so editing a migration changes the digest.
  - The release ledger is the table C(release_ledger) in schema O(journal_schema) of the application's database,
    one row per version with the manifest digest, image digests, migration checksums, snapshots taken, baseline
    file, outcome, known-good flag, who recorded and promoted it and when, and the history of every event.
  - O(state=recorded) records a release or updates its outcome, snapshots and baseline. A release is immutable;
    recording a version again with a manifest that hashes differently is refused, so a tampered or edited release
    cannot pass for the recorded one.
  - O(state=promoted) marks a release known good (outcome V(verified)), a safe rollback target.
  - O(state=info) reports the release believed to run, the last known-good release and the history, and never
    creates or changes anything.
  - "Outcomes: V(pending) (recorded, rollout not finished), V(deployed) (rolled out, not verified), V(verified) (health
    checks and invariants passed), V(failed) (rollout or verification failed), V(rolled_back) (undone)."
author:
  - stateful.rollback maintainers (@stateful-rollback)
extends_documentation_fragment:
  - stateful.rollback.postgres
attributes:
  check_mode:
    support: full
    description: Reports the ledger row as it would be after the change and writes nothing (the schema is not created).
  diff_mode:
    support: full
    description: Returns the ledger row before and after for O(state=recorded) and O(state=promoted).
options:
  state:
    description:
      - V(validated) validates O(manifest) and returns its summary; no database is used.
      - V(recorded) records the release of O(manifest) (or updates the recorded O(version)) in the ledger.
      - V(promoted) marks O(version) known good.
      - V(info) reads the ledger.
    type: str
    required: true
    choices: [ validated, recorded, promoted, info ]
  manifest:
    description:
      - Path of the release manifest (C(release.yml)) on the host the module runs on. SQL files it names are read
        relative to its directory.
      - Required for O(state=validated), and to record a version that is not recorded yet.
      - With O(state=promoted) or O(state=info) its digest is compared with the recorded one.
    type: path
  version:
    description:
      - Release version. Defaults to the version of O(manifest); when both are given they must agree.
      - Without O(manifest), O(state=recorded) updates a version already recorded.
    type: str
  journal_schema:
    description:
      - Schema of the ledger table C(release_ledger). Created with the table on the first recording.
      - A plain identifier (letters, digits, C(_), C($)); used as written, quoted.
    type: str
    default: stateful_rollback
  outcome:
    description:
      - With O(state=recorded), the outcome to set. A new record starts V(pending) unless given.
      - V(failed) and V(rolled_back) clear the known-good flag. Every change is appended to the row's history.
    type: str
    choices: [ pending, deployed, verified, failed, rolled_back ]
  snapshots:
    description:
      - With O(state=recorded), names of snapshots taken for the release (for example by
        M(stateful.rollback.pvc_snapshot)). Merged with those recorded, in order, without duplicates.
    type: list
    elements: str
  baseline_path:
    description:
      - With O(state=recorded), the data fingerprint file captured before the release by
        M(stateful.rollback.replication_parity) with C(mode=baseline_capture).
    type: path
  note:
    description:
      - Free text stored with the history events of this change (why it was rolled back, the ticket, ...).
    type: str
  recorded_by:
    description:
      - Who records or promotes, stored in the row and its history.
      - "Defaults to C(user@host) of the process running the module, followed by C((AWX job N)) when the environment
        holds C(AWX_JOB_ID), or C(JOB_ID) as AWX and Ansible Automation Platform set it in a job's environment
        (seen by modules that run on the controller, for example with C(delegate_to: localhost))."
      - C(JOB_ID) without C(AWX_HOST) (another scheduler's job id) is shown as C((job N)).
    type: str
  history_limit:
    description: With O(state=info), the number of releases returned in RV(history), newest first.
    type: int
    default: 20
requirements:
  - PyYAML
  - jsonschema
notes:
  - The ledger lives in the application's database so that it follows the data. On a database that streams to
    standbys it replicates with everything else.
  - Concurrent recordings are serialized by a transaction-level advisory lock and a row lock; two jobs recording
    the same version at the same time produce one row.
  - "O(state=info) defines RV(current) as the most recently recorded release whose outcome is V(deployed) or
    V(verified): the release believed to run. A failed or rolled-back release is never current."
seealso:
  - module: stateful.rollback.replication_parity
  - module: stateful.rollback.pvc_snapshot
"""

EXAMPLES = r"""
- name: Validate the release manifest before anything else
  stateful.rollback.release:
    state: validated
    manifest: releases/2.0.0/release.yml
  register: manifest_check
  delegate_to: localhost

- name: Record release 2.0.0 before rolling it out
  stateful.rollback.release:
    state: recorded
    manifest: releases/2.0.0/release.yml
    login_host: db-primary.internal
    login_user: deployer
    login_password: "{{ deployer_password }}"
    login_db: app
    snapshots: [data-pre-2.0.0]
    baseline_path: /var/lib/stateful-rollback/app-2.0.0.baseline.json
  delegate_to: localhost

- name: Mark it deployed
  stateful.rollback.release:
    state: recorded
    version: 2.0.0
    outcome: deployed
    login_host: db-primary.internal
    login_user: deployer
    login_password: "{{ deployer_password }}"
    login_db: app
  delegate_to: localhost

- name: Promote it once health checks and invariants passed
  stateful.rollback.release:
    state: promoted
    version: 2.0.0
    note: "smoke tests green, CHG-1234"
    login_host: db-primary.internal
    login_user: deployer
    login_password: "{{ deployer_password }}"
    login_db: app
  delegate_to: localhost

- name: Find the release to roll back to
  stateful.rollback.release:
    state: info
    login_host: db-primary.internal
    login_user: deployer
    login_password: "{{ deployer_password }}"
    login_db: app
  register: ledger
  delegate_to: localhost

- name: Show the rollback target
  ansible.builtin.debug:
    msg: "roll back to {{ ledger.last_known_good.version | default('nothing: no known-good release') }}"
"""

RETURN = r"""
state:
  description: The state that ran.
  returned: always
  type: str
  sample: recorded
manifest:
  description:
    - Summary of the manifest given in O(manifest) - C(version), C(digest), C(path), C(base_dir), C(namespace),
      C(workloads), C(pvcs), C(images) (C(kind/name/container) to image digest), C(migrations) (C(id), C(up) and
      C(down) as path and SHA-256, C(irreversible), C(reason), C(verify), C(transactional), C(backfill)),
      C(feature_flags), C(invariants), C(health_checks).
  returned: when manifest is given
  type: dict
  sample:
    version: 2.0.0
    digest: "sha256:5d41402abc4b2a76b9719d911017c592ae1e6c5a3c2f8f7f1c6f1d6f9e3d2a11"
    images: {"Deployment/web/web": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
    migrations:
      - id: "001-add-full-name"
        up: {path: migrations/001.up.sql, sha256: "b4e0497804e46e0a0b0b8c31975b062152d551bac49c3c2e80932567b4085dcd"}
        down: {path: migrations/001.down.sql, sha256: "a41109d24069b4822ddc5f367b25d484dc7e839bff338ce7a3e5da641caacda0"}
        irreversible: false
ledger:
  description: The ledger table, as C(schema.release_ledger).
  returned: unless state is validated
  type: str
  sample: stateful_rollback.release_ledger
release:
  description:
    - The ledger row of the release after the change (O(state=recorded), O(state=promoted); in check mode as it
      would be) or the row of O(version) (O(state=info); null when not recorded).
    - "Keys: C(id), C(version), C(manifest_digest), C(manifest_path), C(manifest) (the manifest summary without
      paths), C(image_digests), C(migration_checksums) (C(<id>/up), C(<id>/down) to SHA-256), C(snapshots),
      C(baseline_path), C(outcome), C(known_good), C(recorded_at), C(recorded_by), C(updated_at), C(promoted_at),
      C(promoted_by), C(history) (events C(event), C(outcome), C(at), C(by), C(note)). Times are ISO 8601 UTC."
  returned: unless state is validated
  type: dict
  sample:
    id: 3
    version: 2.0.0
    manifest_digest: "sha256:5d41402abc4b2a76b9719d911017c592ae1e6c5a3c2f8f7f1c6f1d6f9e3d2a11"
    outcome: verified
    known_good: true
    snapshots: [data-pre-2.0.0]
    recorded_at: "2026-01-12T09:30:01.123456Z"
    recorded_by: "deploy@awx-task-1 (AWX job 812)"
    history:
      - {event: recorded, outcome: pending, at: "2026-01-12T09:30:01.123456Z", by: "deploy@awx-task-1 (AWX job 812)", note: null}
      - {event: promoted, outcome: verified, at: "2026-01-12T09:41:17.000001Z", by: "deploy@awx-task-1 (AWX job 812)", note: "smoke green"}
changes:
  description: What changed (or would change in check mode), one line each.
  returned: when state is recorded or promoted
  type: list
  elements: str
  sample: ["outcome pending -> deployed", "snapshots + data-pre-2.0.0"]
exists:
  description: Whether the ledger table exists.
  returned: when state is info
  type: bool
  sample: true
current:
  description: The most recently recorded release whose outcome is deployed or verified (a ledger row), or null.
  returned: when state is info
  type: dict
  sample: {version: 1.9.0, outcome: verified, known_good: true}
last_known_good:
  description: The most recently recorded known-good release (a ledger row), or null.
  returned: when state is info
  type: dict
  sample: {version: 1.9.0, outcome: verified, known_good: true}
history:
  description: Ledger rows, newest first, at most O(history_limit).
  returned: when state is info
  type: list
  elements: dict
  sample: [{version: 2.0.0, outcome: rolled_back, known_good: false}, {version: 1.9.0, outcome: verified, known_good: true}]
manifest_matches:
  description: With O(state=info) and O(manifest), whether the manifest hashes as the recorded release; null when not recorded.
  returned: when state is info and manifest is given
  type: bool
  sample: true
"""

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.stateful.rollback.plugins.module_utils import manifest as manifest_lib
from ansible_collections.stateful.rollback.plugins.module_utils.module_support import ansible_module
from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    HAS_PSYCOPG2,
    PSYCOPG2_IMP_ERR,
    PostgresError,
    connect,
    get_conn_params,
    postgres_common_argument_spec,
)

try:
    from ansible_collections.stateful.rollback.plugins.module_utils.ledger import (
        OUTCOMES,
        Ledger,
        LedgerError,
        check_schema_name,
        default_recorded_by,
    )

    LEDGER_IMP_ERR = None
except ImportError:  # pragma: no cover - only without psycopg2
    OUTCOMES = ("pending", "deployed", "verified", "failed", "rolled_back")
    LEDGER_IMP_ERR = traceback.format_exc()

RECORD_ONLY = ("outcome", "snapshots", "baseline_path")


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(
        state=dict(type="str", required=True, choices=["validated", "recorded", "promoted", "info"]),
        manifest=dict(type="path"),
        version=dict(type="str"),
        journal_schema=dict(type="str", default="stateful_rollback"),
        outcome=dict(type="str", choices=list(OUTCOMES)),
        snapshots=dict(type="list", elements="str"),
        baseline_path=dict(type="path"),
        note=dict(type="str"),
        recorded_by=dict(type="str"),
        history_limit=dict(type="int", default=20),
    )
    return spec


def validate(module):
    params = module.params
    state = params["state"]
    if state != "recorded":
        given = [name for name in RECORD_ONLY if params.get(name) is not None]
        if given:
            module.fail_json(msg="%s: only used with state=recorded, not state=%s" % (", ".join(given), state))
    if state in ("validated", "info") and params.get("note") is not None:
        module.fail_json(msg="note: only used with state=recorded or state=promoted, not state=%s" % state)
    if params["history_limit"] < 1:
        module.fail_json(msg="history_limit must be a positive number, got %s" % params["history_limit"])
    if any(not isinstance(s, str) or not s.strip() for s in params.get("snapshots") or []):
        module.fail_json(msg="snapshots must be non-empty snapshot names")
    if params.get("version") is not None and not params["version"].strip():
        module.fail_json(msg="version must not be empty")


def load_manifest(module):
    path = module.params.get("manifest")
    if path is None:
        return None
    if not manifest_lib.HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=manifest_lib.YAML_IMP_ERR)
    if not manifest_lib.HAS_JSONSCHEMA:
        module.fail_json(msg=missing_required_lib("jsonschema"), exception=manifest_lib.JSONSCHEMA_IMP_ERR)
    try:
        return manifest_lib.load_release(path)
    except manifest_lib.ManifestError as exc:
        module.fail_json(msg=str(exc), errors=exc.errors, state=module.params["state"])


def run(module, release):
    params = module.params
    state = params["state"]
    version = params.get("version")
    if release is not None:
        if version is not None and version != release.version:
            module.fail_json(msg="version %s does not match the manifest's version %s (%s)" % (version, release.version, release.path))
        version = release.version
    result = dict(state=state, changed=False)
    if release is not None:
        result["manifest"] = release.summary()
    if state == "validated":
        return result
    if version is None and state in ("recorded", "promoted"):
        module.fail_json(msg="state=%s needs version or manifest" % state)
    by = params.get("recorded_by") or default_recorded_by()
    schema = check_schema_name(params["journal_schema"])
    conn = connect(get_conn_params(params), application_name="stateful.rollback.release")
    try:
        ledger = Ledger(conn, schema)
        result["ledger"] = ledger.name
        if state == "info":
            result.update(ledger.info(version=version, history_limit=params["history_limit"]))
            if release is not None:
                recorded = result["release"]
                result["manifest_matches"] = None if recorded is None else recorded["manifest_digest"] == release.digest
            return result
        if state == "recorded":
            change = ledger.record(
                version, by, release=release, outcome=params.get("outcome"), snapshots=params.get("snapshots"),
                baseline_path=params.get("baseline_path"), note=params.get("note"), check_mode=module.check_mode,
            )
        else:
            change = ledger.promote(version, by, release=release, note=params.get("note"), check_mode=module.check_mode)
    finally:
        conn.close()
    result.update(changed=change.changed, release=change.after, changes=change.changes)
    if module._diff and change.changed:  # pylint: disable=protected-access
        result["diff"] = change.diff()
    return result


def main():
    module = ansible_module(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "validated", ("manifest",))],
    )
    validate(module)
    release = load_manifest(module)
    if module.params["state"] != "validated":
        if not HAS_PSYCOPG2:
            module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMP_ERR)
        if LEDGER_IMP_ERR:
            module.fail_json(msg="cannot load the release ledger", exception=LEDGER_IMP_ERR)
    try:
        result = run(module, release)
    except (LedgerError, PostgresError) as exc:
        module.fail_json(msg=str(exc), state=module.params["state"])
    except Exception as exc:  # pylint: disable=broad-except
        # psycopg2.Error and the like: name the failure, keep the traceback for -vvv.
        module.fail_json(msg="release ledger: %s: %s" % (type(exc).__name__, str(exc).strip()), state=module.params["state"],
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
