# -*- coding: utf-8 -*-
"""Malformed release manifests refused by the release module (state=validated) and by migrate, each error naming
its field and file (issue 9, "Bad input").

tests/unit/plugins/module_utils/test_manifest.py covers the manifest library case by case; this file runs the two
modules that read manifests, with the same broken release, and checks what the operator sees: a failure (never a
traceback) naming the field path and the file. migrate is pointed at an unreachable database (127.0.0.1:1): its
failure must be the manifest's, not "unable to connect", which proves the manifest is refused before any
connection, so nothing can have changed. tests/integration/test_injection.py checks the same against a real
database for what can only be found there.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil

import pytest
import testkit

from ansible_collections.stateful.rollback.plugins.modules import migrate, release

SOURCE = os.path.join(testkit.REPO, "tests", "data", "releases", "demo-2.0.0")
NO_DB = {"login_host": "127.0.0.1", "login_port": 1, "connect_timeout": 1}
UP = "migrations/002-customer-full-name.up.sql"
DOWN = "migrations/002-customer-full-name.down.sql"


@pytest.fixture
def rel(tmp_path):
    """A copy of the valid demo release 2.0.0 in ``<tmp>/release``, to break one thing at a time."""
    target = tmp_path / "release"
    shutil.copytree(SOURCE, str(target))
    return target


def edit(rel, old, new):
    path = rel / "release.yml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def run_both(capsys, manifest):
    """{module name: result} of release state=validated and migrate state=applied on ``manifest``."""
    results = {
        "release": testkit.run_module(capsys, release, {"state": "validated", "manifest": str(manifest)}),
        "migrate": testkit.run_module(capsys, migrate, dict(NO_DB, manifest=str(manifest))),
    }
    for name, result in results.items():
        text = json.dumps(result)
        assert result.get("failed") is True, (name, result)
        assert "Traceback" not in text and "exception" not in result, (name, text[-2000:])
        assert "unable to connect" not in result["msg"], (name, "the manifest was not refused before connecting")
    return results


def errors_of(results):
    """The error lines of both modules (release: ``errors``; migrate: ``manifest_errors``), checked to agree."""
    assert results["release"]["errors"] == results["migrate"]["manifest_errors"]
    for error in results["release"]["errors"]:
        assert error in results["release"]["msg"] and error in results["migrate"]["msg"]
    assert results["migrate"]["msg"].startswith("manifest: ")
    return results["release"]["errors"]


def test_the_unbroken_release_passes_both(capsys, rel):
    """The starting point is valid: release validates it, migrate gets as far as the (unreachable) database."""
    ok = testkit.run_module(capsys, release, {"state": "validated", "manifest": str(rel / "release.yml")})
    assert ok.get("failed") is not True and ok["manifest"]["version"] == "2.0.0"
    down = testkit.run_module(capsys, migrate, dict(NO_DB, manifest=str(rel / "release.yml")))
    assert down["failed"] is True and down["msg"].startswith("unable to connect to database:")


def test_yaml_syntax_error_names_the_file_line_and_column(capsys, rel):
    edit(rel, "  pvcs: [data, worker-data]", "  pvcs: [data, worker-data\n  broken: {")
    results = run_both(capsys, rel / "release.yml")
    expected = "%s: invalid YAML at line " % (rel / "release.yml")
    assert results["release"]["msg"].startswith(expected), results["release"]["msg"]
    assert results["migrate"]["msg"].startswith("manifest: " + expected), results["migrate"]["msg"]


@pytest.mark.parametrize("sql, problem", [
    ("ALTER TABLE customers ADD COLUMN full_name text;\nALTER TABLE customers ADDD COLUMN x int;\n",
     "is not valid SQL: syntax error at line 2: syntax error at or near \"ADDD\""),
    ("UPDATE customers SET full_name = 'unterminated;\n", "is not valid SQL: syntax error at line 1: unterminated quoted string"),
    ("-- nothing to do here\n;\n", "is not valid SQL: it contains no SQL statement (only comments or semicolons)"),
])
def test_sql_syntax_error_in_a_migration_names_the_field_file_and_line(capsys, rel, sql, problem):
    """Was accepted by state=validated, and migrate created its journal before finding the error (see
    tests/integration/test_injection.py)."""
    (rel / DOWN).write_text(sql)
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert len(errors) == 1 and errors[0].startswith("migrations[0].down: '%s' %s" % (DOWN, problem)), errors


def test_missing_file_names_the_field_and_the_path_looked_for(capsys, rel):
    os.remove(str(rel / UP))
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert errors == ["migrations[0].up: '%s' does not exist (looked for %s)" % (UP, os.path.realpath(str(rel / UP)))]


def test_missing_manifest_names_the_file(capsys, rel):
    missing = rel / "nope" / "release.yml"
    results = run_both(capsys, missing)
    assert results["release"]["msg"] == "release manifest %s does not exist" % missing
    assert results["migrate"]["msg"] == "manifest: release manifest %s does not exist" % missing


def test_manifest_that_is_a_directory_is_refused(capsys, rel):
    results = run_both(capsys, rel / "migrations")
    assert results["release"]["msg"] == "release manifest %s is not a regular file" % (rel / "migrations")


@pytest.mark.parametrize("image, fragment", [
    ("registry.example/demo:2.0.0", "image 'registry.example/demo:2.0.0' is not pinned by digest"),
    ("registry.example/demo:latest", "image 'registry.example/demo:latest' is not pinned by digest"),
    ("registry.example/demo@sha256:abc", "is not a valid image reference pinned by digest"),
])
def test_image_tag_instead_of_digest_names_the_container(capsys, rel, image, fragment):
    edit(rel, "web: registry.example/demo:2.0.0@sha256:" + "2" * 64, "web: " + image)
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert len(errors) == 1 and errors[0].startswith("app.workloads[0].containers.web: ") and fragment in errors[0], errors


@pytest.mark.parametrize("reference, fragment", [
    ("../../etc/passwd", "'../../etc/passwd' resolves to "),
    ("migrations/../../outside.sql", "'migrations/../../outside.sql' resolves to"),
    ("/etc/passwd", "'/etc/passwd' is an absolute path; scripts are named relative to the manifest's directory"),
    ("~/up.sql", "'~/up.sql' is an absolute path"),
])
def test_path_traversal_in_a_file_reference_is_refused(capsys, rel, reference, fragment):
    (rel.parent / "outside.sql").write_text("DROP TABLE customers;\n")
    edit(rel, "up: " + UP, "up: " + reference)
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert len(errors) == 1 and errors[0].startswith("migrations[0].up: ") and fragment in errors[0], errors
    if "resolves to" in fragment:
        assert errors[0].endswith(", outside the manifest's directory %s" % os.path.realpath(str(rel))), errors


def test_symlinked_file_out_of_the_release_is_refused(capsys, rel):
    outside = rel.parent / "evil.sql"
    outside.write_text("DROP TABLE customers;\n")
    os.remove(str(rel / DOWN))
    os.symlink(str(outside), str(rel / DOWN))
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert errors == ["migrations[0].down: '%s' resolves to %s, outside the manifest's directory %s"
                      % (DOWN, os.path.realpath(str(outside)), os.path.realpath(str(rel)))]


def test_symlinked_directory_out_of_the_release_is_refused(capsys, rel):
    elsewhere = rel.parent / "elsewhere"
    shutil.move(str(rel / "migrations"), str(elsewhere))
    os.symlink(str(elsewhere), str(rel / "migrations"))
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert [e.split(":")[0] for e in errors] == ["migrations[0].down", "migrations[0].up", "migrations[1].up"]
    assert all("outside the manifest's directory" in e for e in errors), errors


def test_nul_byte_in_a_file_reference_is_refused(capsys, rel):
    edit(rel, "up: " + UP, 'up: "migrations/up\\0.sql"')
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert errors == ["migrations[0].up: 'migrations/up\x00.sql' holds a NUL byte"]


def test_file_that_is_not_utf8_is_refused(capsys, rel):
    (rel / UP).write_bytes(b"ALTER TABLE customers ADD COLUMN full_name text; -- \xff\n")
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert errors == ["migrations[0].up: '%s' is not UTF-8 text (byte 0xff at offset 52)" % UP]


def test_every_problem_at_once_sorted_by_field(capsys, rel):
    edit(rel, "web: registry.example/demo:2.0.0@sha256:" + "2" * 64, "web: registry.example/demo:2.0.0")
    edit(rel, "down: " + DOWN, "down: /etc/shadow")
    (rel / "migrations" / "003-drop-legacy-audit.up.sql").write_text("DROP TABLE TABLE legacy_audit;\n")
    errors = errors_of(run_both(capsys, rel / "release.yml"))
    assert [e.split(":")[0] for e in errors] == ["app.workloads[0].containers.web", "migrations[0].down", "migrations[1].up"]
    assert "'migrations/003-drop-legacy-audit.up.sql' is not valid SQL: syntax error at line 1" in errors[2]
