"""The fakes `aigw-xds run` starts: a Backend annotated `aigw-xds.dev/fake-provider:
openai|anthropic|azure` on a loopback IP endpoint is served by that bundled fake, so an example
runs without a provider account. The fake checks the key the gateway will send that Backend (the
one its BackendSecurityPolicy's Secret holds), read here from the resources, not from compile.

`start_annotated` is the one entry point; it needs aiohttp (the `fakes` extra) only when the
configuration asks for a fake.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from aigw_xds.resources import ResourceSet

    from .common import FakeProvider

FAKE_PROVIDER_ANNOTATION = "aigw-xds.dev/fake-provider"
# The fakes the annotation can name.
PROVIDER_NAMES = ("openai", "anthropic", "azure")
EXTRA = "pip install 'aigw-xds[fakes]'"


class FakesError(RuntimeError):
    """A problem the user can fix; its message is one line."""


class FakeSpec(NamedTuple):
    provider: str
    host: str
    port: int
    api_key: str  # "" when no BackendSecurityPolicy gives the Backend a key
    backend: str  # where the annotation is, for messages


@dataclass
class RunningFakes:
    """The fakes one `start_annotated` started; `stop()` stops them all (errors are swallowed)."""

    fakes: list[FakeProvider] = field(default_factory=list)

    def stop(self) -> None:
        for fake in self.fakes:
            with contextlib.suppress(Exception):
                fake.stop_thread()
        self.fakes.clear()


def fake_providers(resources: ResourceSet) -> list[FakeSpec]:
    """What every Backend that asks for a bundled fake provider asks for."""
    out = []
    for loaded in resources.of_kind("Backend"):
        provider = loaded.resource.metadata.annotations.get(FAKE_PROVIDER_ANNOTATION)
        if not provider:
            continue
        for endpoint in loaded.resource.spec.endpoints:
            if endpoint.ip is None or not endpoint.ip.address.startswith("127."):
                raise FakesError(f"{loaded.origin}: {loaded.key}: a fake provider needs a loopback ip endpoint")
            key = _api_key_for(resources, loaded.key.name)
            out.append(FakeSpec(provider, endpoint.ip.address, endpoint.ip.port, key, f"{loaded.origin}: {loaded.key}"))
    return out


def _api_key_for(resources: ResourceSet, backend_name: str) -> str:
    """The key the gateway will send to that backend (the fake checks it), if any."""
    for bsp in resources.of_kind("BackendSecurityPolicy"):
        spec = bsp.resource.spec
        holder = spec.apiKey or spec.anthropicAPIKey or spec.azureAPIKey
        if holder is None:
            continue
        for ref in spec.targetRefs:
            service = resources.get("AIServiceBackend", bsp.key.namespace, ref.name)
            if service is not None and service.resource.spec.backendRef.name == backend_name:
                secret = resources.get("Secret", holder.secretRef.namespace or bsp.key.namespace, holder.secretRef.name)
                if secret is not None:
                    return secret.resource.value("apiKey") or ""
    return ""


def _classes(first: FakeSpec) -> dict[str, Any]:
    try:
        from .anthropic import AnthropicFake
        from .azure_openai import AzureOpenAIFake
        from .openai import OpenAIFake
    except ImportError as exc:
        raise FakesError(
            f"{first.backend} asks for the fake {first.provider} provider ({FAKE_PROVIDER_ANNOTATION}), "
            f"which needs the fakes extra ({exc.name or exc} is missing): {EXTRA}"
        ) from exc
    return {"openai": OpenAIFake, "anthropic": AnthropicFake, "azure": AzureOpenAIFake}


def start_annotated(resources: ResourceSet) -> RunningFakes:
    """Start (each in a background thread) the fake of every annotated Backend."""
    specs = fake_providers(resources)
    running = RunningFakes()
    if not specs:
        return running
    for spec in specs:
        if spec.provider not in PROVIDER_NAMES:
            raise FakesError(f"unknown fake provider {spec.provider!r} (one of: {', '.join(PROVIDER_NAMES)})")
    classes = _classes(specs[0])
    try:
        for provider, host, port, key, _ in specs:
            fake = classes[provider](api_key=key or None, host=host, port=port, name=f"fake-{provider}")
            try:
                fake.start_in_thread()
            except OSError as exc:
                raise FakesError(f"cannot start the fake {provider} provider on {host}:{port}: {exc}") from exc
            running.fakes.append(fake)
    except BaseException:
        running.stop()
        raise
    return running
