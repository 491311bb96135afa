"""Route classes (pure): how much of the translator a rule's requests need.

Envoy routes every request on the body's model itself (json_to_metadata), so what is left per
request depends only on the rule's backends:

- NATIVE: Envoy alone, no Python. Non-streaming chat/completions and completions requests of a rule
  whose backends all speak the OpenAI schema (an Azure OpenAI v1 endpoint included: the OpenAI
  schema with an AzureAPIKey) and are treated alike with no feature only the translator has (a
  credential override, header or body mutations, a model override, costs of the route's own of any
  type, fleet-wide costs other than token counts: Envoy's json_to_metadata is one for the listener,
  so it writes the fleet-wide token counts for every route alike). The route rewrites the path
  prefix and strips the client's credentials; the cluster's credential_injector adds the backend key
  from an SDS secret; usage is read from the response by json_to_metadata into the translator's
  metadata keys.
- ROUTE: one ext_proc stream at the router. Every backend of the rule is translated alike (one
  schema, one credential, the same mutations), so the router phase builds the backend request
  itself and Envoy's retries reuse it; the per-attempt filter is off.
- ATTEMPT: the router phase plus the per-attempt phase, for rules whose backends differ (priorities
  that mix schemas or credentials): each attempt is translated for the endpoint Envoy picked. Also
  rules whose credential override reads another filter's dynamic metadata (the per-attempt filter
  is the one that forwards those namespaces), and rules with a backend under QuotaPolicy budgets
  (checked against the backend that answers each attempt).

A rule under BackendTrafficPolicy rate limits is never NATIVE: the router phase admits and charges
its requests.

A rule's NATIVE requests are the exact paths in NATIVE_PATHS; its other requests (streams, other
endpoints) take ROUTE. Requests routed on an x-ai-eg-model header, or whose model the translator had
to find (a multipart form), always take ATTEMPT, which works for every rule.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_contract.owned_headers import owned_headers_of

from ..compile import ir
from ..compile.backend_traits import FleetBackends, backend_configs

Cost = config_pb2.LLMRequestCost

OPENAI_SCHEMA = "OpenAI"
# Client paths (below the root prefix) Envoy serves alone on a NATIVE rule: their usage sits in the
# JSON response under OpenAI's names, which json_to_metadata reads.
NATIVE_PATHS = ("/v1/chat/completions", "/v1/completions")
# Cost types Envoy writes natively, by the response field it reads (OpenAI's usage object).
NATIVE_COST_FIELDS: dict[int, str] = {
    Cost.INPUT_TOKEN: "prompt_tokens",
    Cost.OUTPUT_TOKEN: "completion_tokens",
    Cost.TOTAL_TOKEN: "total_tokens",
}


# Credential kinds Envoy injects itself on an OpenAI-schema backend: the header, and the value's prefix
# (as the translator's auth.resolve_auth sets them).
_NATIVE_CREDENTIALS = {"api_key": ("authorization", "Bearer "), "azure_api_key": ("api-key", "")}


# Prefixes of the client headers a NATIVE rule's cluster removes (a route removes names only; the
# translator strips them by prefix): the provider-scoped ones. A rule whose policy passes a name
# under one of them is not NATIVE.
NATIVE_STRIP_PREFIXES = contract.PROVIDER_SCOPED_PREFIXES


class RouteClass(enum.Enum):
    NATIVE = "native"
    ROUTE = "route"
    ATTEMPT = "attempt"


@dataclass(frozen=True, slots=True)
class NativePassthrough:
    """How Envoy serves a NATIVE rule's requests alone."""

    # (regex, substitution) of the path rewrite to the backend's prefix; None: the path stays.
    path_rewrite: tuple[str, str] | None
    # Request headers removed on the route: the client's credentials and every gateway-owned name.
    strip_headers: tuple[str, ...]
    # The header the cluster's credential_injector sets and its value (None: no credential).
    credential: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RulePlan:
    # The class of the rule's requests that are not NATIVE: ROUTE or ATTEMPT.
    translated: RouteClass
    # ROUTE: the backend whose translation applies (any of the rule's; they are alike).
    backend: str = ""
    # Set when the rule's NATIVE_PATHS requests (non-streaming) take the NATIVE class.
    native: NativePassthrough | None = None
    # ATTEMPT rules whose backends have QuotaPolicy budgets and several priorities: the backend names
    # of each priority, highest first. The router phase skips the priorities whose quotas are spent
    # (a route per skipped count, to a cluster of the remaining priorities), since a per-attempt
    # refusal cannot fail over.
    priorities: tuple[tuple[str, ...], ...] = ()
    _hash: int | None = field(default=None, init=False, compare=False, repr=False)  # hash_once's

    def __hash__(self) -> int:
        # The build memoizes each rule's routes on its plan too.
        return ir.hash_once(self)


def _treatment(backend: config_pb2.Backend) -> bytes:
    """What decides how a request is translated for a backend: everything but its names and host
    (the host comes from the endpoint Envoy picked, through auto_host_rewrite)."""
    alike = config_pb2.Backend()
    alike.CopyFrom(backend)
    alike.name = alike.service_backend = alike.upstream_host = ""
    return alike.SerializeToString(deterministic=True)


def native_cost_keys(translator: config_pb2.TranslatorConfig) -> dict[str, int]:
    """Metadata key -> cost type of the fleet-wide costs Envoy can write itself for every route:
    token counts that no route redefines (a route's own definition would be overwritten)."""
    redefined = {c.metadata_key for route in translator.route_costs for c in route.costs}
    return {
        c.metadata_key: c.type
        for c in translator.global_costs
        if c.type in NATIVE_COST_FIELDS and c.metadata_key not in redefined
    }


@dataclass(frozen=True)
class FleetFacts:
    """What a rule's class depends on besides the rule and its backends, computed once per fleet
    (per rule, each costs a pass over the fleet: rules x backends or rules x routes)."""

    # The header sets a NATIVE route strips or passes.
    owned: tuple[str, ...]
    overrides: frozenset[str]
    # Routes that define costs of their own (the translator computes them).
    costed_routes: frozenset[str]
    # Whether Envoy writes every fleet-wide cost itself (token counts no route redefines).
    native_costs: bool
    root_prefix: str

    def __hash__(self) -> int:
        return ir.hash_once(self)

    @classmethod
    def of(cls, translator: config_pb2.TranslatorConfig, backends: FleetBackends | None = None) -> FleetFacts:
        """`backends`: what is read of the translator's backends, when the caller has it. Equal
        facts are the same object from one compile to the next: the build's caches key on them for
        every rule, and compare them by identity first."""
        if backends is None:
            backends = FleetBackends.of(backend_configs(translator))
        overrides = frozenset(backends.overrides)
        return _canonical(
            cls(
                owned_headers_of(overrides, backends.mutated_headers),
                overrides,
                frozenset(rc.route_name for rc in translator.route_costs if rc.costs),
                not ({c.metadata_key for c in translator.global_costs} - set(native_cost_keys(translator))),
                translator.root_prefix,
            )
        )


@lru_cache(maxsize=64)
def _canonical(facts: FleetFacts) -> FleetFacts:
    return facts


def plan_rule(
    rule: ir.Rule,
    translator: config_pb2.TranslatorConfig,
    backends: Mapping[str, config_pb2.Backend],
    envoy_credentials: bool,
) -> RulePlan:
    """The class of a rule's requests (see the module docstring). Without `envoy_credentials` (the
    backend keys may not reach Envoy), a rule with a key is never NATIVE."""
    configs = tuple(backends.get(target.name) for target in rule.backends)
    return plan_of(rule, configs, envoy_credentials, FleetFacts.of(translator))


def plan_of(
    rule: ir.Rule,
    configs: tuple[config_pb2.Backend | None, ...],
    envoy_credentials: bool,
    facts: FleetFacts,
) -> RulePlan:
    """plan_rule, given the translator configuration of each of the rule's backends (None: not in the
    fleet's) and the fleet's facts: what it depends on, nothing more (the build memoizes it)."""
    if not configs or any(c is None for c in configs):
        return RulePlan(RouteClass.ATTEMPT)
    first = configs[0]
    assert first is not None
    if any(c is not None and c.quota_ids for c in configs):
        # QuotaPolicy budgets are checked against the backend that answers, per attempt.
        by_name = {target.name: c for target, c in zip(rule.backends, configs, strict=True) if c is not None}
        return RulePlan(RouteClass.ATTEMPT, priorities=priority_groups(rule, by_name))
    if len({_treatment(c) for c in configs if c is not None}) > 1:
        return RulePlan(RouteClass.ATTEMPT)
    if first.auth.credential_override.HasField("from_dynamic_metadata"):
        # The key comes from another filter's metadata, which the per-attempt filter forwards.
        return RulePlan(RouteClass.ATTEMPT)
    # Budgets of a BackendTrafficPolicy are admitted and charged by the router phase: never NATIVE.
    native = None if rule.rate_limit_ids else _native(first, rule, facts)
    if native is not None and native.credential is not None and not envoy_credentials:
        native = None
    return RulePlan(RouteClass.ROUTE, backend=first.name, native=native)


def priority_groups(rule: ir.Rule, backends: Mapping[str, config_pb2.Backend]) -> tuple[tuple[str, ...], ...]:
    """The rule's backend names by priority, highest first, down to the first priority with a
    backend without quotas: that one is never found spent, so no request skips it (nor needs the
    priorities below it named, nor floors for them). () when no priority can be skipped: a single
    priority, or quotas on none of the highest's backends (no floor routes, no extra read)."""
    groups: list[tuple[str, ...]] = []
    for level in sorted({target.priority for target in rule.backends}):
        names = tuple(t.name for t in rule.backends if t.priority == level)
        groups.append(names)
        if any(not (b := backends.get(name)) or not b.quota_ids for name in names):
            break
    return tuple(groups) if len(groups) >= 2 else ()


def floor_rule(rule: ir.Rule, skipped: int) -> ir.Rule:
    """The rule without its `skipped` highest priorities: the cluster a request goes to when their
    quotas are spent (the remaining priorities renumbered from 0)."""
    levels = sorted({target.priority for target in rule.backends})[skipped:]
    backends = tuple(
        replace(target, priority=levels.index(target.priority)) for target in rule.backends if target.priority in levels
    )
    return replace(rule, cluster=f"{rule.cluster}/from/{skipped}", backends=backends)


def _native(backend: config_pb2.Backend, rule: ir.Rule, facts: FleetFacts) -> NativePassthrough | None:
    if (backend.schema.name or OPENAI_SCHEMA) != OPENAI_SCHEMA:
        return None
    auth = backend.auth
    kind = auth.WhichOneof("kind")
    if kind not in (None, *_NATIVE_CREDENTIALS) or auth.credential_override.WhichOneof("source") is not None:
        return None
    if backend.model_name_override or backend.header_mutation.ListFields() or backend.body_mutation.ListFields():
        return None
    if rule.route in facts.costed_routes or not facts.native_costs:
        return None
    passed = frozenset(auth.pass_client_headers) - facts.overrides
    if any(name.startswith(contract.PROVIDER_SCOPED_PREFIXES) for name in passed):
        # The cluster removes those prefixes whole (NATIVE_STRIP_PREFIXES); the translator passes
        # the one name and strips the rest.
        return None
    # (Every x-aigw-* header is removed by each cluster's header mutation, whatever the class.)
    strip = tuple(h for h in facts.owned if h not in passed)
    # Envoy reads usage from the response: it must come uncompressed.
    strip += ("accept-encoding",)
    credential = None
    if kind is not None and getattr(auth, kind).key:
        header, prefix = _NATIVE_CREDENTIALS[kind]
        credential = (header, prefix + getattr(auth, kind).key)
    return NativePassthrough(
        path_rewrite=_path_rewrite(facts.root_prefix, contract.schema_prefix(backend.schema.prefix)),
        strip_headers=tuple(dict.fromkeys(strip)),
        credential=credential,
    )


def _path_rewrite(root_prefix: str, prefix: str) -> tuple[str, str] | None:
    """The client's "<root>/v1/..." becomes "/<prefix>/..." (the translator's openai_openai rule)."""
    root = contract.root_prefix(root_prefix)
    target = f"/{prefix}/" if prefix else "/"
    if not root and target == "/v1/":
        return None
    return f"^{re.escape(root)}/v1/", target


def native_path_regex(root_prefix: str) -> str:
    """The exact client paths of NATIVE requests (the query string is not part of Envoy's match)."""
    root = contract.root_prefix(root_prefix)
    return "^" + re.escape(root) + "(" + "|".join(re.escape(p) for p in NATIVE_PATHS) + ")$"
