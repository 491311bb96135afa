"""The MCP proxy's fixtures: the stack (stack.py) and a raw HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.mcp import McpProxy

from .servers import ALPHA_KEY, BETA_KEY, Recorder, alpha_server, beta_server, served
from .stack import Stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    alpha = Recorder(alpha_server().streamable_http_app(), key=("authorization", f"Bearer {ALPHA_KEY}"))
    # beta answers JSON bodies, alpha event streams: both kinds of answers go through the proxy.
    beta = Recorder(beta_server().streamable_http_app(json_response=True), key=("x-api-key", BETA_KEY))
    async with served(alpha) as alpha_url, served(beta) as beta_url:
        configs: dict[str, config_pb2.TranslatorConfig] = {}
        proxy = McpProxy(configs.get)
        port = await proxy.start("127.0.0.1:0")
        s = Stack(alpha, beta, alpha_url, beta_url, port, proxy, configs)
        s.use_backends(s.alpha_backend(), s.beta_backend())
        try:
            yield s
        finally:
            await proxy.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
