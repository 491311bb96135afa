"""Reference rules: the API groups references name, ReferenceGrant checks for cross-namespace
references, and Gateway API hostname matching."""

from __future__ import annotations

from ..api import kinds
from ..keys import ResourceKey
from ..resources import ResourceView

# What an error about a reference to another namespace without a ReferenceGrant says (statuses
# read it: Gateway API's RefNotPermitted).
NEEDS_GRANT = "needs a ReferenceGrant"

# The API groups that references name.
AIGW_GROUP = "aigateway.envoyproxy.io"
EG_GROUP = "gateway.envoyproxy.io"


def grant_allows(
    resources: ResourceView,
    *,
    from_group: str,
    from_kind: str,
    from_namespace: str,
    to_group: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """True when the reference is same-namespace, or a ReferenceGrant in the target namespace allows it."""
    if from_namespace == to_namespace:
        return True
    for loaded in resources.of_kind("ReferenceGrant"):
        grant: kinds.ReferenceGrant = loaded.resource
        if grant.metadata.namespace != to_namespace:
            continue
        from_ok = any(
            f.group == from_group and f.kind == from_kind and f.namespace == from_namespace for f in grant.spec.from_
        )
        to_ok = any(t.group == to_group and t.kind == to_kind and t.name in (None, "", to_name) for t in grant.spec.to)
        if from_ok and to_ok:
            return True
    return False


def absent(resources: ResourceView, kind: str, namespace: str, name: str) -> str:
    """What a reference that found nothing found: "<kind> <ns>/<name> not found", or "... is invalid
    (its own errors say why)" for one that is there but does not validate (or is defined twice),
    which "not found" would send the reader looking for in the wrong place."""
    key = ResourceKey(kind, namespace, name)
    return f"{key} {'is invalid (its own errors say why)' if resources.is_bad(key) else 'not found'}"


def hostname_matches(pattern: str, hostname: str) -> bool:
    """Gateway API hostname matching: '*.example.com' matches any subdomain, otherwise exact."""
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:]) or hostname == pattern
    return pattern == hostname
