"""SubjectAccessReview of the emulated API server, decided by the RBAC objects stored in it.

Emulated (authorization.k8s.io/v1 SubjectAccessReview, rbac.authorization.k8s.io/v1 semantics):
* the request: ``spec.user`` and/or ``spec.groups`` (neither: 422), exactly one of
  ``spec.resourceAttributes`` / ``spec.nonResourceAttributes`` (422 otherwise);
* the decision: a subject of the ``system:masters`` group is allowed everything (as the real
  server's superuser bypass); otherwise RoleBindings of the request's namespace and every
  ClusterRoleBinding are looked at; a binding applies when one of its subjects is the user (kind
  User), the ServiceAccount the username ``system:serviceaccount:<ns>:<name>`` names (kind
  ServiceAccount, namespace defaulting to the binding's), or one of the groups (kind Group); its
  roleRef (a Role of the binding's namespace, or a ClusterRole) grants when a rule matches: verbs,
  apiGroups and resources (``<plural>`` or ``<plural>/<subresource>``) containing the request's or
  ``*``, and resourceNames empty or containing the request's name (a request without a name, e.g.
  list or create, is not matched by a rule with resourceNames, as in the real RBAC authorizer);
* the status: ``allowed`` with a ``reason`` naming the binding and role (the real wording), or
  ``allowed: false`` with no reason.

Not emulated: aggregated ClusterRoles (aggregationRule), ``nonResourceURLs`` rules (a non-resource
request is allowed only to system:masters), ``denied`` (RBAC never denies), the ``uid`` and
``extra`` fields, the Node and webhook authorizers, LocalSubjectAccessReview and
SelfSubjectAccessReview. The emulated server's own request authorization is not RBAC (see auth.py):
these objects decide SubjectAccessReviews only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SUPERUSER_GROUP = "system:masters"

# kind -> the stored objects of that kind (all namespaces)
Objects = Callable[[str], list[dict[str, Any]]]


def review_problems(spec: Any) -> list[tuple[str, str, str]]:
    """The 422 causes (reason, field, message) of a SubjectAccessReview spec, as the real server's."""
    if not isinstance(spec, Mapping):
        return [("FieldValueRequired", "spec", "Required value")]
    problems = []
    if not spec.get("user") and not spec.get("groups"):
        problems.append(
            ("FieldValueInvalid", "spec.user", 'Invalid value: "": at least one of user or group must be specified')
        )
    if bool(spec.get("resourceAttributes")) == bool(spec.get("nonResourceAttributes")):
        problems.append(
            (
                "FieldValueInvalid",
                "spec.resourceAttributes",
                'Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes must be specified',
            )
        )
    return problems


def _in(values: Iterable[str] | None, wanted: str) -> bool:
    listed = list(values or ())
    return "*" in listed or wanted in listed


def _rule_matches(rule: Mapping[str, Any], attrs: Mapping[str, Any]) -> bool:
    resource = attrs.get("resource", "")
    if attrs.get("subresource"):
        resource = f"{resource}/{attrs['subresource']}"
    names = list(rule.get("resourceNames") or ())
    return (
        _in(rule.get("verbs"), attrs.get("verb", ""))
        and _in(rule.get("apiGroups"), attrs.get("group", ""))
        and _in(rule.get("resources"), resource)
        and (not names or (bool(attrs.get("name")) and attrs.get("name") in names))
    )


def _subject_matches(subject: Mapping[str, Any], binding_ns: str, user: str, groups: Iterable[str]) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return name == user
    if kind == "Group":
        return name in set(groups)
    if kind == "ServiceAccount":
        return user == f"{SERVICE_ACCOUNT_PREFIX}{subject.get('namespace') or binding_ns}:{name}"
    return False


def _describe_subject(subject: Mapping[str, Any], binding_ns: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or binding_ns}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def decide(spec: Mapping[str, Any], objects: Objects) -> dict[str, Any]:
    """The ``status`` of a valid SubjectAccessReview (see review_problems) against the stored RBAC."""
    user, groups = str(spec.get("user") or ""), [str(g) for g in spec.get("groups") or ()]
    if SUPERUSER_GROUP in groups:
        return {"allowed": True, "reason": ""}
    attrs = spec.get("resourceAttributes")
    if not isinstance(attrs, Mapping):  # non-resource requests: no nonResourceURLs rules emulated
        return {"allowed": False}
    namespace = attrs.get("namespace") or ""
    roles = {(r["metadata"].get("namespace", ""), r["metadata"]["name"]): r for r in objects("Role")}
    cluster_roles = {r["metadata"]["name"]: r for r in objects("ClusterRole")}
    bindings = [b for b in objects("RoleBinding") if namespace and b["metadata"].get("namespace") == namespace]
    for binding in [*bindings, *objects("ClusterRoleBinding")]:
        binding_ns = binding["metadata"].get("namespace", "")
        subject = next(
            (s for s in binding.get("subjects") or () if _subject_matches(s, binding_ns, user, groups)), None
        )
        if subject is None:
            continue
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "Role" and binding_ns:
            role = roles.get((binding_ns, ref.get("name", "")))
        elif ref.get("kind") == "ClusterRole":
            role = cluster_roles.get(ref.get("name", ""))
        else:
            role = None
        if role is None or not any(_rule_matches(rule, attrs) for rule in role.get("rules") or ()):
            continue
        where = (
            f'RoleBinding "{binding["metadata"]["name"]}/{binding_ns}"'
            if binding_ns
            else (f'ClusterRoleBinding "{binding["metadata"]["name"]}"')
        )
        return {
            "allowed": True,
            "reason": f'RBAC: allowed by {where} of {ref.get("kind")} "{ref.get("name")}" to '
            f"{_describe_subject(subject, binding_ns)}",
        }
    return {"allowed": False}
