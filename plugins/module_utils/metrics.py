# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key figures of a stage and the Prometheus textfile-collector file of the runs.

``stage_figures(stage, details)`` reads the key figures of a stage from the details the roles record
(``stateful_rollback_run.stages[].details``): replica lag in bytes, parity differences per replica, rows
compared, rows backfilled, snapshot size, and the RTO of a rollback or a drill. They go into the audit
record as ``figures``::

    {"replica_lag_bytes": {"standby": 0, "subscriber": 120}, "parity_differences": {"all": 0},
     "rows_compared": 6000, "rows_backfilled": 1000, "snapshot_bytes": 2147483648, "rto_seconds": 17.9}

``series(...)`` turns a stage's record into gauge samples; ``merge_textfile(path, samples)`` merges them into
the ``.prom`` file that node_exporter's textfile collector reads: series already in the file (earlier stages of
the run, other runs, other tools' families) are kept, a series with the same name and labels is replaced, and the
file is replaced atomically (a temporary file in the same directory, fsync, rename), so the collector never
reads half a file. Writers of one file take turns through an exclusive ``flock`` on a hidden sibling lock file.

Rendering and parsing use prometheus_client (``generate_latest``, ``text_string_to_metric_families``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import math
import os
import re
import tempfile
import traceback

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    HAS_PROMETHEUS_CLIENT = True
    PROMETHEUS_CLIENT_IMP_ERR = None
except ImportError:  # pragma: no cover - the module reports it with missing_required_lib
    HAS_PROMETHEUS_CLIENT = False
    PROMETHEUS_CLIENT_IMP_ERR = traceback.format_exc()

# name: (help, label names). All gauges: each run sets them, none counts up.
METRICS = {
    "stateful_rollback_stage_duration_seconds": (
        "Seconds the last run of a stage took (stateful.rollback audit record seconds).", ("stage", "release", "outcome")),
    "stateful_rollback_rto_seconds": (
        "Recovery time in seconds: a rollback from its start to its verification (kind=rollback), a drill from the "
        "detected fault to the verified rollback (kind=drill).", ("kind", "release")),
    "stateful_rollback_replica_lag_bytes": (
        "Replication lag of a replica in bytes, as the last stage that measured it saw it.", ("replica",)),
    "stateful_rollback_parity_differences": (
        "Rows that differ between the primary and a replica (replica=all: over every replica) in the last parity check "
        "of a stage.", ("stage", "release", "replica")),
}
# Figures that are numbers, and those that are per replica ({name: number}).
SCALAR_FIGURES = ("rows_compared", "rows_backfilled", "snapshot_bytes", "rto_seconds")
PER_REPLICA_FIGURES = ("replica_lag_bytes", "parity_differences")
TEXTFILE_SUFFIX = ".prom"

_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTPE]i?|[kmu]|)\s*$")
_FACTORS = {"": 1, "k": 10 ** 3, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18,
            "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60, "m": 10 ** -3,
            "u": 10 ** -6}


class MetricsError(Exception):
    """A refusal or failure whose message is meant for the operator as it is."""


# --- figures --------------------------------------------------------------------------------------


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_quantity(value):
    """Bytes of a Kubernetes quantity (``2Gi``, ``500M``, ``1073741824``) or a number; None when it is neither."""
    if is_number(value):
        return value
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value)
    if not match:
        return None
    number = float(match.group(1)) * _FACTORS[match.group(2)]
    return int(number) if number == int(number) else number


def _walk(value):
    """(key, value) of every entry of nested dicts and lists, depth first."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield key, sub
            yield from _walk(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _walk(sub)


def _per_replica(details, figure):
    """{replica name: number} from the dicts under any ``replicas`` list that carry ``name`` and ``figure``."""
    out = {}
    for key, value in _walk(details):
        if key == "replicas" and isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and isinstance(item.get("name"), str) and is_number(item.get(figure)):
                    out[item["name"]] = item[figure]
    return out


def _summed(details, keys, convert=None):
    total, found = 0, False
    for key, value in _walk(details):
        if key in keys:
            value = convert(value) if convert else value
            if is_number(value):
                total += value
                found = True
    return total if found else None


def stage_figures(stage, details):
    """The key figures of a stage from its details (see the module docstring); keys only for figures found.

    ``run`` (the final record of a run, a summary of the others) has none: its details repeat the stages'.
    """
    figures = {}
    if stage == "run" or not isinstance(details, dict):
        return figures
    lag = _per_replica(details, "lag_bytes")
    if lag:
        figures["replica_lag_bytes"] = lag
    parity = details.get("parity") if isinstance(details.get("parity"), dict) else None
    differences = _per_replica(parity, "difference_count") if parity else {}
    if not differences and parity and is_number(parity.get("difference_count")):
        differences = {"all": parity["difference_count"]}
    if differences:
        figures["parity_differences"] = differences
    compared = _summed(details, ("rows_compared",))
    if compared is not None:
        figures["rows_compared"] = compared
    backfilled = _summed(details, ("rows_backfilled", "rows_processed"))
    if backfilled is not None:
        figures["rows_backfilled"] = backfilled
    if stage.startswith("snapshot"):
        size = _summed(details, ("snapshot_bytes", "restore_size_bytes", "restore_size", "size_bytes"), parse_quantity)
        if size is not None:
            figures["snapshot_bytes"] = size
    if is_number(details.get("rto_seconds")):
        figures["rto_seconds"] = details["rto_seconds"]
    elif stage == "rollback" and is_number(details.get("seconds")):
        figures["rto_seconds"] = details["seconds"]
    return figures


def check_figures(figures, name="figures"):
    """``figures`` as given (a dict) or MetricsError naming the first value that is not a figure."""
    if not isinstance(figures, dict):
        raise MetricsError("%s must be a dict of figures, got %s" % (name, type(figures).__name__))
    for key, value in figures.items():
        if key in PER_REPLICA_FIGURES:
            if not isinstance(value, dict) or not all(is_number(v) for v in value.values()):
                raise MetricsError("%s.%s must be a dict of replica name to number, got %r" % (name, key, value))
        elif not is_number(value):
            raise MetricsError("%s.%s must be a finite number, got %r" % (name, key, value))
    return figures


# --- samples --------------------------------------------------------------------------------------


def series(stage, release, outcome, seconds, figures):
    """[(metric, labels, value)] of one stage: its duration and the figures that have a metric."""
    release = release or ""
    out = []
    if is_number(seconds):
        labels = {"stage": stage, "release": release, "outcome": outcome or "ok"}
        out.append(("stateful_rollback_stage_duration_seconds", labels, seconds))
    figures = figures or {}
    if is_number(figures.get("rto_seconds")):
        kind = "rollback" if stage.startswith("rollback") else stage
        out.append(("stateful_rollback_rto_seconds", {"kind": kind, "release": release}, figures["rto_seconds"]))
    for replica, value in sorted((figures.get("replica_lag_bytes") or {}).items()):
        out.append(("stateful_rollback_replica_lag_bytes", {"replica": str(replica)}, value))
    for replica, value in sorted((figures.get("parity_differences") or {}).items()):
        out.append(("stateful_rollback_parity_differences", {"stage": stage, "release": release, "replica": str(replica)},
                    value))
    return out


class _Families:
    """A collector for prometheus_client's generate_latest: yields the families as they are."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return list(self.families)


def parse_text(text, where):
    """{family name: Metric} of Prometheus text, in file order; MetricsError naming ``where`` when it does not parse."""
    families = {}
    try:
        for family in text_string_to_metric_families(text):
            families[family.name] = family
    # The parser raises ValueError, KeyError, IndexError, ... on text that is not the format.
    except Exception as exc:  # pylint: disable=broad-except
        raise MetricsError("%s is not in the Prometheus text format (%s: %s); move it away or fix it - it is "
                           "rewritten with every stage" % (where, type(exc).__name__, exc))
    return families


def merge(families, samples):
    """Merge ``samples`` [(metric, labels, value)] into ``families``: same name and labels replaced, others kept."""
    for name, labels, value in samples:
        help_text, label_names = METRICS[name]
        labels = {key: str(labels[key]) for key in label_names}
        family = families.get(name)
        if family is None:
            family = families[name] = Metric(name, help_text, "gauge")
        kept = [s for s in family.samples if not (s.name == name and s.labels == labels)]
        family.samples = kept
        family.add_sample(name, labels, float(value))
    return families


def render(families):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)


def check_textfile(path):
    """MetricsError when ``path`` cannot be a textfile-collector file (checked before anything is appended)."""
    if not HAS_PROMETHEUS_CLIENT:
        raise MetricsError("metrics_textfile needs the Python library prometheus_client (pip install prometheus-client)")
    if not isinstance(path, str) or not path.strip():
        raise MetricsError("metrics_textfile must not be empty")
    if not path.endswith(TEXTFILE_SUFFIX) or os.path.basename(path) == TEXTFILE_SUFFIX:
        raise MetricsError("metrics_textfile %s must be a file name ending in .prom: node_exporter's textfile collector "
                           "reads only *.prom files" % path)
    if os.path.isdir(path):
        raise MetricsError("metrics_textfile %s is a directory; give the file, e.g. %s/stateful_rollback.prom"
                           % (path, path.rstrip("/")))


def _lock_path(path):
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, ".%s.lock" % base)


def merge_textfile(path, samples, mode=0o644):
    """Merge ``samples`` into the textfile ``path`` atomically; returns the number of series in the file."""
    check_textfile(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, 0o755)
        except OSError as exc:
            if not os.path.isdir(directory):
                raise MetricsError("cannot create the directory of %s: %s" % (path, exc.strerror))
    try:
        lock = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise MetricsError("cannot lock %s: %s" % (path, exc.strerror))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, "r", encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise MetricsError("cannot read %s: %s" % (path, exc.strerror))
            text = ""
        except UnicodeDecodeError as exc:
            raise MetricsError("%s is not UTF-8 text (%s); move it away or fix it" % (path, exc))
        families = merge(parse_text(text, path), samples)
        data = render(families)
        _replace(path, directory, data, mode)
        return sum(len(f.samples) for f in families.values())
    finally:
        os.close(lock)


def _replace(path, directory, data, mode):
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it over ``path``."""
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path), suffix=".tmp")
    except OSError as exc:
        raise MetricsError("cannot write a temporary file in %s: %s" % (directory, exc.strerror))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise MetricsError("cannot write %s: %s" % (path, exc.strerror))
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


__all__ = [
    "HAS_PROMETHEUS_CLIENT",
    "METRICS",
    "MetricsError",
    "check_figures",
    "check_textfile",
    "merge",
    "merge_textfile",
    "parse_quantity",
    "parse_text",
    "render",
    "series",
    "stage_figures",
]
