"""AIServiceBackend -> Backend or core Service: the backendRef resolved (across namespaces with a
ReferenceGrant), the endpoints it reaches (a Backend's, or a Service's ready EndpointSlice endpoints
at the referenced port), and the upstream TLS of the BackendTLSPolicy that targets it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..api import kinds
from ..resources import Loaded
from . import ir
from .context import CompileContext
from .references import AIGW_GROUP, EG_GROUP

CORE_GROUP = ""


def resolve_backend(ctx: CompileContext, aisb_loaded: Loaded[Any]) -> Loaded[Any] | None:
    """The Backend or Service the AIServiceBackend's backendRef names, or None (an error reported)."""
    aisb: kinds.AIServiceBackend = aisb_loaded.resource
    ref = aisb.spec.backendRef
    ns = ref.namespace or aisb_loaded.key.namespace
    group, kind = (CORE_GROUP, "Service") if ref.is_service else (EG_GROUP, "Backend")
    if not ctx.reference_allowed(aisb_loaded, AIGW_GROUP, group, kind, ns, ref.name):
        ctx.error(
            f"reference to {kind} {ns}/{ref.name} in another namespace needs a ReferenceGrant in namespace {ns}",
            aisb_loaded,
            "spec.backendRef.namespace",
        )
        ctx.status.set(aisb_loaded.key, "ResolvedRefs", False, "RefNotPermitted")
        return None
    loaded = ctx.lookup(kind, ns, ref.name)
    if loaded is None:
        ctx.error(ctx.absent(kind, ns, ref.name), aisb_loaded, "spec.backendRef.name")
        ctx.status.set(aisb_loaded.key, "ResolvedRefs", False, "BackendNotFound")
        return None
    ctx.status.set(aisb_loaded.key, "ResolvedRefs", True, "ResolvedRefs")
    if kind == "Backend":  # a core Service gets no status from us
        ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    return loaded


@dataclass(frozen=True)
class Reach:
    """Where a resolved backendRef sends: its endpoints, the Host it is addressed as, and for a
    Service "<ns>/<service>:<port>" (ir.BackendTarget.service)."""

    endpoints: tuple[ir.Endpoint, ...]
    upstream_host: str
    service: str = ""


def reach(ctx: CompileContext, aisb_loaded: Loaded[Any], backend_loaded: Loaded[Any]) -> Reach | None:
    """The endpoints of the resolved Backend or Service; None when the Service has no such port
    (an error reported)."""
    if backend_loaded.key.kind == "Backend":
        backend: kinds.Backend = backend_loaded.resource
        endpoints = tuple(endpoint(e) for e in backend.spec.endpoints)
        return Reach(endpoints, endpoints[0].address if endpoints[0].kind != "unix" else "localhost")
    aisb: kinds.AIServiceBackend = aisb_loaded.resource
    port = aisb.spec.backendRef.port
    assert port is not None  # the model requires it for a Service
    reached = service_reach(ctx, backend_loaded, port, aisb_loaded, "spec.backendRef", "an AI backend")
    if reached is None:
        ctx.status.set(aisb_loaded.key, "ResolvedRefs", False, "BackendNotFound")
    return reached


def service_reach(
    ctx: CompileContext, service_loaded: Loaded[Any], port: int, referrer: Loaded[Any], field_path: str, what: str
) -> Reach | None:
    """Where a Service's `port` reaches, for `referrer` (whose `field_path` names it; `what` says what
    the Service is to it): its ready endpoints, or its externalName; None when it has no such TCP
    port (an error reported on the referrer). A Service without ready endpoints is a warning, not an
    error: pods come and go, and what sends to it compiles with no endpoints."""
    service: kinds.Service = service_loaded.resource
    key = service_loaded.key
    identity = f"{key.namespace}/{key.name}:{port}"
    if service.spec.type == "ExternalName":
        assert service.spec.externalName is not None  # the model requires it
        return Reach((ir.Endpoint("fqdn", service.spec.externalName, port),), service.spec.externalName, identity)
    service_port = next((p for p in service.spec.ports or () if p.port == port), None)
    if service_port is None:
        ports = ", ".join(str(p.port) for p in service.spec.ports or ()) or "none"
        ctx.error(f"Service {key.ref} has no port {port} (its ports: {ports})", referrer, f"{field_path}.port")
        return None
    if (service_port.protocol or "TCP") != "TCP":
        ctx.error(
            f"Service {key.ref} port {port} is {service_port.protocol}: {what} is reached over TCP",
            referrer,
            f"{field_path}.port",
        )
        return None
    slices = []
    for loaded in service_slices(ctx, key.namespace, key.name):
        ctx.use(loaded)
        slices.append(loaded.resource)
    endpoints, fqdn_slices = ready_endpoints(slices, service_port.name or "")
    if fqdn_slices:
        ctx.warn(
            f"EndpointSlices of addressType FQDN are skipped for Service {key.ref}: {', '.join(fqdn_slices)}",
            referrer,
            field_path,
        )
    if not endpoints:
        ctx.warn(
            f"Service {key.ref} has no ready endpoints at port {port} (no EndpointSlice with a ready endpoint "
            f"and that port): {_without_endpoints(referrer)}",
            referrer,
            field_path,
        )
    return Reach(endpoints, f"{key.name}.{key.namespace}.svc", identity)


def _without_endpoints(referrer: Loaded[Any]) -> str:
    """What becomes of the requests that need a Service without ready endpoints."""
    if referrer.key.kind == "InferencePool":
        return "the pool's requests get a 503 (its endpoint picker cannot be asked)"
    return "requests to this backend fail over to the others, or get a 503"


def service_slices(ctx: CompileContext, namespace: str, service: str) -> tuple[Loaded[Any], ...]:
    """The EndpointSlices of a Service: its namespace's slices labelled kubernetes.io/service-name."""
    return ctx.resources.with_label("EndpointSlice", kinds.SERVICE_NAME_LABEL, namespace, service)


def ready_endpoints(slices: Iterable[kinds.EndpointSlice], port_name: str) -> tuple[tuple[ir.Endpoint, ...], list[str]]:
    """The ready IPv4 and IPv6 endpoints (first address) of the slices at their port named `port_name` ("" for the
    unnamed port of a single-port Service), deduplicated (an address may sit in two slices while
    they are rebalanced) and sorted; and the names of the FQDN slices, which are skipped. Ready
    unset counts as ready; terminating endpoints are left out even while they still serve."""
    found: set[ir.Endpoint] = set()
    fqdn: list[str] = []
    for endpoint_slice in slices:
        if endpoint_slice.addressType == "FQDN":
            fqdn.append(endpoint_slice.metadata.name)
            continue
        number = next((p.port for p in endpoint_slice.ports or () if (p.name or "") == port_name), None)
        if number is None:
            continue
        for item in endpoint_slice.endpoints or ():
            if item.conditions.ready is False or item.conditions.terminating:
                continue
            # The API defines no meaning for addresses beyond the first (kube-proxy reads only it).
            found.add(ir.Endpoint("ip", item.addresses[0], number))
    return tuple(sorted(found, key=lambda e: (e.address, e.port))), fqdn


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
