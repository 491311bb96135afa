"""The Azure OpenAI fake, driven by the official openai SDK's AzureOpenAI client and raw HTTP."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import openai
import pytest

from aigw_fakes import AzureOpenAIFake

from ._fakehttp import raw

KEY = "azure-key-1"
VERSION = "2024-10-21"
USER_HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[AzureOpenAIFake]:
    deployments = {"chat": "gpt-4o-2024-08-06", "embed": "text-embedding-3-small"}
    with AzureOpenAIFake(api_key=KEY, token="entra-token", deployments=deployments, name="azure-a") as f:
        yield f


@pytest.fixture
def client(fake: AzureOpenAIFake) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(api_key=KEY, azure_endpoint=fake.base_url, api_version=VERSION, max_retries=0)


def test_chat_deployment_selects_model(client: openai.AzureOpenAI, fake: AzureOpenAIFake) -> None:
    r = client.chat.completions.create(model="chat", messages=USER_HI)
    assert r.model == "gpt-4o-2024-08-06"
    assert r.choices[0].message.content == "Fake gpt-4o-2024-08-06 reply to: Hello there"
    assert r.choices[0].model_extra["content_filter_results"]["hate"]["filtered"] is False
    assert r.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    rec = fake.last_request
    assert rec.path == "/openai/deployments/chat/chat/completions"
    assert rec.query == {"api-version": VERSION}
    assert rec.header("api-key") == KEY


def test_stream_starts_with_prompt_filter_chunk(client: openai.AzureOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=USER_HI, stream=True, stream_options={"include_usage": True}
        )
    )
    first = chunks[0]
    assert first.choices == [] and first.usage is None
    assert first.model_extra["prompt_filter_results"]
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert all(c.choices[0].model_extra["content_filter_results"]["violence"] for c in content_chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Fake gpt-4o-2024-08-06 reply to: Hello there"
    )


def test_embeddings(client: openai.AzureOpenAI) -> None:
    r = client.embeddings.create(model="embed", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 1536
    assert r.model == "text-embedding-3-small"


def test_api_version_required(fake: AzureOpenAIFake) -> None:
    url = fake.base_url + "/openai/deployments/chat/chat/completions"
    status, _, body = raw("POST", url, {"messages": USER_HI}, {"api-key": KEY})
    assert status == 404
    assert json.loads(body) == {"error": {"code": "404", "message": "Resource not found"}}
    status, _, body = raw("POST", url + "?api-version=latest", {"messages": USER_HI}, {"api-key": KEY})
    assert status == 400 and json.loads(body)["error"]["message"] == "API version not supported"


def test_auth(fake: AzureOpenAIFake) -> None:
    url = fake.base_url + f"/openai/deployments/chat/chat/completions?api-version={VERSION}"
    body = {"messages": USER_HI}
    status, _, payload = raw("POST", url, body, {"api-key": "wrong"})
    assert status == 401
    err = json.loads(payload)["error"]
    assert err["code"] == "401" and err["message"].startswith("Access denied due to invalid subscription key")
    assert raw("POST", url, body)[0] == 401
    assert raw("POST", url, body, {"authorization": "Bearer entra-token"})[0] == 200
    # a key is not a bearer token on the classic API
    assert raw("POST", url, body, {"authorization": f"Bearer {KEY}"})[0] == 401
    bad = openai.AzureOpenAI(api_key="nope", azure_endpoint=fake.base_url, api_version=VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="chat", messages=USER_HI)


def test_unknown_deployment_and_validation(client: openai.AzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="missing", messages=USER_HI)
    assert e.value.body["code"] == "DeploymentNotFound"
    with pytest.raises(openai.BadRequestError) as e2:
        client.chat.completions.create(model="chat", messages=[])
    assert e2.value.body["code"] == "empty_array"


def test_v1_api_with_stock_client(fake: AzureOpenAIFake) -> None:
    c = openai.OpenAI(api_key=KEY, base_url=fake.url, max_retries=0)
    assert fake.url.endswith("/openai/v1")
    r = c.chat.completions.create(model="chat", messages=USER_HI)
    assert r.model == "gpt-4o-2024-08-06"
    r2 = c.responses.create(model="chat", input="hi")
    assert r2.output_text


def test_injected_error_has_azure_shape(client: openai.AzureOpenAI, fake: AzureOpenAIFake) -> None:
    fake.fail_next(1, 429)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="chat", messages=USER_HI)
    assert e.value.body["code"] == "429"
    assert e.value.response.headers["x-fake-id"] == "azure-a"
    with pytest.raises(http.client.IncompleteRead):
        raw(
            "POST",
            fake.base_url + f"/openai/deployments/chat/chat/completions?api-version={VERSION}",
            {"messages": USER_HI, "stream": True},
            {"api-key": KEY, "x-fake-stream-abort-after": "1"},
        )


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    "extra",
    [
        {"stream_options": {"include_usage": True}},
        {"max_completion_tokens": 5},
        {"parallel_tool_calls": False, "tools": [TOOL]},
    ],
)
def test_old_api_versions_reject_newer_arguments(fake: AzureOpenAIFake, extra: dict) -> None:
    old = openai.AzureOpenAI(api_key=KEY, azure_endpoint=fake.base_url, api_version="2024-06-01", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        old.chat.completions.create(model="chat", messages=USER_HI, stream="stream_options" in extra, **extra)
    assert "Unrecognized request argument supplied" in str(e.value)
    new = openai.AzureOpenAI(api_key=KEY, azure_endpoint=fake.base_url, api_version="2024-09-01-preview", max_retries=0)
    assert new.chat.completions.create(model="chat", messages=USER_HI, stream="stream_options" in extra, **extra)


def test_the_responses_api_on_the_classic_api_from_its_first_version(fake: AzureOpenAIFake) -> None:
    """POST /openai/responses?api-version=... with the deployment as the body's model, as the
    AzureOpenAI client sends it; a version before 2025-03-01-preview has no such route (404)."""
    new = openai.AzureOpenAI(api_key=KEY, azure_endpoint=fake.base_url, api_version="2025-03-01-preview", max_retries=0)
    answer = new.responses.create(model="chat", input="hi")
    assert answer.output_text and answer.usage is not None and answer.usage.total_tokens > 0
    old = openai.AzureOpenAI(api_key=KEY, azure_endpoint=fake.base_url, api_version="2025-01-01-preview", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        old.responses.create(model="chat", input="hi")
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            api_key="wrong", azure_endpoint=fake.base_url, api_version="2025-03-01-preview", max_retries=0
        ).responses.create(model="chat", input="hi")
