"""Loading the TranslatorConfig and indexing it for lookups on the hot path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from google.protobuf import json_format

from aigw.translator.v1 import config_pb2
from aigw_contract import OVERRIDE_HEADER_PREFIX
from aigw_contract import root_prefix as contract_root_prefix
from aigw_contract import schema_prefix as contract_schema_prefix
from aigw_contract.costs import prepare as prepare_cel
from aigw_contract.owned_headers import mutated_headers, override_headers, owned_headers_of

from .client_keys import ClientKeys
from .seal import Sealer, fleet_secret, user_id_key

TranslatorConfig = config_pb2.TranslatorConfig


def parse_config(data: bytes) -> config_pb2.TranslatorConfig:
    """A TranslatorConfig from JSON text or binary protobuf."""
    config = config_pb2.TranslatorConfig()
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        json_format.Parse(stripped.decode("utf-8"), config)
    else:
        config.ParseFromString(data)
    return config


def load_config(path: str | Path) -> config_pb2.TranslatorConfig:
    return parse_config(Path(path).read_bytes())


def schema_prefix(schema: config_pb2.Schema) -> str:
    """The schema's path prefix without slashes at either end ("v1" when unset)."""
    return contract_schema_prefix(schema.prefix)


@dataclass(frozen=True)
class RuntimeConfig:
    """The config plus the indexes the phases need."""

    config: config_pb2.TranslatorConfig
    backends: dict[str, config_pb2.Backend] = field(default_factory=dict)
    route_costs: dict[str, tuple[config_pb2.LLMRequestCost, ...]] = field(default_factory=dict)
    root_prefix: str = ""
    sealer: Sealer | None = None
    # HMAC key of the opaque end-user ids sent to providers (derived from the fleet's seal_key).
    user_id_key: bytes = b""
    # Every request header that can carry a credential override (x-aigw-* defaults and custom names).
    override_headers: frozenset[str] = frozenset()
    # Header names the gateway owns: the standard credential headers, every backend's override
    # header, every name any backend's headerMutation sets, and the provider-scoped client headers.
    # Each attempt strips all of them (and x-aigw-*) except those it sets or its backend passes, so
    # nothing meant for one backend reaches another.
    owned_headers: tuple[str, ...] = ()
    # Names whose values never appear in a log, besides logs.is_secret_header's: custom override
    # headers and every headerMutation.set name (e.g. an APIM subscription key).
    secret_headers: frozenset[str] = frozenset()
    # Budgets (token rate limits, quotas) by id.
    rate_limits: dict[str, config_pb2.RateLimit] = field(default_factory=dict)
    # Whether any request is charged (a route's or the fleet's costs, a budget): a request then gets
    # the estimate of its prompt that an answer without usage is charged.
    metered: bool = False
    # The client keys of the fleet's SecurityPolicies, by policy (key_check.py).
    client_keys: dict[str, ClientKeys] = field(default_factory=dict)

    @classmethod
    def build(cls, config: config_pb2.TranslatorConfig) -> RuntimeConfig:
        backends = {b.name: b for b in config.backends}
        route_costs = {rc.route_name: tuple(rc.costs) for rc in config.route_costs}
        root = contract_root_prefix(config.root_prefix)
        secret = fleet_secret(config)
        overrides = override_headers(config.backends)
        mutated = mutated_headers(config.backends)
        # celpy set up now, not by the first answer with a CEL cost (it would stall every stream
        # of the process for about 0.2 s).
        if any(c.type == config_pb2.LLMRequestCost.CEL for c in chain(config.global_costs, *route_costs.values())):
            prepare_cel()
        return cls(
            config=config,
            backends=backends,
            route_costs=route_costs,
            root_prefix=root,
            sealer=Sealer(secret),
            user_id_key=user_id_key(secret),
            override_headers=overrides,
            owned_headers=owned_headers_of(overrides, mutated),
            secret_headers=overrides | mutated,
            rate_limits={r.id: r for r in config.rate_limits},
            metered=bool(config.global_costs or config.rate_limits) or any(route_costs.values()),
            client_keys={p.policy: ClientKeys(p.keys) for p in config.client_key_policies},
        )

    def is_override_header(self, name: str) -> bool:
        return name.startswith(OVERRIDE_HEADER_PREFIX) or name in self.override_headers

    def costs_for_route(self, route_name: str) -> tuple[config_pb2.LLMRequestCost, ...]:
        """Route costs first; global costs only for keys the route does not define."""
        route = self.route_costs.get(route_name, ())
        keys = {c.metadata_key for c in route}
        return route + tuple(c for c in self.config.global_costs if c.metadata_key not in keys)

    def budgets(self, ids: Iterable[str]) -> list[config_pb2.RateLimit]:
        """The budgets of these ids, in order; an id the configuration does not hold (a route of an
        older configuration) is skipped."""
        return [self.rate_limits[i] for i in ids if i in self.rate_limits]


class FleetsUnusable(ValueError):
    """The configurations of some fleets cannot be used (nothing of the update was applied): what
    xds_client.XdsConfigClient's on_update raises so that the client takes the other fleets and
    keeps those fleets' previous configurations."""

    def __init__(self, why: dict[str, str]) -> None:
        super().__init__("; ".join(f"{fleet}: {reason}" for fleet, reason in sorted(why.items())))
        self.fleets = frozenset(why)


def runtimes(
    configs: dict[str, config_pb2.TranslatorConfig], kept: dict[str, RuntimeConfig] | None = None
) -> dict[str, RuntimeConfig]:
    """Each fleet's configuration made ready to serve; FleetsUnusable naming those that cannot be.
    A fleet whose configuration is the very message `kept` was built from keeps it (a control plane
    hands its in-process translator every fleet's configuration on every edit of any of them)."""
    built: dict[str, RuntimeConfig] = {}
    why: dict[str, str] = {}
    for fleet, config in configs.items():
        previous = (kept or {}).get(fleet)
        if previous is not None and previous.config is config:
            built[fleet] = previous
            continue
        try:
            built[fleet] = RuntimeConfig.build(config)
        except Exception as exc:
            why[fleet] = str(exc) or type(exc).__name__
    if why:
        raise FleetsUnusable(why)
    return built
