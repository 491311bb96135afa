"""The OpenAI API's multipart operations routed by their form's model, through a real Envoy with the
official SDK: audio translations, image edits (streamed too) and image variations, to OpenAI and to
classic Azure OpenAI (the deployment in the path, the routed model's). They were passthrough paths
that read no model from a form: a 404 saying the request names none, and on Azure a path without
its deployment. (The SDK marks translations and variations deprecated; OpenAI still serves them.)
The providers are the bundled OpenAI and Azure OpenAI fakes (stand-ins that refuse
a model an operation does not take, as OpenAI does).
"""

from __future__ import annotations

import httpx
import openai
import pytest

from aigw_fakes import AzureOpenAIFake, OpenAIFake
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import GLOBAL_COSTS
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

KEY, AZURE_KEY, AZURE_VERSION = "sk-forms", "az-forms", "2025-04-01-preview"
AZURE_DEPLOYMENTS = {"az-whisper": "whisper-1", "az-image": "gpt-image-1", "az-dalle": "dall-e-2"}
FORMS = Route(
    "forms",
    [
        Rule(["whisper-1", "gpt-image-1", "dall-e-2"], [Ref("openai")]),
        Rule(list(AZURE_DEPLOYMENTS), [Ref("azure")]),
    ],
)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")
WAV = b"RIFF" + bytes(300)


@pytest.mark.parametrize(("prefix", "names"), [("", {}), ("az-", AZURE_DEPLOYMENTS)])
async def test_form_operations_reach_the_backend_of_their_model(prefix: str, names: dict[str, str]) -> None:
    def model(name: str) -> str:
        return next((d for d, m in names.items() if m == name), name) if prefix else name

    async with (
        OpenAIFake(api_key=KEY) as plain,
        AzureOpenAIFake(api_key=AZURE_KEY, deployments=AZURE_DEPLOYMENTS) as azure,
    ):
        documents = (
            FORMS.yaml(),
            resources.backend("openai", plain.port),
            resources.api_key("openai", KEY),
            resources.backend("azure", azure.port, "AzureOpenAI", version=AZURE_VERSION, hostname="localhost"),
            resources.api_key("azure", AZURE_KEY, "AzureAPIKey"),
        )
        async with run_gateway(*documents, global_costs=GLOBAL_COSTS) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
            translated = await client.audio.translations.create(model=model("whisper-1"), file=("hi.wav", WAV))
            assert translated.text == "Fake translation of hi.wav (304 bytes)."
            edited = await client.images.edit(model=model("gpt-image-1"), image=("a.png", PNG), prompt="make it blue")
            assert edited.data and edited.data[0].b64_json
            varied = await client.images.create_variation(model=model("dall-e-2"), image=("a.png", PNG))
            assert varied.data and varied.data[0].url
            stream = await client.images.edit(
                model=model("gpt-image-1"), image=("a.png", PNG), prompt="make it red", stream=True
            )
            kinds = [event.type async for event in stream]
            assert kinds == ["image_edit.partial_image", "image_edit.completed"]
            entries = await gw.access_log.wait_for(4)
            assert [e["response_code"] for e in entries] == [200] * 4
            # The gpt-image edits are metered (plain and streamed), from the provider's usage.
            assert [e["path"] for e in entries if e.get("llm_total_token")] == ["/v1/images/edits"] * 2
        server = azure if prefix else plain
        paths = [r.path for r in server.requests]
        if prefix:
            assert paths == [
                "/openai/deployments/az-whisper/audio/translations",
                "/openai/deployments/az-image/images/edits",
                "/openai/deployments/az-dalle/images/variations",
                "/openai/deployments/az-image/images/edits",
            ]
            assert all(r.query.get("api-version") == AZURE_VERSION for r in server.requests)
        else:
            assert paths == ["/v1/audio/translations", "/v1/images/edits", "/v1/images/variations", "/v1/images/edits"]
        assert all(
            r.headers.get("authorization", r.headers.get("api-key", "")).endswith(AZURE_KEY if prefix else KEY)
            for r in server.requests
        )


async def test_an_image_form_without_a_model_is_dall_e_2_s_as_openai_takes_it_and_audio_needs_one() -> None:
    async with OpenAIFake(api_key=KEY) as plain:
        route = Route("forms", FORMS.rules[:1])
        documents = (route.yaml(), resources.backend("openai", plain.port), resources.api_key("openai", KEY))
        async with run_gateway(*documents) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
            varied = await client.images.create_variation(image=("a.png", PNG))  # the SDK sends no model
            assert varied.data and varied.data[0].url
            async with httpx.AsyncClient() as http:  # the SDK requires a model here: by hand
                answer = await http.post(gw.url + "/v1/audio/translations", files={"file": ("a.wav", WAV)})
            assert answer.status_code == 400
            assert "multipart form field 'model' is required" in answer.json()["error"]["message"]
            assert [r.path for r in plain.requests] == ["/v1/images/variations"]


async def test_a_form_reaches_its_model_s_rule_beside_a_rule_of_any_model() -> None:
    """A rule of any model after a rule of whisper-1, each of one OpenAI backend (so the translator
    builds their requests on one stream): a transcription of whisper-1 goes to whisper-1's backend,
    one of another model and a chat to the rule of any model's, each with its backend's key. Envoy
    reads no model from a form, so the rule of any model used to take every form and send it to its
    own backend."""
    async with OpenAIFake(api_key=KEY) as speech, OpenAIFake(api_key="sk-other") as other:
        route = Route("forms", [Rule(["whisper-1"], [Ref("speech")]), Rule([], [Ref("other")])])
        documents = (
            route.yaml(),
            resources.backend("speech", speech.port),
            resources.api_key("speech", KEY),
            resources.backend("other", other.port),
            resources.api_key("other", "sk-other"),
        )
        async with run_gateway(*documents) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
            heard = await client.audio.transcriptions.create(model="whisper-1", file=("hi.wav", WAV))
            assert heard.text
            spoken = await client.audio.translations.create(model="whisper-1", file=("hi.wav", WAV))
            assert spoken.text
            # A form of a model no other rule names: the rule of any model, translated for its backend.
            other_heard = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("hi.wav", WAV))
            assert other_heard.text
            chat = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert chat.choices[0].message.content
            streamed = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            assert [chunk async for chunk in streamed]
        assert [r.path for r in speech.requests] == ["/v1/audio/transcriptions", "/v1/audio/translations"]
        assert [r.path for r in other.requests] == ["/v1/audio/transcriptions"] + ["/v1/chat/completions"] * 2
        assert all(r.headers["authorization"] == "Bearer sk-other" for r in other.requests)
        assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in speech.requests)
