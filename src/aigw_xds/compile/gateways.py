"""Gateway -> GatewayIR: its listeners grouped by port, the AIGatewayRoutes attached to them, TLS
certificates, virtual hosts, the GatewayConfig (global costs, forward proxy), each port's client
settings (its ClientTrafficPolicy's: client_traffic.py), and the seal key of the fleet's translator."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw.translator.v1.config_pb2 import TranslatorConfig
from aigw_translator.config_parts import make_whole

from .. import runs
from ..api import kinds
from ..api.base import GATEWAY_API_GROUP
from ..keys import ResourceKey
from ..resources import Loaded
from ..runs import Run
from ..wire import Serialized
from . import incremental, ir
from .attachment import SERVED_PROTOCOLS, Reach, attachment, reach, takers
from .backend_traits import FleetBackends, backend_configs
from .client_traffic import client_traffic
from .context import CompileContext
from .costs import request_costs
from .mcp import CompiledMcpRoute, compile_mcp_routes
from .pem import key_pair_problem
from .quota import apply_quota_policies, has_quota_policies
from .references import NEEDS_GRANT, absent, hostname_matches
from .routes import compile_route
from .security import warn_passed_override_headers
from .security_policies import GatewayChecks, gateway_checks
from .traffic import apply_traffic_policies

GATEWAY_CONFIG_ANNOTATION = "aigateway.envoyproxy.io/gateway-config"


def compile_gateway(ctx: CompileContext, loaded: Loaded[Any], attached_routes: set[ResourceKey]) -> ir.GatewayIR:
    gw: kinds.Gateway = loaded.resource
    ctx.use(loaded)
    gw_class = _cluster_scoped(ctx, "GatewayClass", gw.spec.gatewayClassName)
    if gw_class is None:
        missing = absent(ctx.resources, "GatewayClass", "default", gw.spec.gatewayClassName)
        ctx.warn(f"{missing}; compiling anyway", loaded, "spec.gatewayClassName")

    translator = config_pb2.TranslatorConfig(name=loaded.key.ref, root_prefix="/")
    proxy = _apply_gateway_config(ctx, loaded, translator)

    # Group the Gateway's listeners by port; each port becomes one Envoy listener.
    by_port: dict[int, list[tuple[int, kinds.GatewayListener]]] = defaultdict(list)
    for index, listener in enumerate(gw.spec.listeners):
        if listener.protocol not in SERVED_PROTOCOLS:
            ctx.warn(
                f"protocol {listener.protocol} is not supported; listener skipped",
                loaded,
                f"spec.listeners[{index}].protocol",
            )
            continue
        if listener.protocol == "HTTP" and listener.tls is not None:  # (Gateway API's schema refuses it)
            ctx.error("tls is for HTTPS listeners, not HTTP ones", loaded, f"spec.listeners[{index}].tls")
        by_port[listener.port].append((index, listener))
    if gw.spec.listeners and not by_port:
        # Served, it would take every listener off its Envoys: held at what they serve instead.
        message = "no listener is HTTP or HTTPS: the Gateway would serve nothing"
        ctx.error(message, loaded, "spec.listeners")
        ctx.status.set(loaded.key, "Accepted", False, "ListenersNotValid", message)
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

    clients = client_traffic(ctx, loaded, by_port)
    checks = gateway_checks(ctx, loaded)
    translator.client_key_policies.extend(checks.client_keys)
    key = incremental.context_key(ctx, translator, proxy)
    ai_routes = list(ctx.resources.of_kind("AIGatewayRoute"))

    def unit(route: Loaded[Any]) -> incremental.RouteUnit:
        return _route_unit(ctx, loaded, route, translator, key, proxy)

    if ctx.memo is not None:
        contributions = ctx.memo.contributions_for(loaded, ai_routes, key, unit)
    else:
        contributions = [incremental.contribution(list(map(unit, ai_routes)))]
    # After the context key: the routes' units do not read them (an MCPRoute's edit compiles no route).
    mcp_routes = compile_mcp_routes(ctx, loaded, _attachment, attached_routes, translator.root_prefix)
    translator.mcp_routes.extend(m.translator for m in mcp_routes)
    if mcp_routes and ctx.seal_secret:
        session_key = hashlib.sha256(b"aigw-mcp-session\0" + loaded.key.ref.encode() + b"\0" + ctx.seal_secret)
        translator.mcp_session_key = session_key.digest()
    header = translator.SerializeToString(deterministic=True)  # its name, root prefix, global costs, MCPRoutes
    applied = incremental.apply_contributions(ctx, translator, contributions)
    backends = applied.backends
    attached_routes.update(*(c.attached_routes for c in contributions))
    # QuotaPolicies marked backends: the configuration is served whole, as the message holds it,
    # with the routes' entries (their backends, in order, are what the quota pass reads and marks).
    marked: config_pb2.TranslatorConfig | None = None
    if has_quota_policies(ctx):
        entries = (incremental.route_entries(u) for c in contributions for u in c.attached)
        routes = config_pb2.TranslatorConfig.FromString(b"".join(entries))
        translator.backends.extend(routes.backends)
        pools = frozenset(r.backends[0].name for c in contributions for r in c.rules if r.picker and r.backends)
        if apply_quota_policies(ctx, translator, pools):
            marked = routes
            backends = FleetBackends.of(backend_configs(translator))  # quota ids were added
    warn_passed_override_headers(ctx, backends)

    listeners: list[ir.Listener] = []
    for port in sorted(by_port):
        group = by_port[port]
        tls = group[0][1].protocol == "HTTPS"
        certificates = _certificates(ctx, loaded, group) if tls else ()
        vhosts = _virtual_hosts(loaded, group, contributions, mcp_routes, checks)
        listeners.append(
            ir.Listener(
                name=f"{loaded.key.ref}/{port}",
                port=port,
                tls=tls,
                certificates=certificates,
                virtual_hosts=vhosts,
                client=clients[port],
            )
        )
    translator.seal_key = _seal_key(translator.name, backends, ctx.seal_secret)
    # The configuration served, assembled from what was merged (the 2.7 MB of backends and models
    # at 10,000 routes are neither parsed nor serialized again on every edit): its head (the
    # Gateway's own fields, the budgets) and its parts (the routes' backends, route costs and
    # models, each route's in its part: an edit of a route changes one part); merged and made whole
    # (aigw_translator.config_parts), the whole configuration (tests check). With QuotaPolicies,
    # which mark backends, it is served whole, as the message holds it. The message the IR keeps
    # has no backends or models.
    served: tuple[Serialized, ...]
    if marked is not None:
        whole = config_pb2.TranslatorConfig()
        whole.CopyFrom(translator)
        whole.route_models.extend(marked.route_models)
        make_whole(whole)
        served = (Serialized.joined(config_pb2.TranslatorConfig, [whole.SerializeToString(deterministic=True)]),)
    else:
        tail = config_pb2.TranslatorConfig(
            rate_limits=translator.rate_limits, seal_key=translator.seal_key, parts=contract.TRANSLATOR_CONFIG_PARTS
        )
        head = (header, tail.SerializeToString(deterministic=True))
        kept = ctx.memo.parts_kept(loaded.key) if ctx.memo is not None else ((), ())
        served = (Serialized.joined(TranslatorConfig, head), *_translator_parts(contributions, kept))
    if ctx.memo is not None:
        served = ctx.memo.same_config(loaded.key, served)
        ctx.memo.keep_parts(loaded.key, contributions if marked is None else (), served[1:])
    del translator.backends[:]
    # Accepted is about the Gateway itself; errors in what it is built from show in Programmed.
    own = next((d for d in ctx.diagnostics if d.is_error and d.resource == loaded.key), None)
    if own is None:
        ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    else:
        ctx.status.set(loaded.key, "Accepted", False, "Invalid", own.detail)
    return ir.GatewayIR(
        loaded.key, tuple(listeners), translator, served, closure=frozenset(ctx.closure), backends=backends
    )


def _translator_parts(
    contributions: Sequence[incremental.Contribution],
    kept: tuple[Sequence[incremental.Contribution], Sequence[Serialized]],
) -> tuple[Serialized, ...]:
    """The parts of a translator configuration served in parts: each the entries of the routes
    whose part it is (incremental.translator_part), in the routes' order.

    `kept`: the contributions the last compile made its parts of, and those parts. A part no
    contribution added or dropped since has a route in is that part again, and so is one made of
    the same bytes: an edit makes anew only the parts it changed. (All 64 parts, 2.8 MB at 10,000
    routes, used to be made anew and then found equal to the served ones: 5.6 MB more at the edit's
    peak.) The parts are made one at a time."""
    made_of, served = kept
    count = contract.TRANSLATOR_CONFIG_PARTS
    was: Sequence[Serialized | None] = served
    if len(served) == count:
        changed = incremental.parts_changed(made_of, contributions)
    else:
        changed, was = (1 << count) - 1, [None] * count
    # Of each part to make: its stretches, as (contribution, first unit, end).
    stretches: dict[int, list[tuple[incremental.Contribution, int, int]]] = {
        at: [] for at in range(count) if changed >> at & 1
    }
    for c in contributions:
        if not c.part_mask & changed:
            continue
        for part, first, end in incremental.part_stretches(c):
            if (into := stretches.get(part)) is not None:
                into.append((c, first, end))
    parts = list(was)
    for at, spans in stretches.items():
        data = b"".join([e for c, first, end in spans for e in incremental.stretch_entries(c, first, end)])
        last = was[at]
        parts[at] = last if last is not None and last.data == data else Serialized.joined(TranslatorConfig, [data])
    return tuple(p for p in parts if p is not None)


def _seal_key(fleet: str, backends: FleetBackends, seal_secret: bytes) -> bytes:
    """The key the fleet's translator processes seal per-attempt records with: derived from the
    fleet's credentials (those of its `backends`), so it is secret, the same on every
    replica, and unchanged by edits that do not touch a credential (a retry in flight across a
    routing edit still unseals its record).

    A fleet with no credential of its own (no auth, or only client-supplied overrides) has nothing
    secret to derive from, yet its records hold the clients' credentials: `seal_secret` (random per
    control-plane process) is mixed in instead."""
    digest = hashlib.sha256(b"aigw-seal-key\0" + fleet.encode())
    for service_backend, auth in sorted(backends.credentials):
        digest.update(b"\0" + service_backend.encode() + b"\0" + auth)
    if not backends.configured_key:
        digest.update(b"\0process-secret\0" + seal_secret)
    return digest.digest()


def _cluster_scoped(ctx: CompileContext, kind: str, name: str) -> Loaded[Any] | None:
    """Cluster-scoped kinds (GatewayClass) carry no namespace; the loader files them under "default"."""
    for loaded in ctx.resources.of_kind(kind):
        if loaded.key.name == name:
            ctx.use(loaded)
            return loaded
    return None


def _apply_gateway_config(
    ctx: CompileContext, gateway: Loaded[Any], translator: config_pb2.TranslatorConfig
) -> ir.Endpoint | None:
    """The Gateway's GatewayConfig: its global costs, onto `translator`; the forward proxy its
    backends are reached through (None: directly)."""
    gw: kinds.Gateway = gateway.resource
    name = gw.metadata.annotations.get(GATEWAY_CONFIG_ANNOTATION)
    if not name:
        return None
    loaded = ctx.lookup("GatewayConfig", gateway.key.namespace, name)
    if loaded is None:
        ctx.error(
            ctx.absent("GatewayConfig", gateway.key.namespace, name),
            gateway,
            f"metadata.annotations[{GATEWAY_CONFIG_ANNOTATION}]",
        )
        return None
    config: kinds.GatewayConfig = loaded.resource
    translator.global_costs.extend(
        request_costs(ctx, loaded, config.spec.globalLLMRequestCosts, "spec.globalLLMRequestCosts")
    )
    ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    if config.spec.forwardProxy is None:
        return None
    ip, port = config.spec.forwardProxy.ip_port
    return ir.Endpoint("ip", ip, port)


def _route_unit(
    ctx: CompileContext,
    gateway: Loaded[Any],
    route: Loaded[Any],
    translator: config_pb2.TranslatorConfig,
    key: tuple[Any, ...],
    proxy: ir.Endpoint | None,
) -> incremental.RouteUnit:
    """What one AIGatewayRoute contributes to the Gateway, computed on scratch contexts (recording
    what it reads when the compile keeps a memo, which reuses it while that is unchanged and the
    Gateway context is the same: `key`, incremental.context_key). `proxy`: the Gateway's forward
    proxy."""
    record = ctx.memo is not None
    attaching = incremental.scratch_context(ctx, record)
    listeners, reached = _attachment(attaching, gateway, route)
    compiling = incremental.scratch_context(ctx, record)
    scratch = config_pb2.TranslatorConfig(name=translator.name, root_prefix=translator.root_prefix)
    scratch.global_costs.extend(translator.global_costs)
    rules: incremental.Rules = []
    if listeners:
        compiled = compile_route(compiling, route, scratch, proxy, reached.hosts)
        rules = apply_traffic_policies(compiling, gateway, route, compiled, scratch)
        compiling.status.set(route.key, "Accepted", True, "Accepted", f"attached to Gateway {gateway.key.ref}")
    cost_entries, configs = incremental.translator_entries(scratch)
    return incremental.RouteUnit(
        gateway=gateway,
        route=route.key,
        context_key=key,
        listeners=listeners,
        attachment=incremental.effects_of(attaching),
        compiled=incremental.effects_of(compiling),
        rules=rules,
        cost_entries=cost_entries,
        backend_configs=configs,
        model_entries=incremental.route_models_entry(route.key, compiling.models.values()),
        rate_limits=tuple(scratch.rate_limits),
        tokens=incremental.tokens_of(attaching, compiling),
        run_mark=runs.mark(route.key.ref),
    )


def _attachment(ctx: CompileContext, gateway: Loaded[Any], loaded: Loaded[Any]) -> tuple[tuple[str, ...], Reach]:
    """The listeners of this Gateway a route (an AIGatewayRoute or an MCPRoute) attaches to
    (attachment.py; none: the route is not this Gateway's, and when its parentRefs name some, its
    Accepted condition says why), and where its requests come from through them."""
    gw: kinds.Gateway = gateway.resource
    route: kinds.AIGatewayRoute | kinds.MCPRoute = loaded.resource
    route_hosts = route.spec.hostnames
    found = attachment(gateway.key, gw, loaded.key, route.spec)
    names = found.listeners
    if not names:
        for listener, why in found.refused:
            ctx.warn(f"listener {listener.name} of Gateway {gateway.key.ref} {why}", loaded, "spec.parentRefs")
        if found.refused:
            listener, why = found.refused[0]
            message = f"listener {listener.name} of Gateway {gateway.key.ref} {why}"
            ctx.status.set(loaded.key, "Accepted", False, "NotAllowedByListeners", message)
        elif found.apart:
            named = {listener.name: listener.hostname for listener in found.apart}
            hosts = ", ".join(f"{name}: {hostname}" for name, hostname in named.items())
            message = (
                f"its hostnames meet none of the hostnames of the listeners of Gateway {gateway.key.ref} it names "
                f"({hosts}): it is not served there"
            )
            ctx.warn(message, loaded, "spec.hostnames")
            ctx.status.set(loaded.key, "Accepted", False, "NoMatchingListenerHostname", message)
        return (), Reach((), ())
    ctx.use(loaded)
    attached = [listener for listener in gw.spec.listeners if listener.name in names]
    reached = reach(route_hosts, attached, gw.spec.listeners)
    for host, taking in reached.lost:
        nowhere = ": this route reaches no request" if reached.hosts == () else ""
        message = (
            f"hostname {host}: its requests are for listener {', '.join(sorted(taking))} of Gateway "
            f"{gateway.key.ref} (a more specific hostname on the same port), which this route does not attach "
            f"to{nowhere}"
        )
        ctx.warn(message, loaded, "spec.hostnames")
    return names, reached


# --------------------------------------------------------------------------------------------
# Listeners, certificates and virtual hosts


def _certificates(
    ctx: CompileContext, gateway: Loaded[Any], group: list[tuple[int, kinds.GatewayListener]]
) -> tuple[ir.TLSCertificate, ...]:
    out: dict[str, ir.TLSCertificate] = {}
    for index, listener in group:
        assert listener.tls is not None
        for c, ref in enumerate(listener.tls.certificateRefs):
            path = f"spec.listeners[{index}].tls.certificateRefs[{c}]"
            ns = ref.namespace or gateway.key.namespace
            if not ctx.reference_allowed(gateway, GATEWAY_API_GROUP, "", "Secret", ns, ref.name):
                ctx.error(f"certificate Secret {ns}/{ref.name} in another namespace {NEEDS_GRANT}", gateway, path)
                continue
            secret = ctx.lookup("Secret", ns, ref.name)
            if secret is None:
                ctx.error(f"certificate {ctx.absent('Secret', ns, ref.name)}", gateway, path)
                continue
            cert, key = secret.resource.value("tls.crt"), secret.resource.value("tls.key")
            if not cert or not key:
                ctx.error(f"Secret {ns}/{ref.name} needs the keys tls.crt and tls.key", gateway, path)
                continue
            problem = key_pair_problem(cert, key)
            if problem is not None:  # (Envoy would refuse it, and every listener's certificates with it)
                ctx.error(f"Secret {ns}/{ref.name}: {problem}", gateway, path)
                continue
            out[f"{ns}/{ref.name}"] = ir.TLSCertificate(f"{ns}/{ref.name}", cert, key)
    return tuple(out[k] for k in sorted(out))


def _virtual_hosts(
    gateway: Loaded[Any],
    group: list[tuple[int, kinds.GatewayListener]],
    contributions: list[incremental.Contribution],
    mcp_routes: Sequence[CompiledMcpRoute] = (),
    checks: GatewayChecks | None = None,
) -> tuple[ir.VirtualHost, ...]:
    """Virtual hosts of one port: one per distinct hostname, plus "*". A request for a host is the
    listener's with the most specific hostname that covers it (Gateway API's rule: exact, then the
    longest wildcard, then none), so a virtual host holds the rules (and MCPRoutes) attached to
    that listener: those without hostnames, and those whose hostnames match. A virtual host's rules
    come in runs: a contribution whose routes all attach to that listener and name no hostname is
    one run, the very one it holds (Contribution.rules)."""
    listener_names = {listener.name for _, listener in group}
    listener_hosts = [listener.hostname for _, listener in group]

    def serving(domain: str | None) -> frozenset[str]:
        """The listeners a request for `domain` (None: "*", a host no listener names) is for."""
        return takers(domain, (listener for _, listener in group))

    # Per contribution: all its rules (one run, with the listener sets its routes attach to), or its
    # rules attached here with their listeners and hostnames.
    Placed = list[tuple[tuple[str, ...], tuple[str, ...], ir.Rule]]
    pieces: list[incremental.Contribution | Placed] = []
    domains: set[str] = set()
    for c in contributions:
        if c.hostless and all(not listener_names.isdisjoint(ls) for ls in c.listener_sets):
            if c.rules:
                pieces.append(c)
            continue
        rules = [
            (ls, hosts, rule) for ls, placed in c.placed if not listener_names.isdisjoint(ls) for hosts, rule in placed
        ]
        domains.update(h for _, hosts, _ in rules for h in hosts)
        pieces.append(rules)
    mcp_here = [m for m in mcp_routes if not listener_names.isdisjoint(m.listeners)]
    domains.update(h for m in mcp_here for h in m.hostnames)
    for host in listener_hosts:
        if host:
            domains.add(host)

    def member_runs(domain: str | None) -> tuple[Run[ir.Rule], ...]:
        """The runs of the virtual host for `domain` (None: "*", where rules without hostnames go)."""
        here = serving(domain)
        out: list[Run[ir.Rule]] = []
        for piece in pieces:
            if isinstance(piece, incremental.Contribution):
                if all(not here.isdisjoint(ls) for ls in piece.listener_sets):
                    out.append(piece.rules)  # (the whole run: the build keeps what it makes of it)
                    continue
                members = Run(rule for ls, placed in piece.placed if not here.isdisjoint(ls) for _, rule in placed)
            else:
                members = Run(
                    rule
                    for ls, hosts, rule in piece
                    if not here.isdisjoint(ls)
                    and (not hosts or (domain is not None and any(hostname_matches(h, domain) for h in hosts)))
                )
            if members:
                out.append(members)
        return tuple(out)

    def member_mcp_routes(domain: str | None) -> tuple[ir.McpRoute, ...]:
        here = serving(domain)
        return tuple(
            m.route
            for m in mcp_here
            if not here.isdisjoint(m.listeners)
            and (not m.hostnames or (domain is not None and any(hostname_matches(h, domain) for h in m.hostnames)))
        )

    checks = checks or GatewayChecks()

    def virtual_host(domain: str | None) -> ir.VirtualHost:
        """The host's rules and MCPRoutes, with the SecurityPolicies of its listener and its routes."""
        rule_runs = member_runs(domain)
        route_checks: tuple[tuple[str, ir.ClientChecks], ...] = ()
        if checks.routes:
            here = {rule.route for run in rule_runs for rule in run}
            route_checks = tuple((route, c) for route, c in sorted(checks.routes.items()) if route in here)
        own = checks.of_listener(next(iter(sorted(serving(domain))), None))
        name = f"{gateway.key.ref}/{domain or '*'}"
        host_checks = ir.HostChecks.of(name, own, route_checks) if own is not None or route_checks else None
        return ir.VirtualHost.of(name, (domain or "*",), rule_runs, member_mcp_routes(domain), host_checks)

    # (A domain no listener covers, a route's hostname broader than its listener's, is served
    # through the listener's own hostname alone: Gateway API intersects the two.)
    vhosts = [virtual_host(domain) for domain in sorted(d for d in domains if serving(d))]
    if any(h is None for h in listener_hosts):
        vhosts.append(virtual_host(None))
    return tuple(vhosts)
