"""A request that a filter before the translator refused (a SecurityPolicy's JWT check, in Envoy)
never reaches the router phase, but Envoy's answer to it does: it passes unchanged, already in the
client's shape. Read as a provider's 401, it had been reshaped into "the provider rejected the
gateway's credential for this backend", and logged as the backend's key refused."""

from __future__ import annotations

import logging

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

import aigw_contract as contract
from aigw_translator.server import ExternalProcessor

from .extproc_helpers import ROUTER_STREAM, drive, response_body, response_headers
from .test_attempt_headers import PLAIN, config

# A route whose requests are translated on one stream names its backend (an API key's).
ON_ONE_STREAM = (*ROUTER_STREAM, (contract.ROUTE_BACKEND_METADATA_KEY, PLAIN))

REFUSAL = b'{"error":{"message":"this request needs a JWT","type":"authentication_error","param":null,"code":null}}'


@pytest.mark.parametrize("status", ["401", "403", "503"])
async def test_envoys_own_answer_to_a_request_it_refused_passes_unchanged(
    status: str, caplog: pytest.LogCaptureFixture
) -> None:
    answer = response_headers({":status": status, "content-type": "application/json", "www-authenticate": "Bearer"})
    with caplog.at_level(logging.WARNING):
        out = await drive(ExternalProcessor(config()), [answer, response_body(REFUSAL)], ON_ONE_STREAM)
    assert out == [
        ep.ProcessingResponse(response_headers=ep.HeadersResponse()),
        ep.ProcessingResponse(response_body=ep.BodyResponse()),
    ]
    assert "backend_credential_rejected" not in caplog.text
