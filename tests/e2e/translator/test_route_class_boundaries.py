"""Where the route classes meet: requests that must never slip into a class that skips a check
(found in review of the route classes; each failed before its fix). Real Envoy, the project's fake
providers (stand-ins that reject what the real APIs reject), canned providers for answers no real
provider sends.

- A JSON body Envoy does not read (curl's default application/x-www-form-urlencoded, text/plain,
  "application/json; charset=utf8", a multipart form) is routed by the translator to the per-attempt
  routes, never to the routes Envoy serves alone or on one stream: it is translated, never carries
  the client's own credentials, denied passthrough paths stay denied, and streams are metered.
- Every x-aigw-* header is removed before a provider, whatever the class.
- On routes Envoy serves alone, a provider's credential rejection never comes back as written (it
  may echo the key) and a non-JSON error becomes an OpenAI-shaped one.
- A client's own x-ai-eg-original-path is ignored; header-routed requests log their model.
- Backend keys (SDS secrets) never appear in CSDS and go only to xDS peers that may receive them.
"""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import (
    CLASSES_ANTHROPIC_KEY,
    CLASSES_OPENAI_KEY,
    handler_provider,
    openai_and_anthropic,
)
from tests.e2e.harness.resources import Ref, Route, Rule
from tests.resource_text import client_traffic_policy

OPENAI_KEY, ANTHROPIC_KEY = CLASSES_OPENAI_KEY, CLASSES_ANTHROPIC_KEY
CHAT = [{"role": "user", "content": "hello there"}]
ROUTES = Route("findings", [Rule(["gpt-native"], [Ref("openai")]), Rule(["claude"], [Ref("anthropic")])])
CLIENT_HEADERS = {"authorization": "Bearer client-own-key", "x-api-key": "client-x", "openai-organization": "org-c"}


def _docs(openai_port: int, anthropic_port: int) -> tuple[str, ...]:
    return openai_and_anthropic(ROUTES, openai_port, anthropic_port)


async def _post(url: str, data: object, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.text()


def _no_client_credentials(fake) -> None:
    for seen in fake.requests:
        for name, value in CLIENT_HEADERS.items():
            assert seen.header(name) != value, f"client's {name} reached {fake.provider} at {seen.path}"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf8"]
)
async def test_json_of_another_content_type_to_a_translated_rule_is_translated(keyed_providers, content_type) -> None:
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        body = json.dumps({"model": "claude", "messages": CHAT, "max_tokens": 10})
        status, text = await _post(
            gw.url + "/v1/chat/completions", body, {"content-type": content_type, **CLIENT_HEADERS}
        )
        _no_client_credentials(anthropic_fake)
        assert status == 200, text
        [seen] = anthropic_fake.requests
        assert seen.path == "/v1/messages" and seen.header("x-api-key") == ANTHROPIC_KEY


async def test_anthropic_client_with_text_plain_never_forwards_its_own_key(keyed_providers) -> None:
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        body = json.dumps({"model": "claude", "max_tokens": 5, "messages": CHAT})
        status, text = await _post(
            gw.url + "/anthropic/v1/messages", body, {"content-type": "text/plain", "x-api-key": "client-x"}
        )
        _no_client_credentials(anthropic_fake)
        assert status == 200, text


async def test_multipart_transcription_on_a_native_rule_strips_client_headers(keyed_providers) -> None:
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        form = aiohttp.FormData()
        form.add_field("model", "gpt-native")
        form.add_field("file", b"RIFF....WAVEfmt ", filename="a.wav", content_type="audio/wav")
        status, text = await _post(gw.url + "/v1/audio/transcriptions", form, dict(CLIENT_HEADERS))
        assert status == 200, text
        _no_client_credentials(openai_fake)


async def test_denied_passthrough_path_is_denied_whatever_the_content_type(keyed_providers) -> None:
    """The translator refuses OpenAI's organization (admin) API with the gateway's key; a text/plain
    body must not get past it with the key injected by the cluster's credential_injector."""
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        for content_type in ("application/json", "text/plain"):
            status, _ = await _post(
                gw.url + "/v1/organization/admin_api_keys",
                json.dumps({"model": "gpt-native"}),
                {"content-type": content_type},
            )
            assert status == 404
        assert not openai_fake.requests


async def test_stream_of_another_content_type_is_metered(keyed_providers) -> None:
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        body = json.dumps({"model": "gpt-native", "messages": CHAT, "stream": True})
        status, text = await _post(gw.url + "/v1/chat/completions", body, {"content-type": "text/plain"})
        assert status == 200 and "data:" in text
        [entry] = await gw.access_log.wait_for(1)
        assert isinstance(entry["gen_ai.usage.output_tokens"], int), entry


async def test_native_route_strips_every_gateway_and_provider_scoped_header(keyed_providers) -> None:
    """Every x-aigw-* header, and (a security review) the client's headers of the provider-scoped
    prefixes, which the translator strips by prefix and a route could only strip by name: an
    x-amzn-bedrock-service-tier (premium pricing on Bedrock's OpenAI-compatible endpoint), an AWS
    session token, a Google IAM token reached the provider on a NATIVE route."""
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        body = json.dumps({"model": "gpt-native", "messages": CHAT})
        headers = {
            "content-type": "application/json",
            "x-aigw-aws-secret-access-key": "client-aws-secret",
            "x-aigw-aws-access-key-id": "AKIACLIENT",
            "x-aigw-anything": "v",
            "x-amzn-bedrock-service-tier": "premium",
            "x-amz-security-token": "client-token",
            "x-goog-iam-authorization-token": "client-iam-token",
            "x-request-id-of-client": "kept",
        }
        status, text = await _post(gw.url + "/v1/chat/completions", body, headers)
        assert status == 200, text
        [seen] = openai_fake.requests
        assert not [h for h in seen.headers if h.startswith(("x-aigw-", "x-amz", "x-goog-"))]
        assert seen.headers["x-request-id-of-client"] == "kept"


@pytest.mark.parametrize("model", ["gpt-native", "claude"], ids=["envoy-alone", "translated"])
async def test_a_provider_learns_neither_the_gateways_host_nor_a_model_header_the_client_made_up(
    keyed_providers, model: str
) -> None:
    """Envoy's router tells a provider nothing of its own (the gateway's host as the client named it,
    x-envoy-original-host; its timeout); x-ai-eg-model is the model that routed the request, not a
    client's own header naming another (found by an expert review)."""
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        body = json.dumps({"model": model, "messages": CHAT, "max_tokens": 5})
        headers = {
            "content-type": "application/json",
            "x-ai-eg-model": "made-up",
            "host": "gateway.example.com",
            "x-envoy-attempt-count": "9",  # a client's own x-envoy-* headers are not passed on either
            "x-envoy-anything": "v",
        }
        status, text = await _post(gw.url + "/v1/chat/completions", body, headers)
        assert status == 200, text
        [seen] = (openai_fake if model == "gpt-native" else anthropic_fake).requests
    assert not [h for h in seen.headers if h.startswith("x-envoy-")], seen.headers
    assert "gateway.example.com" not in json.dumps(seen.headers)
    assert seen.headers.get("x-ai-eg-model") in (None, model), seen.headers


async def test_a_client_traffic_policy_s_timeouts_are_envoys_and_it_may_turn_envoys_headers_on(keyed_providers) -> None:
    """Envoy takes the listener with every HTTP timeout, header, path and HTTP/2 setting a
    ClientTrafficPolicy sets aigw-xds implements, and with enableEnvoyHeaders the router's x-envoy-*
    headers are back (Envoy Gateway's switch)."""
    openai_fake, anthropic_fake = keyed_providers
    policy = client_traffic_policy(
        "timeout: {http: {requestReceivedTimeout: 30s, requestHeadersReceivedTimeout: 5s, idleTimeout: 15m, "
        "streamIdleTimeout: 2m}}\n  headers: {enableEnvoyHeaders: true, withUnderscoresAction: DropHeader}\n"
        "  path: {escapedSlashesAction: UnescapeAndRedirect}\n"
        "  http2: {initialStreamWindowSize: 1Mi, initialConnectionWindowSize: 4Mi, maxConcurrentStreams: 200, "
        "onInvalidMessage: TerminateStream}"
    )
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port), policy) as gw:
        body = json.dumps({"model": "gpt-native", "messages": CHAT})
        headers = {"content-type": "application/json", "x_under": "dropped"}
        status, text = await _post(gw.url + "/v1/chat/completions", body, headers)
        assert status == 200, text
        [seen] = openai_fake.requests
    assert seen.headers.get("x-envoy-expected-rq-timeout-ms"), seen.headers
    assert "x_under" not in seen.headers, seen.headers


async def test_native_route_never_returns_the_backend_key_a_provider_echoes() -> None:
    """The translator scrubs the backend's key from a provider's error body (scrub.py); a NATIVE
    route returns it to the client verbatim."""
    from aiohttp import web

    key = "sk-native-backend-key-echoed"

    async def echo_key(request: web.Request) -> web.Response:
        got = request.headers.get("authorization", "").removeprefix("Bearer ")
        error = {"message": f"Incorrect API key provided: {got}", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=401)

    routes = Route("echo", [Rule(["gpt-native"], [Ref("openai")])])
    async with (
        handler_provider(echo_key) as port,
        run_gateway(routes.yaml(), resources.backend("openai", port), resources.api_key("openai", key)) as gw,
    ):
        for stream in (True, False):  # ROUTE (scrubbed), then NATIVE
            body = json.dumps({"model": "gpt-native", "messages": CHAT, "stream": stream})
            status, text = await _post(gw.url + "/v1/chat/completions", body, {"content-type": "application/json"})
            assert status == 401
            assert key not in text, f"stream={stream}: {text}"
            assert json.loads(text)["error"]["type"] in ("invalid_request_error", "authentication_error"), text


async def test_a_native_route_s_403_is_a_permission_error_not_a_credential_rejection() -> None:
    """A 403 is mostly a model or region the account may not use, not a bad key (a provider-API
    review): the NATIVE route's rewrite, which cannot search the body for the key, says so and
    types it permission_error, which the openai SDK raises as PermissionDeniedError."""
    from aiohttp import web

    async def forbidden(request: web.Request) -> web.Response:
        error = {"message": "You are not allowed to sample from this model", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=403)

    routes = Route("forbidden", [Rule(["gpt-native"], [Ref("openai")])])
    async with (
        handler_provider(forbidden) as port,
        run_gateway(routes.yaml(), resources.backend("openai", port), resources.api_key("openai", "sk-x")) as gw,
    ):
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.chat.completions.create(model="gpt-native", messages=CHAT)
        assert denied.value.body["type"] == "permission_error"
        assert "may not use this model" in denied.value.body["message"]


async def test_header_routed_request_logs_its_model() -> None:
    """gen_ai.request.model now reads io.envoy.ai_gateway:model, which nothing writes for a request
    routed on x-ai-eg-model (before: %REQ(X-AI-EG-MODEL)%)."""
    from aiohttp import web

    async def stored_completion(request: web.Request) -> web.Response:
        usage = {"prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000}
        return web.json_response({"id": "c1", "object": "chat.completion", "model": "m", "usage": usage})

    routes = Route("get", [Rule(["gpt-native"], [Ref("openai")])])
    async with handler_provider(stored_completion) as port:
        docs = (routes.yaml(), resources.backend("openai", port), resources.api_key("openai", "sk-get-key"))
        async with run_gateway(*docs) as gw:
            async with (
                aiohttp.ClientSession() as session,
                session.get(gw.url + "/v1/chat/completions/c1", headers={"x-ai-eg-model": "gpt-native"}) as resp,
            ):
                assert resp.status == 200
            [entry] = await gw.access_log.wait_for(1)
            assert entry["gen_ai.request.model"] == "gpt-native", entry


async def test_native_keeps_the_gateway_error_shape() -> None:
    """A provider's non-JSON error (a proxy's HTML page) reaches an OpenAI client of a NATIVE route
    as an OpenAI JSON error, as it does through the translator."""
    from aiohttp import web

    seen: list[str] = []

    async def provider(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path.endswith("/embeddings"):
            return web.json_response({"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 1}})
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")

    routes = Route("shape", [Rule(["gpt-native"], [Ref("openai")])])
    async with handler_provider(provider) as port:
        docs = (routes.yaml(), resources.backend("openai", port), resources.api_key("openai", "sk-shape-key"))
        async with run_gateway(*docs) as gw:
            body = json.dumps({"model": "gpt-native", "messages": CHAT})
            status, text = await _post(gw.url + "/v1/chat/completions", body, {"content-type": "application/json"})
            assert status == 502
            assert json.loads(text)["error"]["type"] == "server_error", text


async def test_a_success_that_is_not_json_is_a_502_in_the_clients_shape_on_every_class() -> None:
    """A proxy's HTML page answered with 200 (a captive portal, a wrong host) reaches no SDK as a
    completion: on the route Envoy serves alone (a whole chat), on the translator's one stream (a
    streamed chat, which an SDK would read as an empty stream) and on an Anthropic passthrough, it is
    a 502 in the client's error shape. A canned provider: no real one answers so."""
    import anthropic
    import openai
    from aiohttp import web

    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(status=200, text="<html><body>Gateway</body></html>", content_type="text/html")

    routes = Route("pages", [Rule(["gpt-native"], [Ref("openai")]), Rule(["claude"], [Ref("anthropic")])])
    async with handler_provider(proxy_page) as port:
        docs = (
            routes.yaml(),
            resources.backend("openai", port),
            resources.api_key("openai", "sk-page-key"),
            resources.backend("anthropic", port, "Anthropic"),
            resources.api_key("anthropic", "sk-ant-page-key", kind="AnthropicAPIKey"),
        )
        async with run_gateway(*docs) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
            for stream in (False, True):
                with pytest.raises(openai.InternalServerError) as raised:
                    await client.chat.completions.create(model="gpt-native", messages=CHAT, stream=stream)
                assert raised.value.status_code == 502, stream
                assert raised.value.body["message"] == "the backend response could not be translated"  # type: ignore[index]
            claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="unused", max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as failed:
                await claude.messages.create(model="claude", max_tokens=10, messages=CHAT)  # type: ignore[arg-type]
            assert failed.value.status_code == 502 and failed.value.body["type"] == "error"  # type: ignore[index]


async def test_route_ignores_a_client_original_path_header() -> None:
    """A ROUTE request runs the endpoint of its own path, never one a client names in
    x-ai-eg-original-path (here /v1/embeddings for a /v1/chat/completions request)."""
    from aiohttp import web

    seen: list[str] = []

    async def provider(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.path.endswith("/embeddings"):
            return web.json_response({"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 1}})
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")

    routes = Route("shape", [Rule(["gpt-native"], [Ref("openai")])])
    async with handler_provider(provider) as port:
        docs = (routes.yaml(), resources.backend("openai", port), resources.api_key("openai", "sk-shape-key"))
        async with run_gateway(*docs) as gw:
            body = json.dumps({"model": "gpt-native", "messages": CHAT, "input": "x", "stream": True})
            headers = {"content-type": "application/json", "x-ai-eg-original-path": "/v1/embeddings"}
            await _post(gw.url + "/v1/chat/completions", body, headers)
            assert seen[-1] == "/v1/chat/completions", seen


async def test_csds_never_returns_a_backend_key(keyed_providers) -> None:
    """The control plane's CSDS leaves the translator's configuration (which holds the keys) out of
    its answers, but returns SDS resources whole: the NATIVE rule's generic secret carries
    "Bearer <key>" in clear to any CSDS client (Envoy's own config dump redacts it)."""
    import grpc
    from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.plane.port}") as channel:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
        assert response.config, "no node in CSDS"
        assert OPENAI_KEY.encode() not in response.SerializeToString()


def _non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: picks the outbound interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_backend_keys_go_only_to_peers_that_may_receive_credentials() -> None:
    """Before, provider keys lived only in the translator configuration, which the ADS server gives
    only to loopback or mTLS peers (xds/authz.py). A NATIVE rule's key is now an
    SDS generic secret with a predictable name ("<cluster>/credential"), served to any peer that
    opens ADS claiming the fleet's node.cluster, from anywhere the xDS port is reachable."""
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc

    from aigw_xds.compile import compile_resources
    from aigw_xds.xds import type_urls
    from aigw_xds.xds.build import BuildSettings, build_fleet
    from aigw_xds.xds.cache import SnapshotCache, make_snapshot
    from aigw_xds.xds.server import GRPC_SERVER_OPTIONS, Registry, add_services
    from tests.protocol.conftest import FakeEnvoy
    from tests.resource_text import api_key, backend, gateway, resources, route

    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback address on this host")
    key = "sk-remote-peer-must-not-see"
    text = gateway() + route("r", {"gpt": "openai"}) + backend("openai", 9999) + api_key("openai", key)
    ir = compile_resources(resources(text)).gateways["default/gw"]
    fleet = build_fleet(ir, BuildSettings(translator_address="127.0.0.1:1063", envoy_credentials=True))
    secret_names = [n for n in fleet.by_type.get(type_urls.SECRET, {}) if n.startswith("credential/")]
    assert secret_names, "the rule is expected to be NATIVE (one OpenAI backend, an API key)"
    cache = SnapshotCache()
    cache.set(make_snapshot("default/gw", fleet))
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
    add_services(server, cache, Registry())
    port = server.add_insecure_port(f"{address}:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"{address}:{port}") as channel:
            envoy = FakeEnvoy(
                ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel),
                False,
                base_pb2.Node(id="remote", cluster="default/gw"),
            )
            await envoy.send(type_url=type_urls.SECRET, resource_names=secret_names)
            try:
                response = await envoy.recv(timeout=3)
            except (TimeoutError, grpc.aio.AioRpcError):
                response = None
            finally:
                await envoy.close()
        if response is not None:
            for packed in response.resources:
                secret = secret_pb2.Secret()
                packed.Unpack(secret)
                assert key not in secret.generic_secret.secret.inline_string, "a remote peer got the backend key"
    finally:
        await server.stop(0)
