# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AnsibleModule construction that turns every bad argument into a clear failure.

ansible-core's type checks raise instead of reporting for some inputs (a list
given to an ``int`` option is read by ``decimal.Decimal`` as a
(sign, digits, exponent) tuple and can raise OverflowError; NaN or infinity
given to an ``int`` option raises too), or report without naming the option
(a string that is not a dict given to an option with suboptions). The module
would die with a traceback or an anonymous message; here it fails with the
option's name instead. NaN and infinity are refused for ``float`` options.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import sys
import time

from ansible.module_utils import basic
from ansible.module_utils.common.validation import check_type_dict, check_type_list

_SCALAR_TYPES = ("int", "float", "bool", "str", "path", "raw", "bytes", "bits")


def _non_finite(value):
    """NaN or infinity, as a float or as text ansible-core would read as one ("inf", "NaN", "1e999")."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return False
    return isinstance(value, float) and not math.isfinite(value)


def _not_a_dict(value):
    """True when ``value`` cannot be read as a dict (a mapping, or a JSON / key=value string)."""
    if isinstance(value, dict):
        return False
    if isinstance(value, str):
        try:
            check_type_dict(value)
        except (TypeError, ValueError):
            return True
        return False
    return True


def _shape_problems(spec, params, prefix=""):
    """Values ansible-core rejects without naming the option, or with a traceback (never a value, except a number).

    An ``int`` option given NaN or infinity (core raises OverflowError or ValueError), and an option with
    suboptions (``dict``, or ``list`` of ``dict``) given something that is not a dict (core reports
    "dictionary requested" without the option's name, or raises TypeError).
    """
    out = []
    for name, option in spec.items():
        keys = [name] + list(option.get("aliases") or [])
        value = next((params[k] for k in keys if k in params), None)
        kind = option.get("type", "str")
        suboptions = option.get("options")
        if value is None:
            continue
        if kind == "int" and _non_finite(value):
            out.append("%s%s must be an int, got %s" % (prefix, name, value if isinstance(value, float) else repr(value)[:40]))
        elif kind == "dict" and suboptions:
            if _not_a_dict(value):
                out.append("%s%s must be a dictionary, got a %s" % (prefix, name, type(value).__name__))
            elif isinstance(value, dict):
                out.extend(_shape_problems(suboptions, value, "%s%s." % (prefix, name)))
        elif kind == "list" and suboptions:
            try:
                items = check_type_list(value)
            except (TypeError, ValueError):
                out.append("%s%s must be a list of dictionaries, got a %s" % (prefix, name, type(value).__name__))
                continue
            for index, item in enumerate(items):
                if item is not None and _not_a_dict(item):
                    out.append("%s%s[%d] must be a dictionary, got a %s" % (prefix, name, index, type(item).__name__))
                elif isinstance(item, dict):
                    out.extend(_shape_problems(suboptions, item, "%s%s[%d]." % (prefix, name, index)))
    return out


def _non_finite_floats(spec, params, prefix=""):
    """``float`` options (and suboptions) whose value is NaN or infinite."""
    out = []
    for name, option in spec.items():
        value = params.get(name)
        kind = option.get("type", "str")
        if kind == "float" and _non_finite(value):
            out.append("%s%s must be a finite number, got %s" % (prefix, name, value))
        elif option.get("options") and isinstance(value, dict):
            out.extend(_non_finite_floats(option["options"], value, "%s%s." % (prefix, name)))
        elif option.get("options") and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    out.extend(_non_finite_floats(option["options"], item, "%s%s[%d]." % (prefix, name, index)))
    return out


def _fail(msg):
    # No AnsibleModule exists to call fail_json on: answer as fail_json would.
    print(json.dumps({"failed": True, "msg": msg}))  # pylint: disable=ansible-bad-function
    sys.exit(1)  # pylint: disable=ansible-bad-function


def _raw_params():
    try:
        params = basic._load_params()  # pylint: disable=protected-access
    except (SystemExit, Exception):  # pylint: disable=broad-except
        params = {}
    return params if isinstance(params, dict) else {}


def _misfits(spec, params, prefix=""):
    """Options whose value has the wrong shape for their scalar type (names only, never values)."""
    out = []
    for name, option in spec.items():
        keys = [name] + list(option.get("aliases") or [])
        value = next((params[k] for k in keys if k in params), None)
        kind = option.get("type", "str")
        if value is None:
            continue
        if kind in _SCALAR_TYPES and isinstance(value, (list, dict)):
            out.append("%s%s must be %s %s, got a %s" % (prefix, name, "an" if kind == "int" else "a", kind, type(value).__name__))
        elif kind == "list" and option.get("options") and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    out.extend(_misfits(option["options"], item, "%s%s[%d]." % (prefix, name, index)))
    return out


def ansible_module(**kwargs):
    """AnsibleModule(**kwargs), or a JSON failure naming the offending option."""
    spec = kwargs.get("argument_spec", {})
    problems = _shape_problems(spec, _raw_params())
    if problems:
        _fail("; ".join(problems))
    try:
        module = basic.AnsibleModule(**kwargs)
    except (ArithmeticError, TypeError, ValueError) as exc:
        problems = _misfits(spec, _raw_params())
        _fail("; ".join(problems) if problems else "invalid module arguments: %s" % type(exc).__name__)
    problems = _non_finite_floats(spec, module.params)
    if problems:
        module.fail_json(msg="; ".join(problems))
    return module


def progress_writer(module, on_event=None):
    """A callback that appends each progress event (plus ``elapsed_seconds``) as a JSON line to the
    module's ``progress_log`` option, when set, and then hands it to ``on_event`` (for a module log line).

    A progress log that cannot be written is a warning, never a failure: the work itself goes on.
    """
    path = module.params.get("progress_log")
    started = time.monotonic()

    def emit(event):
        event = dict(event, elapsed_seconds=round(time.monotonic() - started, 3))
        if event.get("rows") and event["elapsed_seconds"] and "rows_per_second" not in event:
            event["rows_per_second"] = int(event["rows"] / event["elapsed_seconds"])
        if path:
            try:
                with open(path, "a") as handle:
                    handle.write(json.dumps(event, sort_keys=True, default=str) + "\n")
            except OSError as exc:
                module.warn("cannot append to progress_log %s: %s" % (path, exc))
        if on_event is not None:
            on_event(event)

    return emit
