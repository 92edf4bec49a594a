# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes access for stateful.rollback modules.

Authentication and configuration are kubernetes.core's (same options, same
``K8S_AUTH_*`` environment variables, same client), wrapped here so that the
rest of the collection works with plain dicts on a ``kubernetes.dynamic``
client, with retries of transient API errors and polling helpers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import re
import time
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import requires as _k8s_requires
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException

    HAS_K8S_CORE = True
    K8S_CORE_IMP_ERR = None
except ImportError:  # pragma: no cover - kubernetes.core is a declared dependency
    HAS_K8S_CORE = False
    K8S_CORE_IMP_ERR = traceback.format_exc()
    AUTH_ARG_SPEC = {}

    class CoreException(Exception):  # type: ignore[no-redef]
        pass

try:
    import urllib3
    from kubernetes.client.rest import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

    HAS_KUBERNETES = True
    KUBERNETES_IMP_ERR = None
except ImportError:  # pragma: no cover - checked by the modules with missing_required_lib
    HAS_KUBERNETES = False
    KUBERNETES_IMP_ERR = traceback.format_exc()

    class ApiException(Exception):  # type: ignore[no-redef]
        status = 0

    class DynamicApiError(Exception):  # type: ignore[no-redef]
        status = 0

    class ResourceNotFoundError(Exception):  # type: ignore[no-redef]
        pass


RETRY_ATTEMPTS = 5
RETRY_BASE_DELAY = 0.2
TRANSIENT_CODES = (429, 500, 502, 503, 504)


class K8sError(Exception):
    """A failure with a message for the user and extra result keys."""

    def __init__(self, msg, **context):
        super(K8sError, self).__init__(msg)
        self.msg = msg
        self.context = context


def k8s_auth_argument_spec():
    """kubernetes.core's authentication options (documented by kubernetes.core.k8s_auth_options)."""
    return copy.deepcopy(AUTH_ARG_SPEC)


class _ModuleShim:
    """The few attributes kubernetes.core's get_api_client reads from its module."""

    server_side_dry_run = False

    def __init__(self, params):
        self.params = params

    def requires(self, dependency, minimum=None, reason=None):
        try:
            _k8s_requires(dependency, minimum, reason=reason)
        except Exception as exc:  # pylint: disable=broad-except
            raise K8sError(str(exc))


def api_status(exc):
    return getattr(exc, "status", None)


def api_message(exc):
    """The Status message of an API error, else its text."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(exc)
        except (ValueError, AttributeError, TypeError):
            pass
    summary = getattr(exc, "summary", None)
    if callable(summary):
        try:
            return summary()
        except Exception:  # pylint: disable=broad-except
            pass
    return str(exc).strip()


def is_transient(exc):
    if isinstance(exc, (ApiException, DynamicApiError)):
        return api_status(exc) in TRANSIENT_CODES
    if HAS_KUBERNETES and isinstance(exc, (urllib3.exceptions.HTTPError,)):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def with_retries(func, *args, **kwargs):
    """Call func, retrying transient API errors (5xx, 429, connection errors) with exponential backoff."""
    delay = RETRY_BASE_DELAY
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            if attempt == RETRY_ATTEMPTS - 1 or not is_transient(exc):
                raise
            time.sleep(delay)
            delay *= 2
    return None  # pragma: no cover


def _to_dict(obj):
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return obj


class Kube:
    """Dict-in, dict-out access to the API through a kubernetes.dynamic client."""

    def __init__(self, dynamic_client):
        self.client = dynamic_client
        self._resources = {}

    def resource(self, api_version, kind):
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = with_retries(self.client.resources.get, api_version=api_version, kind=kind)
        return self._resources[key]

    def served(self, api_version, kind):
        """True when the API serves ``kind`` in ``api_version`` right now.

        The dynamic client may answer from a discovery cache file, so a kind it
        knows is confirmed with a live read of the group-version's resource list.
        """
        try:
            self.resource(api_version, kind)
        except ResourceNotFoundError:
            return False
        path = "/api/%s" % api_version if "/" not in api_version else "/apis/%s" % api_version
        try:
            doc = _to_dict(with_retries(self.client.request, "get", path))
        except (ApiException, DynamicApiError) as exc:
            if api_status(exc) == 404:
                self._forget(api_version, kind)
                return False
            return True  # cannot tell (e.g. forbidden): let the real call report it
        kinds = [r.get("kind") for r in (doc or {}).get("resources") or [] if isinstance(r, dict)]
        if kinds and kind not in kinds:
            self._forget(api_version, kind)
            return False
        return True

    def _forget(self, api_version, kind):
        self._resources.pop((api_version, kind), None)
        invalidate = getattr(self.client, "invalidate_cache", None) or getattr(self.client.resources, "invalidate_cache", None)
        if callable(invalidate):
            try:
                invalidate()
            except Exception:  # pylint: disable=broad-except
                pass

    def get(self, api_version, kind, name, namespace=None):
        res = self.resource(api_version, kind)
        try:
            return _to_dict(with_retries(res.get, name=name, namespace=namespace))
        except (ApiException, DynamicApiError) as exc:
            if api_status(exc) == 404:
                return None
            raise K8sError("cannot read %s %s: %s" % (kind, _qualified(namespace, name), api_message(exc)))

    def list(self, api_version, kind, namespace=None, label_selector=None, field_selector=None):
        res = self.resource(api_version, kind)
        params = {}
        if label_selector:
            params["label_selector"] = label_selector
        if field_selector:
            params["field_selector"] = field_selector
        try:
            result = _to_dict(with_retries(res.get, namespace=namespace, **params))
        except (ApiException, DynamicApiError) as exc:
            raise K8sError("cannot list %s in %s: %s" % (kind, namespace or "all namespaces", api_message(exc)))
        return result.get("items") or []

    def create(self, api_version, kind, body, namespace=None):
        res = self.resource(api_version, kind)
        name = body.get("metadata", {}).get("name")
        attempts = []

        def attempt():
            attempts.append(1)
            return res.create(body=body, namespace=namespace)
        try:
            return _to_dict(with_retries(attempt))
        except (ApiException, DynamicApiError) as exc:
            if api_status(exc) == 409 and len(attempts) > 1 and name:
                # An earlier attempt reached the server although its answer was lost: the object is ours.
                found = self.get(api_version, kind, name, namespace)
                if found is not None:
                    return found
            raise K8sError("cannot create %s %s: %s" % (kind, _qualified(namespace, name), api_message(exc)))

    def patch(self, api_version, kind, name, patch, namespace=None):
        res = self.resource(api_version, kind)
        try:
            return _to_dict(with_retries(res.patch, body=patch, name=name, namespace=namespace,
                                         content_type="application/merge-patch+json"))
        except (ApiException, DynamicApiError) as exc:
            raise K8sError("cannot patch %s %s: %s" % (kind, _qualified(namespace, name), api_message(exc)))

    def delete(self, api_version, kind, name, namespace=None):
        """Delete; True when a delete was sent, False when the object was already gone."""
        res = self.resource(api_version, kind)
        try:
            with_retries(res.delete, name=name, namespace=namespace)
            return True
        except (ApiException, DynamicApiError) as exc:
            if api_status(exc) == 404:
                return False
            raise K8sError("cannot delete %s %s: %s" % (kind, _qualified(namespace, name), api_message(exc)))


def _qualified(namespace, name):
    return "%s/%s" % (namespace, name) if namespace else str(name)


def connect(params):
    """A Kube for the kubernetes.core authentication options in params."""
    if not HAS_K8S_CORE:
        raise K8sError("cannot import kubernetes.core (a dependency of stateful.rollback)", exception=K8S_CORE_IMP_ERR)
    try:
        k8s_client = get_api_client(_ModuleShim(params))
    except CoreException as exc:
        raise K8sError(str(exc))
    except Exception as exc:  # pylint: disable=broad-except
        raise K8sError("cannot create a Kubernetes API client: %s" % exc)
    return Kube(k8s_client.client)


def run_module(module, action, find_problems):
    """The body of every Kubernetes module's main(): the kubernetes library present, the names and options
    checked (``find_problems(params)`` -> messages) before any API request, then ``action(Kube)`` -> result;
    a K8sError fails the task with its message and context; ``diff`` is returned only in diff mode, and
    ``warnings`` become the task's warnings."""
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMP_ERR)
    problems = find_problems(module.params)
    if problems:
        # Before any API request: a name the API server would refuse changes nothing.
        module.fail_json(msg="; ".join(problems))
    try:
        result = action(connect(module.params))
    except K8sError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    if not module._diff:  # pylint: disable=protected-access
        result.pop("diff", None)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


def wait_for(fetch, done, timeout, interval=0.5):
    """Poll fetch() until done(value) is true; return (ok, last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return True, value
        if time.monotonic() >= deadline:
            return False, value
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18,
    "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60, "m": 0.001,
}


def parse_quantity(value):
    """Bytes of a Kubernetes quantity ('1Gi', '500M', 1073741824); None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise K8sError("invalid quantity %r" % (value,))
    return int(float(match.group(1)) * _SUFFIXES[match.group(2)])
