# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One operation at a time on a target: a ``coordination.k8s.io/v1`` Lease held by a run.

A deploy, rollback or drill takes the Lease before it changes anything and gives it back when it ends. The
Lease says who holds it (``spec.holderIdentity``: the run id) and until when (``renewTime`` +
``leaseDurationSeconds``); annotations say what the holder does and where it runs.

While the run lasts, a *keeper* process renews the Lease. The keeper follows the life of the run's
``ansible-playbook`` process (or of ``owner_pid``): when that process ends, however it ends (finished, failed,
killed), the keeper gives the Lease back and exits. So a killed run does not block its rerun, and a run that
lost its controller (machine gone) stops renewing and its Lease expires after ``leaseDurationSeconds``.

Writes use the object's ``resourceVersion`` (optimistic concurrency): of two runs taking the same Lease at once,
exactly one succeeds; the other gets 409 Conflict, reads again and sees a live holder.

The keeper runs as ``python -m ansible_collections.stateful.rollback.plugins.module_utils.leases`` with its
settings (including the Kubernetes authentication options) on its stdin, never on its command line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ansible_collections.stateful.rollback.plugins.module_utils.k8s import (
    ApiException,
    DynamicApiError,
    K8sError,
    api_message,
    api_status,
    connect,
    is_transient,
    with_retries,
)
from ansible_collections.stateful.rollback.plugins.module_utils.snapshots import name_problem

API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"
ANNOTATION = "stateful.rollback/"
MIN_DURATION = 5
MAX_DURATION = 3600
KEEPER_POLL_SECONDS = 1.0
PLAYBOOK_COMMANDS = ("ansible-playbook",)


# -- time and processes ----------------------------------------------------------------------------------------
def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def micro_time(moment):
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    """A Kubernetes Time or MicroTime (or what the Python client makes of it) as an aware datetime; None if unset."""
    if not text:
        return None
    if isinstance(text, datetime.datetime):
        return text if text.tzinfo else text.replace(tzinfo=datetime.timezone.utc)
    value = str(text).strip().replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def process_start(pid):
    """The start time (clock ticks since boot) of process ``pid``, or None when it does not exist.

    With the pid it identifies one process for good: a pid reused later has another start time.
    """
    try:
        with open("/proc/%d/stat" % int(pid)) as handle:
            stat = handle.read()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 of proc(5), counted after "pid (comm)"
    except (IndexError, ValueError):
        return None


def process_alive(pid, start):
    """True while the process ``pid`` that started at ``start`` runs (a zombie counts as ended)."""
    if not pid or process_start(pid) != start:
        return False
    try:
        with open("/proc/%d/stat" % int(pid)) as handle:
            stat = handle.read()
        return stat[stat.rfind(")") + 2:].split()[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return False


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
        return int(stat[stat.rfind(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _is_playbook(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    names = [os.path.basename(arg.decode("utf-8", "replace")) for arg in argv[:3]]
    return any(name.startswith(PLAYBOOK_COMMANDS) for name in names)


def playbook_process(start=None):
    """The pid of the ``ansible-playbook`` process this module runs under, or None.

    Ansible forks a worker per task from the main process; both carry the same command line, so the
    outermost of the consecutive ``ansible-playbook`` ancestors is the run itself.
    """
    pid, found = start or os.getppid(), None
    for _depth in range(64):
        if pid <= 1:
            break
        if _is_playbook(pid):
            found = pid
        elif found:
            break
        pid = _parent(pid)
    return found


# -- validation ------------------------------------------------------------------------------------------------
def invalid_params(params):
    """Every problem with the options, before any API request (a list, empty when they are valid)."""
    out = [name_problem("namespace", params.get("namespace"), label=True), name_problem("name", params.get("name"))]
    holder = params.get("holder")
    if not isinstance(holder, str) or not holder.strip():
        out.append("holder must be a non-empty string that identifies this run (for example its run id)")
    elif len(holder) > 253:
        out.append("holder is %d characters long, over the limit of 253" % len(holder))
    duration = params.get("lease_duration")
    if duration is not None and not MIN_DURATION <= duration <= MAX_DURATION:
        out.append("lease_duration must be between %d and %d seconds, got %s" % (MIN_DURATION, MAX_DURATION, duration))
    wait = params.get("wait_timeout")
    if wait is not None and wait < 0:
        out.append("wait_timeout must be 0 or more seconds, got %s" % wait)
    owner = params.get("owner_pid")
    if owner is not None and (owner <= 1 or process_start(owner) is None):
        out.append("owner_pid %s is not a running process" % owner)
    return [problem for problem in out if problem]


# -- the Lease -------------------------------------------------------------------------------------------------
class Conflict(Exception):
    """Somebody else wrote the Lease between our read and our write."""


def _annotations(lease):
    return (lease.get("metadata") or {}).get("annotations") or {}


def facts(lease, now=None):
    """What the module returns about a Lease."""
    spec = lease.get("spec") or {}
    notes = _annotations(lease)
    renewed = parse_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    expires_in = None
    if spec.get("holderIdentity") and renewed and duration:
        expires_in = round(duration - ((now or _now()) - renewed).total_seconds(), 1)
    return {
        "name": lease["metadata"]["name"],
        "namespace": lease["metadata"].get("namespace"),
        "holder": spec.get("holderIdentity") or None,
        "operation": notes.get(ANNOTATION + "operation") or None,
        "controller": notes.get(ANNOTATION + "controller") or None,
        "acquired_at": spec.get("acquireTime") or None,
        "renewed_at": spec.get("renewTime") or None,
        "duration_seconds": duration,
        "expires_in_seconds": expires_in,
        "transitions": spec.get("leaseTransitions") or 0,
    }


def _owner(lease):
    """(pid, start) of the holder's owner process as annotated, or (None, None)."""
    text = _annotations(lease).get(ANNOTATION + "owner") or ""
    try:
        pid, start = text.split(":", 1)
        return int(pid), int(start)
    except ValueError:
        return None, None


def stale_reason(lease, now=None):
    """Why the Lease's holder no longer holds it (a phrase), or None while it does."""
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return "released"
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    if renewed is None:
        return "it was never renewed"
    age = ((now or _now()) - renewed).total_seconds()
    if age > duration:
        return "not renewed for %d s (its lease lasts %d s)" % (age, duration)
    notes = _annotations(lease)
    if notes.get(ANNOTATION + "controller") == socket.gethostname():
        pid, start = _owner(lease)
        if pid and not process_alive(pid, start):
            return "its process %d on this controller has ended" % pid
    return None


class Leases:
    """Lease reads and resourceVersion-guarded writes through a :class:`k8s.Kube`."""

    def __init__(self, kube, namespace, name):
        self.kube, self.namespace, self.name = kube, namespace, name

    @property
    def where(self):
        return "Lease %s/%s" % (self.namespace, self.name)

    def get(self):
        return self.kube.get(API_VERSION, KIND, self.name, self.namespace)

    def _write(self, verb, body):
        res = self.kube.resource(API_VERSION, KIND)
        call = res.create if verb == "create" else res.replace
        try:
            obj = with_retries(call, body=body, namespace=self.namespace)
        except (ApiException, DynamicApiError) as exc:
            if api_status(exc) == 409:
                raise Conflict(api_message(exc))
            raise K8sError("cannot %s %s: %s" % (verb, self.where, api_message(exc)))
        return obj.to_dict() if hasattr(obj, "to_dict") else obj

    def create(self, spec, annotations):
        body = {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": self.name, "namespace": self.namespace, "annotations": annotations,
                             "labels": {"app.kubernetes.io/managed-by": "stateful.rollback"}},
                "spec": spec}
        return self._write("create", body)

    def replace(self, lease, spec=None, annotations=None):
        """Write ``lease`` back with ``spec``/``annotations`` merged in, guarded by its resourceVersion."""
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": dict(lease["metadata"]),
                "spec": dict(lease.get("spec") or {}, **(spec or {}))}
        notes = dict(_annotations(lease))
        for key, value in (annotations or {}).items():
            if value is None:
                notes.pop(key, None)
            else:
                notes[key] = value
        body["metadata"]["annotations"] = notes
        return self._write("replace", body)


def _holder_annotations(params, owner, keeper_pid=None):
    return {
        ANNOTATION + "operation": params.get("operation") or "",
        ANNOTATION + "controller": socket.gethostname(),
        ANNOTATION + "owner": "%d:%d" % owner if owner else None,
        ANNOTATION + "keeper": str(keeper_pid) if keeper_pid else None,
    }


def _held_message(leases, lease, waited):
    info = facts(lease)
    parts = ["run %s" % info["holder"]]
    if info["operation"]:
        parts.append("doing %s" % info["operation"])
    if info["controller"]:
        parts.append("on %s" % info["controller"])
    if info["acquired_at"]:
        parts.append("since %s" % info["acquired_at"])
    expiry = info["expires_in_seconds"]
    return ("%s is held by %s; another deploy, rollback or drill of this target is running, so this run changes nothing%s. "
            "Wait for it to end, or, if that run is gone, its lease expires in %s s unless renewed"
            % (leases.where, ", ".join(parts), " (waited %d s)" % waited if waited else "",
               "%d" % max(expiry, 0) if expiry is not None else "?"))


def acquire(kube, params, check_mode=False):
    """Take (or keep) the Lease for ``params['holder']``; the module's result."""
    leases = Leases(kube, params["namespace"], params["name"])
    holder, duration = params["holder"], params["lease_duration"]
    owner = _owner_of(params)
    started = time.monotonic()
    deadline = started + (params.get("wait_timeout") or 0)
    while True:
        lease = leases.get()
        now = _now()
        before = facts(lease, now) if lease else None
        ours = lease is not None and _held_by(lease, holder, owner)
        if lease is None or ours or stale_reason(lease, now):
            previous = None if (lease is None or ours or not before["holder"]) else {
                "holder": before["holder"], "operation": before["operation"], "why": stale_reason(lease, now)}
            spec = {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": micro_time(now)}
            if not ours:
                spec["acquireTime"] = micro_time(now)
                spec["leaseTransitions"] = ((lease.get("spec") or {}).get("leaseTransitions") or 0) + 1 if lease else 0
            result = {"changed": not ours, "acquired": True, "previous_holder": previous,
                      "waited_seconds": round(time.monotonic() - started, 1), "keeper": None}
            if check_mode:
                result["lease"] = before
                result["diff"] = {"before": _diff_view(before), "after": {"holder": holder, "operation": params.get("operation")}}
                return result
            keeper = _running_keeper(lease, holder) if ours else None
            try:
                if lease is None:
                    lease = leases.create(spec, _strip(_holder_annotations(params, owner)))
                else:
                    lease = leases.replace(lease, spec, _holder_annotations(params, owner, keeper))
            except Conflict:
                continue  # another run wrote it first: read again
            if params.get("keep_alive") and owner and not keeper:
                keeper = spawn_keeper(params, owner)  # its first renewal annotates the Lease with its pid
                lease = leases.get() or lease
            result["keeper"] = {"pid": keeper, "owner_pid": owner[0]} if keeper else None
            result["lease"] = facts(lease)
            result["diff"] = {"before": _diff_view(before), "after": _diff_view(result["lease"])}
            if params.get("keep_alive") and not owner:
                result["warnings"] = ["no ansible-playbook process was found above this module and owner_pid is not set: "
                                      "nothing renews the lease, it expires %d s after this task" % duration]
            return result
        if time.monotonic() >= deadline:
            raise K8sError(_held_message(leases, lease, time.monotonic() - started), lease=facts(lease), acquired=False)
        time.sleep(min(2.0, max(0.2, deadline - time.monotonic())))


def release(kube, params, check_mode=False):
    """Give the Lease back if ``params['holder']`` holds it; the module's result."""
    leases = Leases(kube, params["namespace"], params["name"])
    for _attempt in range(10):
        lease = leases.get()
        before = facts(lease) if lease else None
        if lease is None or not _held_by(lease, params["holder"], _owner_of(params)):
            return {"changed": False, "acquired": False, "lease": before, "previous_holder": None, "keeper": None,
                    "waited_seconds": 0.0, "diff": {"before": _diff_view(before), "after": _diff_view(before)}}
        after = dict(before, holder=None, operation=None)
        if check_mode:
            return {"changed": True, "acquired": False, "lease": before, "previous_holder": None, "keeper": None,
                    "waited_seconds": 0.0, "diff": {"before": _diff_view(before), "after": _diff_view(after)}}
        try:
            lease = _give_back(leases, lease)
        except Conflict:
            continue  # the keeper renewed it meanwhile: read again
        return {"changed": True, "acquired": False, "lease": facts(lease), "previous_holder": None, "keeper": None,
                "waited_seconds": 0.0, "diff": {"before": _diff_view(before), "after": _diff_view(facts(lease))}}
    raise K8sError("cannot release %s: it kept changing under this run (10 conflicts in a row)" % leases.where)


def _give_back(leases, lease):
    """The Lease with no holder (kept, so that its transitions count goes on)."""
    return leases.replace(lease, {"holderIdentity": None, "renewTime": None, "acquireTime": None},
                          {ANNOTATION + "operation": None, ANNOTATION + "owner": None, ANNOTATION + "keeper": None})


def _held_by(lease, holder, owner):
    """Whether ``holder`` (run by the process ``owner`` on this controller, when known) holds ``lease``.

    Two runs can carry the same holder string (run ids made of the second they started): the owner process
    annotated on the Lease tells them apart, so the second is refused instead of taking the first one's lease.
    """
    if (lease.get("spec") or {}).get("holderIdentity") != holder:
        return False
    annotated = _owner(lease)
    if not owner or annotated == (None, None):
        return True
    return annotated == tuple(owner) and _annotations(lease).get(ANNOTATION + "controller") == socket.gethostname()


def _strip(mapping):
    return dict((key, value) for key, value in mapping.items() if value is not None)


def _diff_view(info):
    return {"holder": (info or {}).get("holder"), "operation": (info or {}).get("operation")}


def _owner_of(params):
    if not params.get("keep_alive"):
        return None
    pid = params.get("owner_pid") or playbook_process()
    start = process_start(pid) if pid else None
    return (pid, start) if start is not None else None


def _running_keeper(lease, holder):
    """The pid of a keeper this controller already runs for ``holder``, or None."""
    if _annotations(lease).get(ANNOTATION + "controller") != socket.gethostname():
        return None
    try:
        pid = int(_annotations(lease).get(ANNOTATION + "keeper") or 0)
    except ValueError:
        return None
    return pid if pid and process_start(pid) is not None and _is_keeper(pid) else None


def _is_keeper(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return __name__.encode() in handle.read()
    except OSError:
        return False


def run(kube, params, check_mode=False):
    if params["state"] == "released":
        return release(kube, params, check_mode)
    return acquire(kube, params, check_mode)


# -- the keeper ------------------------------------------------------------------------------------------------
def _import_root():
    """The sys.path entry our package came from: a directory, or the zip Ansible ships modules in."""
    here = os.path.abspath(__file__)
    marker = os.sep + "ansible_collections" + os.sep
    return here[:here.rindex(marker)]


def spawn_keeper(params, owner):
    """Start the keeper (detached, in its own session) and return its pid once it has started renewing."""
    root, copy = _import_root(), None
    if os.path.isfile(root):
        # Ansible deletes its module payload when the task ends: the keeper imports from a private copy.
        handle, copy = tempfile.mkstemp(prefix="stateful-rollback-lease-", suffix=".zip")
        os.close(handle)
        shutil.copyfile(root, copy)
        root = copy
    settings = dict(params, owner=list(owner), copy=copy)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in sys.path if p and p != _import_root()]))
    proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd="/", start_new_session=True, close_fds=True)
    try:
        proc.stdin.write(json.dumps(settings).encode())
        proc.stdin.close()
        line = proc.stdout.readline().decode("utf-8", "replace").strip()
    finally:
        proc.stdout.close()
    if line != "ready":
        if copy and os.path.exists(copy):
            os.unlink(copy)
        raise K8sError("the lease keeper did not start: %s" % (line or "it exited with %s" % proc.wait()))
    return proc.pid


def keep(settings, out=None):
    """The keeper's loop: renew the Lease every third of its duration while the owner process runs; give it back
    when the owner ends; stop when somebody else holds it or it could not be renewed for a whole duration."""
    kube = connect(settings)
    leases = Leases(kube, settings["namespace"], settings["name"])
    holder, duration = settings["holder"], settings["lease_duration"]
    owner_pid, owner_start = settings["owner"]
    interval = max(1.0, duration / 3.0)
    last_renewal = time.monotonic()
    next_renewal = last_renewal  # a first renewal at once: proves the keeper can write before the module returns
    first = True
    while True:
        if not process_alive(owner_pid, owner_start):
            _give_back_if_ours(leases, holder)
            return "owner ended"
        if time.monotonic() >= next_renewal:
            outcome = _renew(leases, holder, duration)
            if outcome == "renewed":
                last_renewal = time.monotonic()
                next_renewal = last_renewal + interval
            elif outcome == "lost":
                return "no longer the holder"
            else:
                next_renewal = time.monotonic() + 1.0
                if time.monotonic() - last_renewal > duration:
                    return "not renewed for a whole lease duration"
            if first and out is not None:
                out.write("ready\n" if outcome == "renewed" else "%s\n" % outcome)
                out.flush()
                out.close()
                first = False
                if outcome != "renewed":
                    return outcome
        time.sleep(KEEPER_POLL_SECONDS)


def _renew(leases, holder, duration):
    """'renewed', 'lost' (somebody else holds it, or it is gone) or an error text (retried)."""
    try:
        lease = leases.get()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != holder:
            return "lost"
        leases.replace(lease, {"renewTime": micro_time(_now()), "leaseDurationSeconds": duration},
                       {ANNOTATION + "keeper": str(os.getpid())})
        return "renewed"
    except Conflict:
        return "conflict"
    except K8sError as exc:
        return exc.msg
    except Exception as exc:  # pylint: disable=broad-except
        return "transient error: %s" % exc if is_transient(exc) else "error: %s" % exc


def _give_back_if_ours(leases, holder):
    for _attempt in range(5):
        try:
            lease = leases.get()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != holder:
                return
            _give_back(leases, lease)
            return
        except Conflict:
            continue
        except Exception:  # pylint: disable=broad-except
            time.sleep(1.0)


def _keeper_main():
    settings = json.loads(sys.stdin.read())
    sys.stdin.close()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    out = sys.stdout
    try:
        keep(settings, out)
    except Exception as exc:  # pylint: disable=broad-except
        if not out.closed:
            out.write("error: %s\n" % exc)
            out.flush()
    finally:
        if settings.get("copy") and os.path.exists(settings["copy"]):
            os.unlink(settings["copy"])


if __name__ == "__main__":
    _keeper_main()
