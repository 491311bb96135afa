"""Envoy Gateway's ExtAuth -> ir.ExtAuth: the external authorization service a route's requests are
checked with (an MCPRoute's securityPolicy.extAuth). Its backends resolve as Envoy Gateway resolves
an external service's: Services (their ready endpoints at the port named) and Backends of the
route's namespace, or of another one a ReferenceGrant opens to the route; each with the upstream TLS
of the BackendTLSPolicy that targets it. A reference that does not resolve, or a context extension
that would write a Secret's value into Envoy's configuration, is an error: the route is not served.
Of backendSettings, retry, the connect timeout and circuit breakers are built; the rest is warned
about and left at Envoy's defaults."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aigw_contract as contract

from ..api import kinds
from ..resources import Loaded
from . import ir
from .backends import CORE_GROUP, endpoint, service_reach, upstream_tls
from .context import CompileContext
from .references import AIGW_GROUP, EG_GROUP
from .traffic import DEFAULT_TRIGGERS, resolved_circuit_breaker, resolved_retry

# Envoy Gateway's timeout of a check when the policy gives none.
DEFAULT_TIMEOUT_S = 10.0
# The backendSettings built (the others are warned about).
_BUILT_SETTINGS = ("retry", "timeout", "circuitBreaker")


def ext_auth(ctx: CompileContext, loaded: Loaded[Any], spec: kinds.ExtAuth, at: str) -> ir.ExtAuth | None:
    """`loaded`'s ExtAuth (at field path `at`) resolved; None when a reference does not resolve or a
    value cannot be served (an error said)."""
    service: kinds.ExtAuthService = spec.grpc if spec.grpc is not None else spec.http  # type: ignore[assignment]
    where = f"{at}.{'grpc' if spec.grpc is not None else 'http'}"
    targets, authorities = [], []
    for path, ref in service.refs:
        reached = _target(ctx, loaded, ref, f"{where}.{path}")
        if reached is None:
            return None
        if reached[0].weight > 0:
            targets.append(reached[0])
            authorities.append(reached[1])
    if not targets:
        ctx.error("every backend has weight 0: no check could be sent", loaded, f"{where}.backendRefs")
        return None
    if all(target.priority for target in targets):  # fallbacks alone: they are the first priority
        targets = [replace(target, priority=0) for target in targets]
    extensions = _context_extensions(ctx, loaded, spec.contextExtensions, f"{at}.contextExtensions")
    if extensions is None:
        return None
    settings = service.backendSettings or kinds.ExtServiceSettings()
    for name in type(settings).model_fields:
        if name not in _BUILT_SETTINGS and getattr(settings, name) is not None:
            ctx.warn(
                f"backendSettings.{name} is not supported yet: the authorization service's cluster is built without it",
                loaded,
                f"{where}.backendSettings.{name}",
            )
    timeout = settings.timeout or kinds.Timeout()
    if timeout.http is not None:
        ctx.warn(
            "backendSettings.timeout.http is not supported yet: a check's time is the ExtAuth's timeout",
            loaded,
            f"{where}.backendSettings.timeout.http",
        )
    breaker = settings.circuitBreaker
    http = spec.http
    if http is not None:
        internal = [h for h in http.headersToBackend if h.lower().startswith(contract.OVERRIDE_HEADER_PREFIX)]
        if internal:
            ctx.error(
                f"{internal[0]} is a header of the gateway's own (its {contract.OVERRIDE_HEADER_PREFIX} headers carry "
                "what Envoy verified): the authorization service may not set it",
                loaded,
                f"{where}.headersToBackend",
            )
            return None
    return ir.ExtAuth(
        name=loaded.key.ref,
        grpc=spec.grpc is not None,
        targets=tuple(targets),
        authority=authorities[0],
        timeout_s=kinds.parse_duration(spec.timeout) if spec.timeout else DEFAULT_TIMEOUT_S,
        retry=_retry(settings.retry) if settings.retry is not None else None,
        connect_timeout_s=(
            kinds.parse_duration(timeout.tcp.connectTimeout) if timeout.tcp and timeout.tcp.connectTimeout else None
        ),
        circuit_breaker=resolved_circuit_breaker(breaker) if breaker is not None else None,
        fail_open=spec.failOpen,
        recompute_route=spec.recomputeRoute,
        route_metadata=spec.includeRouteMetadata,
        headers_to_ext_auth=tuple(spec.headersToExtAuth),
        max_request_bytes=spec.bodyToExtAuth.maxRequestBytes if spec.bodyToExtAuth is not None else None,
        status_on_error=spec.statusOnError,
        context_extensions=extensions,
        path_prefix=(http.path or "") if http is not None else "",
        path_override=(http.pathOverride or "") if http is not None else "",
        headers_to_backend=tuple(http.headersToBackend) if http is not None else (),
    )


def _retry(retry: kinds.Retry) -> ir.Retry:
    """A retry of the checks, as Envoy Gateway retries a call outside routing: its triggers but the
    status codes (a route's only), Envoy Gateway's when none is left; Envoy's one retry unless said."""
    resolved = resolved_retry(retry)
    triggers = tuple(t for t in resolved.retry_on if t != "retriable-status-codes")
    default = tuple(t for t in DEFAULT_TRIGGERS if t != "retriable-status-codes")
    return replace(
        resolved,
        retry_on=triggers or default,
        retriable_status_codes=(),
        num_retries=1 if retry.numRetries is None else retry.numRetries,
    )


def _target(
    ctx: CompileContext, loaded: Loaded[Any], ref: kinds.ExtAuthBackendRef, at: str
) -> tuple[ir.BackendTarget, str] | None:
    """One backend of the service as a locality of its cluster, and the authority of checks sent
    there (its host and port, as Envoy Gateway gives it); None (an error said) when it does not
    resolve."""
    group, kind = ref.group or CORE_GROUP, ref.kind or "Service"
    if group == "core":
        group = CORE_GROUP
    if (group, kind) not in ((CORE_GROUP, "Service"), (EG_GROUP, "Backend")):
        ctx.error(
            f"an authorization service is a Service or a Backend ({EG_GROUP}), not {kind} ({group or 'core'})",
            loaded,
            f"{at}.kind",
        )
        ctx.status.set(loaded.key, "ResolvedRefs", False, "InvalidKind")
        return None
    namespace = ref.namespace or loaded.key.namespace
    # Envoy AI Gateway writes an MCPRoute's extAuth into a SecurityPolicy: a grant to that is taken too.
    if not (
        ctx.reference_allowed(loaded, AIGW_GROUP, group, kind, namespace, ref.name)
        or ctx.reference_allowed(loaded, EG_GROUP, group, kind, namespace, ref.name, "SecurityPolicy")
    ):
        ctx.error(
            f"reference to {kind} {namespace}/{ref.name} in another namespace needs a ReferenceGrant in namespace "
            f"{namespace} (from {loaded.key.kind}, or from {EG_GROUP} SecurityPolicy)",
            loaded,
            f"{at}.namespace",
        )
        ctx.status.set(loaded.key, "ResolvedRefs", False, "RefNotPermitted")
        return None
    found = ctx.lookup(kind, namespace, ref.name)
    if found is None:
        ctx.error(ctx.absent(kind, namespace, ref.name), loaded, f"{at}.name")
        ctx.status.set(loaded.key, "ResolvedRefs", False, "BackendNotFound")
        return None
    if kind == "Backend":
        endpoints = tuple(endpoint(e) for e in found.resource.spec.endpoints)
        host, port = (endpoints[0].address, endpoints[0].port) if endpoints[0].kind != "unix" else ("localhost", 0)
        ctx.status.set(found.key, "Accepted", True, "Accepted")
    else:
        if ref.port is None:
            ctx.error("a Service backendRef needs its port", loaded, f"{at}.port")
            ctx.status.set(loaded.key, "ResolvedRefs", False, "UnsupportedValue")
            return None
        reached = service_reach(ctx, found, ref.port, loaded, at, "an authorization service")
        if reached is None:
            ctx.status.set(loaded.key, "ResolvedRefs", False, "BackendNotFound")
            return None
        endpoints, host, port = reached.endpoints, reached.upstream_host, ref.port
    tls = upstream_tls(ctx, found)
    target = ir.BackendTarget(
        name=f"{namespace}/{ref.name}",
        endpoints=endpoints,
        upstream_host=host,
        weight=1 if ref.weight is None else ref.weight,
        priority=1 if ref.fallback else 0,
        tls=tls,
    )
    named = f"[{host}]" if ":" in host else host  # an IPv6 address
    return target, f"{named}:{port}" if port else named


def _context_extensions(
    ctx: CompileContext, loaded: Loaded[Any], extensions: list[kinds.ContextExtension], at: str
) -> tuple[tuple[str, str], ...] | None:
    """(name, value) of each context extension, a ConfigMap's value read; None (an error said) when
    one cannot be had, or names a Secret (Envoy sends the values from its route configuration, which
    holds no secret)."""
    out = []
    for index, extension in enumerate(extensions):
        where = f"{at}[{index}]"
        ref = extension.valueRef
        if ref is None:
            assert extension.value is not None  # the model requires one
            out.append((extension.name, extension.value))
            continue
        if ref.kind == "Secret":
            ctx.error(
                "a context extension's value is written into Envoy's route configuration, which holds no secret: "
                "take it from a ConfigMap or give it as value",
                loaded,
                f"{where}.valueRef.kind",
            )
            return None
        holder = ctx.lookup("ConfigMap", loaded.key.namespace, ref.name)
        if holder is None:
            ctx.error(ctx.absent("ConfigMap", loaded.key.namespace, ref.name), loaded, f"{where}.valueRef.name")
            return None
        value = holder.resource.data.get(ref.key)
        if value is None:
            ctx.error(f"ConfigMap {holder.key.ref} has no key {ref.key}", loaded, f"{where}.valueRef.key")
            return None
        out.append((extension.name, value))
    return tuple(out)
