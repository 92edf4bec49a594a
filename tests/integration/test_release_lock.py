# -*- coding: utf-8 -*-
"""stateful.rollback.release_lock: the target's lock, a coordination.k8s.io/v1 Lease, against kubesim (the
Kubernetes API emulator of scripts/kubesim, started in this process on a free 127.0.0.1 port, spoken to over
HTTP by the official client).

Covered: create / keep / refuse / give back; check mode and diff; takeover of an expired lease and of one whose
run ended on this controller; waiting for a holder; exactly one winner among runs taking it at the same moment
(resourceVersion conflicts); bad input refused before any request; and, through real ``ansible-playbook`` runs,
the keeper that renews the lease while the run lives and gives it back when the run ends - finished or killed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import testkit
from kubernetes import client, config

from ansible_collections.stateful.rollback.plugins.module_utils import k8s as k8s_utils
from ansible_collections.stateful.rollback.plugins.module_utils import leases
from ansible_collections.stateful.rollback.plugins.modules import release_lock

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NS = "locks"


@pytest.fixture(scope="module")
def coordination(sim, kubeconfig):
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": NS}})
        yield client.CoordinationV1Api(api_client)


def lock(capsys, kubeconfig, check_mode=False, diff=False, **args):
    params = dict(kubeconfig=kubeconfig, namespace=NS, keep_alive=False)
    params.update(args)
    return testkit.run_module(capsys, release_lock, params, check_mode=check_mode, diff=diff)


def read(coordination, name):
    try:
        return coordination.read_namespaced_lease(name, NS)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def holder(coordination, name):
    found = read(coordination, name)
    return found.spec.holder_identity if found else None


def age_lease(coordination, name, seconds):
    """Pretend the holder last renewed ``seconds`` ago (what a silent controller looks like)."""
    found = read(coordination, name)
    found.spec.renew_time = leases._now() - datetime.timedelta(seconds=seconds)
    coordination.replace_namespaced_lease(name, NS, found)


def test_acquire_keep_refuse_and_give_back(capsys, kubeconfig, coordination):
    first = lock(capsys, kubeconfig, name="basic", holder="run-a", operation="deploy 2.0.0")
    assert first["changed"] is True and first["acquired"] is True and first["previous_holder"] is None
    assert first["lease"]["holder"] == "run-a" and first["lease"]["operation"] == "deploy 2.0.0"
    assert first["lease"]["transitions"] == 0 and first["lease"]["duration_seconds"] == 60
    assert 50 < first["lease"]["expires_in_seconds"] <= 60
    assert holder(coordination, "basic") == "run-a"

    again = lock(capsys, kubeconfig, name="basic", holder="run-a", operation="deploy 2.0.0")
    assert again["changed"] is False and again["acquired"] is True

    refused = lock(capsys, kubeconfig, name="basic", holder="run-b", operation="rollback")
    assert refused["failed"] is True and refused["acquired"] is False
    assert refused["msg"].startswith("Lease locks/basic is held by run run-a, doing deploy 2.0.0, on ")
    assert "this run changes nothing" in refused["msg"] and "expires in" in refused["msg"]
    assert refused["lease"]["holder"] == "run-a"
    assert holder(coordination, "basic") == "run-a"

    not_ours = lock(capsys, kubeconfig, name="basic", holder="run-b", state="released")
    assert not_ours["changed"] is False and holder(coordination, "basic") == "run-a"

    given = lock(capsys, kubeconfig, name="basic", holder="run-a", state="released", diff=True)
    assert given["changed"] is True and given["acquired"] is False
    assert given["diff"] == {"before": {"holder": "run-a", "operation": "deploy 2.0.0"}, "after": {"holder": None, "operation": None}}
    assert holder(coordination, "basic") is None
    assert lock(capsys, kubeconfig, name="basic", holder="run-a", state="released")["changed"] is False

    taken = lock(capsys, kubeconfig, name="basic", holder="run-b", operation="rollback")
    assert taken["changed"] is True and taken["lease"]["transitions"] == 1
    assert taken["previous_holder"] is None  # given back, not taken over


def test_check_mode_writes_nothing(capsys, kubeconfig, coordination):
    planned = lock(capsys, kubeconfig, name="checked", holder="run-c", operation="deploy", check_mode=True, diff=True)
    assert planned["changed"] is True and planned["acquired"] is True
    assert planned["diff"]["after"] == {"holder": "run-c", "operation": "deploy"}
    assert read(coordination, "checked") is None
    lock(capsys, kubeconfig, name="checked", holder="run-c")
    planned = lock(capsys, kubeconfig, name="checked", holder="run-c", state="released", check_mode=True)
    assert planned["changed"] is True and holder(coordination, "checked") == "run-c"
    refused = lock(capsys, kubeconfig, name="checked", holder="run-d", check_mode=True)
    assert refused["failed"] is True and "is held by run run-c" in refused["msg"]


def test_an_expired_lease_is_taken_over(capsys, kubeconfig, coordination):
    lock(capsys, kubeconfig, name="expired", holder="run-gone", operation="deploy 1.0.0", lease_duration=30)
    age_lease(coordination, "expired", 31)
    taken = lock(capsys, kubeconfig, name="expired", holder="run-new")
    assert taken["changed"] is True and taken["lease"]["holder"] == "run-new"
    assert taken["previous_holder"]["holder"] == "run-gone" and taken["previous_holder"]["operation"] == "deploy 1.0.0"
    assert taken["previous_holder"]["why"].startswith("not renewed for 3") and "its lease lasts 30 s" in taken["previous_holder"]["why"]


def test_wait_timeout_waits_for_the_holder_to_go(capsys, kubeconfig, coordination):
    lock(capsys, kubeconfig, name="waited", holder="run-first")

    def give_back_later():
        time.sleep(2.0)
        kube = k8s_utils.connect(dict(kubeconfig=kubeconfig))
        leases.release(kube, dict(namespace=NS, name="waited", holder="run-first"))
    thread = threading.Thread(target=give_back_later)
    thread.start()
    try:
        taken = lock(capsys, kubeconfig, name="waited", holder="run-second", wait_timeout=60)
    finally:
        thread.join()
    assert taken["changed"] is True and taken["lease"]["holder"] == "run-second"
    assert taken["waited_seconds"] >= 1.5


def test_of_runs_taking_it_at_once_exactly_one_wins(kubeconfig, coordination):
    """resourceVersion-guarded writes: eight runs race for a free lease (and then for an expired one)."""
    for round_name, prepare in (("race-new", None), ("race-expired", "expire")):
        if prepare:
            kube = k8s_utils.connect(dict(kubeconfig=kubeconfig))
            leases.acquire(kube, dict(namespace=NS, name=round_name, holder="old", lease_duration=10, keep_alive=False))
            age_lease(coordination, round_name, 60)
        barrier = threading.Barrier(8)
        outcomes = {}

        def contend(index):
            kube = k8s_utils.connect(dict(kubeconfig=kubeconfig))
            barrier.wait()
            try:
                leases.acquire(kube, dict(namespace=NS, name=round_name, holder="racer-%d" % index, lease_duration=60, keep_alive=False))
                outcomes[index] = "won"
            except k8s_utils.K8sError as exc:
                outcomes[index] = exc.msg
        threads = [threading.Thread(target=contend, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [index for index, outcome in outcomes.items() if outcome == "won"]
        assert len(winners) == 1, outcomes
        assert holder(coordination, round_name) == "racer-%d" % winners[0]
        assert all("is held by run racer-%d" % winners[0] in outcome for index, outcome in outcomes.items() if index not in winners)


BAD = [
    ({"namespace": "Locks", "holder": "r"}, "namespace 'Locks' is not a valid Kubernetes namespace"),
    ({"name": "Lock_1", "holder": "r"}, "name 'Lock_1' is not a valid Kubernetes name"),
    ({"name": "x" * 254, "holder": "r"}, "name is 254 characters long, over the limit of 253"),
    ({"holder": "  "}, "holder must be a non-empty string"),
    ({"holder": "h" * 254}, "holder is 254 characters long, over the limit of 253"),
    ({"holder": "r", "lease_duration": 0}, "lease_duration must be between 5 and 3600 seconds, got 0"),
    ({"holder": "r", "lease_duration": 86400}, "lease_duration must be between 5 and 3600 seconds, got 86400"),
    ({"holder": "r", "wait_timeout": -1}, "wait_timeout must be 0 or more seconds, got -1"),
    ({"holder": "r", "owner_pid": 1}, "owner_pid 1 is not a running process"),
    ({"holder": "r", "owner_pid": 2 ** 22 + 7}, "is not a running process"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[m for _a, m in BAD])
def test_bad_input_is_refused_before_any_request(capsys, kubeconfig, coordination, sim, args, message):
    sim.record_requests()
    sim.requests(clear=True)
    try:
        result = lock(capsys, kubeconfig, **dict({"name": "bad"}, **args))
        asked = sim.requests(clear=True)
    finally:
        sim.record_requests(False)
    assert result["failed"] is True and message in result["msg"], result
    assert "Traceback" not in result["msg"]
    assert asked == []
    assert read(coordination, "bad") is None


# -- the keeper ----------------------------------------------------------------------------------------------------
def keeper_alive(pid):
    return leases.process_start(pid) is not None and leases._is_keeper(pid)


def test_the_keeper_renews_while_its_owner_lives_and_gives_back_when_it_ends(capsys, kubeconfig, coordination):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        taken = lock(capsys, kubeconfig, name="kept", holder="run-kept", lease_duration=6, keep_alive=True, owner_pid=owner.pid)
        keeper = taken["keeper"]
        assert keeper and keeper["owner_pid"] == owner.pid and keeper_alive(keeper["pid"])
        first = read(coordination, "kept").spec.renew_time
        testkit.wait_for(lambda: read(coordination, "kept").spec.renew_time != first, 30, "the keeper to renew the lease")
        # Taking it again (same run) keeps the one keeper.
        again = lock(capsys, kubeconfig, name="kept", holder="run-kept", lease_duration=6, keep_alive=True, owner_pid=owner.pid)
        assert again["changed"] is False and again["keeper"]["pid"] == keeper["pid"]
        refused = lock(capsys, kubeconfig, name="kept", holder="run-other")
        assert refused["failed"] is True
    finally:
        owner.kill()
        owner.wait()
    testkit.wait_for(lambda: holder(coordination, "kept") is None, 30, "the keeper to give the lease back")
    testkit.wait_for(lambda: not keeper_alive(keeper["pid"]), 30, "the keeper to exit")


def test_a_lease_whose_run_ended_on_this_controller_is_taken_at_once(capsys, kubeconfig, coordination):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    taken = lock(capsys, kubeconfig, name="orphan", holder="run-dead", keep_alive=True, owner_pid=owner.pid)
    keeper = taken["keeper"]["pid"]
    os.kill(keeper, signal.SIGKILL)  # the keeper dies first (say, the OOM killer), then the run
    testkit.wait_for(lambda: not keeper_alive(keeper), 30, "the keeper to die")
    owner.kill()
    owner.wait()
    assert holder(coordination, "orphan") == "run-dead"  # nobody gave it back, and it has not expired (60 s)
    after = lock(capsys, kubeconfig, name="orphan", holder="run-rerun")
    assert after["changed"] is True and after["lease"]["holder"] == "run-rerun"
    assert after["previous_holder"]["why"] == "its process %d on this controller has ended" % owner.pid


PLAY = textwrap.dedent("""\
    - name: Hold the lock while a file is missing
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Take the lock
          stateful.rollback.release_lock:
            kubeconfig: "{{ kubeconfig }}"
            namespace: %s
            name: "{{ lease }}"
            holder: "{{ holder }}"
            operation: "{{ operation | default('test play') }}"
            lease_duration: 6
          register: taken

        - name: Show the keeper
          ansible.builtin.debug:
            msg: "KEEPER={{ taken.keeper.pid }} OWNER={{ taken.keeper.owner_pid }}"

        - name: Work until told to stop
          ansible.builtin.wait_for:
            path: "{{ go }}"
            timeout: 300
          when: go is defined
    """ % NS)


def run_play(tmp_path, kubeconfig, holder_id, lease, go=None, background=False):
    play = tmp_path / "lock.yml"
    play.write_text(PLAY)
    extra = ["-e", "kubeconfig=%s holder=%s lease=%s" % (kubeconfig, holder_id, lease)]
    if go:
        extra += ["-e", "go=%s" % go]
    command = [os.path.join(testkit.BIN, "ansible-playbook"), str(play)] + extra
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(testkit.REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    if background:
        log = open(tmp_path / ("%s.log" % holder_id), "w+", encoding="utf-8")
        proc = subprocess.Popen(command, cwd=testkit.REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        proc.log = log
        return proc
    done = subprocess.run(command, cwd=testkit.REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr


def play_log(proc):
    proc.log.seek(0)
    return proc.log.read()


def test_through_ansible_playbook_a_second_run_is_refused_and_the_lease_follows_the_run(tmp_path, kubeconfig, coordination):
    go = tmp_path / "go"
    first = run_play(tmp_path, kubeconfig, "play-one", "played", go=str(go), background=True)
    try:
        testkit.wait_for(lambda: "KEEPER=" in play_log(first) or first.poll() is not None, 180, "the first run to take the lock")
        assert first.poll() is None, play_log(first)
        keeper = int(play_log(first).split("KEEPER=")[1].split()[0])
        assert keeper_alive(keeper)
        # The task's payload directory is gone: the keeper runs from its own copy and still renews.
        renewed = read(coordination, "played").spec.renew_time
        testkit.wait_for(lambda: read(coordination, "played").spec.renew_time != renewed, 30, "a renewal after the task ended")

        rc, out = run_play(tmp_path, kubeconfig, "play-two", "played")
        assert rc != 0 and "Lease locks/played is held by run play-one" in out, out[-3000:]
        assert "Traceback" not in out
        # Another run that happens to carry the same holder string (run ids made of the second they started)
        # is told apart by its ansible-playbook process, and refused too.
        rc, out = run_play(tmp_path, kubeconfig, "play-one", "played")
        assert rc != 0 and "Lease locks/played is held by run play-one" in out, out[-3000:]
        assert holder(coordination, "played") == "play-one"
        go.write_text("")
        assert first.wait(timeout=180) == 0, play_log(first)
    finally:
        if first.poll() is None:
            first.kill()
    testkit.wait_for(lambda: holder(coordination, "played") is None, 30, "the lease to be given back when the run ended")
    testkit.wait_for(lambda: not keeper_alive(keeper), 30, "the keeper to exit")

    rc, out = run_play(tmp_path, kubeconfig, "play-three", "played")
    assert rc == 0, out[-3000:]


def test_a_killed_run_does_not_block_its_rerun(tmp_path, kubeconfig, coordination):
    go = tmp_path / "never"
    victim = run_play(tmp_path, kubeconfig, "play-killed", "killed", go=str(go), background=True)
    testkit.wait_for(lambda: "KEEPER=" in play_log(victim) or victim.poll() is not None, 180, "the run to take the lock")
    assert victim.poll() is None, play_log(victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    testkit.wait_for(lambda: holder(coordination, "killed") is None, 30, "the keeper to give the killed run's lease back")
    rc, out = run_play(tmp_path, kubeconfig, "play-rerun", "killed")
    assert rc == 0, out[-3000:]
