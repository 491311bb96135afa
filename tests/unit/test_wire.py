"""Messages assembled from bytes serialized apart equal the message's own serialization."""

from __future__ import annotations

import pytest

from aigw.translator.v1 import config_pb2
from aigw_xds import wire


@pytest.mark.parametrize("sizes", [(), (0,), (5, 127), (128, 300, 16_383), (16_384, 70_000, 3), (2_100_000,)])
def test_entries_are_what_the_message_of_those_entries_serializes_to(sizes: tuple[int, ...]) -> None:
    """A route unit keeps its backends serialized one by one; a run's TranslatorConfig is joined
    from them (lengths of one to four varint bytes)."""
    message = config_pb2.TranslatorConfig(
        backends=[config_pb2.Backend(name=f"b{i}", service_backend="s" * size) for i, size in enumerate(sizes)]
    )
    configs = [b.SerializeToString(deterministic=True) for b in message.backends]
    number = config_pb2.TranslatorConfig.BACKENDS_FIELD_NUMBER
    assert wire.entries(number, configs) == message.SerializeToString(deterministic=True)
