"""AIServiceBackend -> Backend: the backendRef resolved (across namespaces with a ReferenceGrant),
the Backend's endpoints, and the upstream TLS of the BackendTLSPolicy that targets it."""

from __future__ import annotations

from typing import Any

from ..api import kinds
from ..resources import Loaded
from . import ir
from .context import CompileContext
from .references import AIGW_GROUP, EG_GROUP


def resolve_backend(ctx: CompileContext, aisb_loaded: Loaded[Any]) -> Loaded[Any] | None:
    aisb: kinds.AIServiceBackend = aisb_loaded.resource
    ref = aisb.spec.backendRef
    ns = ref.namespace or aisb_loaded.key.namespace
    if not ctx.reference_allowed(aisb_loaded, AIGW_GROUP, EG_GROUP, "Backend", ns, ref.name):
        ctx.error(
            f"reference to Backend {ns}/{ref.name} in another namespace needs a ReferenceGrant in namespace {ns}",
            aisb_loaded,
            "spec.backendRef.namespace",
        )
        return None
    loaded = ctx.lookup("Backend", ns, ref.name)
    if loaded is None:
        ctx.error(f"Backend {ns}/{ref.name} not found", aisb_loaded, "spec.backendRef.name")
        ctx.status.set(aisb_loaded.key, "ResolvedRefs", False, "BackendNotFound")
        return None
    ctx.status.set(aisb_loaded.key, "ResolvedRefs", True, "ResolvedRefs")
    ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    return loaded


def endpoint(endpoint: kinds.BackendEndpoint) -> ir.Endpoint:
    if endpoint.fqdn is not None:
        return ir.Endpoint("fqdn", endpoint.fqdn.hostname, endpoint.fqdn.port)
    if endpoint.ip is not None:
        return ir.Endpoint("ip", endpoint.ip.address, endpoint.ip.port)
    assert endpoint.unix is not None
    return ir.Endpoint("unix", endpoint.unix.path)


def upstream_tls(ctx: CompileContext, backend_loaded: Loaded[Any]) -> ir.UpstreamTLS | None:
    policies = ctx.resources.policies_for("BackendTLSPolicy", backend_loaded.key)
    for loaded in policies:
        ctx.use(loaded)
    if not policies:
        return None
    if len(policies) > 1:
        names = ", ".join(p.key.ref for p in policies)
        ctx.error(
            f"more than one BackendTLSPolicy targets Backend {backend_loaded.key.ref}: {names}",
            policies[1],
            "spec.targetRefs",
        )
        return None
    loaded = policies[0]
    validation = loaded.resource.spec.validation
    ca_pem: str | None = None
    if validation.caCertificateRefs:
        bundles = []
        for index, ref in enumerate(validation.caCertificateRefs):
            kind = ref.kind or "ConfigMap"
            holder = ctx.lookup(kind, loaded.key.namespace, ref.name)
            value = None
            if holder is not None:
                value = holder.resource.value("ca.crt") if kind == "Secret" else holder.resource.data.get("ca.crt")
            if value is None:
                ctx.error(
                    f"{kind} {loaded.key.namespace}/{ref.name} with key ca.crt not found",
                    loaded,
                    f"spec.validation.caCertificateRefs[{index}]",
                )
                return None
            bundles.append(value)
        ca_pem = "\n".join(bundles)
    ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    return ir.UpstreamTLS(sni=validation.hostname, ca_pem=ca_pem)
