"""Fake LLM providers (stand-ins for OpenAI, Azure OpenAI and Anthropic) for tests and demos.

See ``common`` for the controls shared by all fakes (request record, fault injection, runners).
"""

from .common import FakeProvider, RecordedRequest
from .openai import OpenAIFake

__all__ = ["FakeProvider", "OpenAIFake", "RecordedRequest"]
