# -*- coding: utf-8 -*-
"""schema_compat_check on the labeled corpus (tests/data/migrations/), live on the
real sandbox primary: each case's base schema goes into a database of its own,
then the module's flow runs its up/down/old queries and the result is compared
with the case's expected.yml."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest
import yaml

from ansible_collections.stateful.rollback.plugins.module_utils.compat_runner import COMPATIBILITY_CATEGORIES, run

pytestmark = pytest.mark.integration

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "migrations")
CASES = sorted(d for d in os.listdir(CORPUS) if os.path.isfile(os.path.join(CORPUS, d, "expected.yml"))) if os.path.isdir(CORPUS) else []


def case_file(case, name):
    path = os.path.join(CORPUS, case, name)
    return path if os.path.exists(path) else None


@pytest.fixture
def case_db(sandbox, request):
    """A fresh database holding the case's base schema, dropped afterwards."""
    case = request.param
    name = "compat_" + case.split("-")[0]
    admin = sandbox.connect("primary", superuser=True)
    try:
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
            cur.execute('CREATE DATABASE "%s"' % name)
        params = sandbox.superuser("primary")
        params["dbname"] = name
        import psycopg2  # pylint: disable=import-outside-toplevel

        conn = psycopg2.connect(**params)
        conn.autocommit = True
        with conn.cursor() as cur:
            with open(os.path.join(CORPUS, case, "base.sql")) as handle:
                cur.execute(handle.read())
            cur.execute("ANALYZE")
        conn.close()
        yield case, params
    finally:
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        admin.close()


def reported(result, category):
    return [f for f in result["findings"] if f["category"] == category and f["severity"] in ("error", "warning")]


@pytest.mark.parametrize("case_db", CASES, indirect=True)
def test_corpus_case(case_db):
    case, conn = case_db
    with open(os.path.join(CORPUS, case, "expected.yml")) as handle:
        expected = yaml.safe_load(handle)
    params = dict(
        migration=case_file(case, "up.sql"),
        rollback=case_file(case, "down.sql"),
        old_queries=case_file(case, "old_queries.sql"),
        large_table_rows=expected.get("large_table_rows", 100000),
        fail_on=[],
        login_host=conn["host"], login_port=int(conn["port"]), login_user=conn["user"],
        login_password=conn["password"], login_db=conn["dbname"], mode="live",
    )
    if expected.get("server_version", 150000) < 150000:
        # Rules for an older server than the sandbox's: static analysis with that version.
        params.update(mode="static", server_version=expected["server_version"],
                      login_host="", login_db="")
    result = run(params)
    summary = [(f["rule"], f["category"], f["severity"], f["source"]) for f in result["findings"]]
    for category in expected.get("categories") or []:
        assert reported(result, category), "%s: expected a %s finding, got %s" % (case, category, summary)
    if not expected["unsafe"]:
        # Labels speak of running the migration; what its rollback would lose is reported apart.
        noise = [f for c in COMPATIBILITY_CATEGORIES for f in reported(result, c) if f.get("script") != "rollback"]
        assert not noise, "%s: safe case reported %s" % (case, summary)
    if "compatible" in expected and params["mode"] == "live":
        assert result["compatible"] is expected["compatible"], "%s: compatible=%s, findings %s" % (case, result["compatible"], summary)
    if expected.get("reversible") is not None and params["mode"] == "live" and params["rollback"]:
        assert result["reversible"] is expected["reversible"], "%s: reversible=%s, diff %s" % (case, result["reversible"], result["schema_diff"])


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    labels = [yaml.safe_load(open(os.path.join(CORPUS, c, "expected.yml"))) for c in CASES]
    covered = set(cat for label in labels for cat in label.get("categories") or [])
    assert covered >= {"breaks_old_app", "blocking_lock", "table_rewrite", "data_loss", "non_transactional"}
    assert sum(1 for label in labels if not label["unsafe"]) >= 15
