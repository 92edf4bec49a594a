# -*- coding: utf-8 -*-
"""Every module of the collection fuzzed per option with Hypothesis (issue 9, "Bad input").

Each example runs one module's ``main()`` for real (AnsibleModule, argument spec, validation, module_utils)
with one option set to a hostile value: a wrong type, empty, huge, unicode with NUL bytes, negative, NaN or
infinite, a list or a dict where a scalar belongs. Connection targets are unreachable (PostgreSQL on
127.0.0.1:1, the Kubernetes API on http://127.0.0.1:1) so nothing real can be touched.

The property, for every module and option:

* the module answers as a module does (fail_json or exit_json: one JSON document on stdout), never with an
  uncaught exception, a Python traceback or an ``exception`` key;
* a failure names the offending option (or one of its aliases), unless the value was accepted and the run
  failed later for the reason it fails without the fuzzed option (the unreachable database or API);
* a failed audit_log append leaves no audit file behind.

The regressions found by this fuzzing are pinned as explicit cases at the end.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import tempfile

import pytest
import testkit
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ansible_collections.stateful.rollback.plugins.modules import (
    audit_log,
    migrate,
    pvc_snapshot,
    pvc_snapshot_info,
    release,
    release_lock,
    replication_parity,
    schema_compat_check,
)

RELEASE_DIR = os.path.join(testkit.REPO, "tests", "data", "releases", "demo-2.0.0")
# Nothing listens on port 1 of the loopback: a module that got that far fails with "unable to connect".
NO_DB = {"login_host": "127.0.0.1", "login_port": 1, "connect_timeout": 1}
NO_API = {"host": "http://127.0.0.1:1", "api_key": "fuzz-token"}
PG_DOWN = r"unable to connect to database"
API_DOWN = r"Kubernetes API client|Could not create API client|Max retries exceeded|Connection refused"

MODULES = {
    # name: (module, base arguments (a run that succeeds or fails only for the unreachable target), downstream failure)
    "audit_log": (audit_log, {"store": "file", "path": "audit.jsonl", "stage": "fuzz"}, PG_DOWN),
    "migrate": (migrate, dict(NO_DB, manifest="{release}"), PG_DOWN),
    "pvc_snapshot": (pvc_snapshot, dict(NO_API, namespace="fuzz", pvcs=["data"], name_prefix="fuzz-"), API_DOWN),
    "pvc_snapshot_info": (pvc_snapshot_info, dict(NO_API, namespace="fuzz"), API_DOWN),
    "release": (release, dict(NO_DB, state="validated", manifest="{release}"), PG_DOWN),
    "release_lock": (release_lock, dict(NO_API, namespace="fuzz", holder="fuzz-run", keep_alive=False), API_DOWN),
    "replication_parity": (replication_parity, dict(NO_DB), PG_DOWN),
    "schema_compat_check": (schema_compat_check, dict(NO_DB, mode="static", migration_sql="ALTER TABLE t ADD COLUMN c int;"),
                            PG_DOWN),
}
# Options with suboptions are fuzzed one suboption at a time too: (option, entry the suboption goes into).
SUBOPTION_ENTRIES = {
    "replicas": [{"name": "standby", "login_host": "127.0.0.1", "login_port": 1}],
    "workload": {"kind": "StatefulSet", "name": "db"},
}
# Libpq keys that could point a fuzzed connect_params at a real server.
TARGET_KEYS = {"host", "hostaddr", "port", "service", "servicefile", "passfile", "dbname", "sslmode"}

HUGE = "x" * 100000
BAD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "a\x00b", HUGE, "\u00e9\u0000\U0001F600" * 30, "-1", "0", "1e999", "nan", "inf",
                     "users; DROP TABLE x", '"', "'", "../../etc/passwd", "/", "A" * 254, "a" * 64]),
    st.lists(st.one_of(st.text(max_size=10), st.integers(), st.none(), st.floats()), max_size=4),
    st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=3),
)


def _port_like(value):
    """Whether ``value`` could be read as a real TCP port (the fuzz must never reach a server)."""
    try:
        port = int(float(value)) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except (ValueError, OverflowError):
        return False
    return port is not None and 2 <= port <= 65535


def _options(name):
    """(path, names that count as naming it, no_log) for every option and suboption of module ``name``."""
    spec = MODULES[name][0].argument_spec()
    out = []
    for option, entry in sorted(spec.items()):
        names = [option] + list(entry.get("aliases") or [])
        out.append(((option,), names, bool(entry.get("no_log"))))
        if option in SUBOPTION_ENTRIES and entry.get("options"):
            for sub, subentry in sorted(entry["options"].items()):
                subnames = [option] + [sub] + list(subentry.get("aliases") or [])
                out.append(((option, sub), subnames, bool(subentry.get("no_log"))))
    return out


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No kubeconfig or K8S_AUTH_* of the machine, a HOME without ~/.kube: only the options given count."""
    for key in list(os.environ):
        if key.startswith("K8S_AUTH_") or key in ("KUBECONFIG", "PGHOST", "PGPORT", "PGSERVICE", "PGSERVICEFILE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    release_copy = tmp_path / "release"
    shutil.copytree(RELEASE_DIR, str(release_copy))
    return str(release_copy / "release.yml")


def _base(name, manifest):
    return {k: (v.format(release=manifest) if isinstance(v, str) else v) for k, v in MODULES[name][1].items()}


def _args_with(name, manifest, path, value):
    args = _base(name, manifest)
    if len(path) == 1:
        args[path[0]] = value
    else:
        option, sub = path
        entry = json.loads(json.dumps(SUBOPTION_ENTRIES[option]))
        (entry[0] if isinstance(entry, list) else entry)[sub] = value
        args[option] = entry
    return args


def check_result(name, path, names, no_log, value, result, out, workdir):
    """The fuzz property (see the module docstring); returns the result for more checks."""
    assert "Traceback" not in out, out[-3000:]
    assert "exception" not in result, result.get("exception", "")[-3000:]
    if not result.get("failed"):
        return result
    msg = result.get("msg")
    assert isinstance(msg, str) and msg.strip(), result
    if not no_log:
        shown = [n for n in names if n in msg]
        # A path option's error may name the file (the value) instead: that names the input as precisely.
        shown += [value] if isinstance(value, str) and value.strip() and value in msg else []
        downstream = re.search(MODULES[name][2], msg)
        assert shown or downstream, "%s=%r: %s" % (".".join(path), value, msg[:2000])
    if name == "audit_log":
        assert not os.path.exists(os.path.join(workdir, "audit.jsonl")), "a failed append wrote the audit file"
    return result


def _run_example(capsys, monkeypatch, tmp_path, manifest, name, path, names, no_log, value):
    workdir = tempfile.mkdtemp(dir=str(tmp_path))
    monkeypatch.chdir(workdir)
    args = _args_with(name, manifest, path, value)
    result, out = testkit.run_module(capsys, MODULES[name][0], args, raw=True)
    return check_result(name, path, names, no_log, value, result, out, workdir)


def _drawn(data, name):
    path, names, no_log = data.draw(st.sampled_from(_options(name)), label="option")
    if path[-1] == "connect_params":
        value = data.draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k.strip().lower() not in TARGET_KEYS),
                                          st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=3), label="value")
    else:
        value = data.draw(BAD_VALUES, label="value")
    if path[-1] in ("login_port", "port"):
        assume(not _port_like(value))
    if path[-1] in ("login_host", "host") and isinstance(value, str):
        # 127.0.0.1:1 stays the target: a fuzzed host never names a listening server.
        assume(not re.search(r"[:@/=]|localhost|^\s*$", value))
    return path, names, no_log, value


# STATEFUL_ROLLBACK_FUZZ_EXAMPLES=2000 for a deeper search; the default keeps the file under half a minute.
FUZZ = settings(max_examples=int(os.environ.get("STATEFUL_ROLLBACK_FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(MODULES))
@FUZZ
@given(data=st.data())
def test_fuzzed_option_fails_cleanly_naming_it(capsys, monkeypatch, tmp_path, isolated, name, data):
    path, names, no_log, value = _drawn(data, name)
    _run_example(capsys, monkeypatch, tmp_path, isolated, name, path, names, no_log, value)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_base_arguments_reach_only_the_unreachable_target(capsys, monkeypatch, tmp_path, isolated, name):
    """The fuzz's starting point: valid arguments succeed or fail for the unreachable target, not for a bad option."""
    monkeypatch.chdir(str(tmp_path))
    result = testkit.run_module(capsys, MODULES[name][0], _base(name, isolated))
    if result.get("failed"):
        assert re.search(MODULES[name][2], result["msg"]), result["msg"]
    else:
        assert name in ("audit_log", "release", "schema_compat_check"), result


# -- regressions the fuzzing found (each failed before its fix) ------------------------------------------------------

REGRESSIONS = [
    # ansible-core raises OverflowError / ValueError converting a non-finite float to int: was
    # "invalid module arguments: OverflowError".
    ("replication_parity", ("chunk_size",), float("inf"), "chunk_size must be an int, got inf"),
    ("pvc_snapshot", ("keep",), float("nan"), "keep must be an int, got nan"),
    ("release", ("history_limit",), float("-inf"), "history_limit must be an int, got -inf"),
    ("migrate", ("connect_timeout",), float("inf"), "connect_timeout must be an int, got inf"),
    ("audit_log", ("login_port",), "INF", "login_port must be an int, got 'INF'"),
    ("schema_compat_check", ("server_version",), "1e999", "server_version must be an int, got '1e999'"),
    # A float option accepted NaN / infinity and carried it into lock and lag arithmetic.
    ("migrate", ("lock_timeout",), float("nan"), "lock_timeout must be a finite number, got nan"),
    ("migrate", ("lag_wait_timeout",), "inf", "lag_wait_timeout must be a finite number, got inf"),
    ("audit_log", ("seconds",), float("nan"), "seconds must be a finite number, got nan"),
    # Options with suboptions given a non-dict: core said "dictionary requested, could not parse JSON or key=value"
    # without the option's name, or raised TypeError ("invalid module arguments: TypeError").
    ("pvc_snapshot", ("workload",), "db", "workload must be a dictionary, got a str"),
    ("pvc_snapshot", ("workload",), 3, "workload must be a dictionary, got a int"),
    ("pvc_snapshot", ("proxy_headers",), [1], "proxy_headers must be a dictionary, got a list"),
    ("replication_parity", ("replicas",), "standby", "replicas[0] must be a dictionary, got a str"),
    ("replication_parity", ("replicas",), [{"name": "s", "login_host": "127.0.0.1", "login_port": 1}, 5],
     "replicas[1] must be a dictionary, got a int"),
    ("replication_parity", ("replicas", "connect_timeout"), float("inf"), "replicas[0].connect_timeout must be an int, got inf"),
    # A NUL byte in the manifest path: ValueError from os.stat, an uncaught traceback in migrate and release.
    ("migrate", ("manifest",), "rel\x00ease.yml", "release manifest path 'rel\\x00ease.yml' holds a NUL byte"),
    ("release", ("manifest",), "rel\x00ease.yml", "release manifest path 'rel\\x00ease.yml' holds a NUL byte"),
    # audit_log: path given as null passed required_if and died in FileStore (TypeError, with a traceback); a NUL
    # byte died in open() (ValueError, with a traceback).
    ("audit_log", ("path",), None, "path is required with store=file"),
    ("audit_log", ("path",), "a\x00b", "path must not contain a NUL byte"),
    # pvc_snapshot: names the API server refuses went to the API (see tests/unit/test_bad_input_k8s_names.py).
    ("pvc_snapshot", ("namespace",), "Fuzz", "namespace 'Fuzz' is not a valid Kubernetes namespace"),
    ("pvc_snapshot", ("pvcs",), ["data", "x" * 254], "pvcs[1] is 254 characters long, over the limit of 253"),
    ("pvc_snapshot", ("size",), ".", "size '.' is not a Kubernetes quantity"),
    ("pvc_snapshot_info", ("snapshot_selector",), "app=(x", "snapshot_selector 'app=(x' is not a valid label selector"),
]


@pytest.mark.parametrize("name, path, value, fragment", REGRESSIONS,
                         ids=["%s-%s-%d" % (r[0], ".".join(r[1]), i) for i, r in enumerate(REGRESSIONS)])
def test_regression_found_by_fuzzing(capsys, monkeypatch, tmp_path, isolated, name, path, value, fragment):
    names = [path[-1]]
    result = _run_example(capsys, monkeypatch, tmp_path, isolated, name, path, names, False, value)
    assert result["failed"] is True
    assert fragment in result["msg"], result["msg"]
