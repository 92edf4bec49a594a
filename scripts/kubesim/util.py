"""Helpers: API errors as Status objects, selectors, patches, quantities, times."""

from __future__ import annotations

import copy
import datetime
import re

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    """An error answered as a ``Status`` object."""

    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self):
        return status_body(self.code, self.message, self.reason, self.details)


def status_body(code, message, reason=None, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 300 else "Success",
            "message": message, "reason": reason or REASONS.get(code, ""), "code": code}
    if details:
        body["details"] = details
    if code < 300:
        body.pop("reason")
        body.pop("message")
    return body


def not_found(res, name):
    return ApiError(404, '%s "%s" not found' % (_qualified(res), name), "NotFound",
                    {"name": name, "group": res.group, "kind": res.plural})


def _qualified(res):
    return "%s.%s" % (res.plural, res.group) if res.group else res.plural


def already_exists(res, name):
    return ApiError(409, '%s "%s" already exists' % (_qualified(res), name), "AlreadyExists",
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res, name):
    return ApiError(409, 'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply your '
                         'changes to the latest version and try again' % (_qualified(res), name), "Conflict",
                    {"name": name, "group": res.group, "kind": res.plural})


def invalid(res, name, message, field=None):
    details = {"name": name, "group": res.group, "kind": res.kind}
    if field:
        details["causes"] = [{"reason": "FieldValueInvalid", "message": message, "field": field}]
    return ApiError(422, '%s "%s" is invalid: %s' % (res.kind, name, message), "Invalid", details)


# -- time ---------------------------------------------------------------------------
def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- quantities ------------------------------------------------------------------------
_SUFFIXES = {"": 1, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18,
             "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60, "m": 0.001}
_QUANTITY = re.compile(r"^\s*([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_quantity(value):
    """'1Gi' -> 1073741824 (an int, rounded up); raises ValueError."""
    if isinstance(value, (int, float)):
        return int(value)
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError("invalid quantity %r" % (value,))
    number = float(match.group(1)) * _SUFFIXES[match.group(2)]
    return int(number) if number == int(number) else int(number) + 1


# -- label selectors -----------------------------------------------------------------
_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_RE_SET = re.compile(r"^\s*(%s)\s+(in|notin)\s+\(([^)]*)\)\s*$" % _KEY)
_RE_EQ = re.compile(r"^\s*(%s)\s*(==|=|!=)\s*(%s)\s*$" % (_KEY, _VALUE))
_RE_EXISTS = re.compile(r"^\s*(!?)\s*(%s)\s*$" % _KEY)


def _split_top(text):
    parts, depth, cur = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += char
    parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_label_selector(text):
    """Parse a label selector into a list of (key, op, values); raises ApiError(400)."""
    reqs = []
    for part in _split_top(text or ""):
        match = _RE_SET.match(part)
        if match:
            values = [v.strip() for v in match.group(3).split(",") if v.strip()]
            reqs.append((match.group(1), match.group(2), values))
            continue
        match = _RE_EQ.match(part)
        if match:
            reqs.append((match.group(1), "!=" if match.group(2) == "!=" else "=", [match.group(3)]))
            continue
        match = _RE_EXISTS.match(part)
        if match:
            reqs.append((match.group(2), "!exists" if match.group(1) else "exists", []))
            continue
        raise ApiError(400, "unable to parse requirement: found '%s', expected a valid label selector" % part.strip())
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        if op == "=" and labels.get(key) != values[0]:
            return False
        if op == "!=" and present and labels[key] == values[0]:
            return False
        if op == "in" and (not present or labels[key] not in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


def selector_to_string(selector):
    """A LabelSelector object (matchLabels/matchExpressions) as a selector string."""
    selector = selector or {}
    parts = ["%s=%s" % (k, v) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator")
        if op in ("In", "NotIn"):
            parts.append("%s %s (%s)" % (expr["key"], op.lower(), ",".join(expr.get("values") or [])))
        elif op == "Exists":
            parts.append(expr["key"])
        elif op == "DoesNotExist":
            parts.append("!" + expr["key"])
    return ",".join(parts)


# -- field selectors -----------------------------------------------------------------
def parse_field_selector(text):
    reqs = []
    for part in _split_top(text or ""):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise ApiError(400, "invalid selector: '%s'; can't understand '%s'" % (text, part))
        reqs.append((match.group(1), match.group(2) == "!=", match.group(3)))
    return reqs


def field_value(obj, path):
    cur = obj
    for key in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(key)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs, obj):
    for path, negate, value in reqs:
        if (field_value(obj, path) == value) == negate:
            return False
    return True


# -- patches -----------------------------------------------------------------------
def merge_patch(target, patch, strategic=False):
    """RFC 7386 JSON merge patch; ``strategic`` drops ``$``-directives (lists are replaced)."""
    if not isinstance(patch, dict):
        return _strip_directives(copy.deepcopy(patch)) if strategic else copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, strategic)
    return result


def _strip_directives(value):
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    return value


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "invalid JSON pointer %r" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc, parts, path):
    cur = doc
    for part in parts[:-1]:
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "the server rejected our request: path %s does not exist" % path)
    return cur


def _json_patch_op(doc, operation):
    op = operation.get("op")
    path = operation.get("path", "")
    parts = _pointer(path)
    if op in ("move", "copy"):
        value = json_pointer_get(doc, operation.get("from", ""))
        if op == "move":
            doc = _json_patch_op(doc, {"op": "remove", "path": operation.get("from", "")})
        return _json_patch_op(doc, {"op": "add", "path": path, "value": copy.deepcopy(value)})
    if op == "test":
        if json_pointer_get(doc, path) != operation.get("value"):
            raise ApiError(422, "testing value %s failed" % path)
        return doc
    if not parts:
        if op in ("add", "replace"):
            return copy.deepcopy(operation.get("value"))
        raise ApiError(422, "cannot remove the document root")
    parent = _container(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else _index(last, path)
        if op == "add":
            if index > len(parent):
                raise ApiError(422, "index out of range: %s" % path)
            parent.insert(index, copy.deepcopy(operation.get("value")))
        elif index >= len(parent):
            raise ApiError(422, "index out of range: %s" % path)
        elif op == "remove":
            del parent[index]
        elif op == "replace":
            parent[index] = copy.deepcopy(operation.get("value"))
        else:
            raise ApiError(422, "unknown JSON patch operation %r" % op)
    elif isinstance(parent, dict):
        if op == "add":
            parent[last] = copy.deepcopy(operation.get("value"))
        elif last not in parent:
            raise ApiError(422, "the server rejected our request: path %s does not exist" % path)
        elif op == "remove":
            del parent[last]
        elif op == "replace":
            parent[last] = copy.deepcopy(operation.get("value"))
        else:
            raise ApiError(422, "unknown JSON patch operation %r" % op)
    else:
        raise ApiError(422, "path %s does not exist" % path)
    return doc


def _index(text, path):
    try:
        return int(text)
    except ValueError:
        raise ApiError(422, "invalid array index in %s" % path)


def json_pointer_get(doc, path):
    cur = doc
    for part in _pointer(path):
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "path %s does not exist" % path)
    return cur


def json_patch(doc, operations):
    """RFC 6902 JSON patch."""
    if not isinstance(operations, list):
        raise ApiError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict):
            raise ApiError(400, "invalid json patch operation %r" % (operation,))
        doc = _json_patch_op(doc, operation)
    return doc


def apply_patch(target, body, content_type, crd=False):
    """Apply a PATCH body according to its Content-Type."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/merge-patch+json":
        return merge_patch(target, body)
    if ctype == "application/strategic-merge-patch+json":
        if crd:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        return merge_patch(target, body, strategic=True)
    if ctype == "application/json-patch+json":
        return json_patch(target, body)
    raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                        "application/json-patch+json, application/merge-patch+json, "
                        "application/strategic-merge-patch+json (server-side apply, application/apply-patch+yaml, "
                        "is not supported by kubesim)")
