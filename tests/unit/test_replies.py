"""Responses joined from each resource's serialization are byte for byte what protobuf serializes
the same DiscoveryResponse and DeltaDiscoveryResponse to (deterministically): Envoy reads exactly
what a message built field by field would have sent."""

from __future__ import annotations

import random

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from aigw_xds.wire import Serialized
from aigw_xds.xds import replies, type_urls
from aigw_xds.xds.cache import Resource, pack


def _any(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _resources(rng: random.Random, count: int) -> dict[str, Resource]:
    """Clusters of random sizes (lengths of one to three varint bytes), an empty message among them
    (an Any without a value), names beyond ASCII."""
    out = {}
    for i in range(count):
        name = rng.choice(["c", "クラスタ", "a" * 200]) + str(i)
        size = rng.choice([0, 1, 100, 200, 20_000])
        message = cluster_pb2.Cluster(name=name, alt_stat_name="x" * size) if size else cluster_pb2.Cluster()
        out[name] = pack(name, message)
    return out


def test_a_packed_resource_is_any_pack() -> None:
    message = cluster_pb2.Cluster(name="c", connect_timeout={"seconds": 3})
    for content in (message, Serialized.of(message)):
        assert pack("c", content).packed == _any(message).SerializeToString(deterministic=True)
    empty = endpoint_pb2.ClusterLoadAssignment()  # serializes to nothing: the Any has no value field
    assert pack("e", empty).packed == _any(empty).SerializeToString(deterministic=True)


@pytest.mark.parametrize("seed", range(12))
def test_sotw_reply_is_the_discovery_response(seed: int) -> None:
    rng = random.Random(seed)
    resources = _resources(rng, rng.choice([0, 1, 3, 40]))
    version, nonce = rng.choice(["", "v1", "ü" * 70]), str(rng.randrange(1, 10**12))
    type_url = rng.choice([type_urls.CLUSTER, route_pb2.RouteConfiguration.DESCRIPTOR.full_name])
    reply = replies.sotw(replies.Selection(resources, version), type_url, nonce)
    expected = discovery_pb2.DiscoveryResponse(
        version_info=version,
        type_url=type_url,
        nonce=nonce,
        resources=[any_pb2.Any.FromString(r.packed) for r in resources.values()],
    )
    assert reply.data == expected.SerializeToString(deterministic=True)
    assert (reply.type_url, reply.nonce, reply.resources, reply.removed) == (type_url, nonce, len(resources), 0)


@pytest.mark.parametrize("seed", range(12))
def test_delta_reply_is_the_delta_discovery_response(seed: int) -> None:
    rng = random.Random(seed)
    resources = _resources(rng, rng.choice([0, 1, 3, 40]))
    send = {name: Resource(name, rng.choice(["", "v", "9" * 16]), r.packed, r.content) for name, r in resources.items()}
    removed = rng.sample(["gone", "", "ゴーン", "z" * 300], rng.randrange(0, 4))
    system_version, nonce = rng.choice(["", "abc"]), str(rng.randrange(1, 10**6))
    reply = replies.delta(system_version, type_urls.ENDPOINT, nonce, send, removed)
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=system_version,
        type_url=type_urls.ENDPOINT,
        nonce=nonce,
        resources=[
            discovery_pb2.Resource(name=n, version=r.version, resource=any_pb2.Any.FromString(r.packed))
            for n, r in send.items()
        ],
        removed_resources=removed,
    )
    assert reply.data == expected.SerializeToString(deterministic=True)
    assert (reply.resources, reply.removed) == (len(send), len(removed))


def test_a_large_resource_and_an_empty_name_are_framed_as_protobuf_frames_them() -> None:
    """A resource past 2 MiB (a length of four varint bytes), and a delta entry with an empty name
    (its name field left out, as proto3 leaves an empty string out)."""
    big = pack("big", cluster_pb2.Cluster(name="big", alt_stat_name="x" * 2_100_000))
    unnamed = Resource("", "v", pack("", cluster_pb2.Cluster()).packed, cluster_pb2.Cluster())
    reply = replies.delta("", type_urls.CLUSTER, "1", {"big": big, "": unnamed}, [""])
    expected = discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_urls.CLUSTER,
        nonce="1",
        resources=[
            discovery_pb2.Resource(name=n, version=r.version, resource=any_pb2.Any.FromString(r.packed))
            for n, r in (("big", big), ("", unnamed))
        ],
        removed_resources=[""],
    )
    assert reply.data == expected.SerializeToString(deterministic=True)
    sotw = replies.sotw(replies.Selection({"big": big}, "v"), type_urls.CLUSTER, "2")
    expected_sotw = discovery_pb2.DiscoveryResponse(
        version_info="v", type_url=type_urls.CLUSTER, nonce="2", resources=[any_pb2.Any.FromString(big.packed)]
    )
    assert sotw.data == expected_sotw.SerializeToString(deterministic=True)


def test_a_selection_joins_its_resources_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stream the answer goes to sends the same joined resources, not a join of its own."""
    joins = []
    entries = replies.wire.entries
    monkeypatch.setattr(replies.wire, "entries", lambda *args: joins.append(args) or entries(*args))
    selection = replies.Selection(_resources(random.Random(1), 5), "v")
    sent = [replies.sotw(selection, type_urls.CLUSTER, str(nonce)) for nonce in range(1, 4)]
    assert len(joins) == 1
    assert [discovery_pb2.DiscoveryResponse.FromString(r.data).nonce for r in sent] == ["1", "2", "3"]


def test_a_snapshot_forgets_its_joined_answers_and_joins_them_again_alike() -> None:
    """Once a burst is over the joined bodies go (a copy of every resource answered); the next
    answer joins the same bytes again."""
    from aigw_xds.xds.cache import Snapshot
    from aigw_xds.xds.streams import SotwStream

    resources = _resources(random.Random(2), 5)
    snapshot = Snapshot("ns/gw", {type_urls.CLUSTER: resources}, "v")
    request = discovery_pb2.DiscoveryRequest(type_url=type_urls.CLUSTER)
    [first] = SotwStream().on_request(request, snapshot)
    [selection] = [v for v in snapshot._memo.values() if isinstance(v, replies.Selection)]
    assert "body" in selection.__dict__
    snapshot.forget_answers()
    assert "body" not in selection.__dict__
    [again] = SotwStream().on_request(request, snapshot)
    parsed = [discovery_pb2.DiscoveryResponse.FromString(r.data) for r in (first, again)]
    for response in parsed:
        response.ClearField("nonce")
    assert parsed[0] == parsed[1] and len(parsed[0].resources) == 5
