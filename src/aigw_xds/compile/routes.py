"""AIGatewayRoute -> rules: header matches, timeouts, the models listed on /v1/models, and each
backendRef resolved to a BackendTarget (an Envoy locality) plus the translator's Backend, with the
AIServiceBackend's and the backendRef's header and body mutations merged."""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from typing import Any

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_contract.backend_name import BackendName

from ..api import kinds
from ..api.kinds import parse_duration
from ..resources import Loaded
from . import incremental, ir
from .backends import Reach, reach, resolve_backend, upstream_tls
from .context import CompileContext
from .costs import request_costs
from .pools import INFERENCE_GROUP, resolve_pool
from .references import AIGW_GROUP, NEEDS_GRANT
from .security import backend_auth

DEFAULT_MODELS_OWNED_BY = "Envoy AI Gateway"


def compile_route(
    ctx: CompileContext,
    loaded: Loaded[Any],
    translator: config_pb2.TranslatorConfig,
    proxy: ir.Endpoint | None,
    model_hosts: tuple[str, ...] | None = None,
) -> list[tuple[tuple[str, ...], ir.Rule]]:
    """The route's rules, each with the hostnames it serves. `proxy`: its Gateway's forward proxy;
    `model_hosts`: the hosts its requests come from (hostnames.reach), where /v1/models lists its
    models: None for every host, none for no host (its models are not listed)."""
    route: kinds.AIGatewayRoute = loaded.resource
    route_name = loaded.key.ref
    hostnames = tuple(route.spec.hostnames)
    out: list[tuple[tuple[str, ...], ir.Rule]] = []
    costs = request_costs(ctx, loaded, route.spec.llmRequestCosts, "spec.llmRequestCosts")
    if costs:
        translator.route_costs.append(config_pb2.RouteCosts(route_name=route_name, costs=costs))
    errors_before = sum(d.is_error for d in ctx.diagnostics)
    for i, rule in enumerate(route.spec.rules):
        path = f"spec.rules[{i}]"
        matches = tuple(
            tuple(ir.HeaderMatch(sys.intern(h.name.lower()), h.value, h.type == "RegularExpression") for h in m.headers)
            for m in rule.matches
        )
        timeout = contract.DEFAULT_REQUEST_TIMEOUT_S
        if rule.timeouts and rule.timeouts.request:
            timeout = parse_duration(rule.timeouts.request)
        idle = parse_duration(rule.streamIdleTimeout) if rule.streamIdleTimeout else None
        backends: list[ir.BackendTarget] = []
        picker = None
        for j, ref in enumerate(rule.backendRefs):
            ref_path = f"{path}.backendRefs[{j}]"
            if ref.is_inference_pool:  # the rule's only backendRef (the model checks)
                pooled = _pool_target(ctx, loaded, i, j, ref, ref_path, translator)
                target, picker = pooled if pooled is not None else (None, None)
            else:
                target = _backend_target(ctx, loaded, i, j, ref, ref_path, translator, proxy)
            if target is not None and ref.weight > 0:
                backends.append(target)
        if rule.backendRefs and all(ref.weight == 0 for ref in rule.backendRefs):
            message = (
                "every backendRef has weight 0: the requests this rule matches get a 503 (no backend to send them to)"
            )
            ctx.warn(message, loaded, f"{path}.backendRefs")
        for m, match in enumerate(matches):
            for h, header in enumerate(match):
                if header.name == contract.MODEL_HEADER and not header.regex and model_hosts != ():
                    _add_model(ctx, header.value, rule, route, model_hosts or ())
                elif header.name != contract.MODEL_HEADER and _like_model_header(header.name):
                    ctx.warn(
                        f"header {header.name} is not the model header {contract.MODEL_HEADER} (misspelt?): this "
                        "match needs a client to send that header, which none does",
                        loaded,
                        f"{path}.matches[{m}].headers[{h}].name",
                    )
        cluster = f"{route_name}/rule/{i}"
        rule_ir = ir.Rule(
            route_name, i, cluster, matches, tuple(backends), timeout, idle, picker=picker if backends else None
        )
        out.append((hostnames, rule_ir))
    new_errors = [d for d in ctx.diagnostics if d.is_error][errors_before:]
    if not new_errors:
        ctx.status.set(loaded.key, "ResolvedRefs", True, "ResolvedRefs")
    else:  # the first problem, wherever it is (the backend, its policy, its Secret...)
        first = new_errors[0]
        own = first.resource == loaded.key
        reason = "BackendNotUsable"
        if own and first.message.endswith("not found"):
            reason = "BackendNotFound"
        elif own and NEEDS_GRANT in first.message:
            reason = "RefNotPermitted"
        message = f"{'' if own else f'{first.resource}: '}{first.detail}"
        ctx.status.set(loaded.key, "ResolvedRefs", False, reason, message)
    return out


# How close a header name must be to the model header's to be taken for a misspelling of it.
MODEL_HEADER_CLOSENESS = 0.85


def _like_model_header(name: str) -> bool:
    """A header name close to the model header's (x-ai-eg-modle, x-ai-eg-models, x-ai-gw-model)."""
    return difflib.SequenceMatcher(None, name, contract.MODEL_HEADER).ratio() >= MODEL_HEADER_CLOSENESS


def _add_model(
    ctx: CompileContext,
    model: str,
    rule: kinds.AIGatewayRouteRule,
    route: kinds.AIGatewayRoute,
    hostnames: tuple[str, ...],
) -> None:
    created_text = rule.modelsCreatedAt or route.metadata.creationTimestamp
    ctx.merge_model(
        config_pb2.Model(
            id=model,
            owned_by=rule.modelsOwnedBy or DEFAULT_MODELS_OWNED_BY,
            created=_unix_seconds(created_text),
            hosts=list(hostnames),
        ),
    )


def _unix_seconds(text: str | None) -> int:
    if not text:
        return 0
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _referenced(
    ctx: CompileContext, route_loaded: Loaded[Any], group: str, kind: str, ns: str, name: str, ref_path: str
) -> Loaded[Any] | None:
    """What a backendRef names, where the route may reference it (across namespaces, with a
    ReferenceGrant); None when it may not, or it is not there (an error reported)."""
    if not ctx.reference_allowed(route_loaded, AIGW_GROUP, group, kind, ns, name):
        ctx.error(
            f"reference to {kind} {ns}/{name} in another namespace {NEEDS_GRANT} in namespace {ns}",
            route_loaded,
            f"{ref_path}.namespace",
        )
        return None
    loaded = ctx.lookup(kind, ns, name)
    if loaded is None:
        ctx.error(ctx.absent(kind, ns, name), route_loaded, f"{ref_path}.name")
    return loaded


def _pool_target(
    ctx: CompileContext,
    route_loaded: Loaded[Any],
    rule_index: int,
    ref_index: int,
    ref: kinds.RouteRuleBackendRef,
    ref_path: str,
    translator: config_pb2.TranslatorConfig,
) -> tuple[ir.BackendTarget, ir.EndpointPicker] | None:
    """An InferencePool backendRef: the rule's one target (no endpoints: the pool's picker names the
    pod of each request) and the picker."""
    ns = ref.namespace or route_loaded.key.namespace
    pool_loaded = _referenced(ctx, route_loaded, INFERENCE_GROUP, "InferencePool", ns, ref.name, ref_path)
    if pool_loaded is None:
        return None
    pool = incremental.shared(
        ctx, ("inference-pool", pool_loaded.key), lambda scratch: resolve_pool(scratch, pool_loaded)
    )
    if pool is None:
        return None
    name = _translator_backend(translator, pool.backend, ns, ref, route_loaded, rule_index, ref_index, None)
    return ir.BackendTarget(name, (), "", ref.weight, ref.priority), pool.picker


def _translator_backend(
    translator: config_pb2.TranslatorConfig,
    resolved: config_pb2.Backend,
    ns: str,
    ref: kinds.RouteRuleBackendRef,
    route_loaded: Loaded[Any],
    rule_index: int,
    ref_index: int,
    aisb: kinds.AIServiceBackend | None,
) -> str:
    """The translator's entry for one backendRef (what its backend resolved to, with the reference's
    model override and the backend's and the reference's mutations); its name."""
    # Interned: the translator's traits of the backend hold the same text (backend_traits).
    name = sys.intern(str(BackendName(ns, ref.name, route_loaded.key.name, rule_index, ref_index)))
    backend = translator.backends.add()
    backend.CopyFrom(resolved)
    backend.name = name
    backend.route_name = route_loaded.key.ref
    if ref.modelNameOverride:
        backend.model_name_override = ref.modelNameOverride
    _merge_headers(backend.header_mutation, aisb.spec.headerMutation if aisb else None, ref.headerMutation)
    _merge_bodies(backend.body_mutation, aisb.spec.bodyMutation if aisb else None, ref.bodyMutation)
    return name


def _backend_target(
    ctx: CompileContext,
    route_loaded: Loaded[Any],
    rule_index: int,
    ref_index: int,
    ref: kinds.RouteRuleBackendRef,
    ref_path: str,
    translator: config_pb2.TranslatorConfig,
    proxy: ir.Endpoint | None,
) -> ir.BackendTarget | None:
    ns = ref.namespace or route_loaded.key.namespace
    aisb_loaded = _referenced(ctx, route_loaded, AIGW_GROUP, "AIServiceBackend", ns, ref.name, ref_path)
    if aisb_loaded is None:
        return None
    aisb: kinds.AIServiceBackend = aisb_loaded.resource
    resolved = incremental.shared(
        ctx, ("service-backend", aisb_loaded.key), lambda scratch: _service_backend(scratch, aisb_loaded, proxy)
    )
    if resolved is None:
        return None
    name = _translator_backend(translator, resolved.backend, ns, ref, route_loaded, rule_index, ref_index, aisb)
    return ir.BackendTarget(
        name=name,
        endpoints=resolved.reached.endpoints,
        upstream_host=resolved.backend.upstream_host,
        weight=ref.weight,
        priority=ref.priority,
        tls=resolved.tls,
        service=resolved.reached.service,
        proxy=resolved.proxy,
    )


@dataclass(frozen=True)
class _ServiceBackend:
    """What an AIServiceBackend resolves to, the same for every backendRef naming it."""

    reached: Reach
    tls: ir.UpstreamTLS | None
    # What every backendRef's Backend entry holds of it (its schema, credentials, host), copied
    # into each entry (never changed itself).
    backend: config_pb2.Backend
    # The forward proxy it is reached through (None: directly).
    proxy: ir.Endpoint | None


def _service_backend(
    ctx: CompileContext, aisb_loaded: Loaded[Any], proxy: ir.Endpoint | None
) -> _ServiceBackend | None:
    """The AIServiceBackend's Backend or Service, where that reaches, its upstream TLS, its
    credentials and the forward proxy (of `proxy`, its Gateway's) it is reached through; None when
    it cannot be used (an error reported)."""
    aisb: kinds.AIServiceBackend = aisb_loaded.resource
    backend_loaded = resolve_backend(ctx, aisb_loaded)
    if backend_loaded is None:
        return None
    reached = reach(ctx, aisb_loaded, backend_loaded)
    if reached is None:
        return None
    tls = upstream_tls(ctx, backend_loaded)
    if tls is None and any(e.port == 443 for e in reached.endpoints):
        # Port 443 means TLS everywhere else; here it takes a BackendTLSPolicy (as in Envoy Gateway).
        ctx.warn(
            f"{backend_loaded.key} is reached on port 443 without a BackendTLSPolicy: requests, and the "
            "backend's credentials, go in plaintext (add a BackendTLSPolicy targeting it; in Kubernetes, "
            "check that the gateway.networking.k8s.io/v1 BackendTLSPolicy CRD is installed)",
            backend_loaded,
            "spec.endpoints",
        )
    auth = backend_auth(ctx, aisb_loaded)
    schema = aisb.spec.schema_
    prefix = schema.prefix
    if prefix is None and schema.name in ("OpenAI", "Anthropic"):
        prefix = contract.DEFAULT_SCHEMA_PREFIX
    if schema.name == "AzureOpenAI" and not schema.version:
        ctx.warn(
            "AzureOpenAI schema without a version: requests are sent with the client's api-version, else "
            f"{contract.AZURE_DEFAULT_API_VERSION}",
            aisb_loaded,
            "spec.schema.version",
        )
    ctx.status.set(aisb_loaded.key, "Accepted", True, "Accepted")
    backend = config_pb2.Backend(
        service_backend=aisb_loaded.key.ref,
        schema=config_pb2.Schema(name=schema.name, version=schema.version or "", prefix=_wire_prefix(prefix)),
        auth=auth,
        upstream_host=tls.sni if tls else reached.upstream_host,
    )
    through = _through_proxy(ctx, backend_loaded, reached, backend.upstream_host, proxy)
    return _ServiceBackend(reached, tls, backend, through)


def _through_proxy(
    ctx: CompileContext, backend_loaded: Loaded[Any], reached: Reach, host: str, proxy: ir.Endpoint | None
) -> ir.Endpoint | None:
    """The forward proxy a backend is reached through: its Gateway's, but for a socket path and a
    Service's pods (inside the cluster, reached directly). Through it, Envoy asks the proxy for the
    name the backend's requests are addressed to (`host`: its TLS hostname, else its first
    endpoint) at the endpoint's port (Envoy's CONNECT names the endpoint's hostname), which the
    proxy resolves."""
    if proxy is None or (reached.service and all(e.kind == "ip" for e in reached.endpoints)):
        return None
    if any(e.kind == "unix" for e in reached.endpoints):
        ctx.warn(
            f"{backend_loaded.key} is a socket path: reached directly, not through the GatewayConfig's forwardProxy",
            backend_loaded,
            "spec.endpoints",
        )
        return None
    others = [e.address for e in reached.endpoints if e.address != host]
    if others:  # several endpoints, or a TLS hostname other than the endpoint's
        ctx.warn(
            f"through the GatewayConfig's forwardProxy, {backend_loaded.key} is asked of the proxy as {host} (the "
            f"name its requests are addressed to, which the proxy resolves), not as {', '.join(others)}: where "
            "that name leads is the proxy's to say",
            backend_loaded,
            "spec.endpoints",
        )
    return proxy


def _merge_headers(
    into: config_pb2.HeaderMutation, base: kinds.HTTPHeaderMutation | None, override: kinds.HTTPHeaderMutation | None
) -> None:
    """The backend's header mutation, then the reference's, into `into` (present even when empty)."""
    into.SetInParent()
    if base is None and override is None:
        return
    merged: dict[str, str] = {}
    removed: list[str] = []
    for mutation in (base, override):
        if mutation is None:
            continue
        for header in mutation.set:
            merged[header.name.lower()] = header.value
        removed.extend(h.lower() for h in mutation.remove)
    into.set.extend(config_pb2.HeaderValue(name=k, value=v) for k, v in merged.items())
    into.remove.extend(dict.fromkeys(removed))


def _merge_bodies(
    into: config_pb2.BodyMutation, base: kinds.HTTPBodyMutation | None, override: kinds.HTTPBodyMutation | None
) -> None:
    """The backend's body mutation, then the reference's, into `into` (present even when empty)."""
    into.SetInParent()
    if base is None and override is None:
        return
    merged: dict[str, str] = {}
    removed: list[str] = []
    for mutation in (base, override):
        if mutation is None:
            continue
        for body_field in mutation.set:
            merged[body_field.path] = body_field.value
        removed.extend(mutation.remove)
    into.set.extend(config_pb2.BodyField(path=k, value=v) for k, v in merged.items())
    into.remove.extend(dict.fromkeys(removed))


def _wire_prefix(prefix: str | None) -> str:
    """The schema prefix for the translator: without slashes at either end, except an API at the
    root ("/" or ""), which stays "/" (an empty prefix means "unset", i.e. the default v1)."""
    if prefix is None:
        return ""
    return prefix.strip("/") or "/"
