# -*- coding: utf-8 -*-
"""Release manifests (module_utils/manifest.py): parsing, validation messages, content addressing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.stateful.rollback.plugins.module_utils import manifest as manifest_lib
from ansible_collections.stateful.rollback.plugins.module_utils.manifest import ManifestError, load_release, parse_release
from ansible_collections.stateful.rollback.plugins.module_utils.manifest_schema import SCHEMA

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
RELEASES = os.path.join(REPO, "tests", "data", "releases")
HEX = "ab" * 32
IMAGE = "registry.example/demo@sha256:" + HEX


@pytest.fixture
def release_dir(tmp_path):
    """A copy of tests/data/releases/demo-2.0.0 that a test may edit."""
    target = tmp_path / "rel"
    shutil.copytree(os.path.join(RELEASES, "demo-2.0.0"), str(target))
    return target


def minimal(**extra):
    data = {
        "version": "1.2.3",
        "app": {"workloads": [{"kind": "Deployment", "name": "web", "containers": {"web": IMAGE}}]},
        "migrations": [{"id": "001", "up": "up.sql", "down": "down.sql"}],
    }
    data.update(extra)
    return data


@pytest.fixture
def base(tmp_path):
    (tmp_path / "up.sql").write_text("ALTER TABLE t ADD COLUMN c int;\n")
    (tmp_path / "down.sql").write_text("ALTER TABLE t DROP COLUMN c;\n")
    return tmp_path


def errors_of(data, base_dir):
    with pytest.raises(ManifestError) as info:
        parse_release(data, str(base_dir), "release.yml")
    return info.value.errors


def error_of(data, base_dir):
    errors = errors_of(data, base_dir)
    assert len(errors) == 1, errors
    return errors[0]


# --- valid manifests -------------------------------------------------------------------


def test_valid_manifest_round_trip():
    release = load_release(os.path.join(RELEASES, "demo-2.0.0", "release.yml"))
    base = os.path.realpath(os.path.join(RELEASES, "demo-2.0.0"))
    assert release.version == "2.0.0"
    assert release.path == os.path.join(RELEASES, "demo-2.0.0", "release.yml")
    assert release.base_dir == base
    assert release.digest.startswith("sha256:") and len(release.digest) == 71
    assert release.namespace == "demo" and release.pvcs == ("data", "worker-data")
    web, worker = release.workloads
    assert (web.kind, web.name, web.namespace) == ("Deployment", "web", "demo")
    assert (worker.kind, worker.name, worker.namespace) == ("StatefulSet", "worker", "demo-jobs")
    assert release.image_digests() == {
        "Deployment/web/web": "sha256:" + "2" * 64,
        "Deployment/web/sidecar": "sha256:" + "3" * 64,
        "StatefulSet/worker/worker": "sha256:" + "4" * 64,
    }
    first, second = release.migrations
    assert first.id == "002-customer-full-name" and first.irreversible is False and first.reason is None
    assert first.up.relpath == "migrations/002-customer-full-name.up.sql"
    assert first.up.path == os.path.join(base, "migrations", "002-customer-full-name.up.sql")
    assert first.up.sql == "SET lock_timeout = '2s';\nALTER TABLE customers ADD COLUMN full_name text;\n"
    assert first.down.sql.endswith("DROP COLUMN full_name;\n")
    assert first.transactional is True and "information_schema.columns" in first.verify
    assert first.backfill == manifest_lib.Backfill(
        table="public.customers", key="id", set="full_name = name", where="full_name IS NULL",
        batch_size=500, max_rows_per_second=20000.0, max_replica_lag_bytes=16777216,
    )
    assert second.down is None and second.irreversible is True and second.reason.startswith("the legacy audit table")
    assert second.transactional is None and second.backfill is None
    assert release.migration("003-drop-legacy-audit") is second
    assert set(release.checksums()) == {"002-customer-full-name/up", "002-customer-full-name/down", "003-drop-legacy-audit/up"}
    assert release.checksums()["002-customer-full-name/up"] == first.up.sha256
    assert release.feature_flags == {"new_checkout": True, "search_backend": "opensearch", "max_cart_items": 50}
    assert release.invariants == ["unique_keys", {"check": "row_counts", "tables": ["public.customers"]}]
    assert release.health_checks[0] == {"name": "web-ready", "http": {"url": "http://127.0.0.1:8080/healthz", "timeout": 5, "status": 200}}
    assert release.data["version"] == "2.0.0"
    summary = release.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["migrations"][0]["up"] == {"path": "migrations/002-customer-full-name.up.sql", "sha256": first.up.sha256}
    assert summary["migrations"][1]["down"] is None and summary["migrations"][1]["irreversible"] is True


def test_unknown_migration_id_is_named():
    release = load_release(os.path.join(RELEASES, "demo-1.0.0", "release.yml"))
    with pytest.raises(ManifestError, match="release 1.0.0 has no migration 'nope' \\(its migrations: 001-customer-nickname\\)"):
        release.migration("nope")


def test_defaults(base):
    data = minimal()
    data["migrations"][0]["backfill"] = {"table": "t", "key": "id", "set": "c = 1"}
    release = parse_release(data, str(base))
    assert release.migrations[0].backfill.batch_size == 5000
    assert release.migrations[0].backfill.max_rows_per_second is None
    assert release.feature_flags == {} and release.invariants == [] and release.health_checks == []
    assert release.workloads[0].namespace is None and release.pvcs == ()
    assert parse_release(minimal(migrations=[]), str(base)).migrations == ()


def test_digest_is_stable_and_follows_every_file(release_dir):
    path = str(release_dir / "release.yml")
    first = load_release(path).digest
    assert load_release(path).digest == first
    # The same content elsewhere hashes the same (location independent).
    moved = release_dir.parent / "moved"
    shutil.copytree(str(release_dir), str(moved))
    assert load_release(str(moved / "release.yml")).digest == first
    # Comments and formatting of the YAML do not count; its data does.
    text = (release_dir / "release.yml").read_text()
    (release_dir / "release.yml").write_text("# another comment\n" + text)
    assert load_release(path).digest == first
    (release_dir / "release.yml").write_text(text.replace("batch_size: 500", "batch_size: 501"))
    assert load_release(path).digest != first
    (release_dir / "release.yml").write_text(text)
    for name in ("002-customer-full-name.up.sql", "002-customer-full-name.down.sql", "003-drop-legacy-audit.up.sql"):
        script = release_dir / "migrations" / name
        original = script.read_bytes()
        script.write_bytes(original + b"-- edited\n")
        changed = load_release(path)
        assert changed.digest != first, name
        script.write_bytes(original)
    assert load_release(path).digest == first


def test_digest_is_the_canonical_json_with_file_hashes(base):
    data = minimal()
    release = parse_release(data, str(base))
    addressed = json.loads(json.dumps(data))
    addressed["migrations"][0]["up"] = {"path": "up.sql", "sha256": release.migrations[0].up.sha256}
    addressed["migrations"][0]["down"] = {"path": "down.sql", "sha256": release.migrations[0].down.sha256}
    import hashlib

    canonical = json.dumps(addressed, sort_keys=True, separators=(",", ":"))
    assert release.digest == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert release.migrations[0].up.sha256 == hashlib.sha256((base / "up.sql").read_bytes()).hexdigest()


# --- errors: each names its field path ---------------------------------------------------


def test_image_without_digest_is_refused(base):
    data = minimal()
    data["app"]["workloads"][0]["containers"]["web"] = "demo:2.0"
    assert error_of(data, base) == (
        "app.workloads[0].containers.web: image 'demo:2.0' is not pinned by digest (expected <repo>[:<tag>]@sha256:<64 hex>)"
    )


@pytest.mark.parametrize("image", ["demo@sha256:abc", "demo@sha256:" + "AB" * 32, "Demo@sha256:" + HEX, "demo@sha512:" + HEX])
def test_malformed_digest_is_refused(base, image):
    data = minimal()
    data["app"]["workloads"][0]["containers"]["web"] = image
    assert error_of(data, base).startswith("app.workloads[0].containers.web: image '")


@pytest.mark.parametrize("image", [
    "demo@sha256:" + HEX,
    "demo:2.0.0@sha256:" + HEX,
    "registry.example:5000/team/demo:v2@sha256:" + HEX,
    "ghcr.io/org/demo-app_x@sha256:" + HEX,
])
def test_pinned_images_are_accepted(base, image):
    data = minimal()
    data["app"]["workloads"][0]["containers"]["web"] = image
    assert parse_release(data, str(base)).image_digests() == {"Deployment/web/web": "sha256:" + HEX}


def test_unknown_fields_are_named(base):
    data = minimal(extra=1)
    data["app"]["workloads"][0]["replicas"] = 3
    data["migrations"][0]["backfill"] = {"table": "t", "key": "id", "set": "c = 1", "batch": 10}
    errors = errors_of(data, base)
    assert errors == [
        "app.workloads[0].replicas: unknown field (allowed: containers, kind, name, namespace)",
        "extra: unknown field (allowed: app, feature_flags, health_checks, invariants, migrations, version)",
        "migrations[0].backfill.batch: unknown field (allowed: batch_size, key, max_replica_lag_bytes, max_rows_per_second, set, table, where)",
    ]


def test_missing_required_fields(base):
    assert errors_of({"migrations": []}, base) == ["app: required field is missing", "version: required field is missing"]
    data = minimal()
    del data["migrations"][0]["up"]
    assert error_of(data, base) == "migrations[0].up: required field is missing"


@pytest.mark.parametrize("relpath, fragment", [
    ("/etc/passwd", "migrations[0].up: '/etc/passwd' is an absolute path; scripts are named relative to the manifest's directory"),
    ("../../etc/passwd", "migrations[0].up: '../../etc/passwd' resolves to "),
    ("sub/../../up.sql", "migrations[0].up: 'sub/../../up.sql' resolves to "),
    ("missing.sql", "migrations[0].up: 'missing.sql' does not exist (looked for "),
    ("adir", "migrations[0].up: 'adir' is not a regular file"),
    ("latin1.sql", "migrations[0].up: 'latin1.sql' is not UTF-8 text (byte 0xe9 at offset 11)"),
    ("empty.sql", "migrations[0].up: 'empty.sql' is empty"),
    ("escape.sql", "migrations[0].up: 'escape.sql' resolves to /etc/hostname, outside the manifest's directory"),
    ("inside.sql", None),
])
def test_bad_paths_are_refused(base, relpath, fragment):
    (base / "adir").mkdir()
    (base / "latin1.sql").write_bytes(b"SELECT 'caf\xe9';\n")
    (base / "empty.sql").write_text("  \n")
    os.symlink("/etc/hostname", str(base / "escape.sql"))
    os.symlink("up.sql", str(base / "inside.sql"))  # a symlink that stays inside is fine
    data = minimal()
    data["migrations"][0]["up"] = relpath
    if fragment is None:
        assert parse_release(data, str(base)).migrations[0].up.path == str((base / "up.sql").resolve())
        return
    message = error_of(data, base)
    assert message.startswith(fragment), message
    if "resolves to" in fragment:
        assert "outside the manifest's directory %s" % os.path.realpath(str(base)) in message


def test_symlinked_directory_escaping_is_refused(base, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "x.sql").write_text("SELECT 1;\n")
    os.symlink(str(outside), str(base / "linked"))
    data = minimal()
    data["migrations"][0]["down"] = "linked/x.sql"
    assert error_of(data, base).startswith("migrations[0].down: 'linked/x.sql' resolves to %s" % (outside / "x.sql"))


def test_too_large_file_is_refused(base, monkeypatch):
    monkeypatch.setattr(manifest_lib, "MAX_FILE_BYTES", 10)
    (base / "big.sql").write_text("SELECT 1; -- longer than ten bytes\n")
    data = minimal()
    data["migrations"][0]["up"] = "big.sql"
    assert errors_of(data, base) == [
        "migrations[0].down: 'down.sql' is 29 bytes, over the limit of 10 bytes",
        "migrations[0].up: 'big.sql' is 35 bytes, over the limit of 10 bytes",
    ]
    monkeypatch.undo()
    assert manifest_lib.MAX_FILE_BYTES == 10 * 1024 * 1024 and manifest_lib._limit() == "10485760 bytes (10 MiB)"


def test_down_and_irreversible(base):
    both = minimal()
    both["migrations"][0].update(irreversible=True, reason="drops data")
    assert error_of(both, base) == "migrations[0].down: a migration has either down (its rollback script) or irreversible: true, not both"
    neither = minimal()
    del neither["migrations"][0]["down"]
    assert error_of(neither, base) == "migrations[0].down: required: the rollback script, or irreversible: true with a reason"
    no_reason = minimal()
    del no_reason["migrations"][0]["down"]
    no_reason["migrations"][0]["irreversible"] = True
    assert error_of(no_reason, base) == "migrations[0].reason: required when irreversible is true: say why it cannot be undone"
    stray_reason = minimal()
    stray_reason["migrations"][0]["reason"] = "because"
    assert error_of(stray_reason, base) == "migrations[0].reason: only allowed with irreversible: true"
    ok = minimal()
    del ok["migrations"][0]["down"]
    ok["migrations"][0].update(irreversible=True, reason="drops data")
    assert parse_release(ok, str(base)).migrations[0].irreversible is True


def test_duplicate_ids_and_workloads(base):
    data = minimal()
    data["migrations"].append({"id": "001", "up": "up.sql", "down": "down.sql"})
    data["app"]["workloads"].append({"kind": "Deployment", "name": "web", "namespace": "other", "containers": {"web": IMAGE}})
    assert errors_of(data, base) == [
        "app.workloads[1].name: duplicate workload Deployment/web (also app.workloads[0])",
        "migrations[1].id: duplicate migration id '001' (also migrations[0].id)",
    ]


@pytest.mark.parametrize("version, fragment", [
    ("2.0.0 beta", "version: '2.0.0 beta' is not a safe token"),
    ("../2", "version: '../2' is not a safe token"),
    ("", "version: '' is not a safe token"),
    ("v" * 64, "is not a safe token"),
    (2.0, "version: expected a string, got a number (2.0); quote it"),
])
def test_bad_version(base, version, fragment):
    assert fragment in error_of(minimal(version=version), base)


@pytest.mark.parametrize("batch_size, message", [
    (0, "migrations[0].backfill.batch_size: must be at least 1, got 0"),
    (-5, "migrations[0].backfill.batch_size: must be at least 1, got -5"),
    ("100", "migrations[0].backfill.batch_size: expected an integer, got a string ('100')"),
    (1.5, "migrations[0].backfill.batch_size: expected an integer, got a number (1.5)"),
    (True, "migrations[0].backfill.batch_size: expected an integer, got a boolean (true)"),
])
def test_bad_batch_size(base, batch_size, message):
    data = minimal()
    data["migrations"][0]["backfill"] = {"table": "t", "key": "id", "set": "c = 1", "batch_size": batch_size}
    assert error_of(data, base) == message


def test_other_field_errors_name_their_paths(base):
    data = minimal(feature_flags={"a": 1.5}, invariants=["bogus"], health_checks=[{"name": "h", "http": {"url": "ftp://x"}, "sql": "SELECT true"}])
    data["app"]["workloads"][0]["kind"] = "Job"
    data["app"]["namespace"] = "Demo"
    data["migrations"][0]["id"] = "has space"
    data["migrations"][0]["backfill"] = {"table": "t", "key": "id", "set": "c = 1", "max_rows_per_second": 0, "max_replica_lag_bytes": -1}
    assert errors_of(data, base) == [
        "app.namespace: 'Demo' is not a DNS-1123 label (lower-case letters, digits and -, at most 63 characters)",
        "app.workloads[0].kind: must be one of Deployment, StatefulSet, got 'Job'",
        "feature_flags.a: expected a boolean or a string or an integer, got a number (1.5)",
        "health_checks[0].http.url: 'ftp://x' is not an http:// or https:// URL, nor a path starting with /",
        "health_checks[0].sql: a health check has either http or sql, not both",
        "invariants[0]: an invariant is one of all, unique_keys, sequences, foreign_keys, row_counts or a mapping, got bogus",
        "migrations[0].backfill.max_replica_lag_bytes: must be at least 0, got -1",
        "migrations[0].backfill.max_rows_per_second: must be greater than 0, got 0",
        "migrations[0].id: 'has space' is not a safe token (letters, digits and . _ + -, starting with a letter or digit, at most 63 characters)",
    ]


def test_wrong_shapes_give_one_error_each(base):
    data = minimal(migrations=[None, "x.sql"], health_checks=[None], feature_flags=[])
    data["app"]["workloads"][0]["containers"]["web"] = None
    assert errors_of(data, base) == [
        "app.workloads[0].containers.web: expected a string, got null",
        "feature_flags: expected a mapping, got a list ([])",
        "health_checks[0]: expected a mapping, got null",
        "migrations[0]: expected a mapping, got null",
        "migrations[1]: expected a mapping, got a string ('x.sql')",
    ]
    assert errors_of({"version": "1", "app": []}, base) == ["app: expected a mapping, got a list ([])"]


def test_every_error_is_reported_sorted_by_path(base):
    data = minimal(version=1, zzz=True)
    data["migrations"] = [{"id": str(i), "up": "missing%d.sql" % i, "down": "down.sql"} for i in range(12)]
    errors = errors_of(data, base)
    assert errors[0].startswith("migrations[0].up:") and errors[11].startswith("migrations[11].up:")  # numeric order
    assert errors[12:] == [
        "version: expected a string, got a number (1); quote it",
        "zzz: unknown field (allowed: app, feature_flags, health_checks, invariants, migrations, version)",
    ]
    with pytest.raises(ManifestError) as info:
        parse_release(data, str(base), "release.yml")
    assert str(info.value).startswith("release.yml is not a valid release manifest (14 errors): migrations[0].up: ")


# --- YAML level ------------------------------------------------------------------------


def write(tmp_path, text):
    path = tmp_path / "release.yml"
    path.write_text(text)
    return str(path)


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = write(tmp_path, "version: '1'\napp:\n  workloads: []\nversion: '2'\n")
    with pytest.raises(ManifestError, match=r"release.yml: invalid YAML at line 4, column 1: duplicate key 'version' \(first at line 1\)"):
        load_release(path)


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, "version: '1'\napp:\n  workloads: [\n    {kind: x\n")
    with pytest.raises(ManifestError, match=r"release.yml: invalid YAML at line 5, column 1: "):
        load_release(path)


def test_boolean_keys_are_refused(tmp_path):
    path = write(tmp_path, "version: '1'\nfeature_flags:\n  on: true\n")
    with pytest.raises(ManifestError, match=r"line 3, column 3: mapping key true is not a string \(quote it"):
        load_release(path)


@pytest.mark.parametrize("text, message", [
    ("- 1\n- 2\n", "the top level must be a mapping (version, app, migrations, ...), got a list"),
    ("just text\n", "the top level must be a mapping (version, app, migrations, ...), got a string"),
    ("", "is empty: a release manifest is a mapping with at least version and app"),
    ("# only a comment\n", "is empty: a release manifest is a mapping with at least version and app"),
])
def test_non_mapping_top_level(tmp_path, text, message):
    with pytest.raises(ManifestError) as info:
        load_release(write(tmp_path, text))
    assert message in str(info.value) and info.value.errors == []


def test_manifest_file_problems(tmp_path):
    with pytest.raises(ManifestError, match="release manifest .*/nope.yml does not exist"):
        load_release(str(tmp_path / "nope.yml"))
    with pytest.raises(ManifestError, match="is not a regular file"):
        load_release(str(tmp_path))
    (tmp_path / "bin.yml").write_bytes(b"version: '\xff'\n")
    with pytest.raises(ManifestError, match=r"is not UTF-8 text \(byte 0xff at offset 10\)"):
        load_release(str(tmp_path / "bin.yml"))


def test_relative_manifest_path_resolves_against_cwd(release_dir, monkeypatch):
    monkeypatch.chdir(str(release_dir))
    release = load_release("release.yml")
    assert release.path == str(release_dir / "release.yml") and release.base_dir == os.path.realpath(str(release_dir))


def test_missing_jsonschema_is_reported(base, monkeypatch):
    monkeypatch.setattr(manifest_lib, "HAS_JSONSCHEMA", False)
    with pytest.raises(ManifestError, match="missing jsonschema library"):
        parse_release(minimal(), str(base))


# --- the published schema ---------------------------------------------------------------


def test_published_schema_equals_the_embedded_one():
    with open(os.path.join(REPO, "meta", "release.schema.json")) as handle:
        published = handle.read()
    assert published == json.dumps(SCHEMA, indent=2, sort_keys=True) + "\n", "run scripts/gen-release-schema"
    proc = subprocess.run([os.path.join(REPO, "scripts", "gen-release-schema"), "--check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_schema_is_valid_draft_2020_12_and_accepts_the_test_releases():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for name in ("demo-1.0.0", "demo-2.0.0"):
        with open(os.path.join(RELEASES, name, "release.yml")) as handle:
            assert list(validator.iter_errors(yaml.safe_load(handle))) == []
