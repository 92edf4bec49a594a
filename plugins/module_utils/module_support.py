# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AnsibleModule construction that turns every bad argument into a clear failure.

ansible-core's type checks raise instead of reporting for some inputs (a list
given to an ``int`` option is read by ``decimal.Decimal`` as a
(sign, digits, exponent) tuple and can raise OverflowError). The module would
die with a traceback; here it fails with the option's name instead.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import sys
import time

from ansible.module_utils import basic

_SCALAR_TYPES = ("int", "float", "bool", "str", "path", "raw", "bytes", "bits")


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
    try:
        return basic.AnsibleModule(**kwargs)
    except (ArithmeticError, TypeError, ValueError) as exc:
        try:
            params = basic._load_params()  # pylint: disable=protected-access
        except (SystemExit, Exception):  # pylint: disable=broad-except
            params = {}
        problems = _misfits(kwargs.get("argument_spec", {}), params if isinstance(params, dict) else {})
        msg = "; ".join(problems) if problems else "invalid module arguments: %s" % type(exc).__name__
        # No AnsibleModule exists to call fail_json on: answer as fail_json would.
        print(json.dumps({"failed": True, "msg": msg}))  # pylint: disable=ansible-bad-function
        sys.exit(1)  # pylint: disable=ansible-bad-function


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
