# -*- coding: utf-8 -*-
"""The execution environment definition (execution-environment.yml) builds a valid context.

``ansible-builder create`` writes the build context (Containerfile and the
files it copies) without a container engine, which is all this machine can
do; the image build itself (``ansible-builder build``) needs podman or docker.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def requirement_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


def test_ee_python_requirements_match_the_runtime_requirements():
    runtime = {re.split(r"[<>=!~ ]", line, 1)[0].lower(): line for line in requirement_lines(os.path.join(REPO, "requirements.txt"))}
    ee = requirement_lines(os.path.join(REPO, "meta", "ee-requirements.txt"))
    assert ee, "meta/ee-requirements.txt is empty"
    for line in ee:
        name = re.split(r"[<>=!~ ]", line, 1)[0].lower()
        assert runtime.get(name) == line, f"{line!r} differs from requirements.txt ({runtime.get(name)!r})"
    # Every module-side library of requirements.txt is in the EE (ansible itself and terminal helpers are not).
    needed = set(runtime) - {"ansible", "ansible-core", "rich"}
    assert needed <= {re.split(r"[<>=!~ ]", line, 1)[0].lower() for line in ee}


def test_ee_collections_match_galaxy_yml():
    with open(os.path.join(REPO, "galaxy.yml"), encoding="utf-8") as handle:
        galaxy = yaml.safe_load(handle)
    with open(os.path.join(REPO, "meta", "ee-requirements.yml"), encoding="utf-8") as handle:
        ee = {c["name"]: c["version"] for c in yaml.safe_load(handle)["collections"]}
    for name, version in galaxy["dependencies"].items():
        assert ee.get(name) == version, f"{name}: galaxy.yml says {version!r}, meta/ee-requirements.yml {ee.get(name)!r}"


def test_ansible_builder_create_writes_the_context(tmp_path):
    work = tmp_path / "src"
    (work / "meta").mkdir(parents=True)
    for name in ("execution-environment.yml", "bindep.txt", "meta/ee-requirements.yml", "meta/ee-requirements.txt"):
        shutil.copy(os.path.join(REPO, name), work / name)
    # The collection tarball, as `make build` writes it.
    build = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path",
                            str(work / ".build"), REPO], capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = glob.glob(str(work / ".build" / "stateful-rollback-*.tar.gz"))
    assert len(tarball) == 1
    context = tmp_path / "context"
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", str(work / "execution-environment.yml"),
                           "-c", str(context), "--output-filename", "Containerfile", "-v", "2"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/ansible/awx-ee:24.6.1"' in containerfile
    assert "ansible-galaxy collection install --no-deps -p /usr/share/ansible/collections /build/collection/" in containerfile
    assert os.path.basename(tarball[0]) in os.listdir(context / "_build" / "collection")
    python = (context / "_build" / "requirements.txt").read_text()
    for line in requirement_lines(os.path.join(REPO, "meta", "ee-requirements.txt")):
        assert line in python
    assert "postgresql-client [platform:dpkg]" in (context / "_build" / "bindep.txt").read_text()
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert {c["name"] for c in galaxy["collections"]} == {"kubernetes.core", "community.postgresql", "awx.awx"}
