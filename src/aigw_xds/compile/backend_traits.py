"""What the passes over a whole fleet read of each translator Backend (its credential override,
the headers it sets, its credential), taken from the backend's serialized configuration once per
distinct configuration, and summed up per run of routes (FleetBackends). A fleet of 10,000 routes
holds 20,000 backends; reading these through the protobuf objects on every compile cost more than
everything an edit recompiles, and so did a pass over all of them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from aigw.translator.v1 import config_pb2


@dataclass(frozen=True, slots=True)
class BackendTraits:
    name: str
    service_backend: str  # "<namespace>/<AIServiceBackend>"
    # credentialOverride.fromRequestHeaders' header, lower case ("" when none).
    override_header: str
    # credentialOverride.fromDynamicMetadata's namespace ("" when none).
    override_namespace: str
    # Every header name headerMutation sets, lower case.
    mutated_headers: frozenset[str]
    pass_client_headers: tuple[str, ...]
    # The backend's auth, serialized (a credential: never in a repr), and whether it holds a key of
    # its own (not only what clients supply).
    auth: bytes = field(repr=False)
    configured_key: bool


def backend_configs(translator: config_pb2.TranslatorConfig) -> tuple[bytes, ...]:
    """The translator's backends, serialized deterministically (what `traits` reads)."""
    return tuple(b.SerializeToString(deterministic=True) for b in translator.backends)


_NONE: frozenset[str] = frozenset()  # one empty set for all (each empty frozenset is 216 bytes)


_KEPT = 1 << 16  # the traits of this many configurations are kept (all forgotten when more)
_traits: dict[bytes, BackendTraits] = {}  # per configuration (a dict: an lru_cache entry costs 128 bytes more)
_auths: dict[bytes, bytes] = {}  # one of each equal auth (20,000 backends hold 2,000), as long


def traits(config: bytes) -> BackendTraits:
    kept = _traits.get(config)
    if kept is None:
        if len(_traits) >= _KEPT:
            _traits.clear()
            _auths.clear()
        kept = _traits[config] = _read_traits(config)
    return kept


def _read_traits(config: bytes) -> BackendTraits:
    backend = config_pb2.Backend.FromString(config)
    auth = backend.auth
    override = auth.credential_override
    kind = auth.WhichOneof("kind")
    auth_bytes = auth.SerializeToString(deterministic=True)
    return BackendTraits(
        name=sys.intern(backend.name),  # the text of the IR's name for it (routes.py)
        service_backend=sys.intern(backend.service_backend),  # 20,000 backends name 2,000
        override_header=override.from_request_headers.header.lower(),
        override_namespace=override.from_dynamic_metadata.namespace,
        mutated_headers=frozenset(h.name.lower() for h in backend.header_mutation.set) or _NONE,
        pass_client_headers=tuple(auth.pass_client_headers),
        auth=_auths.setdefault(auth_bytes, auth_bytes),
        configured_key=bool(str(getattr(getattr(auth, kind), "key", ""))) if kind else False,
    )


@dataclass(frozen=True, slots=True)
class FleetBackends:
    """What a fleet's passes read of its backends (or of a run of them: `merged` puts runs together
    as if summed up at once)."""

    by_name: dict[str, bytes]  # name -> configuration, serialized
    # Credential override header -> the first AIServiceBackend ("<ns>/<name>") that reads it.
    overrides: dict[str, str]
    mutated_headers: frozenset[str]  # every header some backend's headerMutation sets
    credentials: frozenset[tuple[str, bytes]]  # (AIServiceBackend, its auth serialized)
    configured_key: bool  # some backend holds a key of its own
    passing: tuple[BackendTraits, ...]  # the backends that pass client headers, in order

    @classmethod
    def of(cls, configs: Sequence[bytes]) -> FleetBackends:
        backends = [traits(c) for c in configs]
        overrides: dict[str, str] = {}
        for b in backends:
            if b.override_header:
                overrides.setdefault(b.override_header, b.service_backend)
        return cls(
            by_name={b.name: c for b, c in zip(backends, configs, strict=True)},
            overrides=overrides,
            mutated_headers=frozenset().union(*(b.mutated_headers for b in backends if b.mutated_headers)),
            credentials=frozenset((b.service_backend, b.auth) for b in backends),
            configured_key=any(b.configured_key for b in backends),
            passing=tuple(b for b in backends if b.pass_client_headers),
        )

    @classmethod
    def merged(cls, parts: Sequence[FleetBackends]) -> FleetBackends:
        by_name: dict[str, bytes] = {}
        overrides: dict[str, str] = {}
        for part in parts:
            by_name.update(part.by_name)
            for header, service_backend in part.overrides.items():
                overrides.setdefault(header, service_backend)
        return cls(
            by_name=by_name,
            overrides=overrides,
            mutated_headers=frozenset().union(*(p.mutated_headers for p in parts)),
            credentials=frozenset().union(*(p.credentials for p in parts)),
            configured_key=any(p.configured_key for p in parts),
            passing=tuple(b for p in parts for b in p.passing),
        )
