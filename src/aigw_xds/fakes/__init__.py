"""Fake LLM providers (stand-ins for OpenAI, Azure OpenAI and Anthropic) for tests and demos.

Each fake is an aiohttp server on loopback that validates requests like the real provider and
answers deterministically. ``common`` documents the shared controls (request record, fault
injection headers, ``fail_next``/``always_fail``, thread and async runners).

    from aigw_xds.fakes import OpenAIFake
    with OpenAIFake(api_key="sk-test", name="primary") as fake:   # background thread
        client = openai.OpenAI(api_key="sk-test", base_url=fake.url)
"""

from .anthropic import AnthropicFake
from .azure_openai import AzureOpenAIFake
from .common import FakeProvider, RecordedRequest
from .openai import OpenAIFake

PROVIDERS: dict[str, type[FakeProvider]] = {
    "openai": OpenAIFake,
    "azure": AzureOpenAIFake,
    "azure-openai": AzureOpenAIFake,
    "anthropic": AnthropicFake,
}

__all__ = ["PROVIDERS", "AnthropicFake", "AzureOpenAIFake", "FakeProvider", "OpenAIFake", "RecordedRequest"]
