"""What a translator older than the configuration parts is sent (xds.translator_wholes): each
fleet's configuration whole, as a current translator assembles it from the head and parts."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.xds_client import assembled
from aigw_xds.wire import Serialized
from aigw_xds.xds import type_urls
from aigw_xds.xds.cache import FleetResources, make_snapshot
from aigw_xds.xds.translator_wholes import as_taken_by

OLDER = base_pb2.Node(id="old", cluster=contract.TRANSLATORS_FLEET)
CURRENT = base_pb2.Node(
    id="new", cluster=contract.TRANSLATORS_FLEET, client_features=[contract.TRANSLATOR_CONFIG_PARTS_FEATURE]
)


def _model(model: str, *hosts: str) -> config_pb2.Model:
    return config_pb2.Model(id=model, owned_by="me", hosts=list(hosts))


def _snapshot():
    in_parts = "a/gw"
    head = config_pb2.TranslatorConfig(name=in_parts, root_prefix="/", parts=2, seal_key=b"k" * 32)
    parts = [
        config_pb2.TranslatorConfig(
            backends=[config_pb2.Backend(name="b1", route_name="a/r2")],
            route_models=[config_pb2.RouteModels(namespace="a", name="r2", models=[_model("m", "x.example")])],
        ),
        config_pb2.TranslatorConfig(
            backends=[config_pb2.Backend(name="b0", route_name="a/r1")],
            route_models=[config_pb2.RouteModels(namespace="a", name="r1", models=[_model("m", "y.example")])],
        ),
    ]
    whole = config_pb2.TranslatorConfig(name="b/gw", backends=[config_pb2.Backend(name="c")])  # with QuotaPolicies
    configs = {
        in_parts: Serialized.of(head),
        **{contract.translator_config_part(in_parts, i): Serialized.of(p) for i, p in enumerate(parts)},
        "b/gw": Serialized.of(whole),
    }
    return make_snapshot(contract.TRANSLATORS_FLEET, FleetResources({type_urls.TRANSLATOR: configs}))


def test_an_older_translator_is_sent_what_a_current_one_assembles_and_a_whole_one_as_it_is():
    snapshot = _snapshot()
    sent = as_taken_by(OLDER, contract.TRANSLATORS_FLEET, snapshot)
    assert sent is not None and sorted(sent.of_type(type_urls.TRANSLATOR)) == ["a/gw", "b/gw"]
    served = snapshot.of_type(type_urls.TRANSLATOR)
    expected, incomplete = assembled({name: r.message for name, r in served.items()}, {}, {"a/gw", "b/gw"})
    assert not incomplete
    for name, resource in sent.of_type(type_urls.TRANSLATOR).items():
        assert resource.message == expected[name]
    whole = sent.of_type(type_urls.TRANSLATOR)["a/gw"].message
    # The parts in order, the models merged in the routes' order (r1 first), the head's fields.
    assert [b.name for b in whole.backends] == ["b1", "b0"] and whole.parts == 0 and not whole.route_models
    assert [(m.id, list(m.hosts)) for m in whole.models] == [("m", ["y.example", "x.example"])]
    assert whole.seal_key == b"k" * 32
    assert sent.of_type(type_urls.TRANSLATOR)["b/gw"] is served["b/gw"]
    assert sent.version != snapshot.version
    # Made once per snapshot, for every older translator's stream.
    assert as_taken_by(OLDER, contract.TRANSLATORS_FLEET, snapshot) is sent


def test_a_current_translator_and_an_envoy_are_sent_the_snapshot_as_it_is():
    snapshot = _snapshot()
    assert as_taken_by(CURRENT, contract.TRANSLATORS_FLEET, snapshot) is snapshot
    envoy = base_pb2.Node(id="envoy", cluster="a/gw")
    assert as_taken_by(envoy, "a/gw", snapshot) is snapshot
    assert as_taken_by(OLDER, contract.TRANSLATORS_FLEET, None) is None


def test_a_whole_whose_head_and_parts_did_not_change_is_not_made_again_and_is_kept_as_bytes():
    first = as_taken_by(OLDER, contract.TRANSLATORS_FLEET, _snapshot())
    again = as_taken_by(OLDER, contract.TRANSLATORS_FLEET, _snapshot())  # the next snapshot, the same versions
    assert first is not None and again is not None and again is not first
    whole = first.of_type(type_urls.TRANSLATOR)["a/gw"]
    assert again.of_type(type_urls.TRANSLATOR)["a/gw"] is whole
    assert isinstance(whole.content, Serialized)  # not the parsed message: 3x the bytes at scale
