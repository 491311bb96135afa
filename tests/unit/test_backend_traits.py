"""FleetBackends: what the fleet-wide passes read of the backends, summed up per run of routes and
merged; merged runs must read as the whole fleet summed up at once, however it is cut."""

from __future__ import annotations

import random

import pytest

from aigw.translator.v1 import config_pb2
from aigw_xds.compile.backend_traits import FleetBackends


def random_backend(rng: random.Random, index: int) -> bytes:
    service = f"default/b{rng.randrange(4)}"
    backend = config_pb2.Backend(name=f"{service}/route/r{index}/rule/0/ref/0", service_backend=service)
    kind = rng.randrange(4)
    if kind == 0:
        backend.auth.api_key.key = f"sk-{rng.randrange(3)}"
    elif kind == 1:
        backend.auth.credential_override.from_request_headers.header = rng.choice(["X-Key", "x-other"])
    elif kind == 2:
        backend.auth.credential_override.from_dynamic_metadata.namespace = "ns"
    if rng.random() < 0.3:
        backend.header_mutation.set.add(name=rng.choice(["X-A", "x-b"]), value="v")
    if rng.random() < 0.3:
        backend.auth.pass_client_headers.append(rng.choice(["anthropic-beta", "x-key"]))
    return backend.SerializeToString(deterministic=True)


@pytest.mark.parametrize("seed", range(20))
def test_runs_merged_read_as_the_fleet_summed_up_at_once(seed: int) -> None:
    rng = random.Random(seed)
    configs = [random_backend(rng, i) for i in range(rng.randrange(0, 40))]
    cuts = sorted(rng.sample(range(len(configs) + 1), min(len(configs) + 1, rng.randrange(1, 6))))
    parts = [configs[a:b] for a, b in zip([0, *cuts], [*cuts, len(configs)], strict=True)]
    merged = FleetBackends.merged([FleetBackends.of(part) for part in parts])
    whole = FleetBackends.of(configs)
    assert merged == whole
    assert list(merged.overrides.items()) == list(whole.overrides.items())  # the first naming each header
