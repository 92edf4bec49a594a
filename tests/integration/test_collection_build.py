"""Build the collection tarball and install it offline, the way a user would.

* ``ansible-galaxy collection build`` of the repository into a temp dir;
* ``ansible-galaxy collection install <tarball> -p <tmp> --offline``: Galaxy is
  not reachable, so the declared dependencies (kubernetes.core,
  community.postgresql) must already be installed somewhere ansible-galaxy
  looks. They are: the ``ansible`` PyPI package bundles both under
  site-packages/ansible_collections, and ansible-galaxy counts collections found
  on sys.path as installed ("... is already installed, skipping"). The bundled
  versions are checked separately against galaxy.yml's ranges.
* the installed MANIFEST.json declares those dependencies, and ansible-doc
  resolves every module of the repo from the installed copy.

Uses the binaries of the Python running pytest (the .venv), a scratch working
directory (so the repo's ansible.cfg is not read) and ANSIBLE_COLLECTIONS_PATH
pointing at the install location only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GALAXY = str(BIN / "ansible-galaxy")
ANSIBLE_DOC = str(BIN / "ansible-doc")

# Local state that must never end up in the artifact.
FORBIDDEN_PREFIXES = (
    ".venv/", ".collections/", ".sandbox/", ".build/", ".ci/", ".git/", ".ansible/",
    ".pytest_cache/", "tests/output/", "benchmarks/results/",
)


def _galaxy_meta() -> dict:
    return yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))


def _env(tmp: Path, collections_path: Path) -> dict:
    env = dict(os.environ)
    for var in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATHS"):
        env.pop(var, None)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build once, install once; yield paths and command outputs."""
    tmp = tmp_path_factory.mktemp("collection-build")
    install_root = tmp / "installed"
    install_root.mkdir()
    env = _env(tmp, install_root)
    meta = _galaxy_meta()

    build = _run([GALAXY, "collection", "build", str(REPO), "--output-path", str(tmp / "dist")], tmp, env)
    tarball = tmp / "dist" / f"{meta['namespace']}-{meta['name']}-{meta['version']}.tar.gz"
    assert tarball.is_file(), build.stdout

    install = _run(
        [GALAXY, "collection", "install", str(tarball), "-p", str(install_root), "--offline"], tmp, env
    )
    installed = install_root / "ansible_collections" / meta["namespace"] / meta["name"]
    assert installed.is_dir(), install.stdout
    return {
        "tmp": tmp,
        "env": env,
        "meta": meta,
        "tarball": tarball,
        "install_root": install_root,
        "installed": installed,
        "install_output": install.stdout + install.stderr,
    }


def test_tarball_has_no_local_state(built):
    with tarfile.open(built["tarball"]) as tar:
        names = tar.getnames()
    assert "MANIFEST.json" in names and "FILES.json" in names
    assert "galaxy.yml" not in names  # replaced by MANIFEST.json
    for required in ("meta/runtime.yml", "README.md", "LICENSE"):
        if (REPO / required).exists():
            assert required in names
    bad = [n for n in names if n.startswith(FORBIDDEN_PREFIXES) or "/__pycache__/" in f"/{n}/"
           or n.endswith((".pyc", ".tar.gz"))]
    assert not bad, f"local state leaked into the collection artifact: {bad[:20]}"


def test_manifest_declares_dependencies(built):
    manifest = json.loads((built["installed"] / "MANIFEST.json").read_text(encoding="utf-8"))
    info = manifest["collection_info"]
    meta = built["meta"]
    assert (info["namespace"], info["name"], info["version"]) == (meta["namespace"], meta["name"], meta["version"])
    assert info["dependencies"] == meta["dependencies"]
    assert info["dependencies"]["kubernetes.core"] == ">=5.0.0,<7.0.0"
    assert info["dependencies"]["community.postgresql"] == ">=3.4.0,<5.0.0"
    assert info["license"] == ["GPL-3.0-or-later"]


def test_offline_install_satisfied_dependencies(built):
    """Each dependency was found already installed (bundled with `ansible`), in range."""
    from ansible.galaxy.dependency_resolution.versioning import meets_requirements

    out = built["install_output"]
    listing = _run([GALAXY, "collection", "list", "--format", "json"], built["tmp"], built["env"])
    found = {}
    for collections in json.loads(listing.stdout).values():
        for fqcn, data in collections.items():
            found.setdefault(fqcn, data["version"])  # first path wins, like the loader

    for fqcn, spec in built["meta"]["dependencies"].items():
        assert any(f"'{fqcn}:" in line and "already installed" in line for line in out.splitlines()), out
        assert fqcn in found, f"{fqcn} not installed anywhere ansible-galaxy looks: {sorted(found)}"
        assert meets_requirements(found[fqcn], spec), f"{fqcn} {found[fqcn]} does not satisfy {spec}"


def test_ansible_doc_resolves_modules_from_installed_copy(built):
    fqcn_prefix = f"{built['meta']['namespace']}.{built['meta']['name']}"
    expected = sorted(
        f"{fqcn_prefix}.{p.stem}" for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__"
    )
    if not expected:
        pytest.skip("the collection has no modules yet")

    listing = _run([ANSIBLE_DOC, "-t", "module", "-l", fqcn_prefix, "--json"], built["tmp"], built["env"])
    assert sorted(json.loads(listing.stdout)) == expected

    docs = json.loads(_run([ANSIBLE_DOC, "-t", "module", "--json", *expected], built["tmp"], built["env"]).stdout)
    installed = str(built["installed"])
    for name in expected:
        doc = docs[name]["doc"]
        assert doc["filename"].startswith(installed + os.sep), doc["filename"]
        assert doc.get("short_description"), f"{name} has no short_description"
