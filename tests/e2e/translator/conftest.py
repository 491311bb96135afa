"""Fixtures of the translator's end-to-end tests (see tests/e2e/harness/providers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw_fakes import AnthropicFake, OpenAIFake
from aigw_fakes import anthropic as anthropic_fake
from aigw_fakes import openai as openai_fake
from aigw_fakes.common import SSEWriter
from tests.e2e.harness.providers import (
    CLASSES_ANTHROPIC_KEY,
    CLASSES_OPENAI_KEY,
    Fakes,
    start_fakes,
    stop_fakes,
)


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    started = await start_fakes()
    yield started
    await stop_fakes(started)


@pytest.fixture
async def keyed_providers() -> AsyncIterator[tuple[OpenAIFake, AnthropicFake]]:
    """A fake OpenAI and a fake Anthropic expecting CLASSES_OPENAI_KEY / CLASSES_ANTHROPIC_KEY (the
    backends providers.openai_and_anthropic configures)."""
    openai = await OpenAIFake(api_key=CLASSES_OPENAI_KEY).start()
    anthropic = await AnthropicFake(api_key=CLASSES_ANTHROPIC_KEY).start()
    try:
        yield openai, anthropic
    finally:
        await openai.stop()
        await anthropic.stop()


@pytest.fixture
def stream_gate(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Streams of the OpenAI and Anthropic fakes pause after their first event until the test sets
    this event: a test that reads the first token before setting it proves nothing buffers the
    stream to its end."""
    gate = asyncio.Event()

    class GatedSSEWriter(SSEWriter):
        async def send(self, data: Any, event: str | None = None) -> None:
            await super().send(data, event)
            if self.sent == 1:
                await gate.wait()

    monkeypatch.setattr(openai_fake, "SSEWriter", GatedSSEWriter)
    monkeypatch.setattr(anthropic_fake, "SSEWriter", GatedSSEWriter)
    return gate
