"""ResourceKey: a resource's kind, namespace and name, the key of every resource set, diagnostic,
status condition and IR reference; and the names Kubernetes allows in it."""

from __future__ import annotations

import re
from typing import NamedTuple

# Kubernetes object names: a namespace is a DNS label, most other names DNS subdomains.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # a Service's name
DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# Kinds without a namespace: the loader files them under "default", and messages name them bare.
CLUSTER_SCOPED_KINDS = frozenset({"GatewayClass"})


class ResourceKey(NamedTuple):
    """A tuple underneath: hashed and compared in C (an incremental compile looks keys up by the
    hundred thousand)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.kind in CLUSTER_SCOPED_KINDS:
            return f"{self.kind} {self.name}"
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        """ "namespace/name", the form used in Envoy names and logs."""
        return f"{self.namespace}/{self.name}"


def gateway_key(fleet: str) -> ResourceKey:
    """The key of a fleet's Gateway (a fleet is its Gateway's "namespace/name", ResourceKey.ref)."""
    namespace, _, name = fleet.partition("/")
    return ResourceKey("Gateway", namespace, name)
