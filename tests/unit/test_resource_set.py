"""A resource set built after another (a source's next load) knows which keys changed and takes the
previous set's indexes for the kinds that did not: both must be what a set built from nothing has."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aigw_xds.keys import ResourceKey
from aigw_xds.resources import ResourceSet
from aigw_xds.sources.files import FileSource
from tests.resource_text import api_key, backend, route

NAMES = [f"n{i}" for i in range(6)]


def slice_doc(name: str, service: str) -> str:
    return f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
endpoints: [{{addresses: [10.0.0.1]}}]
ports: [{{port: 8000}}]
"""


def random_file(rng: random.Random) -> str:
    text = ""
    for name in rng.sample(NAMES, rng.randrange(0, 4)):
        kind = rng.randrange(4)
        if kind == 0:
            text += route(f"r-{name}", {f"m{rng.randrange(3)}": rng.choice(NAMES)})
        elif kind == 1:
            text += backend(name, 8000 + rng.randrange(2))
        elif kind == 2:
            text += api_key(rng.choice(NAMES), f"sk-{rng.randrange(2)}")
        else:
            text += slice_doc(f"s-{name}", rng.choice(NAMES))
    return text


def from_nothing(resources: ResourceSet) -> ResourceSet:
    return ResourceSet(dict(resources.items), resources.bad_keys, resources.diagnostics, resources.stale_keys)


@pytest.mark.parametrize("seed", range(10))
def test_a_set_built_after_another_has_the_indexes_of_one_built_from_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    files = {f"f{i}.yaml": random_file(rng) for i in range(4)}
    source = FileSource(tmp_path)
    previous: ResourceSet | None = None
    adopted = 0
    for _ in range(25):
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        resources = source.load()
        fresh = from_nothing(resources)
        if previous is not None:
            assert resources.changes is not None and resources.changes.since(previous) is not None
            both = previous.items.keys() | resources.items.keys()
            assert resources.changes.keys == {k for k in both if previous.items.get(k) is not resources.items.get(k)}
        kinds = {key.kind for key in resources.items} | {"AIGatewayRoute", "EndpointSlice"}
        for kind in kinds:
            assert list(resources.of_kind(kind)) == list(fresh.of_kind(kind)), kind
        targets = [ResourceKey("AIServiceBackend", "default", n) for n in NAMES]
        for target in targets:
            policies = resources.policies_for("BackendSecurityPolicy", target)
            assert policies == fresh.policies_for("BackendSecurityPolicy", target)
        for service in NAMES:
            labelled = resources.with_label("EndpointSlice", "kubernetes.io/service-name", "default", service)
            assert labelled == fresh.with_label("EndpointSlice", "kubernetes.io/service-name", "default", service)
        if previous is not None:
            adopted += sum(resources.of_kind(k) is not None and kinds_kept(previous, resources, k) for k in kinds)
        previous = resources
        files[rng.choice(list(files))] = random_file(rng)  # one file rewritten: some documents kept
    assert adopted  # the previous set's indexes were taken, not only built again


def kinds_kept(previous: ResourceSet, resources: ResourceSet, kind: str) -> bool:
    """Whether the set holds the previous set's very index of a kind (it did not change)."""
    return bool(resources._by_kind.get(kind)) and resources._by_kind.get(kind) is previous._by_kind.get(kind)
