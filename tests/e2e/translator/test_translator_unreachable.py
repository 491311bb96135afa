"""When the translator cannot be reached (a sidecar not up yet, a crashed worker), every request
that needs it gets Envoy's own reply: it used to be an empty 500, which no SDK can read. Through real
Envoy, with the official SDKs as clients: a 503 in the shape of each client's API, the cause in the
access log only (its details may carry the translator's gRPC message)."""

from __future__ import annotations

import anthropic
import cohere
import httpx
import openai
import pytest

import aigw_contract as contract
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import Fakes

pytestmark = pytest.mark.e2e

MESSAGE = "the gateway's translator did not answer (unreachable, failed or too slow); try again later"


async def test_requests_that_need_the_translator_get_their_apis_error_when_it_is_unreachable(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources()) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret", max_retries=0)
        await client.embeddings.create(model="embed", input="up")  # the translator answers
        await gw.translator.stop(0)  # the port closes: Envoy's translator cluster refuses connections

        with pytest.raises(openai.InternalServerError) as embeddings:
            await client.embeddings.create(model="embed", input="down")
        assert embeddings.value.status_code == 503
        assert embeddings.value.body == {"message": MESSAGE, "type": "server_error", "param": None, "code": None}

        claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-secret", max_retries=0)
        with pytest.raises(anthropic.InternalServerError) as messages:
            await claude.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert messages.value.status_code == 503
        assert messages.value.body == {"type": "error", "error": {"type": "api_error", "message": MESSAGE}}

        async with httpx.AsyncClient() as http:
            co = cohere.AsyncClientV2(
                api_key="client-key", base_url=gw.url + "/cohere", max_retries=0, timeout=30, httpx_client=http
            )
            with pytest.raises(cohere.core.api_error.ApiError) as chat:
                await co.chat(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert chat.value.status_code == 503 and chat.value.body == {"message": MESSAGE}

        # The per-attempt phase rewrites :path for the backend it picked and keeps the client's in
        # x-ai-eg-original-path: a translator gone during an attempt leaves the backend's path. The
        # header, sent here by the client, stands in for that: the client's path decides the shape.
        async with httpx.AsyncClient() as http:
            attempted = await http.post(
                gw.url + "/v1/chat/completions",
                json={"model": "claude", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                headers={contract.ORIGINAL_PATH_HEADER: "/anthropic/v1/messages"},
            )
        assert attempted.status_code == 503
        assert attempted.json() == {"type": "error", "error": {"type": "api_error", "message": MESSAGE}}

        entries = await gw.access_log.wait_for(5)
        assert entries[0]["response_code_details"] == "via_upstream"
        for entry in entries[1:]:
            assert entry["response_code"] == 503
            assert entry["response_code_details"].startswith("ext_proc_error_gRPC_error_14"), entry
