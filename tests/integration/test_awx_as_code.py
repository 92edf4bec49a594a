# -*- coding: utf-8 -*-
"""awx/: the AWX / Automation Controller configuration as code.

No controller runs here, so this checks what can be checked without one: the
playbook parses (ansible-playbook --syntax-check) and is lint-clean (ansible-lint
production profile, yamllint with the repository's settings); every survey is a
survey the controller accepts and asks only for variables the playbooks and roles
document; the workflow's nodes form the graph awx/README.md describes; the drill
schedule's rrule fires on Sundays at 03:00 UTC and answers the Drill survey; and
every task, for every loop item, passes its awx.awx module's argument validation
and gets as far as calling the controller (a closed port here).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import yaml
from testkit import closed_port

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
AWX = os.path.join(REPO, "awx")
CONFIGURE = os.path.join(AWX, "configure.yml")

# Survey question types the controller accepts (its survey spec validation).
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# Variables of playbooks/drill.yml (its interface as designed; not a role's, so not in roles/README.md).
DRILL_VARIABLES = {"drill_fault", "drill_max_rto_seconds", "drill_max_rpo_rows"}
DRILL_FAULTS = {"health_check", "migration", "corruption"}

# The workflow "Release with approval" as awx/README.md describes it: (parent, edge, child).
WORKFLOW_EDGES = {
    ("preflight", "success", "approve-deploy"),
    ("approve-deploy", "success", "deploy"),
    ("deploy", "failure", "approve-rollback"),
    ("approve-rollback", "success", "rollback"),
}
WORKFLOW_KINDS = {
    "preflight": ("job_template", "Preflight"),
    "approve-deploy": ("approval", "Approve deploy"),
    "deploy": ("job_template", "Deploy"),
    "approve-rollback": ("approval", "Approve production rollback"),
    "rollback": ("job_template", "Rollback"),
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads Ansible's !unsafe tag as the plain string it marks."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


@pytest.fixture(scope="module")
def play():
    plays = load(CONFIGURE)
    assert isinstance(plays, list) and len(plays) == 1
    return plays[0]


@pytest.fixture(scope="module")
def settings():
    return load(os.path.join(AWX, "vars", "main.yml"))


def surveys():
    return sorted(glob.glob(os.path.join(AWX, "surveys", "*.yml")))


def documented_variables():
    """Variables the roles document: roles/README.md and every role's meta/argument_specs.yml, plus the drill's."""
    with open(os.path.join(REPO, "roles", "README.md"), encoding="utf-8") as handle:
        names = set(re.findall(r"\bstateful_rollback_[a-z0-9_]*[a-z0-9]", handle.read()))
    for path in glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml")):
        with open(path, encoding="utf-8") as handle:
            # Option names and the variables their descriptions name (text, not YAML: a role being
            # edited must not break this test).
            names.update(re.findall(r"\bstateful_rollback_[a-z0-9_]*[a-z0-9]", handle.read()))
    return names | DRILL_VARIABLES


def run(command, **kwargs):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.update(kwargs.pop("env", {}))
    return subprocess.run(command, cwd=kwargs.pop("cwd", REPO), env=env, capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 300), check=False, **kwargs)


# -- the playbook parses and is lint-clean ---------------------------------------------------


def test_configure_yml_passes_syntax_check():
    proc = run([os.path.join(BIN, "ansible-playbook"), "--syntax-check", CONFIGURE])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile_passes():
    proc = run([os.path.join(BIN, "ansible-lint"), "--profile", "production", "awx/"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_yamllint_passes_with_the_repository_settings():
    with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as handle:
        makefile = handle.read()
    match = re.search(r"^YAMLLINT_CONFIG := ((?:.*\\\n)*.*)$", makefile, re.M)
    assert match, "YAMLLINT_CONFIG not found in the Makefile"
    config = re.sub(r"\\\n", "", match.group(1))
    proc = run([os.path.join(BIN, "yamllint"), "--strict", "-d", config, "awx/"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_module_defaults_use_awx_action_group(play):
    with open(os.path.join(BIN, "..", "lib", "python%d.%d" % sys.version_info[:2], "site-packages", "ansible_collections",
                           "awx", "awx", "meta", "runtime.yml"), encoding="utf-8") as handle:
        groups = yaml.safe_load(handle)["action_groups"]
    assert list(play["module_defaults"]) == ["group/awx.awx.controller"]
    modules = {next(k for k in task if "." in k and k != "ansible.builtin.assert") for task in play["tasks"][1:]}
    assert all(m.startswith("awx.awx.") and m.split(".")[-1] in groups["controller"] for m in modules), modules
    assert set(play["module_defaults"]["group/awx.awx.controller"]) == {"controller_host", "controller_oauthtoken", "validate_certs"}


# -- surveys -----------------------------------------------------------------------------


def check_survey(path, documented):
    spec = load(path)
    where = os.path.relpath(path, REPO)
    assert set(spec) == {"name", "description", "spec"}, where
    assert isinstance(spec["name"], str) and spec["name"] and isinstance(spec["description"], str), where
    assert isinstance(spec["spec"], list) and spec["spec"], where
    variables = [q["variable"] for q in spec["spec"]]
    assert len(variables) == len(set(variables)), "%s: duplicate variables %s" % (where, variables)
    for q in spec["spec"]:
        what = "%s: %s" % (where, q.get("variable"))
        assert {"question_name", "variable", "type", "required", "default"} <= set(q), what
        assert isinstance(q["question_name"], str) and q["question_name"], what
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", q["variable"]), what
        assert q["variable"] in documented, "%s is not a variable the playbooks or roles document" % what
        assert q["type"] in SURVEY_TYPES, what
        assert isinstance(q["required"], bool), what
        default = q["default"]
        if q["type"] in ("text", "textarea", "password"):
            assert isinstance(default, str), what
            low, high = q.get("min", 0), q.get("max", 1024)
            assert 0 <= low <= high, what
            assert default == "" or low <= len(default) <= high, what
            if q["required"]:
                assert low >= 1, "%s: a required text question needs min >= 1" % what
        elif q["type"] in ("integer", "float"):
            assert q["min"] <= q["max"], what
            if default == "":
                # The controller skips a default that is no number: the variable stays unset (optional questions only).
                assert q["required"] is False, "%s: a required number question needs a default" % what
            else:
                kind = int if q["type"] == "integer" else (int, float)
                assert isinstance(default, kind) and not isinstance(default, bool), what
                assert q["min"] <= default <= q["max"], what
        else:
            assert isinstance(q["choices"], list) and q["choices"], what
            defaults = default.split("\n") if q["type"] == "multiselect" else [default]
            assert set(defaults) <= set(q["choices"]), what
    return spec


def test_every_survey_is_valid_and_asks_for_documented_variables():
    documented = documented_variables()
    assert "stateful_rollback_release_manifest" in documented and "stateful_rollback_approved_by" in documented
    assert len(surveys()) == 5
    for path in surveys():
        check_survey(path, documented)


def test_surveys_ask_what_each_template_needs(play):
    templates = {t["name"]: t for t in play["vars"]["stateful_rollback_awx_job_templates"]}
    assert set(templates) == {"Preflight", "Deploy", "Rollback", "Drill"}
    assert {t["playbook"] for t in templates.values()} == {"playbooks/%s.yml" % n for n in ("preflight", "deploy", "rollback", "drill")}
    used = {t["survey"] for t in templates.values()} | {"surveys/release_workflow.yml"}
    assert used == {os.path.relpath(p, AWX) for p in surveys()}  # no survey file is left unused
    questions = {name: {q["variable"]: q for q in load(os.path.join(AWX, t["survey"]))["spec"]} for name, t in templates.items()}
    for name in ("Deploy", "Rollback", "Drill"):
        # Destructive: an approver is required, and nothing but the survey's answers goes in.
        assert questions[name]["stateful_rollback_approved_by"]["required"] is True, name
        assert templates[name]["ask_variables_on_launch"] is False, name
    assert "stateful_rollback_approved_by" not in questions["Preflight"]
    assert questions["Deploy"]["stateful_rollback_release_manifest"]["required"] is True
    assert questions["Rollback"]["stateful_rollback_rollback_to"]["required"] is False  # empty: last known-good
    assert questions["Drill"]["drill_fault"]["type"] == "multiplechoice"
    assert set(questions["Drill"]["drill_fault"]["choices"]) == DRILL_FAULTS
    # The workflow's answers reach every node's job: they must answer each node template's required questions.
    workflow = {q["variable"] for q in load(os.path.join(AWX, "surveys", "release_workflow.yml"))["spec"]}
    for name in ("Preflight", "Deploy", "Rollback"):
        required = {v for v, q in questions[name].items() if q["required"]}
        assert required <= workflow, (name, required - workflow)
    drill_yml = os.path.join(REPO, "playbooks", "drill.yml")
    if os.path.exists(drill_yml):  # once written, the drill must use the variables its survey asks for
        with open(drill_yml, encoding="utf-8") as handle:
            text = handle.read()
        assert all(v in text for v in DRILL_VARIABLES), DRILL_VARIABLES


# -- the workflow ----------------------------------------------------------------------------


def test_workflow_nodes_form_the_described_graph(play, settings):
    nodes = play["vars"]["stateful_rollback_awx_workflow_nodes"]
    identifiers = [n["identifier"] for n in nodes]
    assert len(identifiers) == len(set(identifiers))
    assert set(identifiers) == set(WORKFLOW_KINDS)
    edges = {(n["identifier"], kind, child) for n in nodes for kind in ("success", "failure", "always")
             for child in n.get(kind + "_nodes", [])}
    assert edges == WORKFLOW_EDGES
    templates = {t["name"] for t in play["vars"]["stateful_rollback_awx_job_templates"]}
    for node in nodes:
        kind, name = WORKFLOW_KINDS[node["identifier"]]
        assert ("job_template" in node) != ("approval" in node), node  # exactly one of them
        if kind == "job_template":
            assert node["job_template"] == name and name in templates
        else:
            approval = node["approval"]
            assert approval["name"] == name and approval["description"]
            timeout = re.fullmatch(r"\{\{ (\w+) \}\}", approval["timeout"]).group(1)
            assert isinstance(settings[timeout], int) and settings[timeout] > 0, timeout
    # A tree from one root (the controller also refuses cycles): every node but the root has one parent.
    parents = {}
    for parent, dummy, child in edges:
        assert child not in parents, "%s has two parents" % child
        parents[child] = parent
    assert set(identifiers) - set(parents) == {"preflight"}
    for identifier in identifiers:
        seen, node = set(), identifier
        while node in parents:
            assert node not in seen, "cycle through %s" % node
            seen.add(node)
            node = parents[node]
    # The tasks build the nodes from that list first, then link them by identifier.
    by_name = {t["name"]: t for t in play["tasks"]}
    create, link = by_name["Create the workflow's nodes"], by_name["Link the workflow's nodes"]
    assert create["loop"] == link["loop"] == "{{ stateful_rollback_awx_workflow_nodes }}"
    assert play["tasks"].index(create) < play["tasks"].index(link)
    module = link["awx.awx.workflow_job_template_node"]
    assert module["success_nodes"] == "{{ item.success_nodes | default([]) }}"
    assert module["failure_nodes"] == "{{ item.failure_nodes | default([]) }}"
    assert "approval_node" in create["awx.awx.workflow_job_template_node"]


def test_drill_schedule_runs_weekly_on_sunday_at_three_utc_and_answers_the_survey(play, settings):
    from dateutil.rrule import rrulestr

    schedules = settings["stateful_rollback_awx_drill_schedules"]
    assert schedules
    drill = {q["variable"]: q for q in load(os.path.join(AWX, "surveys", "drill.yml"))["spec"]}
    targets = {t["name"] for t in settings["stateful_rollback_awx_targets"]}
    for schedule in schedules:
        # The controller's form: "DTSTART;TZID=UTC:YYYYMMDDTHHMMSS RRULE:...".
        dtstart, rule = schedule["rrule"].split(" ")
        match = re.fullmatch(r"DTSTART;TZID=UTC:(\d{8}T\d{6})", dtstart)
        assert match and rule.startswith("RRULE:"), schedule["rrule"]
        start = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        runs = rrulestr(rule[len("RRULE:"):], dtstart=start)
        upcoming = runs.xafter(datetime(2026, 3, 1, tzinfo=timezone.utc), count=3)
        for when in upcoming:
            assert (when.weekday(), when.hour, when.minute) == (6, 3, 0), when  # Sunday 03:00 UTC
        assert schedule["target"] in targets and schedule["target"] != "production"
        answers = schedule["extra_data"]
        assert set(answers) <= set(drill)
        assert {v for v, q in drill.items() if q["required"]} <= set(answers)
        assert answers["drill_fault"] in drill["drill_fault"]["choices"]
        for name in ("drill_max_rto_seconds", "drill_max_rpo_rows"):
            assert drill[name]["min"] <= answers[name] <= drill[name]["max"]
    task = next(t for t in play["tasks"] if "awx.awx.schedule" in t)
    assert task["awx.awx.schedule"]["unified_job_template"] == "{{ _prefix }} Drill"


# -- every task's arguments, as the modules validate them ---------------------------------------


def test_every_task_passes_argument_validation_and_calls_the_controller(tmp_path, settings):
    # A copy of awx/ whose play ignores errors and shows the credentials' results (no_log off: the
    # secrets here are empty), run against a closed port: every module validates its arguments (types,
    # choices, mutually exclusive options), then fails to connect. Anything else is a bug in the playbook.
    copy = tmp_path / "awx"
    shutil.copytree(AWX, copy)
    text = (copy / "configure.yml").read_text()
    text = text.replace("  gather_facts: false\n", "  gather_facts: false\n  ignore_errors: true\n", 1)
    text = text.replace("no_log: true", "no_log: false")
    (copy / "configure.yml").write_text(text)
    url = "https://127.0.0.1:%d" % closed_port()
    proc = run([os.path.join(BIN, "ansible-playbook"), "configure.yml", "-e", "stateful_rollback_awx_controller_host=" + url],
               cwd=str(copy), env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "CONTROLLER_HOST": "https://wrong.invalid",
                                   "CONTROLLER_OAUTH_TOKEN": "not-a-real-token-0123456789"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads(proc.stdout)
    results = []
    for task in report["plays"][0]["tasks"]:
        outcome = task["hosts"]["localhost"]
        results += [(task["task"]["name"], r) for r in outcome.get("results", [outcome])]
    names = [name for name, dummy in results]
    assert names[0] == "Check the settings before touching the controller" and not results[0][1].get("failed")
    for name, result in results[1:]:
        # module_defaults carried the controller URL (the environment's CONTROLLER_HOST lost).
        assert result.get("failed") and url in result["msg"] and "Connection refused" in result["msg"], (name, result.get("msg"))
    targets, nodes = len(settings["stateful_rollback_awx_targets"]), 5
    expected = {"Add the deployment targets": targets, "Create the database credentials": targets,
                "Create the cluster credentials": targets, "Create the job templates": 4, "Create the workflow's nodes": nodes,
                "Link the workflow's nodes": nodes, "Schedule the drills": len(settings["stateful_rollback_awx_drill_schedules"])}
    for name, count in expected.items():
        assert names.count(name) == count, name
