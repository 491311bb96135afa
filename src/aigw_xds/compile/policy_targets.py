"""A backend's policies that name a target that is not there (pure).

A BackendSecurityPolicy or BackendTLSPolicy applies to the objects its targetRefs name. One that
names an AIServiceBackend (or InferencePool, or Backend) that does not exist applies to nothing there, and the backend
it was meant for is served without it: without its credential (the provider answers 401) or without
TLS (its credential sent in plaintext). Such a target is an error on the policy's field, as it is
for BackendTrafficPolicies and QuotaPolicies; the policy still applies to its other targets. The
serving side keeps the last good configuration of a Gateway built with the policy
(controller.py), and withholds a Gateway a policy may have been meant for until it is fixed.
"""

from __future__ import annotations

from typing import Any

from ..diagnostics import Diagnostic, error
from ..resources import Loaded, ResourceSet
from .references import absent
from .status import StatusBook

# The kinds of target checked, by policy kind: those aigw-xds reads (a BackendTLSPolicy may also
# name a Service, which a file installation does not hold).
CHECKED_TARGETS = {"BackendSecurityPolicy": ("AIServiceBackend", "InferencePool"), "BackendTLSPolicy": ("Backend",)}


def check_backend_policy_targets(resources: ResourceSet, status: StatusBook) -> list[Diagnostic]:
    """An error for each target of a BackendSecurityPolicy or BackendTLSPolicy that is not there,
    on its targetRefs[i].name, and Accepted=False (TargetNotFound) on the policy."""
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
    out = []
    for index, ref in enumerate(loaded.resource.spec.targetRefs):
        if ref.kind in target_kinds and resources.get(ref.kind, namespace, ref.name) is None:
            message = f"{absent(resources, ref.kind, namespace, ref.name)}: this policy applies to nothing there"
            out.append(error(message, loaded.origin, loaded.key, f"spec.targetRefs[{index}].name"))
    return out
