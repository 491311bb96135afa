"""The providers of the translator's end-to-end tests: the realistic fakes (aigw_fakes), the
standard resources routing to them, and a canned provider for answers no real provider sends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from aigw_fakes import AnthropicFake, AzureOpenAIFake, OpenAIFake

from . import resources
from .processes import free_port
from .resources import Ref, Route, Rule

OPENAI_KEY = "sk-openai-backend"
ANTHROPIC_KEY = "sk-ant-backend"
AZURE_KEY = "az-backend-key"
AZURE_VERSION = "2024-10-21"
CACHE_READ, CACHE_WRITE = 3, 2

GLOBAL_COSTS = [
    {"metadataKey": "llm_total_token", "type": "TotalToken"},
    {"metadataKey": "weighted", "type": "CEL", "cel": "input_tokens + output_tokens * 2"},
]
ROUTE_COSTS = [{"metadataKey": "llm_output_token", "type": "OutputToken"}]

# The route every standard test goes through; rules by model name.
CHAT = Route(
    "chat",
    [
        Rule(
            ["gpt-test", "embed"],
            [
                Ref(
                    "openai",
                    header_mutation={"set": [{"name": "x-team", "value": "blue"}]},
                    body_mutation={"set": [{"path": "user", "value": '"team-blue"'}]},
                )
            ],
        ),
        Rule(["claude"], [Ref("anthropic", model_name_override="claude-test")]),
        Rule(["azure-gpt"], [Ref("azure", model_name_override="gpt-4o-mini")]),
        Rule(["fallback"], [Ref("openai"), Ref("anthropic", priority=1, model_name_override="claude-test")]),
    ],
    costs=ROUTE_COSTS,
)
OPENAI_BACKEND = CHAT.backend_name(0, 0)
ANTHROPIC_BACKEND = CHAT.backend_name(1, 0)
AZURE_BACKEND = CHAT.backend_name(2, 0)
FALLBACK_SECONDARY = CHAT.backend_name(3, 1)
MODELS = ["gpt-test", "embed", "claude", "azure-gpt", "fallback"]


@dataclass
class Fakes:
    openai: OpenAIFake
    anthropic: AnthropicFake
    azure: AzureOpenAIFake

    def resources(self, *, override_header: str | None = None, anthropic_port: int | None = None) -> tuple[str, ...]:
        """CHAT and its three backends, each with its API-key policy (optionally with a
        credentialOverride from `override_header`). Azure is reached by FQDN (localhost).
        `anthropic_port`: another server in place of the Anthropic fake."""
        return (
            CHAT.yaml(),
            resources.backend("openai", self.openai.port),
            resources.api_key("openai", OPENAI_KEY, override_header=override_header),
            resources.backend("anthropic", anthropic_port or self.anthropic.port, "Anthropic"),
            resources.api_key("anthropic", ANTHROPIC_KEY, "AnthropicAPIKey", override_header=override_header),
            resources.backend("azure", self.azure.port, "AzureOpenAI", version=AZURE_VERSION, hostname="localhost"),
            resources.api_key("azure", AZURE_KEY, "AzureAPIKey", override_header=override_header),
        )


async def start_fakes(openai_key: str = OPENAI_KEY, anthropic_key: str = ANTHROPIC_KEY) -> Fakes:
    return Fakes(
        await OpenAIFake(api_key=openai_key).start(),
        await AnthropicFake(
            api_key=anthropic_key, cache_read_input_tokens=CACHE_READ, cache_creation_input_tokens=CACHE_WRITE
        ).start(),
        await AzureOpenAIFake(api_key=AZURE_KEY).start(),
    )


async def stop_fakes(fakes: Fakes) -> None:
    for fake in (fakes.openai, fakes.anthropic, fakes.azure):
        await fake.stop()


class CannedProvider:
    """Answers every request with one fixed (status, content type, body): for answers no realistic
    provider sends."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.answer = (status, content_type, body)
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        status, content_type, body = self.answer
        return web.Response(status=status, body=body, content_type=content_type)

    async def start(self) -> CannedProvider:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # large-body tests
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# The keys of the route-class tests' two providers (keyed_providers in the translator e2e conftest).
CLASSES_OPENAI_KEY = "sk-native-backend-key"
CLASSES_ANTHROPIC_KEY = "sk-ant-route-class-key"


def openai_and_anthropic(route: Route, openai_port: int, anthropic_port: int) -> tuple[str, ...]:
    """`route` and the two backends its rules name, "openai" (OpenAI schema) and "anthropic", each
    with its key (CLASSES_OPENAI_KEY, CLASSES_ANTHROPIC_KEY)."""
    return (
        route.yaml(),
        resources.backend("openai", openai_port),
        resources.api_key("openai", CLASSES_OPENAI_KEY),
        resources.backend("anthropic", anthropic_port, "Anthropic"),
        resources.api_key("anthropic", CLASSES_ANTHROPIC_KEY, "AnthropicAPIKey"),
    )


@asynccontextmanager
async def handler_provider(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[int]:
    """A provider that answers every request with `handler` (for behaviours no realistic fake has);
    yields its port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()
