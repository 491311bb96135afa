"""Envoy's refusal of a SecurityPolicy's check (a filter before the router phase, or the check after
it) reaches the router phase on its way out. Known by its details (the response attribute Envoy
sends), it passes unchanged, already in the client's shape: read as a provider's 401, it had been
reshaped into "the provider rejected the gateway's credential for this backend", and logged as the
backend's key refused. Envoy's other answers (its 413 for a body over the buffer) are shaped as a
client's error, as before."""

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


@pytest.mark.parametrize(
    ("status", "details"),
    [
        ("401", "jwt_authn_access_denied{Jwt_is_missing}"),
        ("403", "jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}"),
        ("401", "ext_authz_denied"),
        ("503", "ext_authz_error"),
        ("401", "rbac_access_denied_matched_policy[none]"),
    ],
)
async def test_envoys_refusal_of_a_security_policys_check_passes_unchanged(
    status: str, details: str, caplog: pytest.LogCaptureFixture
) -> None:
    refused = response_headers({":status": status, "content-type": "application/json"})
    refused.attributes["envoy.filters.http.ext_proc"].update({contract.RESPONSE_DETAILS_ATTRIBUTE: details})
    with caplog.at_level(logging.WARNING):
        _, body = await drive(ExternalProcessor(config()), [refused, response_body(REFUSAL)], ON_ONE_STREAM)
    # The body as it came (an Anthropic client's); its status too.
    assert not body.response_body.response.HasField("body_mutation")
    assert not any(h.header.key == ":status" for h in body.response_body.response.header_mutation.set_headers)
    assert "backend_credential_rejected" not in caplog.text


async def test_envoys_other_answers_are_shaped_as_a_clients_error() -> None:
    answer = response_headers({":status": "413", "content-type": "text/plain"})
    answer.attributes["envoy.filters.http.ext_proc"].update(
        {contract.RESPONSE_DETAILS_ATTRIBUTE: "request_payload_too_large"}
    )
    out = await drive(ExternalProcessor(config()), [answer, response_body(b"Payload Too Large")], ROUTER_STREAM)
    shaped = out[-1].response_body.response.body_mutation.body
    assert json.loads(shaped)["error"]["message"]
