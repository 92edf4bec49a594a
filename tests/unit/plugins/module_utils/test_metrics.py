# -*- coding: utf-8 -*-
"""module_utils/metrics.py: key figures read from the details the roles record, the Prometheus series of a
stage, and the textfile-collector file - rendered so that prometheus_client parses it back, merged with what
the file already holds (earlier stages, other runs, other tools' families), and replaced atomically."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.stateful.rollback.plugins.module_utils import metrics

# Shapes of real details (a deploy + rollback of the demo release 2.1.0).
PREFLIGHT = {"replication": {"healthy": True, "replicas": [
    {"name": "standby", "kind": "physical", "lag_bytes": 0, "lag_seconds": 0.0},
    {"name": "subscriber", "kind": "logical", "lag_bytes": 4096, "lag_seconds": 0.002}]},
    "storage": {"data-db-0": {"size": "2Gi"}}}
MIGRATE = {"primary": {"applied": ["001"], "batches": 4, "rows_processed": 1000},
           "subscribers": {"subscriber": {"applied": ["001"], "changed": True}}}
VERIFY = {"parity": {"attempts": 1, "difference_count": 0, "in_sync": True, "replicas": ["standby: True", "subscriber: True"]},
          "health_checks": [{"name": "web-ready", "ok": True}]}
ROLLBACK = {"from": "2.1.0", "to": "1.0.0", "seconds": 17.878, "rpo_bytes": None}


def parse(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(families, name):
    return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}


@pytest.mark.parametrize("stage, details, figures", [
    ("preflight", PREFLIGHT, {"replica_lag_bytes": {"standby": 0, "subscriber": 4096}}),
    ("migrate", MIGRATE, {"rows_backfilled": 1000}),
    ("verify", VERIFY, {"parity_differences": {"all": 0}}),
    ("verify", {"parity": {"difference_count": 3, "replicas": [{"name": "standby", "difference_count": 0},
                                                               {"name": "subscriber", "difference_count": 3}]},
                "rows_compared": 6000},
     {"parity_differences": {"standby": 0, "subscriber": 3}, "rows_compared": 6000}),
    ("snapshot", {"snapshots": [{"name": "a", "restore_size": "2Gi"}, {"name": "b", "restore_size": "512Mi"}]},
     {"snapshot_bytes": 2 * 2 ** 30 + 512 * 2 ** 20}),
    # A size outside a snapshot stage is not a snapshot size (preflight's PVC request).
    ("preflight", {"storage": {"size_bytes": 10}}, {}),
    ("rollback", ROLLBACK, {"rto_seconds": 17.878}),
    ("rollback_flags", {"seconds": 3.0}, {}),
    ("drill", {"rto_seconds": 71.2, "rpo_rows": 0}, {"rto_seconds": 71.2}),
    # The run's closing record repeats the stages: no figures of its own.
    ("run", {"rollback": ROLLBACK, "replicas": [{"name": "x", "lag_bytes": 1}]}, {}),
    # Booleans, strings and non-finite numbers are not figures.
    ("migrate", {"rows_processed": True, "replicas": [{"name": "s", "lag_bytes": "12"}]}, {}),
    ("deploy", None, {}),
])
def test_stage_figures_come_from_the_details(stage, details, figures):
    assert metrics.stage_figures(stage, details) == figures


@pytest.mark.parametrize("text, expected", [
    ("2Gi", 2147483648), ("500M", 500000000), ("1Ki", 1024), ("1073741824", 1073741824), (" 1.5Gi ", 1610612736),
    (512, 512), ("lots", None), ("2 GB", None), (None, None), (True, None),
])
def test_parse_quantity(text, expected):
    assert metrics.parse_quantity(text) == expected


@pytest.mark.parametrize("figures, fragment", [
    ({"rows_compared": "many"}, "figures.rows_compared must be a finite number, got 'many'"),
    ({"rto_seconds": float("nan")}, "figures.rto_seconds must be a finite number"),
    ({"replica_lag_bytes": 5}, "figures.replica_lag_bytes must be a dict of replica name to number, got 5"),
    ({"parity_differences": {"standby": None}}, "figures.parity_differences must be a dict of replica name to number"),
    ([1], "figures must be a dict of figures, got list"),
])
def test_bad_figures_are_named(figures, fragment):
    with pytest.raises(metrics.MetricsError, match=None) as caught:
        metrics.check_figures(figures)
    assert fragment in str(caught.value)


def test_series_of_a_stage():
    figures = {"replica_lag_bytes": {"subscriber": 4096, "standby": 0}, "parity_differences": {"all": 2},
               "rto_seconds": 17.9, "rows_backfilled": 1000}
    assert metrics.series("rollback", "2.1.0", "compensated", 18.1, figures) == [
        ("stateful_rollback_stage_duration_seconds", {"stage": "rollback", "release": "2.1.0", "outcome": "compensated"}, 18.1),
        ("stateful_rollback_rto_seconds", {"kind": "rollback", "release": "2.1.0"}, 17.9),
        ("stateful_rollback_replica_lag_bytes", {"replica": "standby"}, 0),
        ("stateful_rollback_replica_lag_bytes", {"replica": "subscriber"}, 4096),
        ("stateful_rollback_parity_differences", {"stage": "rollback", "release": "2.1.0", "replica": "all"}, 2),
    ]
    # No duration without seconds; a missing release is an empty label; a drill's RTO is kind=drill.
    assert metrics.series("drill", None, "ok", None, {"rto_seconds": 70}) == [
        ("stateful_rollback_rto_seconds", {"kind": "drill", "release": ""}, 70)]


def test_textfile_parses_and_merges_stage_after_stage(tmp_path):
    path = str(tmp_path / "collector" / "stateful_rollback.prom")  # the directory is created
    assert metrics.merge_textfile(path, metrics.series("preflight", "2.1.0", "ok", 8.5, metrics.stage_figures(
        "preflight", PREFLIGHT))) == 3
    assert metrics.merge_textfile(path, metrics.series("deploy", "2.1.0", "failed", 49.25, {})) == 4
    # The same stage again (same labels) replaces its series; another outcome is another series.
    assert metrics.merge_textfile(path, metrics.series("preflight", "2.1.0", "ok", 9.0, {
        "replica_lag_bytes": {"standby": 100}})) == 4
    assert metrics.merge_textfile(path, metrics.series("rollback", "2.1.0", "compensated", 18.0, {"rto_seconds": 17.5})) == 6
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    families = parse(text)
    assert sorted(families) == sorted(["stateful_rollback_stage_duration_seconds", "stateful_rollback_replica_lag_bytes",
                                       "stateful_rollback_rto_seconds"])
    assert all(f.type == "gauge" and f.documentation for f in families.values())
    assert values(families, "stateful_rollback_stage_duration_seconds") == {
        (("outcome", "ok"), ("release", "2.1.0"), ("stage", "preflight")): 9.0,
        (("outcome", "failed"), ("release", "2.1.0"), ("stage", "deploy")): 49.25,
        (("outcome", "compensated"), ("release", "2.1.0"), ("stage", "rollback")): 18.0,
    }
    assert values(families, "stateful_rollback_replica_lag_bytes") == {
        (("replica", "standby"),): 100.0, (("replica", "subscriber"),): 4096.0}
    assert values(families, "stateful_rollback_rto_seconds") == {(("kind", "rollback"), ("release", "2.1.0")): 17.5}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    # Only the file and its hidden lock are left: the temporary files were renamed over it.
    assert sorted(os.listdir(os.path.dirname(path))) == [".stateful_rollback.prom.lock", "stateful_rollback.prom"]


def test_other_families_in_the_file_are_kept(tmp_path):
    path = tmp_path / "node.prom"
    path.write_text(
        "# HELP backup_last_success_timestamp_seconds Last good backup.\n"
        "# TYPE backup_last_success_timestamp_seconds gauge\n"
        "backup_last_success_timestamp_seconds{job=\"pg\"} 1.7e+09\n"
        "# HELP backup_runs_total Backups run.\n"
        "# TYPE backup_runs_total counter\n"
        "backup_runs_total 12.0\n", encoding="utf-8")
    metrics.merge_textfile(str(path), metrics.series("verify", "2.0.0", "ok", 3.0, {"parity_differences": {"all": 0}}))
    families = parse(path.read_text(encoding="utf-8"))
    assert values(families, "backup_last_success_timestamp_seconds") == {(("job", "pg"),): 1.7e9}
    assert families["backup_runs"].type == "counter" and families["backup_runs"].samples[0].value == 12.0
    assert values(families, "stateful_rollback_parity_differences") == {
        (("release", "2.0.0"), ("replica", "all"), ("stage", "verify")): 0.0}


def test_label_values_are_escaped(tmp_path):
    path = str(tmp_path / "x.prom")
    metrics.merge_textfile(path, metrics.series('odd "stage"\\n', "1.0\n", "ok", 1.0, {}))
    families = parse(open(path, encoding="utf-8").read())
    assert families["stateful_rollback_stage_duration_seconds"].samples[0].labels == {
        "stage": 'odd "stage"\\n', "release": "1.0\n", "outcome": "ok"}


def test_a_file_that_is_not_prometheus_text_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "broken.prom"
    path.write_text("this is { not a metric\n", encoding="utf-8")
    with pytest.raises(metrics.MetricsError) as caught:
        metrics.merge_textfile(str(path), metrics.series("s", "1", "ok", 1.0, {}))
    assert str(caught.value).startswith("%s is not in the Prometheus text format (" % path)
    assert path.read_text(encoding="utf-8") == "this is { not a metric\n"
    assert sorted(os.listdir(str(tmp_path))) == [".broken.prom.lock", "broken.prom"]


@pytest.mark.parametrize("name, fragment", [
    ("metrics.txt", "must be a file name ending in .prom: node_exporter's textfile collector reads only *.prom files"),
    (".prom", "must be a file name ending in .prom"),
    ("", "metrics_textfile must not be empty"),
])
def test_bad_textfile_names(tmp_path, name, fragment):
    with pytest.raises(metrics.MetricsError) as caught:
        metrics.check_textfile(str(tmp_path / name) if name else name)
    assert fragment in str(caught.value)


def test_a_directory_is_not_a_textfile(tmp_path):
    (tmp_path / "d.prom").mkdir()
    with pytest.raises(metrics.MetricsError, match="is a directory"):
        metrics.check_textfile(str(tmp_path / "d.prom"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.prom"
    metrics.merge_textfile(str(path), metrics.series("a", "1", "ok", 1.0, {}))
    before = path.read_bytes()

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.os, "replace", no_rename)
    with pytest.raises(metrics.MetricsError, match="cannot write .*m.prom: No space left on device"):
        metrics.merge_textfile(str(path), metrics.series("b", "1", "ok", 2.0, {}))
    assert path.read_bytes() == before
    assert sorted(os.listdir(str(tmp_path))) == [".m.prom.lock", "m.prom"]


def test_concurrent_writers_lose_no_series(tmp_path):
    path = str(tmp_path / "c.prom")
    errors = []

    def write(index):
        try:
            for step in range(10):
                metrics.merge_textfile(path, metrics.series("stage%d" % index, "r%d" % step, "ok", float(step), {}))
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    families = parse(open(path, encoding="utf-8").read())
    assert len(families["stateful_rollback_stage_duration_seconds"].samples) == 40
