"""Policies that name a target that is not there (pure).

A BackendSecurityPolicy, BackendTLSPolicy or ClientTrafficPolicy applies to the objects its
targetRefs name. One that names an AIServiceBackend (or InferencePool, or Backend, or Gateway) that
does not exist applies to nothing there, and what it was meant for is served without it: a backend
without its credential (the provider answers 401) or without TLS (its credential sent in plaintext),
a Gateway's HTTPS listeners without the client certificates they were to require. Such a target is
an error on the policy's field, as it is for BackendTrafficPolicies and QuotaPolicies; the policy
still applies to its other targets. The serving side keeps the last good configuration of a Gateway
built with the policy (controller.py), and withholds a Gateway a policy may have been meant for
until it is fixed.
"""

from __future__ import annotations

from typing import Any

from ..diagnostics import Diagnostic, error
from ..resources import Loaded, ResourceSet
from .references import absent
from .status import StatusBook

# The kinds of target checked, by policy kind: those aigw-xds reads (a BackendTLSPolicy may also
# name a Service, which a file installation does not hold).
CHECKED_TARGETS = {
    "BackendSecurityPolicy": ("AIServiceBackend", "InferencePool"),
    "BackendTLSPolicy": ("Backend",),
    "ClientTrafficPolicy": ("Gateway",),
}


def check_policy_targets(resources: ResourceSet, status: StatusBook) -> list[Diagnostic]:
    """An error for each target of a BackendSecurityPolicy, BackendTLSPolicy or ClientTrafficPolicy
    that is not there, on its targetRefs[i].name (or targetRef.name), and Accepted=False
    (TargetNotFound) on the policy."""
    out: list[Diagnostic] = []
    for policy_kind, target_kinds in CHECKED_TARGETS.items():
        for loaded in resources.of_kind(policy_kind):
            found = _missing_targets(resources, loaded, target_kinds)
            if found:
                status.set(loaded.key, "Accepted", False, "TargetNotFound", found[0].detail)
            out.extend(found)
    return out


def _missing_targets(resources: ResourceSet, loaded: Loaded[Any], target_kinds: tuple[str, ...]) -> list[Diagnostic]:
    namespace = loaded.key.namespace
    spec = loaded.resource.spec
    refs: list[tuple[Any, Any]] = list(enumerate(spec.targetRefs))  # (index, ref); index None: targetRef
    # (Of these kinds, only a ClientTrafficPolicy may have the older targetRef: a model's attribute it
    # does not have is a slow miss, and 2,000 BackendSecurityPolicies are checked on every edit.)
    if loaded.key.kind == "ClientTrafficPolicy" and spec.targetRef is not None:
        refs.append((None, spec.targetRef))
    out = []
    for index, ref in refs:
        if ref.kind in target_kinds and resources.get(ref.kind, namespace, ref.name) is None:
            message = f"{absent(resources, ref.kind, namespace, ref.name)}: this policy applies to nothing there"
            path = "spec.targetRef.name" if index is None else f"spec.targetRefs[{index}].name"
            out.append(error(message, loaded.origin, loaded.key, path))
    return out
