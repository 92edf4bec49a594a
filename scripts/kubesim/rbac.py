"""Token rules from RBAC manifests: what a ServiceAccount may do, in kubesim's rule format.

kubesim does not evaluate stored Roles. Instead, :func:`token_rules` reads
Role, ClusterRole, RoleBinding and ClusterRoleBinding documents (as parsed from
a manifest file) and returns the rules that apply to one subject, ready for
``sim.add_token(token, rules, user)`` (the documents may also come as one
``kind: List``, the single-document form kubectl applies):

* a Role's rules, through a RoleBinding in the Role's namespace, hold in that
  namespace only (``namespaces: [ns]``), so they never grant a cluster-scoped
  resource;
* a ClusterRole's rules hold in every namespace and at the cluster scope
  through a ClusterRoleBinding, in the binding's namespace through a
  RoleBinding;
* ``nonResourceURLs`` rules are left out: kubesim does not authorize
  discovery (every authenticated user may read it, as ``system:discovery``
  allows on a real cluster).

The user name is the one a real API server gives a ServiceAccount token,
``system:serviceaccount:<namespace>:<name>``.
"""

from __future__ import annotations

KNOWN_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "*")


class RbacError(ValueError):
    """A manifest that cannot be read as RBAC (names the document and the field)."""


def service_account_user(namespace, name):
    return "system:serviceaccount:%s:%s" % (namespace, name)


def _where(doc):
    meta = doc.get("metadata") or {}
    return "%s %s%s" % (doc.get("kind"), meta.get("namespace") + "/" if meta.get("namespace") else "", meta.get("name"))


def _rules(doc):
    rules = doc.get("rules") or []
    if not isinstance(rules, list):
        raise RbacError("%s: rules must be a list" % _where(doc))
    out = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise RbacError("%s: rules[%d] must be a mapping" % (_where(doc), index))
        if rule.get("nonResourceURLs"):
            continue
        for key in ("verbs", "apiGroups", "resources"):
            if not isinstance(rule.get(key), list) or not rule[key]:
                raise RbacError("%s: rules[%d].%s must be a non-empty list" % (_where(doc), index, key))
        unknown = [verb for verb in rule["verbs"] if verb not in KNOWN_VERBS]
        if unknown:
            raise RbacError("%s: rules[%d].verbs: unknown verb(s) %s" % (_where(doc), index, ", ".join(unknown)))
        kept = {key: list(rule[key]) for key in ("verbs", "apiGroups", "resources")}
        if rule.get("resourceNames"):
            kept["resourceNames"] = list(rule["resourceNames"])
        out.append(kept)
    return out


def _binds(binding, namespace, name):
    for subject in binding.get("subjects") or []:
        if (subject.get("kind") == "ServiceAccount" and subject.get("name") == name
                and subject.get("namespace", (binding.get("metadata") or {}).get("namespace")) == namespace):
            return True
        if subject.get("kind") == "User" and subject.get("name") == service_account_user(namespace, name):
            return True
    return False


def flatten(documents):
    """The objects of ``documents``, with the items of a ``kind: List`` in place of the List."""
    out = []
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            out.extend(flatten(doc.get("items") or []))
        elif isinstance(doc, dict):
            out.append(doc)
    return out


def token_rules(documents, namespace, name):
    """kubesim rules for ServiceAccount ``namespace/name`` from RBAC ``documents`` (a ``kind: List`` is read item by
    item; other kinds are ignored).

    Raises :class:`RbacError` for a binding whose role is not among the documents, or a malformed rule.
    """
    docs = flatten(documents)
    roles = {(doc["metadata"].get("namespace"), doc["metadata"]["name"]): doc for doc in docs if doc.get("kind") == "Role"}
    cluster_roles = {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == "ClusterRole"}
    rules = []
    for binding in docs:
        kind = binding.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding") or not _binds(binding, namespace, name):
            continue
        ref = binding.get("roleRef") or {}
        scope = (binding.get("metadata") or {}).get("namespace") if kind == "RoleBinding" else None
        if kind == "RoleBinding" and not scope:
            raise RbacError("%s: a RoleBinding needs metadata.namespace" % _where(binding))
        if ref.get("kind") == "Role" and kind == "RoleBinding":
            role = roles.get((scope, ref.get("name")))
        elif ref.get("kind") == "ClusterRole":
            role = cluster_roles.get(ref.get("name"))
        else:
            raise RbacError("%s: roleRef %s/%s cannot be bound by a %s" % (_where(binding), ref.get("kind"), ref.get("name"), kind))
        if role is None:
            raise RbacError("%s: roleRef %s %r is not in the manifests" % (_where(binding), ref.get("kind"), ref.get("name")))
        for rule in _rules(role):
            if scope:
                rule["namespaces"] = [scope]
            rules.append(rule)
    return rules
