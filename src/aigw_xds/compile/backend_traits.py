"""What the passes over a whole fleet read of each translator Backend (its credential override,
the headers it sets, its credential), taken from the backend's serialized configuration once per
distinct configuration. A fleet of 10,000 routes holds 20,000 backends; reading these through the
protobuf objects on every compile cost more than everything an edit recompiles."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import lru_cache

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


@lru_cache(maxsize=1 << 16)
def traits(config: bytes) -> BackendTraits:
    backend = config_pb2.Backend.FromString(config)
    auth = backend.auth
    override = auth.credential_override
    kind = auth.WhichOneof("kind")
    return BackendTraits(
        name=backend.name,
        service_backend=sys.intern(backend.service_backend),  # 20,000 backends name 2,000
        override_header=override.from_request_headers.header.lower(),
        override_namespace=override.from_dynamic_metadata.namespace,
        mutated_headers=frozenset(h.name.lower() for h in backend.header_mutation.set) or _NONE,
        pass_client_headers=tuple(auth.pass_client_headers),
        auth=auth.SerializeToString(deterministic=True),
        configured_key=bool(str(getattr(getattr(auth, kind), "key", ""))) if kind else False,
    )
