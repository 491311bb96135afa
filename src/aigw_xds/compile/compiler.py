"""Compile (pure): resource set -> per-Gateway IR, status conditions and diagnostics.

Every Gateway compiles on its own: an error in one never stops another. A Gateway with any error in
the resources it is built from is reported as failed, so the serving side keeps its last good
configuration.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from aigw.translator.v1 import config_pb2
from aigw_translator import contract

from ..api import kinds
from ..api.kinds import parse_duration, parse_quantity
from ..diagnostics import Diagnostic, ResourceKey, error, warning
from ..resources import Loaded, ResourceSet
from . import ir
from .references import grant_allows, hostname_matches
from .status import Condition, StatusBook

MODEL_HEADER = "x-ai-eg-model"
DEFAULT_REQUEST_TIMEOUT_S = 60.0
DEFAULT_BUFFER_LIMIT = 50 * 1024 * 1024
DEFAULT_SCHEMA_PREFIX = "v1"
DEFAULT_MODELS_OWNED_BY = "Envoy AI Gateway"
GATEWAY_CONFIG_ANNOTATION = "aigateway.envoyproxy.io/gateway-config"

AIGW_GROUP = "aigateway.envoyproxy.io"
EG_GROUP = "gateway.envoyproxy.io"
GWAPI_GROUP = "gateway.networking.k8s.io"

_COST_TYPES = {
    "InputToken": config_pb2.LLMRequestCost.INPUT_TOKEN,
    "OutputToken": config_pb2.LLMRequestCost.OUTPUT_TOKEN,
    "TotalToken": config_pb2.LLMRequestCost.TOTAL_TOKEN,
    "CachedInputToken": config_pb2.LLMRequestCost.CACHED_INPUT_TOKEN,
    "CacheCreationInputToken": config_pb2.LLMRequestCost.CACHE_CREATION_INPUT_TOKEN,
    "ReasoningToken": config_pb2.LLMRequestCost.REASONING_TOKEN,
    "CEL": config_pb2.LLMRequestCost.CEL,
}


@dataclass(frozen=True)
class CompileResult:
    # Fleets ("<ns>/<gateway>") that compiled without error.
    gateways: Mapping[str, ir.GatewayIR]
    # Fleets with errors, and every resource each one touched (to keep its last good config).
    failed: Mapping[str, frozenset[ResourceKey]]
    statuses: Mapping[ResourceKey, tuple[Condition, ...]]
    diagnostics: tuple[Diagnostic, ...]
    bad_keys: frozenset[ResourceKey] = frozenset()

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


@dataclass
class _Ctx:
    """The state of compiling one Gateway: what it touched and what went wrong."""

    resources: ResourceSet
    status: StatusBook
    closure: set[ResourceKey] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    models: dict[str, config_pb2.Model] = field(default_factory=dict)
    # True for validate/translate: an unresolved secret value is a warning and a placeholder.
    placeholder_secrets: bool = False
    seal_secret: bytes = b""

    def use(self, loaded: Loaded) -> None:
        self.closure.add(loaded.key)

    def lookup(self, kind: str, namespace: str, name: str) -> Loaded | None:
        key = ResourceKey(kind, namespace, name)
        self.closure.add(key)
        loaded = self.resources.items.get(key)
        return loaded

    def error(self, message: str, at: Loaded, field_path: str = "") -> None:
        self.diagnostics.append(error(message, at.origin, at.key, field_path))

    def warn(self, message: str, at: Loaded, field_path: str = "") -> None:
        self.diagnostics.append(warning(message, at.origin, at.key, field_path))

    @property
    def failed(self) -> bool:
        return any(d.is_error for d in self.diagnostics) or bool(self.closure & self.resources.bad_keys)


# What an unresolved secret value compiles to when placeholder_secrets is set.
PLACEHOLDER_SECRET = "unset-secret-placeholder"


def compile_resources(
    resources: ResourceSet, *, placeholder_secrets: bool = False, seal_secret: bytes = b""
) -> CompileResult:
    """Compile every Gateway. placeholder_secrets (validate, translate): a secret value that could
    not be resolved (e.g. an unset environment variable) is a warning and compiles to a placeholder
    instead of failing its Gateway; `run` and `serve` leave it off, so they fail naming the variable.
    seal_secret: mixed into the seal key of a fleet that holds no credential of its own (see
    _seal_key); the serving control plane passes random bytes, chosen once per process."""
    status = StatusBook()
    gateways: dict[str, ir.GatewayIR] = {}
    failed: dict[str, frozenset[ResourceKey]] = {}
    diagnostics: list[Diagnostic] = list(resources.diagnostics)
    attached_routes: set[ResourceKey] = set()
    for loaded in resources.of_kind("Gateway"):
        ctx = _Ctx(resources, status, placeholder_secrets=placeholder_secrets, seal_secret=seal_secret)
        gateway_ir = _compile_gateway(ctx, loaded, attached_routes)
        diagnostics.extend(ctx.diagnostics)
        if ctx.failed:
            bad = sorted(str(k) for k in ctx.closure & resources.bad_keys)
            if bad:
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                message = f"keeping the last good configuration until the errors above are fixed (they concern {shown})"
                diagnostics.append(error(message, loaded.origin, loaded.key))
            failed[loaded.key.ref] = frozenset(ctx.closure)
            status.set(loaded.key, "Programmed", False, "Invalid", "configuration has errors; last good config kept")
        else:
            gateways[loaded.key.ref] = gateway_ir
            status.set(loaded.key, "Programmed", True, "Programmed")
    for loaded in resources.of_kind("AIGatewayRoute"):
        if loaded.key not in attached_routes:
            route: kinds.AIGatewayRoute = loaded.resource
            parents = ", ".join(f"{p.namespace or loaded.key.namespace}/{p.name}" for p in route.spec.parentRefs)
            message = f"not attached to any Gateway (parentRefs: {parents or 'none'})"
            diagnostics.append(warning(message, loaded.origin, loaded.key, "spec.parentRefs"))
            if not status.has(loaded.key, "Accepted"):
                status.set(loaded.key, "Accepted", False, "NoMatchingParent", message)
    for kind in ("MCPRoute", "QuotaPolicy"):
        for loaded in resources.of_kind(kind):
            diagnostics.append(
                warning(f"{kind} is validated but not compiled into Envoy configuration yet", loaded.origin, loaded.key)
            )
    _mark_invalid(resources, status)
    return CompileResult(gateways, failed, status.snapshot(), _dedupe(diagnostics), resources.bad_keys)


def _mark_invalid(resources: ResourceSet, status: StatusBook) -> None:
    """Accepted=False on every resource whose current version is unusable, saying whether its last
    good version is still the one in use (stale) or nothing of it is."""
    first_error: dict[ResourceKey, str] = {}
    for d in resources.diagnostics:
        if d.is_error and d.resource is not None:
            first_error.setdefault(d.resource, f"{d.field + ': ' if d.field else ''}{d.message}")
    for key in sorted(resources.bad_keys):
        problem = first_error.get(key, "its file cannot be read")
        if key in resources.stale_keys:
            status.set(key, "Accepted", False, "Invalid", f"{problem}; the last good version stays in use (stale)")
        else:
            status.set(key, "Accepted", False, "Invalid", problem)


def _dedupe(diagnostics: list[Diagnostic]) -> tuple[Diagnostic, ...]:
    return tuple(dict.fromkeys(diagnostics))


# --------------------------------------------------------------------------------------------
# Gateway


def _compile_gateway(ctx: _Ctx, loaded: Loaded, attached_routes: set[ResourceKey]) -> ir.GatewayIR:
    gw: kinds.Gateway = loaded.resource
    ctx.use(loaded)
    gw_class = _cluster_scoped(ctx, "GatewayClass", gw.spec.gatewayClassName)
    if gw_class is None:
        ctx.warn(
            f"GatewayClass {gw.spec.gatewayClassName} not found; compiling anyway", loaded, "spec.gatewayClassName"
        )

    buffer_limit = _buffer_limit(ctx, loaded)
    translator = config_pb2.TranslatorConfig(name=loaded.key.ref, root_prefix="/")
    _apply_gateway_config(ctx, loaded, translator)

    # Group the Gateway's listeners by port; each port becomes one Envoy listener.
    by_port: dict[int, list[tuple[int, kinds.GatewayListener]]] = defaultdict(list)
    for index, listener in enumerate(gw.spec.listeners):
        if listener.protocol not in ("HTTP", "HTTPS"):
            ctx.warn(
                f"protocol {listener.protocol} is not supported; listener skipped",
                loaded,
                f"spec.listeners[{index}].protocol",
            )
            continue
        by_port[listener.port].append((index, listener))
    for port, group in by_port.items():
        protocols = {listener.protocol for _, listener in group}
        if len(protocols) > 1:
            ctx.error(
                f"port {port} is used by both HTTP and HTTPS listeners", loaded, f"spec.listeners[{group[1][0]}].port"
            )
        hostnames = [listener.hostname or "*" for _, listener in group]
        for (index, _), host in zip(group, hostnames, strict=True):
            if hostnames.count(host) > 1:
                ctx.error(
                    f"port {port} has two listeners for hostname {host}", loaded, f"spec.listeners[{index}].hostname"
                )
                break

    routes = _attached_routes(ctx, loaded)
    compiled_rules: dict[ResourceKey, list[tuple[tuple[str, ...], ir.Rule]]] = {}
    for route_loaded, _ in routes:
        attached_routes.add(route_loaded.key)
        compiled_rules[route_loaded.key] = _compile_route(ctx, route_loaded, translator)
        ctx.status.set(route_loaded.key, "Accepted", True, "Accepted", f"attached to Gateway {loaded.key.ref}")
    _warn_passed_override_headers(ctx, translator)

    listeners: list[ir.Listener] = []
    for port in sorted(by_port):
        group = by_port[port]
        tls = group[0][1].protocol == "HTTPS"
        certificates = _certificates(ctx, loaded, group) if tls else ()
        vhosts = _virtual_hosts(loaded, group, routes, compiled_rules)
        listeners.append(
            ir.Listener(
                name=f"{loaded.key.ref}/{port}",
                port=port,
                tls=tls,
                certificates=certificates,
                virtual_hosts=vhosts,
                buffer_limit=buffer_limit,
            )
        )
    translator.seal_key = _seal_key(translator, ctx.seal_secret)
    accepted = not any(d.is_error for d in ctx.diagnostics)
    ctx.status.set(loaded.key, "Accepted", accepted, "Accepted" if accepted else "Invalid")
    return ir.GatewayIR(loaded.key, tuple(listeners), translator, frozenset(ctx.closure))


def _seal_key(translator: config_pb2.TranslatorConfig, seal_secret: bytes) -> bytes:
    """The key the fleet's translator processes seal per-attempt records with: derived from the
    fleet's credentials, so it is secret, the same on every replica, and unchanged by edits that do
    not touch a credential (a retry in flight across a routing edit still unseals its record).

    A fleet with no credential of its own (no auth, or only client-supplied overrides) has nothing
    secret to derive from, yet its records hold the clients' credentials: `seal_secret` (random per
    control-plane process) is mixed in instead."""
    credentials = {(b.service_backend, b.auth.SerializeToString(deterministic=True)) for b in translator.backends}
    digest = hashlib.sha256(b"aigw-seal-key\0" + translator.name.encode())
    for service_backend, auth in sorted(credentials):
        digest.update(b"\0" + service_backend.encode() + b"\0" + auth)
    if not any(_configured_key(b.auth) for b in translator.backends):
        digest.update(b"\0process-secret\0" + seal_secret)
    return digest.digest()


def _configured_key(auth: config_pb2.Auth) -> str:
    kind = auth.WhichOneof("kind")
    return str(getattr(getattr(auth, kind), "key", "")) if kind else ""


def _cluster_scoped(ctx: _Ctx, kind: str, name: str) -> Loaded | None:
    """Cluster-scoped kinds (GatewayClass) carry no namespace; the loader files them under "default"."""
    for loaded in ctx.resources.of_kind(kind):
        if loaded.key.name == name:
            ctx.use(loaded)
            return loaded
    return None


def _wire_prefix(prefix: str | None) -> str:
    """The schema prefix for the translator: without slashes at either end, except an API at the
    root ("/" or ""), which stays "/" (an empty prefix means "unset", i.e. the default v1)."""
    if prefix is None:
        return ""
    return prefix.strip("/") or "/"


def _buffer_limit(ctx: _Ctx, gateway: Loaded) -> int:
    for loaded in ctx.resources.policies_for("ClientTrafficPolicy", gateway.key):
        policy: kinds.ClientTrafficPolicy = loaded.resource
        ctx.use(loaded)
        if policy.spec.connection and policy.spec.connection.bufferLimit is not None:
            return parse_quantity(policy.spec.connection.bufferLimit)
    return DEFAULT_BUFFER_LIMIT


def _apply_gateway_config(ctx: _Ctx, gateway: Loaded, translator: config_pb2.TranslatorConfig) -> None:
    gw: kinds.Gateway = gateway.resource
    name = gw.metadata.annotations.get(GATEWAY_CONFIG_ANNOTATION)
    if not name:
        return
    loaded = ctx.lookup("GatewayConfig", gateway.key.namespace, name)
    if loaded is None:
        ctx.error(
            f"GatewayConfig {gateway.key.namespace}/{name} not found",
            gateway,
            f"metadata.annotations[{GATEWAY_CONFIG_ANNOTATION}]",
        )
        return
    config: kinds.GatewayConfig = loaded.resource
    translator.global_costs.extend(_costs(ctx, loaded, config.spec.globalLLMRequestCosts, "spec.globalLLMRequestCosts"))
    if config.spec.forwardProxy is not None:
        ctx.warn("forwardProxy is not supported yet; ignored", loaded, "spec.forwardProxy")
    ctx.status.set(loaded.key, "Accepted", True, "Accepted")


def _costs(ctx: _Ctx, at: Loaded, costs: list[kinds.LLMRequestCost], path: str) -> list[config_pb2.LLMRequestCost]:
    out = []
    for index, cost in enumerate(costs):
        if cost.type == "CEL":
            problem = _cel_problem(cost.cel or "")
            if problem:
                ctx.error(f"invalid CEL expression: {problem}", at, f"{path}[{index}].cel")
                continue
        out.append(
            config_pb2.LLMRequestCost(metadata_key=cost.metadataKey, type=_COST_TYPES[cost.type], cel=cost.cel or "")
        )
    return out


def _cel_problem(expression: str) -> str | None:
    """Why a CEL cost expression is unusable (syntax or unknown variables), or None."""
    import celpy

    env = celpy.Environment()
    try:
        ast = env.compile(expression)
        program = env.program(ast)
        sample = {
            "model": celpy.celtypes.StringType("m"),
            "backend": celpy.celtypes.StringType("b"),
            "route_name": celpy.celtypes.StringType("r"),
        }
        for var in (
            "input_tokens",
            "cached_input_tokens",
            "cache_creation_input_tokens",
            "output_tokens",
            "total_tokens",
            "reasoning_tokens",
        ):
            sample[var] = celpy.celtypes.UintType(1)
        result = program.evaluate(sample)
    except Exception as exc:  # celpy raises many exception types for bad expressions
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(result, Exception):
        return str(result)
    if not isinstance(result, int) or isinstance(result, bool):
        return f"must evaluate to an integer, got {type(result).__name__}"
    return None


def _attached_routes(ctx: _Ctx, gateway: Loaded) -> list[tuple[Loaded, tuple[str, ...]]]:
    """AIGatewayRoutes whose parentRefs name this Gateway and that its listeners allow, with the
    names of the listeners each attaches to."""
    gw: kinds.Gateway = gateway.resource
    out = []
    for loaded in ctx.resources.of_kind("AIGatewayRoute"):
        route: kinds.AIGatewayRoute = loaded.resource
        listener_names: list[str] = []
        for ref in route.spec.parentRefs:
            if ref.name != gateway.key.name or (ref.namespace or loaded.key.namespace) != gateway.key.namespace:
                continue
            for listener in gw.spec.listeners:
                if ref.sectionName and ref.sectionName != listener.name:
                    continue
                if ref.port and ref.port != listener.port:
                    continue
                same_ns = loaded.key.namespace == gateway.key.namespace
                if listener.allowedRoutes.namespaces.from_ == "Same" and not same_ns:
                    ctx.diagnostics.append(
                        warning(
                            f"listener {listener.name} of Gateway {gateway.key.ref} allows routes from its own "
                            "namespace only (allowedRoutes)",
                            loaded.origin,
                            loaded.key,
                            "spec.parentRefs",
                        )
                    )
                    ctx.status.set(loaded.key, "Accepted", False, "NotAllowedByListeners")
                    continue
                listener_names.append(listener.name)
        if listener_names:
            ctx.use(loaded)
            out.append((loaded, tuple(dict.fromkeys(listener_names))))
    return out


# --------------------------------------------------------------------------------------------
# Routes and backends


def _compile_route(
    ctx: _Ctx, loaded: Loaded, translator: config_pb2.TranslatorConfig
) -> list[tuple[tuple[str, ...], ir.Rule]]:
    route: kinds.AIGatewayRoute = loaded.resource
    route_name = loaded.key.ref
    hostnames = tuple(route.spec.hostnames)
    out: list[tuple[tuple[str, ...], ir.Rule]] = []
    costs = _costs(ctx, loaded, route.spec.llmRequestCosts, "spec.llmRequestCosts")
    if costs:
        translator.route_costs.append(config_pb2.RouteCosts(route_name=route_name, costs=costs))
    errors_before = sum(d.is_error for d in ctx.diagnostics)
    for i, rule in enumerate(route.spec.rules):
        path = f"spec.rules[{i}]"
        matches = tuple(
            tuple(ir.HeaderMatch(h.name.lower(), h.value, h.type == "RegularExpression") for h in m.headers)
            for m in rule.matches
        )
        timeout = DEFAULT_REQUEST_TIMEOUT_S
        if rule.timeouts and rule.timeouts.request:
            timeout = parse_duration(rule.timeouts.request)
        idle = parse_duration(rule.streamIdleTimeout) if rule.streamIdleTimeout else None
        backends: list[ir.BackendTarget] = []
        for j, ref in enumerate(rule.backendRefs):
            ref_path = f"{path}.backendRefs[{j}]"
            if ref.is_inference_pool:
                ctx.warn("InferencePool backends are not compiled yet; this backendRef is skipped", loaded, ref_path)
                continue
            target = _backend_target(ctx, loaded, i, j, ref, ref_path, translator)
            if target is not None and ref.weight > 0:
                backends.append(target)
        if rule.backendRefs and not backends and all(r.is_inference_pool for r in rule.backendRefs):
            continue
        for match in matches:
            for header in match:
                if header.name == MODEL_HEADER and not header.regex:
                    _add_model(ctx, translator, header.value, rule, route, hostnames)
        cluster = f"{route_name}/rule/{i}"
        out.append((hostnames, ir.Rule(route_name, i, cluster, matches, tuple(backends), timeout, idle)))
    errors_after = sum(d.is_error for d in ctx.diagnostics)
    resolved = errors_after == errors_before
    ctx.status.set(loaded.key, "ResolvedRefs", resolved, "ResolvedRefs" if resolved else "BackendNotFound")
    return out


def _add_model(
    ctx: _Ctx,
    translator: config_pb2.TranslatorConfig,
    model: str,
    rule: kinds.AIGatewayRouteRule,
    route: kinds.AIGatewayRoute,
    hostnames: tuple[str, ...],
) -> None:
    existing = ctx.models.get(model)
    if existing is not None:
        if existing.hosts and hostnames:
            existing.hosts.extend(h for h in hostnames if h not in existing.hosts)
        else:
            del existing.hosts[:]
        return
    created_text = rule.modelsCreatedAt or route.metadata.creationTimestamp
    ctx.models[model] = translator.models.add(
        id=model,
        owned_by=rule.modelsOwnedBy or DEFAULT_MODELS_OWNED_BY,
        created=_unix_seconds(created_text),
        hosts=list(hostnames),
    )


def _unix_seconds(text: str | None) -> int:
    if not text:
        return 0
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _backend_target(
    ctx: _Ctx,
    route_loaded: Loaded,
    rule_index: int,
    ref_index: int,
    ref: kinds.RouteRuleBackendRef,
    ref_path: str,
    translator: config_pb2.TranslatorConfig,
) -> ir.BackendTarget | None:
    route_ns = route_loaded.key.namespace
    ns = ref.namespace or route_ns
    if not grant_allows(
        ctx.resources,
        from_group=AIGW_GROUP,
        from_kind="AIGatewayRoute",
        from_namespace=route_ns,
        to_group=AIGW_GROUP,
        to_kind="AIServiceBackend",
        to_namespace=ns,
        to_name=ref.name,
    ):
        ctx.error(
            f"reference to AIServiceBackend {ns}/{ref.name} in another namespace needs a ReferenceGrant "
            f"in namespace {ns}",
            route_loaded,
            f"{ref_path}.namespace",
        )
        ctx.status.set(route_loaded.key, "ResolvedRefs", False, "RefNotPermitted")
        return None
    _note_grants(ctx, route_ns, ns)
    aisb_loaded = ctx.lookup("AIServiceBackend", ns, ref.name)
    if aisb_loaded is None:
        ctx.error(f"AIServiceBackend {ns}/{ref.name} not found", route_loaded, f"{ref_path}.name")
        return None
    aisb: kinds.AIServiceBackend = aisb_loaded.resource
    backend_loaded = _resolve_backend(ctx, aisb_loaded)
    if backend_loaded is None:
        return None
    backend: kinds.Backend = backend_loaded.resource
    endpoints = tuple(_endpoint(e) for e in backend.spec.endpoints)
    upstream_host = endpoints[0].address if endpoints[0].kind != "unix" else "localhost"
    tls = _upstream_tls(ctx, backend_loaded)
    auth = _auth(ctx, aisb_loaded)
    name = f"{ns}/{ref.name}/route/{route_loaded.key.name}/rule/{rule_index}/ref/{ref_index}"
    schema = aisb.spec.schema_
    prefix = schema.prefix
    if prefix is None and schema.name in ("OpenAI", "Anthropic"):
        prefix = DEFAULT_SCHEMA_PREFIX
    if schema.name == "AzureOpenAI" and not schema.version:
        ctx.warn(
            "AzureOpenAI schema without a version: requests are sent with the client's api-version, else "
            f"{contract.AZURE_DEFAULT_API_VERSION}",
            aisb_loaded,
            "spec.schema.version",
        )
    translator.backends.append(
        config_pb2.Backend(
            name=name,
            service_backend=aisb_loaded.key.ref,
            route_name=route_loaded.key.ref,
            schema=config_pb2.Schema(name=schema.name, version=schema.version or "", prefix=_wire_prefix(prefix)),
            model_name_override=ref.modelNameOverride or "",
            header_mutation=_merge_headers(aisb.spec.headerMutation, ref.headerMutation),
            body_mutation=_merge_bodies(aisb.spec.bodyMutation, ref.bodyMutation),
            auth=auth,
            upstream_host=tls.sni if tls else upstream_host,
        )
    )
    ctx.status.set(aisb_loaded.key, "Accepted", True, "Accepted")
    return ir.BackendTarget(
        name=name,
        endpoints=endpoints,
        upstream_host=tls.sni if tls else upstream_host,
        weight=ref.weight,
        priority=ref.priority,
        tls=tls,
    )


def _note_grants(ctx: _Ctx, from_ns: str, to_ns: str) -> None:
    if from_ns != to_ns:
        for grant in ctx.resources.of_kind("ReferenceGrant"):
            if grant.key.namespace == to_ns:
                ctx.use(grant)


def _resolve_backend(ctx: _Ctx, aisb_loaded: Loaded) -> Loaded | None:
    aisb: kinds.AIServiceBackend = aisb_loaded.resource
    ref = aisb.spec.backendRef
    ns = ref.namespace or aisb_loaded.key.namespace
    if not grant_allows(
        ctx.resources,
        from_group=AIGW_GROUP,
        from_kind="AIServiceBackend",
        from_namespace=aisb_loaded.key.namespace,
        to_group=EG_GROUP,
        to_kind="Backend",
        to_namespace=ns,
        to_name=ref.name,
    ):
        ctx.error(
            f"reference to Backend {ns}/{ref.name} in another namespace needs a ReferenceGrant in namespace {ns}",
            aisb_loaded,
            "spec.backendRef.namespace",
        )
        return None
    _note_grants(ctx, aisb_loaded.key.namespace, ns)
    loaded = ctx.lookup("Backend", ns, ref.name)
    if loaded is None:
        ctx.error(f"Backend {ns}/{ref.name} not found", aisb_loaded, "spec.backendRef.name")
        ctx.status.set(aisb_loaded.key, "ResolvedRefs", False, "BackendNotFound")
        return None
    ctx.status.set(aisb_loaded.key, "ResolvedRefs", True, "ResolvedRefs")
    ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    return loaded


def _endpoint(endpoint: kinds.BackendEndpoint) -> ir.Endpoint:
    if endpoint.fqdn is not None:
        return ir.Endpoint("fqdn", endpoint.fqdn.hostname, endpoint.fqdn.port)
    if endpoint.ip is not None:
        return ir.Endpoint("ip", endpoint.ip.address, endpoint.ip.port)
    assert endpoint.unix is not None
    return ir.Endpoint("unix", endpoint.unix.path)


def _upstream_tls(ctx: _Ctx, backend_loaded: Loaded) -> ir.UpstreamTLS | None:
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


_HEADER_DEFAULTS = {
    "APIKey": "x-aigw-api-key",
    "AnthropicAPIKey": "x-aigw-anthropic-api-key",
    "AzureAPIKey": "x-aigw-azure-api-key",
    "AzureCredentials": "x-aigw-azure-access-token",
    "GCPCredentials": "x-aigw-gcp-access-token",
    "AWSCredentials": "x-aigw-aws-",
}


def _auth(ctx: _Ctx, aisb_loaded: Loaded) -> config_pb2.Auth:
    policies = ctx.resources.policies_for("BackendSecurityPolicy", aisb_loaded.key)
    for loaded in policies:
        ctx.use(loaded)
    if not policies:
        return config_pb2.Auth()
    if len(policies) > 1:
        names = ", ".join(p.key.ref for p in policies)
        ctx.error(
            f"more than one BackendSecurityPolicy targets AIServiceBackend {aisb_loaded.key.ref}: {names}; "
            "the backend is skipped",
            policies[1],
            "spec.targetRefs",
        )
        return config_pb2.Auth()
    loaded = policies[0]
    spec: kinds.BackendSecurityPolicySpec = loaded.resource.spec
    auth = config_pb2.Auth()
    if spec.type in ("APIKey", "AnthropicAPIKey", "AzureAPIKey"):
        field_name = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey", "AzureAPIKey": "azureAPIKey"}[spec.type]
        holder = getattr(spec, field_name)
        key = _secret_value(ctx, loaded, holder.secretRef, "apiKey", f"spec.{field_name}.secretRef")
        target = {"APIKey": auth.api_key, "AnthropicAPIKey": auth.anthropic_api_key, "AzureAPIKey": auth.azure_api_key}
        target[spec.type].key = key or ""
    elif spec.type == "AWSCredentials":
        aws = spec.awsCredentials
        assert aws is not None
        auth.aws_credentials.region = aws.region
        if aws.credentialsFile is not None:
            auth.aws_credentials.credentials_file = (
                _secret_value(
                    ctx,
                    loaded,
                    aws.credentialsFile.secretRef,
                    "credentials",
                    "spec.awsCredentials.credentialsFile.secretRef",
                )
                or ""
            )
            auth.aws_credentials.profile = aws.credentialsFile.profile
        if aws.oidcExchangeToken is not None:
            ctx.warn(
                "AWS OIDC token exchange is not supported yet; the default credential chain is used",
                loaded,
                "spec.awsCredentials.oidcExchangeToken",
            )
    elif spec.type == "GCPCredentials":
        gcp = spec.gcpCredentials
        assert gcp is not None
        auth.gcp_credentials.project_name = gcp.projectName
        auth.gcp_credentials.region = gcp.region
        if gcp.credentialsFile is not None:
            auth.gcp_credentials.service_account_json = (
                _secret_value(
                    ctx,
                    loaded,
                    gcp.credentialsFile.secretRef,
                    "service_account.json",
                    "spec.gcpCredentials.credentialsFile.secretRef",
                )
                or ""
            )
        if gcp.workloadIdentityFederationConfig is not None:
            ctx.warn(
                "GCP workload identity federation is not supported yet",
                loaded,
                "spec.gcpCredentials.workloadIdentityFederationConfig",
            )
    elif spec.type == "AzureCredentials":
        azure = spec.azureCredentials
        assert azure is not None
        auth.azure_credentials.client_id = azure.clientID
        auth.azure_credentials.tenant_id = azure.tenantID
        if azure.clientSecretRef is not None:
            auth.azure_credentials.client_secret = (
                _secret_value(
                    ctx, loaded, azure.clientSecretRef, "client-secret", "spec.azureCredentials.clientSecretRef"
                )
                or ""
            )
        else:
            ctx.warn(
                "Azure OIDC token exchange is not supported yet", loaded, "spec.azureCredentials.oidcExchangeToken"
            )
    _pass_client_headers(ctx, loaded, auth)
    override = spec.credentialOverride
    if override is not None:
        if override.fromRequestHeaders is not None:
            source = override.fromRequestHeaders
            auth.credential_override.from_request_headers.header = source.header or _HEADER_DEFAULTS[spec.type]
        else:
            source = override.fromDynamicMetadata
            assert source is not None
            auth.credential_override.from_dynamic_metadata.namespace = source.namespace
            auth.credential_override.from_dynamic_metadata.key = source.key or ""
        auth.credential_override.fallback_to_configured = source.fallbackToConfigured
    ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    return auth


def _pass_client_headers(ctx: _Ctx, loaded: Loaded, auth: config_pb2.Auth) -> None:
    """The policy's annotation naming the provider-scoped client headers (an OpenAI organization or
    project, cookies...) that pass to its backends; the translator strips them otherwise."""
    value = loaded.resource.metadata.annotations.get(contract.PASS_CLIENT_HEADERS_ANNOTATION, "")
    for name in dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()):
        if name in contract.PROVIDER_SCOPED_HEADERS:
            auth.pass_client_headers.append(name)
        else:
            ctx.warn(
                f"{name!r} cannot be passed: only {', '.join(contract.PROVIDER_SCOPED_HEADERS)} can "
                "(client credentials never reach a provider, other headers are not stripped)",
                loaded,
                f"metadata.annotations[{contract.PASS_CLIENT_HEADERS_ANNOTATION}]",
            )


def _warn_passed_override_headers(ctx: _Ctx, translator: config_pb2.TranslatorConfig) -> None:
    """A pass-client-headers annotation naming a credential override header of any backend of the
    fleet: the translator never passes it (it would carry that backend's client credential)."""
    overrides: dict[str, str] = {}
    for b in translator.backends:
        header = b.auth.credential_override.from_request_headers.header.lower()
        if header:
            overrides.setdefault(header, b.service_backend)
    for b in translator.backends:
        for name in b.auth.pass_client_headers:
            if name not in overrides:
                continue
            namespace, _, aisb = b.service_backend.partition("/")
            target = ResourceKey("AIServiceBackend", namespace, aisb)
            for policy in ctx.resources.policies_for("BackendSecurityPolicy", target):
                ctx.warn(
                    f"{name!r} is the credential override header of AIServiceBackend {overrides[name]} in this "
                    "Gateway: it is never passed (client credentials never reach a provider)",
                    policy,
                    f"metadata.annotations[{contract.PASS_CLIENT_HEADERS_ANNOTATION}]",
                )


def _secret_value(ctx: _Ctx, bsp_loaded: Loaded, ref: kinds.SecretObjectReference, key: str, path: str) -> str | None:
    ns = ref.namespace or bsp_loaded.key.namespace
    if not grant_allows(
        ctx.resources,
        from_group=AIGW_GROUP,
        from_kind="BackendSecurityPolicy",
        from_namespace=bsp_loaded.key.namespace,
        to_group="",
        to_kind="Secret",
        to_namespace=ns,
        to_name=ref.name,
    ):
        ctx.error(
            f"reference to Secret {ns}/{ref.name} in another namespace needs a ReferenceGrant in namespace {ns}",
            bsp_loaded,
            f"{path}.namespace",
        )
        return None
    _note_grants(ctx, bsp_loaded.key.namespace, ns)
    secret_loaded = ctx.lookup("Secret", ns, ref.name)
    if secret_loaded is None:
        ctx.error(f"Secret {ns}/{ref.name} not found", bsp_loaded, f"{path}.name")
        ctx.status.set(bsp_loaded.key, "ResolvedRefs", False, "SecretNotFound")
        return None
    if key in secret_loaded.resource.unresolved:
        reason = f"key {key!r}: {secret_loaded.resource.unresolved[key]}"
        if ctx.placeholder_secrets:
            reason += " (checked with a placeholder; run and serve need it)"
            ctx.warn(reason, secret_loaded, f"stringData.{key}")
            return PLACEHOLDER_SECRET
        ctx.error(reason, secret_loaded, f"stringData.{key}")
        return None
    value = secret_loaded.resource.value(key)
    if value is None:
        ctx.error(f"Secret {ns}/{ref.name} has no key {key!r}", bsp_loaded, f"{path}.name")
        return None
    return value


def _merge_headers(
    base: kinds.HTTPHeaderMutation | None, override: kinds.HTTPHeaderMutation | None
) -> config_pb2.HeaderMutation:
    merged: dict[str, str] = {}
    removed: list[str] = []
    for mutation in (base, override):
        if mutation is None:
            continue
        for header in mutation.set:
            merged[header.name.lower()] = header.value
        removed.extend(h.lower() for h in mutation.remove)
    return config_pb2.HeaderMutation(
        set=[config_pb2.HeaderValue(name=k, value=v) for k, v in merged.items()],
        remove=list(dict.fromkeys(removed)),
    )


def _merge_bodies(
    base: kinds.HTTPBodyMutation | None, override: kinds.HTTPBodyMutation | None
) -> config_pb2.BodyMutation:
    merged: dict[str, str] = {}
    removed: list[str] = []
    for mutation in (base, override):
        if mutation is None:
            continue
        for body_field in mutation.set:
            merged[body_field.path] = body_field.value
        removed.extend(mutation.remove)
    return config_pb2.BodyMutation(
        set=[config_pb2.BodyField(path=k, value=v) for k, v in merged.items()],
        remove=list(dict.fromkeys(removed)),
    )


# --------------------------------------------------------------------------------------------
# Listeners, certificates and virtual hosts


def _certificates(
    ctx: _Ctx, gateway: Loaded, group: list[tuple[int, kinds.GatewayListener]]
) -> tuple[ir.TLSCertificate, ...]:
    out: dict[str, ir.TLSCertificate] = {}
    for index, listener in group:
        assert listener.tls is not None
        for c, ref in enumerate(listener.tls.certificateRefs):
            path = f"spec.listeners[{index}].tls.certificateRefs[{c}]"
            ns = ref.namespace or gateway.key.namespace
            if not grant_allows(
                ctx.resources,
                from_group=GWAPI_GROUP,
                from_kind="Gateway",
                from_namespace=gateway.key.namespace,
                to_group="",
                to_kind="Secret",
                to_namespace=ns,
                to_name=ref.name,
            ):
                ctx.error(
                    f"certificate Secret {ns}/{ref.name} in another namespace needs a ReferenceGrant", gateway, path
                )
                continue
            _note_grants(ctx, gateway.key.namespace, ns)
            secret = ctx.lookup("Secret", ns, ref.name)
            if secret is None:
                ctx.error(f"certificate Secret {ns}/{ref.name} not found", gateway, path)
                continue
            cert, key = secret.resource.value("tls.crt"), secret.resource.value("tls.key")
            if not cert or not key:
                ctx.error(f"Secret {ns}/{ref.name} needs the keys tls.crt and tls.key", gateway, path)
                continue
            out[f"{ns}/{ref.name}"] = ir.TLSCertificate(f"{ns}/{ref.name}", cert, key)
    return tuple(out[k] for k in sorted(out))


def _virtual_hosts(
    gateway: Loaded,
    group: list[tuple[int, kinds.GatewayListener]],
    routes: list[tuple[Loaded, tuple[str, ...]]],
    compiled: dict[ResourceKey, list[tuple[tuple[str, ...], ir.Rule]]],
) -> tuple[ir.VirtualHost, ...]:
    """Virtual hosts of one port: one per distinct hostname, plus "*"; a rule without hostnames
    belongs to every virtual host, one with hostnames to the matching ones only."""
    listener_names = {listener.name for _, listener in group}
    listener_hosts = [listener.hostname for _, listener in group]
    rules: list[tuple[tuple[str, ...], ir.Rule]] = []
    for route_loaded, attached_to in routes:
        if listener_names.isdisjoint(attached_to):
            continue
        rules.extend(compiled.get(route_loaded.key, []))
    domains: set[str] = set()
    for hosts, _ in rules:
        domains.update(hosts)
    for host in listener_hosts:
        if host:
            domains.add(host)

    def allowed(host: str) -> bool:
        return any(h is None or hostname_matches(h, host) or hostname_matches(host, h) for h in listener_hosts)

    vhosts: list[ir.VirtualHost] = []
    for domain in sorted(d for d in domains if allowed(d)):
        members = tuple(rule for hosts, rule in rules if not hosts or any(hostname_matches(h, domain) for h in hosts))
        vhosts.append(ir.VirtualHost(f"{gateway.key.ref}/{domain}", (domain,), members))
    if any(h is None for h in listener_hosts):
        members = tuple(rule for hosts, rule in rules if not hosts)
        vhosts.append(ir.VirtualHost(f"{gateway.key.ref}/*", ("*",), members))
    return tuple(vhosts)
