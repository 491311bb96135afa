"""A request that a filter before the translator refused (a SecurityPolicy's check, in Envoy) never
reaches the router phase, but Envoy's answer to it does. Marked as the gateway's own
(contract.REFUSED_HERE_HEADER), it passes unchanged, already in the client's shape, and the mark is
taken off: read as a provider's 401, it had been reshaped into "the provider rejected the gateway's
credential for this backend", and logged as the backend's key refused. Unmarked (Envoy's own 413
for a body over the buffer), it is shaped as a client's error, as before."""

from __future__ import annotations

import json
import logging

import pytest

import aigw_contract as contract
from aigw_translator.server import ExternalProcessor

from .extproc_helpers import ROUTER_STREAM, drive, response_body, response_headers
from .test_attempt_headers import PLAIN, config

# A route whose requests are translated on one stream names its backend (an API key's).
ON_ONE_STREAM = (*ROUTER_STREAM, (contract.ROUTE_BACKEND_METADATA_KEY, PLAIN))
REFUSAL = b'{"type":"error","error":{"type":"authentication_error","message":"this request needs a JWT"}}'


@pytest.mark.parametrize("status", ["401", "403", "503"])
async def test_the_gateways_own_answer_to_a_request_it_refused_passes_unchanged(
    status: str, caplog: pytest.LogCaptureFixture
) -> None:
    marked = {":status": status, "content-type": "application/json", contract.REFUSED_HERE_HEADER: "1"}
    with caplog.at_level(logging.WARNING):
        out = await drive(
            ExternalProcessor(config()), [response_headers(marked), response_body(REFUSAL)], ON_ONE_STREAM
        )
    headers, body = out
    assert list(headers.response_headers.response.header_mutation.remove_headers) == [contract.REFUSED_HERE_HEADER]
    # The body as it came (an Anthropic client's); its status too.
    assert not body.response_body.response.HasField("body_mutation")
    assert not any(h.header.key == ":status" for h in body.response_body.response.header_mutation.set_headers)
    assert "backend_credential_rejected" not in caplog.text


async def test_envoys_unmarked_answer_is_shaped_as_a_clients_error() -> None:
    answer = response_headers({":status": "413", "content-type": "text/plain"})
    out = await drive(ExternalProcessor(config()), [answer, response_body(b"Payload Too Large")], ROUTER_STREAM)
    shaped = out[-1].response_body.response.body_mutation.body
    assert json.loads(shaped)["error"]["message"]
