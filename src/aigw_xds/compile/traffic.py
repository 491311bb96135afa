"""BackendTrafficPolicy -> each rule's retry, timeouts and circuit breakers (pure).

Targets, as Envoy AI Gateway users write them: the HTTPRoute named after an AIGatewayRoute (the
route Envoy AI Gateway generates has the AIGatewayRoute's name), the AIGatewayRoute itself, or the
Gateway. A sectionName on a route target names one rule (the AIGatewayRoute rule's `name`, which
Envoy AI Gateway copies to the HTTPRoute rule).

Which policy applies to a rule: the most specific one, whole, as Envoy Gateway does without
`mergeType` (no field-by-field merging): a policy naming the rule beats one naming its route, which
beats one naming the Gateway. Two policies at the same level: the oldest (creationTimestamp), then
the first by namespace/name, applies and the other is reported.

Timeouts: the rule's own `timeouts.request` wins over a policy's `timeout.http.requestTimeout`
(Envoy Gateway gives an HTTPRoute rule's timeouts precedence over a BackendTrafficPolicy); the
policy's requestTimeout replaces the 60 s default. (Envoy AI Gateway writes its 60 s default into
the HTTPRoute it generates, so there a policy can never change it; here it can, which is what a
user who writes one means.) With neither, the 60 s default applies per attempt as an idle timeout
(no byte from the backend for 60 s), not to the whole response: a healthy stream that keeps
sending is never cut, and a backend that does not answer still fails after 60 s.

Failover of a silent backend: a per-try timeout or per-try idle timeout (streamIdleTimeout, the 60 s
default above, a policy's perRetry.timeout) that fires before the response has begun resets the
attempt, and Envoy retries a reset only when the retry triggers include 5xx, gateway-error or reset
(TIMEOUT_TRIGGERS). The default failover of a rule with several priorities (no policy, or one
without `retry`) has 5xx and reset, so a silent backend fails over to the next priority. A policy's
`retry` replaces those triggers: without one of the three the timed-out attempt is not retried and
the client gets the timeout; compile warns (spec.retry.retryOn.triggers) when such a rule has
several priorities and a streamIdleTimeout or perRetry.timeout. Envoy Gateway's default triggers
(a `retry` without retryOn) include none of them.

Retry, as Envoy Gateway renders it: numRetries defaults to 2; without retryOn the triggers are
connect-failure, refused-stream, unavailable, cancelled and retriable-status-codes with status 503;
httpStatusCodes imply the retriable-status-codes trigger; numAttemptsPerPriority is the
previous_priorities update frequency. A policy without `retry` leaves the rule's retries as they are
without a policy: failover across its priorities, where it has several (build.py).

Rate limits (rateLimit.global, or type Global): each rule is a budget the translator counts
(RateLimit in its configuration; ids on the IR rule, which the router phase's stream carries): the
client selectors become its conditions, limit.unit its fixed window (Month: a calendar month, Year:
twelve), cost.request the admission cost (1 without `cost`, as in Envoy Gateway), cost.response from
Metadata the request cost (llmRequestCosts metadataKey, namespace io.envoy.ai_gateway) charged when
the response ends. As in Envoy Gateway, every route counts apart (the id names the route) unless
the rule is `shared`. Local rate limits (rateLimit.local) are budgets of the same kind that the
translator the request passes through counts alone (in its memory, never in Redis): per Envoy where
each Envoy has its translator (a sidecar, `run`), per translator where Envoys share one; each rule
of each route apart (`shared` is not read; Envoy Gateway's buckets are per Envoy route it generates,
one per match of a rule and listener: more room there).
A local rule without clientSelectors is the default: it counts the requests no other local rule of
the policy counts, as Envoy Gateway's default token bucket does (the rules' windows are fixed
windows, as the global ones', not Envoy's token buckets). With the deprecated `type`, only the rule
list it names counts, as in Envoy Gateway.

Load balancing and health checks (loadBalancer, healthCheck): built into the rule's cluster as
Envoy Gateway renders them (build.py), but for two things. The backendRefs' weights keep splitting
the traffic under every load balancer type (each policy weights the localities). An active check's
interval is also Envoy's no-traffic interval (Envoy checks a cluster that never carried a request
once a minute), and an HTTP check sends each endpoint its backend's host (Envoy's default Host is the
cluster's name). A passive check that can eject no endpoint of a rule (maxEjectionPercent under one
endpoint's share) is warned about.

Circuit breakers: the policy's thresholds; build.py gives every cluster Envoy Gateway's 1024 for
each threshold a policy leaves out (or all, without a circuitBreaker), since Envoy's own default of
3 parallel retries would stop failover under load.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..api import kinds
from ..api.base import GATEWAY_API_GROUP
from ..api.kinds import UNSUPPORTED_TRAFFIC_FIELDS, parse_duration
from ..api.spelling import CLOSENESS
from ..diagnostics import Diagnostic, error, warning
from ..keys import ResourceKey
from ..resources import Loaded, ResourceSet, ResourceView
from . import ir
from .budgets import add_budgets, id_order, selector_conditions, unit_window
from .context import CompileContext
from .references import AIGW_GROUP, absent
from .status import StatusBook

KIND = "BackendTrafficPolicy"
# Envoy Gateway's retry when a policy sets `retry` without `retryOn`.
DEFAULT_NUM_RETRIES = 2
DEFAULT_TRIGGERS = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")
DEFAULT_STATUS_CODES = (503,)
# The triggers on which Envoy retries an attempt cut by its per-try timeout or per-try idle timeout
# (a local reset of the upstream stream): any one of them.
TIMEOUT_TRIGGERS = frozenset({"5xx", "gateway-error", "reset"})
# Envoy's max_ejection_percent when none is given (a policy's 0 leaves it unset, as Envoy Gateway).
ENVOY_MAX_EJECTION_PERCENT = 10
# Envoy's own default base interval, used when a policy gives only maxInterval.
DEFAULT_BACKOFF_BASE_S = 0.025
# The kinds naming an AIGatewayRoute as a target: the HTTPRoute Envoy AI Gateway makes, and itself.
_ROUTE_KINDS = ("HTTPRoute", "AIGatewayRoute")
# The kinds a target may name, with the group each must carry.
_TARGET_GROUPS = {"HTTPRoute": GATEWAY_API_GROUP, "AIGatewayRoute": AIGW_GROUP, "Gateway": GATEWAY_API_GROUP}

Rules = list[tuple[tuple[str, ...], ir.Rule]]


def apply_traffic_policies(
    ctx: CompileContext,
    gateway: Loaded[Any],
    route: Loaded[Any],
    rules: Rules,
    translator: config_pb2.TranslatorConfig | None = None,
) -> Rules:
    """The route's compiled rules, each with the policy that applies to it and its timeouts resolved;
    the budgets of the policy's rateLimit go into `translator` and their ids on the rule."""
    spec: kinds.AIGatewayRouteSpec = route.resource.spec
    out: Rules = []
    for hosts, rule in rules:
        source = spec.rules[rule.index]
        chosen = _policy_for(ctx, gateway, route, source.name)
        traffic = None
        rate_limit_ids: tuple[str, ...] = ()
        if chosen is not None and translator is not None:
            budgets = rate_limits(ctx, chosen, route, rule.index, translator)
            add_budgets(translator, budgets)
            rate_limit_ids = tuple(sorted((b.id for b in budgets), key=id_order))
            _on_backends(translator, rule, rate_limit_ids)
        timeout, caps = rule.timeout_s, True
        explicit = source.timeouts.request if source.timeouts and source.timeouts.request else None
        policy_timeout = None
        if chosen is not None:
            ctx.use(chosen)
            policy: kinds.BackendTrafficPolicy = chosen.resource
            traffic = traffic_policy(chosen.key.ref, policy.spec)
            http = policy.spec.timeout.http if policy.spec.timeout else None
            policy_timeout = http.requestTimeout if http else None
        if explicit is None and policy_timeout is not None:
            timeout = parse_duration(policy_timeout)
        elif explicit is None:
            caps = False
        elif policy_timeout is not None and parse_duration(policy_timeout) != rule.timeout_s:
            assert chosen is not None
            ctx.warn(
                f"rule {rule.index} of AIGatewayRoute {route.key.ref} sets timeouts.request ({explicit}), which wins "
                f"over this policy's requestTimeout ({policy_timeout}) as in Envoy Gateway",
                chosen,
                "spec.timeout.http.requestTimeout",
            )
        if chosen is not None and traffic is not None and traffic.retry is not None and rule.priorities >= 2:
            _warn_no_failover(ctx, chosen, route, rule, traffic)
            _warn_timeouts_not_retried(ctx, chosen, route, rule, traffic.retry)
        if chosen is not None and traffic is not None and rule.picker is not None:
            _warn_picked_by_the_pool(ctx, chosen, route, rule, traffic)
        elif chosen is not None and traffic is not None and traffic.outlier_detection is not None:
            _warn_none_ejectable(ctx, chosen, route, rule, traffic.outlier_detection)
        out.append(
            (
                hosts,
                replace(
                    rule,
                    traffic=traffic,
                    timeout_s=timeout,
                    timeout_caps_response=caps,
                    rate_limit_ids=rate_limit_ids,
                ),
            )
        )
    return out


def _on_backends(translator: config_pb2.TranslatorConfig, rule: ir.Rule, ids: tuple[str, ...]) -> None:
    """The rule's budget ids on each of its backend references (Backend.rate_limit_ids)."""
    names = {target.name for target in rule.backends}
    for backend in translator.backends:
        if backend.name in names:
            del backend.rate_limit_ids[:]
            backend.rate_limit_ids.extend(ids)


def rate_limits(
    ctx: CompileContext,
    chosen: Loaded[Any],
    route: Loaded[Any],
    rule_index: int,
    translator: config_pb2.TranslatorConfig,
) -> list[config_pb2.RateLimit]:
    """The budgets of a policy's rateLimit rules (global and local) as they apply to the requests of
    one rule of a route (`rule_index`): one per rateLimit rule. A global one counts per route (Envoy
    Gateway's default; `shared: true`: one counter for every route); a local one per route rule and
    only where the request passes (the translator's memory). A local rule without clientSelectors
    is the default, which counts only requests no other local rule of the policy counts (as Envoy
    Gateway's default token bucket). A rule with a problem of its own (rate_limit_problems, reported
    once for the whole set by check_traffic_policies, an error that fails the Gateway) is left out;
    a response cost the route does not define is an error of this Gateway, which keeps its last good
    configuration (a warning, and nothing charged on that route, when the policy targets the
    Gateway: one route must not hold every other back)."""
    policy: kinds.BackendTrafficPolicy = chosen.resource
    limit = policy.spec.rateLimit
    if limit is None:
        return []
    bad = {d.field for d in rate_limit_problems(chosen)}
    costs = {c.metadata_key for c in translator.global_costs} | {
        c.metadata_key for rc in translator.route_costs if rc.route_name == route.key.ref for c in rc.costs
    }
    on_gateway = all(ref.kind == "Gateway" for _, ref in policy.spec.targets)
    out = []
    for base, rules, local in _rule_lists(limit):
        for index, rule in enumerate(rules):
            path = f"{base}.rules[{index}]"
            if any(f.startswith(path + ".") for f in bad):
                continue
            response = rule.cost.response if rule.cost else None
            key = response.metadata.key if response is not None and response.metadata is not None else ""
            if key and key not in costs:
                known = ", ".join(sorted(costs)) or "none"
                message = (
                    f"response cost {key!r} is not a request cost of AIGatewayRoute {route.key.ref} "
                    f"(its llmRequestCosts or the GatewayConfig's globalLLMRequestCosts; known: {known})"
                )
                field_path = f"{path}.cost.response.metadata.key"
                if on_gateway:
                    # A Gateway-wide budget: a route that does not define the cost is charged nothing
                    # for it (as Envoy Gateway charges a missing metadata value), the rest keeps serving.
                    ctx.warn(f"{message}: its responses are charged nothing", chosen, field_path)
                else:
                    ctx.error(message, chosen, field_path)
                    ctx.status.set(chosen.key, "Accepted", False, "Invalid", f"{field_path}: {message}")
                    continue
            request = rule.cost.request if rule.cost else None
            if local:
                budget_id = f"btp/{chosen.key.ref}/local/{index}/route/{route.key.ref}/rule/{rule_index}"
            else:
                budget_id = f"btp/{chosen.key.ref}/{index}" + ("" if rule.shared else f"/route/{route.key.ref}")
            out.append(
                config_pb2.RateLimit(
                    id=budget_id,
                    source=f"{KIND} {chosen.key.ref} {path}",
                    conditions=selector_conditions(rule.clientSelectors),
                    limit=rule.limit.requests,
                    window=unit_window(rule.limit.unit),
                    request_cost=request.number if request is not None and request.number is not None else 1,
                    response_cost_key=key,
                    response_cost_cel=(
                        str(response.number) if response is not None and response.number is not None else ""
                    ),
                    shadow=bool(rule.shadowMode),
                    local=local,
                    headers_off=rule.xRateLimitHeaders == "Off",
                )
            )
    local_ids = [b.id for b in out if b.local and b.conditions]
    for budget in out:
        if budget.local and not budget.conditions:
            budget.unless.extend(local_ids)
    return out


def _rule_lists(limit: kinds.RateLimitSpec) -> list[tuple[str, list[kinds.RateLimitRule], bool]]:
    """(path, rules, whether they are local) of each rule list a rateLimit has and counts: with the
    (deprecated) `type`, only that one's, as in Envoy Gateway (_unread_rate_limits warns)."""
    out = []
    if limit.global_ is not None and limit.type != "Local":
        out.append(("spec.rateLimit.global", limit.global_.rules, False))
    if limit.local is not None and limit.type != "Global":
        out.append(("spec.rateLimit.local", limit.local.rules, True))
    return out


def _unread_rate_limits(loaded: Loaded[Any]) -> list[Diagnostic]:
    """Warnings for what of a policy's rateLimit is not counted as written: the rule list its `type`
    does not name, and `shared` on a local rule (each rule of each route counts apart, as in Envoy
    Gateway, which does not read it there)."""
    limit: kinds.RateLimitSpec | None = loaded.resource.spec.rateLimit
    out: list[Diagnostic] = []
    if limit is None:
        return out
    for present, name in ((limit.global_, "global"), (limit.local, "local")):
        if present is not None and limit.type is not None and limit.type.lower() != name:
            message = f"type {limit.type} counts only its own rules, as in Envoy Gateway: {name} is not counted"
            out.append(
                warning(message + " (leave type out to count both)", loaded.origin, loaded.key, "spec.rateLimit.type")
            )
    for index, rule in enumerate(limit.local.rules if limit.local is not None else []):
        if rule.shared:
            message = "shared is not read for a local rule: each rule of each route counts apart (as in Envoy Gateway)"
            out.append(warning(message, loaded.origin, loaded.key, f"spec.rateLimit.local.rules[{index}].shared"))
    return out


def rate_limit_problems(loaded: Loaded[Any]) -> list[Diagnostic]:
    """What in a policy's rateLimit rules cannot be counted, whatever route it applies to: a request
    cost from metadata (the translator admits before any metadata exists), a response cost from a
    metadata namespace other than Envoy AI Gateway's, where the request costs live, and a second
    local rule without clientSelectors (a route has one default, as in Envoy Gateway)."""
    policy: kinds.BackendTrafficPolicy = loaded.resource
    limit = policy.spec.rateLimit
    out: list[Diagnostic] = []
    if limit is None:
        return out
    for base, rules, local in _rule_lists(limit):
        default = None
        for index, rule in enumerate(rules):
            path = f"{base}.rules[{index}]"
            if local and not rule.clientSelectors:
                if default is not None:
                    message = (
                        f"a second rule without clientSelectors ({base}.rules[{default}] is one): a local rate "
                        "limit has one default rule, which counts the requests its other rules do not"
                    )
                    out.append(error(message, loaded.origin, loaded.key, f"{path}.clientSelectors"))
                default = index
            request = rule.cost.request if rule.cost else None
            response = rule.cost.response if rule.cost else None
            if request is not None and request.from_ == "Metadata":
                out.append(
                    error(
                        "a request cost from metadata is not supported (no request-time metadata exists when the "
                        "request is admitted): use from: Number",
                        loaded.origin,
                        loaded.key,
                        f"{path}.cost.request.from",
                    )
                )
            if response is not None and response.metadata is not None:
                namespace = response.metadata.namespace
                if namespace != contract.METADATA_NAMESPACE:
                    out.append(
                        error(
                            f"response cost metadata namespace must be {contract.METADATA_NAMESPACE} (where the "
                            f"request costs of llmRequestCosts are written), not {namespace}",
                            loaded.origin,
                            loaded.key,
                            f"{path}.cost.response.metadata.namespace",
                        )
                    )
    return out


def _warn_no_failover(
    ctx: CompileContext, chosen: Loaded[Any], route: Loaded[Any], rule: ir.Rule, traffic: ir.TrafficPolicy
) -> None:
    """A rule with several priorities under a policy whose retry sets no numAttemptsPerPriority and
    that takes no endpoint out (no health check, no outlier detection): Envoy then retries at the
    priority that failed, whose endpoints stay healthy to it, and the rule's fallback backends get
    nothing, as in Envoy Gateway. Without a policy the rule fails over."""
    retry = traffic.retry
    assert retry is not None
    if retry.attempts_per_priority or not retry.num_retries or traffic.outlier_detection or traffic.active_health_check:
        return  # (no retry at all: nothing to send elsewhere)
    ctx.warn(
        f"rule {rule.index} of AIGatewayRoute {route.key.ref} has backends at {rule.priorities} priorities, but "
        "this policy's retry sets no numAttemptsPerPriority: its retries go to the priority that failed, and "
        "the rule never fails over (set numAttemptsPerPriority: 1 to fail over after each failed attempt)",
        chosen,
        "spec.retry.numAttemptsPerPriority",
    )


def _warn_timeouts_not_retried(
    ctx: CompileContext, chosen: Loaded[Any], route: Loaded[Any], rule: ir.Rule, retry: ir.Retry
) -> None:
    """A rule with several priorities and a per-try timeout the user set (streamIdleTimeout, the
    policy's perRetry.timeout), under a policy whose triggers do not retry a timed-out attempt: a
    silent backend then fails the request instead of failing over, which is what those timeouts
    are usually set for."""
    if TIMEOUT_TRIGGERS & set(retry.retry_on):
        return
    timeouts = []
    if rule.idle_timeout_s:
        timeouts.append(f"streamIdleTimeout {rule.idle_timeout_s:g}s")
    if retry.per_try_timeout_s is not None:
        timeouts.append(f"per-try timeout {retry.per_try_timeout_s:g}s (retry.perRetry.timeout)")
    if not timeouts:
        return
    ctx.warn(
        f"rule {rule.index} of AIGatewayRoute {route.key.ref} has a {' and a '.join(timeouts)}, but this "
        f"policy's retry triggers ({', '.join(retry.retry_on)}) include none of {', '.join(sorted(TIMEOUT_TRIGGERS))}, "
        "the ones Envoy retries a timed-out attempt on: a silent backend will not fail over to the next "
        "priority (add reset to retryOn.triggers)",
        chosen,
        "spec.retry.retryOn.triggers",
    )


def _warn_picked_by_the_pool(
    ctx: CompileContext, chosen: Loaded[Any], route: Loaded[Any], rule: ir.Rule, traffic: ir.TrafficPolicy
) -> None:
    """A rule sending to an InferencePool: its picker chooses the pod of each request, so the
    policy's load balancer and health checks have nothing to choose from (the rule's cluster knows
    no pods; a pod Envoy ejected would still be picked, and answered with a 503)."""
    assert rule.picker is not None
    parts = [
        (present, path)
        for present, path in (
            (traffic.load_balancing is not None, "spec.loadBalancer"),
            (
                traffic.active_health_check is not None
                or traffic.outlier_detection is not None
                or traffic.panic_threshold is not None,
                "spec.healthCheck",
            ),
        )
        if present
    ]
    for _, path in parts:
        ctx.warn(
            f"rule {rule.index} of AIGatewayRoute {route.key.ref} sends to InferencePool {rule.picker.pool}, whose "
            f"endpoint picker chooses the pod of each request: this policy's {path.removeprefix('spec.')} does not "
            "apply to it",
            chosen,
            path,
        )


def _warn_none_ejectable(
    ctx: CompileContext, chosen: Loaded[Any], route: Loaded[Any], rule: ir.Rule, passive: ir.OutlierDetection
) -> None:
    """Envoy ejects an endpoint only while the ejected ones, it included, are at most
    maxEjectionPercent of the cluster's: with Envoy Gateway's default (10 %) a rule of fewer than
    ten endpoints (two backends, most often) ejects none, and a failing backend keeps taking the
    first attempt of every request. Not said of a rule with a DNS name among its endpoints: Envoy
    counts each address the name resolves to."""
    endpoints = [e for target in rule.backends for e in target.endpoints]
    count = len(endpoints)
    percent = passive.max_ejection_percent or ENVOY_MAX_EJECTION_PERCENT  # 0: left to Envoy's default
    if passive.always_eject_one or not count or any(e.kind == "fqdn" for e in endpoints) or percent * count >= 100:
        return
    ctx.warn(
        f"rule {rule.index} of AIGatewayRoute {route.key.ref} has {count} endpoint(s): ejecting one is "
        f"{100 / count:.0f} % of them, over this policy's maxEjectionPercent ({percent}), "
        "so its passive health check ejects none (raise maxEjectionPercent, or set alwaysEjectOneEndpoint)",
        chosen,
        "spec.healthCheck.passive.maxEjectionPercent",
    )


def _policy_for(
    ctx: CompileContext, gateway: Loaded[Any], route: Loaded[Any], rule_name: str | None
) -> Loaded[Any] | None:
    """The policy that applies to one rule: rule level, else route level, else Gateway level."""
    levels = [
        naming_route(ctx.resources, route.key, rule_name) if rule_name else [],
        naming_route(ctx.resources, route.key, None),
        list(_naming(ctx.resources, gateway.key, None)),
    ]
    for at, candidates in enumerate(levels):
        if not candidates:
            continue
        ordered = oldest_first(candidates)
        below = [p for level in levels[at + 1 :] for p in level]
        _warn_budgets_overridden(ctx, ordered[0], below)
        for other in ordered[1:]:
            ctx.use(other)
            message = (
                f"{ordered[0].key.ref} applies to the same target (the oldest policy, then by name, wins); "
                "this policy is not applied there"
            )
            ctx.warn(message, other, "spec.targetRefs")
            ctx.status.set(other.key, "Accepted", False, "Conflicted", message)
        for policy in below:  # (Envoy Gateway's Overridden: a more specific policy applies instead)
            ctx.use(policy)
            ctx.status.set(policy.key, "Overridden", True, "Overridden", _OVERRIDDEN)
        return ordered[0]
    return None


_OVERRIDDEN = "more specific BackendTrafficPolicies (a route's, a rule's) apply instead to some of what it targets"


def _warn_budgets_overridden(ctx: CompileContext, chosen: Loaded[Any], below: list[Loaded[Any]]) -> None:
    """A less specific policy's rateLimit that does not count a rule's requests because a more
    specific policy without one applies there whole (as in Envoy Gateway, which says Overridden):
    a budget set for the Gateway is easily lost to a route's policy that sets only a retry."""
    if chosen.resource.spec.rateLimit is not None:
        return
    for policy in below:
        if policy.resource.spec.rateLimit is None:
            continue
        ctx.use(policy)
        ctx.warn(
            f"{chosen.key.ref} applies whole to the rules it targets (the most specific policy does, as in Envoy "
            "Gateway) and has no rateLimit: this policy's rateLimit does not count their requests (give "
            f"{chosen.key.ref} the rateLimit too)",
            policy,
            "spec.rateLimit",
        )


def oldest_first(candidates: Iterable[Loaded[Any]]) -> list[Loaded[Any]]:
    """Policies at one level, the one that applies first (the oldest, then by namespace/name)."""
    unique = {p.key: p for p in candidates}.values()
    return sorted(unique, key=lambda p: (p.resource.metadata.creationTimestamp or "", p.key))


def outranked(kind: str, first: Loaded[Any], where: str) -> str:
    """What a policy of `kind` at the same target (`where`) as `first`, the one that applies, is told."""
    return (
        f"{first.key.ref}, the oldest {kind} targeting {where} (by creationTimestamp, then namespace/name), "
        "applies to it: this one does not (as in Envoy Gateway, a target takes one)"
    )


def applies_somewhere(resources: ResourceView, loaded: Loaded[Any]) -> bool:
    """Whether the policy is the one that applies at some target it names (not one another policy
    at the same level wins everywhere: that one is not applied, whatever it holds)."""
    namespace = loaded.key.namespace
    for _, ref in loaded.resource.spec.targets:
        if ref.kind == "Gateway":
            candidates = list(_naming(resources, ResourceKey("Gateway", namespace, ref.name), None))
        else:
            route = ResourceKey("AIGatewayRoute", namespace, ref.name)
            candidates = naming_route(resources, route, ref.sectionName)
        if candidates and oldest_first(candidates)[0].key == loaded.key:
            return True
    return False


def naming_route(resources: ResourceView, route: ResourceKey, section: str | None) -> list[Loaded[Any]]:
    """Policies with a valid target naming an AIGatewayRoute, itself or as the HTTPRoute Envoy AI
    Gateway makes of it (and exactly `section`: None = the whole route)."""
    # The route's own key where it is one (what the memo keeps of these reads: one key less a rule).
    keys = [route if kind == route.kind else ResourceKey(kind, route.namespace, route.name) for kind in _ROUTE_KINDS]
    return [p for key in keys for p in _naming(resources, key, section)]


def _naming(resources: ResourceView, target: ResourceKey, section: str | None) -> Iterable[Loaded[Any]]:
    """Policies with a valid target naming `target` (and exactly `section`: None = no sectionName)."""
    for loaded in resources.policies_for(KIND, target):
        for _, ref in loaded.resource.spec.targets:
            if (
                ref.kind == target.kind
                and ref.name == target.name
                and ref.group == _TARGET_GROUPS.get(ref.kind)
                and ref.sectionName == section
                and not (target.kind == "Gateway" and ref.sectionName)
            ):
                yield loaded
                break


def traffic_policy(name: str, spec: kinds.BackendTrafficPolicySpec) -> ir.TrafficPolicy:
    """A policy's retry, connection timeouts, circuit breakers, load balancer and health checks,
    resolved with Envoy Gateway's defaults."""
    timeout = spec.timeout or kinds.Timeout()
    http = timeout.http or kinds.HTTPTimeout()
    breaker = spec.circuitBreaker
    health = spec.healthCheck
    return ir.TrafficPolicy(
        name=name,
        retry=resolved_retry(spec.retry) if spec.retry is not None else None,
        connect_timeout_s=_seconds(timeout.tcp.connectTimeout if timeout.tcp else None),
        connection_idle_timeout_s=_seconds(http.connectionIdleTimeout),
        max_connection_duration_s=_seconds(http.maxConnectionDuration),
        max_stream_duration_s=_seconds(http.maxStreamDuration),
        circuit_breaker=resolved_circuit_breaker(breaker) if breaker is not None else None,
        load_balancing=_load_balancing(spec.loadBalancer) if spec.loadBalancer is not None else None,
        outlier_detection=_outlier_detection(health.passive) if health and health.passive else None,
        active_health_check=(
            _active_health_check(health.active)
            if health and health.active and health.active.type in _BUILT_CHECKS
            else None
        ),
        panic_threshold=health.panicThreshold if health else None,
    )


# The active health checks built: gRPC's needs an HTTP/2 cluster, and the rules' clusters speak
# HTTP/1.1 to providers (Envoy refuses the cluster: reported as not supported, the check left out).
_BUILT_CHECKS = ("HTTP", "TCP")

# The load balancers built; Envoy Gateway's others (BackendUtilization, DynamicModule) are
# reported as not supported and leave the cluster's own.
_BUILT_BALANCERS = ("RoundRobin", "LeastRequest", "Random", "ConsistentHash")


def _load_balancing(balancer: kinds.LoadBalancer) -> ir.LoadBalancing | None:
    if balancer.type not in _BUILT_BALANCERS:
        return None
    hashing = balancer.consistentHash
    return ir.LoadBalancing(
        policy=balancer.type,  # type: ignore[arg-type]  # one of _BUILT_BALANCERS
        slow_start_window_s=_seconds(balancer.slowStart.window) if balancer.slowStart else None,
        table_size=hashing.tableSize if hashing else None,
        hash_on=_hash_inputs(hashing) if hashing else (),
    )


def _hash_inputs(hashing: kinds.ConsistentHash) -> tuple[ir.HashInput, ...]:
    if hashing.type == "SourceIP":
        return (ir.HashInput("source_ip"),)
    if hashing.type == "Cookie":
        assert hashing.cookie is not None  # the model's validator
        cookie = hashing.cookie
        return (ir.HashInput("cookie", cookie.name, _seconds(cookie.ttl), tuple(sorted(cookie.attributes.items()))),)
    if hashing.type == "QueryParams":
        return tuple(ir.HashInput("query_parameter", q.name) for q in hashing.queryParams)
    headers = hashing.headers if hashing.type == "Headers" else [hashing.header]
    return tuple(ir.HashInput("header", h.name.lower()) for h in headers if h is not None)


def _outlier_detection(passive: kinds.PassiveHealthCheck) -> ir.OutlierDetection:
    return ir.OutlierDetection(
        interval_s=parse_duration(passive.interval),
        base_ejection_time_s=parse_duration(passive.baseEjectionTime),
        consecutive_5xx=passive.consecutive5XxErrors,
        consecutive_local_origin_failures=passive.consecutiveLocalOriginFailures,
        split_external_local_origin_errors=passive.splitExternalLocalOriginErrors,
        max_ejection_percent=passive.maxEjectionPercent,
        consecutive_gateway_errors=passive.consecutiveGatewayErrors,
        failure_percentage_threshold=passive.failurePercentageThreshold,
        always_eject_one=passive.alwaysEjectOneEndpoint,
    )


def _active_health_check(active: kinds.ActiveHealthCheck) -> ir.ActiveHealthCheck:
    http, tcp = active.http, active.tcp
    send = http.requestBody if http else tcp.send if tcp else None
    receive = http.expectedResponse if http else tcp.receive if tcp else None
    return ir.ActiveHealthCheck(
        kind=active.type,  # type: ignore[arg-type]  # one of _BUILT_CHECKS
        timeout_s=parse_duration(active.timeout),
        interval_s=parse_duration(active.interval),
        unhealthy_threshold=active.unhealthyThreshold,
        healthy_threshold=active.healthyThreshold,
        initial_jitter_s=_seconds(active.initialJitter),
        path=http.path if http else "",
        method=http.method or "" if http else "",
        host=http.hostname or "" if http else "",
        expected_statuses=tuple(sorted(set(http.expectedStatuses))) if http else (),
        retriable_statuses=tuple(sorted(set(http.retriableStatuses))) if http else (),
        send=send.data if send else None,
        receive=receive.data if receive else None,
    )


def resolved_circuit_breaker(breaker: kinds.CircuitBreaker) -> ir.CircuitBreaker:
    """A circuitBreaker's thresholds (those it leaves out: the build's default)."""
    return ir.CircuitBreaker(
        max_connections=breaker.maxConnections,
        max_pending_requests=breaker.maxPendingRequests,
        max_parallel_requests=breaker.maxParallelRequests,
        max_parallel_retries=breaker.maxParallelRetries,
        max_requests_per_connection=breaker.maxRequestsPerConnection,
    )


def resolved_retry(retry: kinds.Retry) -> ir.Retry:
    """A retry with Envoy Gateway's defaults for what it leaves out."""
    retry_on = retry.retryOn
    triggers: tuple[str, ...]
    codes: tuple[int, ...]
    if retry_on is None or (not retry_on.triggers and not retry_on.httpStatusCodes):
        triggers, codes = DEFAULT_TRIGGERS, DEFAULT_STATUS_CODES
    else:
        triggers = tuple(dict.fromkeys(retry_on.triggers))
        codes = tuple(dict.fromkeys(retry_on.httpStatusCodes))
        if codes and "retriable-status-codes" not in triggers:
            triggers += ("retriable-status-codes",)
    per_retry = retry.perRetry or kinds.PerRetryPolicy()
    backoff = per_retry.backOff
    base = _seconds(backoff.baseInterval) if backoff else None
    maximum = _seconds(backoff.maxInterval) if backoff else None
    if maximum is not None and base is None:
        base = min(DEFAULT_BACKOFF_BASE_S, maximum)
    return ir.Retry(
        num_retries=DEFAULT_NUM_RETRIES if retry.numRetries is None else retry.numRetries,
        retry_on=triggers,
        retriable_status_codes=codes,
        attempts_per_priority=retry.numAttemptsPerPriority or 0,
        per_try_timeout_s=_seconds(per_retry.timeout),
        backoff_base_s=base,
        backoff_max_s=maximum,
    )


def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration is not None else None


def check_traffic_policies(resources: ResourceSet, status: StatusBook) -> list[Diagnostic]:
    """Every BackendTrafficPolicy's targets and fields, checked once for the whole set: a target
    that does not exist or that aigw-xds cannot attach to is an error on the policy (it applies to
    its other targets), a field not implemented yet a warning naming it, and any other error (a
    cost that cannot be counted, a misspelt field) one that fails the Gateways the policy applies
    to (compile_resources)."""
    out: list[Diagnostic] = []
    for loaded in resources.of_kind(KIND):
        policy: kinds.BackendTrafficPolicy = loaded.resource
        problems = [d for path, ref in policy.spec.targets for d in _target_problems(resources, loaded, path, ref)]
        if policy.spec.targetSelectors:
            problems.append(
                error(
                    "targetSelectors is not supported yet: name the targets in targetRefs",
                    loaded.origin,
                    loaded.key,
                    "spec.targetSelectors",
                )
            )
        out.extend(problems)
        for field_name in UNSUPPORTED_TRAFFIC_FIELDS:
            if field_name != "targetSelectors" and getattr(policy.spec, field_name) is not None:
                out.append(_unsupported(loaded, f"spec.{field_name}"))
        out.extend(_unsupported(loaded, path, what) for path, what in _unsupported_parts(policy.spec))
        out.extend(_unread_rate_limits(loaded))
        invalid = rate_limit_problems(loaded)
        for name in policy.spec.model_extra or {}:
            typo, like = _unknown_field(loaded, name)
            if typo:  # a typo of a field it has: the policy would not apply as written
                message = f"unknown field (did you mean {like}?)"
                invalid.append(error(message, loaded.origin, loaded.key, f"spec.{name}"))
            else:  # one of Envoy Gateway's this model does not name (a newer release's), or a far typo
                hint = f" (or is it {like}, misspelt?)" if like else ""
                out.append(
                    warning(
                        f"{name} is not a field aigw-xds reads{hint}: the rest of the policy applies without it",
                        loaded.origin,
                        loaded.key,
                        f"spec.{name}",
                    )
                )
        out.extend(invalid)
        if problems:
            status.set(loaded.key, "Accepted", False, "TargetNotFound", problems[0].message)
        elif invalid:
            status.set(loaded.key, "Accepted", False, "Invalid", invalid[0].detail)
        else:
            status.set(loaded.key, "Accepted", True, "Accepted")
    return out


# Fields of newer Envoy Gateway releases' BackendTrafficPolicy, which the model does not name: each
# one a warning, as the unsupported fields are, never taken for a typo (compressor is close to
# compression, bandwidthLimit to rateLimit).
NEWER_FIELDS = frozenset({"compressor", "routingType", "bandwidthLimit", "admissionControl"})


def _unknown_field(loaded: Loaded[Any], name: str) -> tuple[bool, str]:
    """(whether it is a typo, the field it looks like) for a field a policy's spec does not have. Read
    from the Kubernetes API it is never a typo: the API server keeps only the fields of the Envoy
    Gateway CRD installed (a newer release's). In a file, it is one when close to a field the spec
    has (difflib 0.8, as for every kind: spelling.py) and not a newer release's field."""
    like = difflib.get_close_matches(name, _SPEC_FIELDS, n=1, cutoff=0.6)
    if not like or name in NEWER_FIELDS:
        return False, ""
    close = bool(difflib.get_close_matches(name, like, n=1, cutoff=CLOSENESS))
    return close and not loaded.origin.from_api_server, like[0]


# The fields a BackendTrafficPolicy spec has, as written: what a field it does not have is compared with.
_SPEC_FIELDS = [info.alias or name for name, info in kinds.BackendTrafficPolicySpec.model_fields.items()]


def _unsupported_parts(spec: kinds.BackendTrafficPolicySpec) -> list[tuple[str, str]]:
    """(path, what it is: "" says the path) of each part of a supported field that is not built."""
    out = []
    if spec.circuitBreaker is not None and spec.circuitBreaker.perEndpoint is not None:
        out.append(("spec.circuitBreaker.perEndpoint", ""))
    balancer = spec.loadBalancer
    if balancer is not None:
        if balancer.type not in _BUILT_BALANCERS:
            out.append(("spec.loadBalancer.type", f"loadBalancer type {balancer.type}"))
        for name in ("backendUtilization", "dynamicModule", "endpointOverride", "zoneAware"):
            if getattr(balancer, name) is not None:
                out.append((f"spec.loadBalancer.{name}", f"loadBalancer.{name}"))
    active = spec.healthCheck.active if spec.healthCheck is not None else None
    if active is not None and active.type not in _BUILT_CHECKS:
        what = f"healthCheck.active type {active.type} (its probes need HTTP/2, the clusters speak HTTP/1.1)"
        out.append(("spec.healthCheck.active.type", what))
    for name in ("overrides", "healthCheckLog"):
        if active is not None and getattr(active, name) is not None:
            out.append((f"spec.healthCheck.active.{name}", f"healthCheck.active.{name}"))
    return out


def _unsupported(loaded: Loaded[Any], path: str, what: str = "") -> Diagnostic:
    return warning(
        f"{what or path.removeprefix('spec.')} is not supported yet; the rest of the policy applies without it",
        loaded.origin,
        loaded.key,
        path,
    )


def _target_problems(
    resources: ResourceSet, loaded: Loaded[Any], path: str, ref: kinds.PolicyTargetReference
) -> list[Diagnostic]:
    def problem(message: str, field_name: str) -> list[Diagnostic]:
        return [error(message, loaded.origin, loaded.key, f"{path}.{field_name}")]

    expected_group = _TARGET_GROUPS.get(ref.kind)
    if expected_group is None:
        return problem(f"targets are HTTPRoute, AIGatewayRoute or Gateway, not {ref.kind}", "kind")
    if ref.group != expected_group:
        return problem(f"the group of a {ref.kind} target is {expected_group}, not {ref.group or '(empty)'}", "group")
    namespace = loaded.key.namespace
    if ref.kind == "Gateway":
        if resources.get("Gateway", namespace, ref.name) is None:
            return problem(absent(resources, "Gateway", namespace, ref.name), "name")
        if ref.sectionName:
            return problem("a Gateway listener (sectionName) cannot be targeted yet: target the Gateway", "sectionName")
        return []
    route = resources.get("AIGatewayRoute", namespace, ref.name)
    if route is None:
        found = absent(resources, "AIGatewayRoute", namespace, ref.name)
        if ref.kind == "HTTPRoute":  # Envoy AI Gateway's policies target the HTTPRoute it generates
            found = f"the HTTPRoute generated for {found}"
        return problem(found, "name")
    if ref.sectionName and ref.sectionName not in {r.name for r in route.resource.spec.rules if r.name}:
        return problem(f"AIGatewayRoute {namespace}/{ref.name} has no rule named {ref.sectionName}", "sectionName")
    return []
