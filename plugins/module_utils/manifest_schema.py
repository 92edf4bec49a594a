# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""JSON Schema (draft 2020-12) of a release manifest (``release.yml``).

Defined once here; ``meta/release.schema.json`` is a copy for editors and CI
(regenerate it with ``scripts/gen-release-schema``; a unit test keeps the two
identical).

Two annotation keywords, ignored by every JSON Schema validator, make the
errors of module_utils/manifest.py read well:

``x-error``  the message for a failure of the subschema that carries it,
             ``{value}`` standing for the offending value;
``x-field``  the field the failure is about, appended to the reported path
             (for rules about an object, e.g. "down or irreversible").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

SCHEMA_ID = "urn:stateful-rollback:release-manifest:v1"

SAFE_TOKEN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# <registry[:port]/>path[:tag]@sha256:<64 lower-case hex>, after the
# distribution reference grammar (path components lower case).
IMAGE_BY_DIGEST = (
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?@sha256:[0-9a-f]{64}$"
)
INVARIANT_CHECKS = ["all", "unique_keys", "sequences", "foreign_keys", "row_counts"]

TOKEN_ERROR = "'{value}' is not a safe token (letters, digits and . _ + -, starting with a letter or digit, at most 63 characters)"
LABEL_ERROR = "'{value}' is not a DNS-1123 label (lower-case letters, digits and -, at most 63 characters)"
SUBDOMAIN_ERROR = "'{value}' is not a DNS-1123 name (lower-case letters, digits, - and ., at most 253 characters)"

_TRUE = {"properties": {"irreversible": {"const": True}}, "required": ["irreversible"]}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "stateful.rollback release manifest",
    "description": (
        "One file per release (release.yml): the application images pinned by digest, the ordered database "
        "migrations with their rollback scripts, feature flags, invariants and health checks. File references "
        "are relative to the manifest's directory."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "app"],
    "properties": {
        "version": {
            "description": "Release version, e.g. 2.0.0. A release is immutable once recorded.",
            "type": "string",
            "pattern": SAFE_TOKEN,
            "x-error": TOKEN_ERROR,
        },
        "app": {"$ref": "#/$defs/app"},
        "migrations": {
            "description": "Database migrations, applied in this order and rolled back in reverse order.",
            "type": "array",
            "items": {"$ref": "#/$defs/migration"},
        },
        "feature_flags": {
            "description": "Feature flags of the release: flag name to boolean, string or integer.",
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 253, "x-error": "feature flag name '{value}' must be 1 to 253 characters"},
            "additionalProperties": {
                "type": ["boolean", "string", "integer"],
                "x-error": "a feature flag value is a boolean, a string or an integer, got {value}",
            },
        },
        "invariants": {
            "description": (
                "Invariant checks for stateful.rollback.replication_parity: a check name (all, unique_keys, "
                "sequences, foreign_keys, row_counts) or a mapping passed on as it is."
            ),
            "type": "array",
            "items": {
                "anyOf": [{"type": "string", "enum": INVARIANT_CHECKS}, {"type": "object"}],
                "x-error": "an invariant is one of %s or a mapping, got {value}" % ", ".join(INVARIANT_CHECKS),
            },
        },
        "health_checks": {
            "description": "Checks that the release is healthy: an HTTP probe or an SQL query returning true.",
            "type": "array",
            "items": {"$ref": "#/$defs/health_check"},
        },
    },
    "$defs": {
        "app": {
            "description": "The Kubernetes side of the release.",
            "type": "object",
            "additionalProperties": False,
            "required": ["workloads"],
            "properties": {
                "namespace": {
                    "description": "Default namespace of the workloads and PVCs.",
                    "type": "string",
                    "maxLength": 63,
                    "pattern": DNS1123_LABEL,
                    "x-error": LABEL_ERROR,
                },
                "workloads": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/$defs/workload"},
                },
                "pvcs": {
                    "description": "PersistentVolumeClaims the release's data lives on (snapshotted before a change).",
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN, "x-error": SUBDOMAIN_ERROR},
                },
            },
        },
        "workload": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "name", "containers"],
            "properties": {
                "kind": {"type": "string", "enum": ["Deployment", "StatefulSet"]},
                "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN, "x-error": SUBDOMAIN_ERROR},
                "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL, "x-error": LABEL_ERROR},
                "containers": {
                    "description": "Container name to image, pinned by digest: <repo>[:<tag>]@sha256:<64 hex>.",
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"maxLength": 63, "pattern": DNS1123_LABEL, "x-error": "container name " + LABEL_ERROR},
                    "additionalProperties": {"$ref": "#/$defs/image"},
                },
            },
        },
        "image": {
            "type": "string",
            "pattern": IMAGE_BY_DIGEST,
            "x-error": "image",  # formatted by manifest.py (not pinned / malformed)
        },
        "script": {
            "description": "Path of an SQL file, relative to the manifest's directory.",
            "type": "string",
            "minLength": 1,
        },
        "migration": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "up"],
            "properties": {
                "id": {"type": "string", "pattern": SAFE_TOKEN, "x-error": TOKEN_ERROR},
                "up": {"$ref": "#/$defs/script"},
                "down": {"$ref": "#/$defs/script"},
                "irreversible": {"type": "boolean"},
                "reason": {"type": "string", "minLength": 1},
                "verify": {
                    "description": "SQL returning one boolean row: true when the migration is applied.",
                    "type": "string",
                    "minLength": 1,
                },
                "transactional": {
                    "description": "Run in one transaction; absent or null means detected from the SQL.",
                    "type": ["boolean", "null"],
                },
                "backfill": {"$ref": "#/$defs/backfill"},
            },
            "allOf": [
                {
                    "if": _TRUE,
                    "then": {
                        "not": {"type": "object", "required": ["down"]},
                        "x-field": "down",
                        "x-error": "a migration has either down (its rollback script) or irreversible: true, not both",
                    },
                    "else": {
                        "required": ["down"],
                        "x-field": "down",
                        "x-error": "required: the rollback script, or irreversible: true with a reason",
                    },
                },
                {
                    "if": _TRUE,
                    "then": {"required": ["reason"], "x-field": "reason", "x-error": "required when irreversible is true: say why it cannot be undone"},
                    "else": {"not": {"type": "object", "required": ["reason"]}, "x-field": "reason", "x-error": "only allowed with irreversible: true"},
                },
            ],
        },
        "backfill": {
            "description": "Data backfill run in key-ordered batches after the migration's up script.",
            "type": "object",
            "additionalProperties": False,
            "required": ["table", "key", "set"],
            "properties": {
                "table": {"type": "string", "minLength": 1, "description": "Table, possibly schema-qualified."},
                "key": {"type": "string", "minLength": 1, "description": "Column the batches are ordered and cut by."},
                "set": {"type": "string", "minLength": 1, "description": "SQL SET list, e.g. full_name = first_name || ' ' || last_name."},
                "where": {"type": "string", "minLength": 1, "description": "SQL predicate of the rows still to fill, e.g. full_name IS NULL."},
                "batch_size": {"type": "integer", "minimum": 1, "default": 5000},
                "max_rows_per_second": {"type": "number", "exclusiveMinimum": 0},
                "max_replica_lag_bytes": {"type": "integer", "minimum": 0},
            },
        },
        "health_check": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "http": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["url"],
                    "properties": {
                        "url": {
                            "type": "string", "pattern": "^(https?://[^\\s]+|/[^\\s]*)$",
                            "description": "An http:// or https:// URL, or a path (/healthz) resolved against the app's base URL given at "
                                           "deploy time (the verify role's stateful_rollback_verify_base_url).",
                            "x-error": "'{value}' is not an http:// or https:// URL, nor a path starting with /",
                        },
                        "status": {"type": "integer", "minimum": 100, "maximum": 599, "default": 200},
                        "timeout": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
                "sql": {"type": "string", "minLength": 1, "description": "SQL returning one row whose first column is true when healthy."},
            },
            "allOf": [
                {
                    "if": {"required": ["http"]},
                    "then": {"not": {"type": "object", "required": ["sql"]}, "x-field": "sql", "x-error": "a health check has either http or sql, not both"},
                    "else": {"required": ["sql"], "x-field": "http", "x-error": "required: an http probe or an sql query"},
                },
            ],
        },
    },
}
