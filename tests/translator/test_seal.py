from __future__ import annotations

import json

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.config import RuntimeConfig
from aigw_translator.seal import Sealer, fleet_secret
from aigw_translator.server import ExternalProcessor

from .extproc_helpers import drive, metadata, request_body, request_headers, set_headers, upstream_attributes


def test_round_trip_and_tamper() -> None:
    s = Sealer(b"k" * 32)
    token = s.seal(b'{"x-aigw-api-key":"secret"}')
    assert "secret" not in token
    assert s.unseal(token) == b'{"x-aigw-api-key":"secret"}'
    assert s.seal(b"same") != s.seal(b"same")  # random nonce
    raw = bytearray(token.encode())
    raw[30] = ord("A") if raw[30] != ord("A") else ord("B")
    assert s.unseal(raw.decode()) is None
    assert Sealer(b"other" * 8).unseal(token) is None
    assert s.unseal("not base64 !!") is None
    assert s.unseal("") is None


def test_key_derivation() -> None:
    def sealer(seal_key: bytes, name: str) -> Sealer:
        return Sealer(fleet_secret(config_pb2.TranslatorConfig(name=name, seal_key=seal_key)))

    a = sealer(b"", "config-1")
    assert sealer(b"", "config-1").unseal(a.seal(b"x")) == b"x"
    assert sealer(b"", "config-2").unseal(a.seal(b"x")) is None
    assert sealer(b"explicit", "config-2").unseal(sealer(b"explicit", "config-1").seal(b"x")) == b"x"


def _config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw", seal_key=b"s" * 32)
    for name in ("b1", "b2"):
        b = cfg.backends.add(name=name, schema=config_pb2.Schema(name="OpenAI"))
        b.auth.api_key.SetInParent()
        b.auth.credential_override.from_request_headers.SetInParent()
    return cfg


HDRS = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions",
    contract.MODEL_HEADER: "m",
}


async def test_override_survives_retry_through_sealed_metadata() -> None:
    processor = ExternalProcessor(_config())
    body = {"model": "m", "messages": []}
    first = await drive(
        processor,
        [
            request_headers({**HDRS, "x-aigw-api-key": "user-secret"}, attributes=upstream_attributes("b1")),
            request_body(body),
        ],
    )
    hdrs = set_headers(first[1].request_body.response.header_mutation)
    assert hdrs["authorization"] == "Bearer user-secret"
    token = metadata(first[1])[contract.SEALED_ORIGINAL_HEADERS_KEY]
    assert "user-secret" not in token

    # Attempt 2: the header is gone from Envoy's shared header map; the sealed token is forwarded.
    retry = request_headers(HDRS, attributes=upstream_attributes("b2"))
    forwarded = retry.metadata_context.filter_metadata[contract.METADATA_NAMESPACE]
    forwarded.update({contract.SEALED_ORIGINAL_HEADERS_KEY: token})
    second = await drive(processor, [retry, request_body(body)])
    assert set_headers(second[1].request_body.response.header_mutation)["authorization"] == "Bearer user-secret"

    # A processor with another key (another fleet, or the configuration changed between the
    # attempts) cannot read the token: the attempt fails closed instead of guessing.
    other = _config()
    other.seal_key = b"t" * 32
    third = await drive(ExternalProcessor(other), [retry, request_body(body)])
    assert third[1].immediate_response.status.code == 500
    assert "user-secret" not in json.dumps(str(third))


def test_runtime_knows_custom_override_headers() -> None:
    cfg = _config()
    cfg.backends[0].auth.credential_override.from_request_headers.header = "X-Team-Key"
    runtime = RuntimeConfig.build(cfg)
    assert runtime.is_override_header("x-team-key")
    assert runtime.is_override_header("x-aigw-anything")
    assert not runtime.is_override_header("authorization")
