"""The grpc.aio ExternalProcessor serving both phases, and serve() to run it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from . import aws, azure_entra, gcp, token_cache
from .arguments import bound_address
from .auth import fetch_credential
from .budgets import Budgets
from .config import RuntimeConfig, runtimes
from .counters import counters_for
from .endpoints import ClientSchema, client_schema_of_path
from .errors import GatewayError, gateway_error_body
from .extproc import attributes, dynamic_metadata, header_mutation, headers_to_dict, immediate, metadata_context
from .grpc_start import start_whole
from .key_check import KeyCheck
from .limits import (
    Request,
    admission_charges,
    applicable,
    expression_costs,
    in_window,
    refusal_body,
    response_charges,
    source_ip,
    taken_back,
)
from .logs import get_logger
from .router_phase import RouterPhase
from .upstream_phase import UpstreamPhase, backend_name_from_attributes, load_originals, restored_view
from .watchdog import with_deadline

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[ep.ProcessingRequest, ep.ProcessingResponse]

log = get_logger(__name__)

SERVER_OPTIONS = (
    # A buffered body travels in one ext_proc message (and comes back in one when it is rewritten).
    ("grpc.max_send_message_length", contract.TRANSLATOR_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", contract.TRANSLATOR_MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    # A second translator on the same port must fail loudly instead of silently sharing it.
    ("grpc.so_reuseport", 0),
)

# How long a message waits for its backend's credential to be fetched (a worker thread fetches it,
# the event loop serves other streams meanwhile): under the ext_proc message_timeout (10 s), so that
# a client gets the 503 in its own schema rather than Envoy's timeout.
CREDENTIAL_WAIT_S = 8.0

_EMPTY = {
    "request_trailers": ep.ProcessingResponse(request_trailers=ep.TrailersResponse()),
    "response_trailers": ep.ProcessingResponse(response_trailers=ep.TrailersResponse()),
}


def is_upstream_request(req: ep.ProcessingRequest) -> bool:
    """The upstream filter asks for the xds.* attributes; the router-level filter does not."""
    return any(a in s.fields for s in req.attributes.values() for a in contract.UPSTREAM_ATTRIBUTES)


def stream_metadata(context: Context | None, key: str) -> str:
    """A value of the stream's gRPC initial metadata ("" when absent): the phase the ext_proc filter
    declares (contract.PHASE_METADATA_KEY; the control plane sets it on each level), the fleet, and
    on a route that translates on one stream, its backend."""
    for name, value in (context.invocation_metadata() if context is not None else None) or ():
        if name == key and isinstance(value, str):  # bytes only for "-bin" keys
            return value
    return ""


def stream_idle_timeout(context: Context | None) -> float:
    """The route's streamIdleTimeout in seconds from the stream's gRPC metadata (0.0: none)."""
    value = stream_metadata(context, contract.STREAM_IDLE_TIMEOUT_METADATA_KEY)
    return int(value) / 1000 if value.isdigit() else 0.0


def phase_for(
    runtime: RuntimeConfig,
    declared: str,
    first: ep.ProcessingRequest,
    route_backend: str = "",
    idle_timeout_s: float = 0.0,
    first_backend: str = "",
) -> RouterPhase | UpstreamPhase | None:
    """Fail closed: each level must say which it is, and an upstream stream must carry the
    attributes naming the endpoint. None (the stream is refused) when the marker is missing or
    unknown, or contradicts the first message: a stream that proves neither phase never runs as
    the router phase, which strips no credentials."""
    upstream_attrs = is_upstream_request(first)
    if declared == contract.UPSTREAM_PHASE and upstream_attrs:
        return UpstreamPhase(runtime)
    if declared == contract.ROUTER_PHASE and not upstream_attrs:
        return RouterPhase(runtime, route_backend, idle_timeout_s, first_backend)
    return None


def sending_backend(phase: RouterPhase | UpstreamPhase, req: ep.ProcessingRequest) -> str:
    """The backend the answer to `req` sends the request to ("": none): on a route that translates
    on one stream, the route's backend; per attempt, the backend the endpoint's metadata names (the
    phase's own backend_name_from_attributes). Only the last request message sends."""
    kind = req.WhichOneof("request")
    if kind != "request_body" and not (kind == "request_headers" and req.request_headers.end_of_stream):
        return ""
    if isinstance(phase, RouterPhase):
        return phase.route_backend
    return backend_name_from_attributes(attributes(req) if kind == "request_headers" else phase.attrs)


def credential_request(
    phase: RouterPhase | UpstreamPhase, req: ep.ProcessingRequest
) -> tuple[dict[str, str], dict[str, Any]]:
    """The request headers and dynamic metadata the phase's answer to `req` (a sending message)
    resolves the backend's credential from (auth.resolve_auth): on a route that translates on one
    stream, the client's headers; for an attempt, the headers as the router phase left them (undoing
    earlier attempts) and the stream's metadata."""
    if req.WhichOneof("request") == "request_headers":
        headers, metadata = headers_to_dict(req.request_headers), metadata_context(req)
    else:
        headers, metadata = phase.headers, phase.metadata if isinstance(phase, UpstreamPhase) else {}
    if isinstance(phase, RouterPhase):
        return headers, {}
    return restored_view(headers, load_originals(phase.runtime, metadata)), metadata


async def await_credentials(
    runtime: RuntimeConfig, backend_name: str, request: Callable[[], tuple[dict[str, str], dict[str, Any]]]
) -> None:
    """Waits, without blocking the event loop, until the credential the translator fetches for the
    backend (token_cache) is at hand or its fetch ended, at most CREDENTIAL_WAIT_S: then the phase's
    synchronous lookup finds it. A lookup in the cache when it is valid; nothing for other auth, nor
    when the request (`request()`: its headers and metadata) carries its own credential."""
    backend = runtime.backends.get(backend_name)
    if backend is None or not backend.HasField("auth"):
        return
    try:
        fetch_credential(backend.auth, backend.name, request)
    except token_cache.CredentialsPending as pending:
        waiting = asyncio.wrap_future(pending.ready)
        try:
            await asyncio.wait((waiting,), timeout=CREDENTIAL_WAIT_S)
        finally:
            waiting.cancel()  # this stream stops waiting; the shared fetch runs on for the others
    except GatewayError:
        pass  # the phase answers it, in the client's schema


Configs = config_pb2.TranslatorConfig | RuntimeConfig | dict[str, config_pb2.TranslatorConfig]


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    """Serves one configuration, or one per fleet: Envoy names its fleet in the gRPC metadata of each
    stream (contract.FLEET_METADATA_KEY), so one process can serve several Gateways."""

    def __init__(self, config: Configs, budgets: Budgets | None = None) -> None:
        # Counted in this process unless told otherwise (a Redis store shared by several).
        self.budgets = budgets or Budgets(counters_for(None))
        self.runtime = RuntimeConfig.build(config_pb2.TranslatorConfig())
        self.fleets: dict[str, RuntimeConfig] = {}
        self.following = False  # one configuration per fleet (update_configs)
        self._missing_said: set[str] = set()  # the fleets a stream named that this process lacks
        if isinstance(config, dict):
            self.update_configs(config)
        else:
            self.runtime = config if isinstance(config, RuntimeConfig) else RuntimeConfig.build(config)

    def update_config(self, config: config_pb2.TranslatorConfig) -> None:
        """One configuration for every stream. Streams already open keep the config they started with."""
        self.runtime = RuntimeConfig.build(config)
        self.fleets, self.following = {}, False

    def update_configs(self, configs: dict[str, config_pb2.TranslatorConfig]) -> None:
        """One configuration per fleet; a stream that names no fleet gets the only one, if there is
        exactly one, else an empty configuration."""
        self.fleets = runtimes(configs, self.fleets)
        self.following, self._missing_said = True, set()
        only = next(iter(self.fleets.values())) if len(self.fleets) == 1 else None
        self.runtime = only or RuntimeConfig.build(config_pb2.TranslatorConfig())

    def config_of(self, fleet: str) -> config_pb2.TranslatorConfig | None:
        """The configuration of `fleet` (None: this process follows none of it), or the one
        configuration it serves every stream with."""
        if not self.following:
            return self.runtime.config
        runtime = self.fleets.get(fleet)
        return runtime.config if runtime is not None else None

    def runtime_for(self, context: Context) -> RuntimeConfig | None:
        """The configuration of the stream's fleet; None when the stream names a fleet this process
        follows no configuration of (its --fleet names another Gateway, or that Gateway's
        configuration has not reached it yet): never another Gateway's, nor an empty one that would
        answer a model list with no models."""
        fleet = stream_metadata(context, contract.FLEET_METADATA_KEY)
        if not self.following or not fleet:
            return self.runtime
        return self.fleets.get(fleet)

    def _unconfigured(self, context: Context, req: ep.ProcessingRequest) -> ep.ProcessingResponse:
        """The 503, in the client's schema, for a stream of a fleet this process has no
        configuration of; said in the log once per fleet (until the configurations change)."""
        fleet = stream_metadata(context, contract.FLEET_METADATA_KEY)
        if fleet not in self._missing_said:
            self._missing_said.add(fleet)
            log.warning(
                "translator_fleet_missing",
                fleet=fleet,
                following=sorted(self.fleets),
                hint="this translator follows no configuration of the Envoy's Gateway: check its --fleet, "
                "and that the Gateway compiles on the control plane",
            )
        path = headers_to_dict(req.request_headers).get(":path", "/") if req.HasField("request_headers") else "/"
        message = "the gateway's translator has no configuration for this Gateway (yet); try again later"
        return immediate(503, gateway_error_body(client_schema_of_path(path), 503, message))

    def handle(
        self, phase: RouterPhase | UpstreamPhase, req: ep.ProcessingRequest
    ) -> ep.ProcessingResponse | list[ep.ProcessingResponse]:
        kind = req.WhichOneof("request")
        if isinstance(phase, UpstreamPhase):
            if kind == "request_headers":
                return phase.request_headers(
                    headers_to_dict(req.request_headers),
                    attributes(req),
                    metadata_context(req),
                    req.request_headers.end_of_stream,
                )
            if kind == "request_body":
                return phase.request_body(req.request_body.body)
            if kind == "response_headers":
                return ep.ProcessingResponse(response_headers=ep.HeadersResponse())
            if kind == "response_body":
                return ep.ProcessingResponse(response_body=ep.BodyResponse())
            return _EMPTY[kind]
        if kind == "request_headers":
            client_ip = _client_ip(attributes(req)) if phase.runtime.rate_limits else ""  # for budgets only
            return phase.request_headers(
                headers_to_dict(req.request_headers), req.request_headers.end_of_stream, client_ip
            )
        if kind == "request_body":
            return phase.request_body(req.request_body.body)
        if kind == "response_headers":
            return phase.response_headers(
                headers_to_dict(req.response_headers),
                metadata_context(req),
                req.response_headers.end_of_stream,
                attributes(req),
            )
        if kind == "response_body":
            return phase.response_body(req.response_body.body, req.response_body.end_of_stream)
        if kind == "response_trailers":
            return phase.response_trailers()
        return _EMPTY[kind]

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: Context
    ) -> AsyncIterator[ep.ProcessingResponse]:
        runtime = self.runtime_for(context)
        if runtime is None:
            async for req in request_iterator:
                yield self._unconfigured(context, req)
                return
            return
        declared = stream_metadata(context, contract.PHASE_METADATA_KEY)
        route_backend = stream_metadata(context, contract.ROUTE_BACKEND_METADATA_KEY)
        idle_timeout_s = stream_idle_timeout(context)
        route_budgets = [i for i in stream_metadata(context, contract.RATE_LIMITS_METADATA_KEY).split(",") if i]
        priorities = [
            g.split(",") for g in stream_metadata(context, contract.PRIORITY_BACKENDS_METADATA_KEY).split(";") if g
        ]
        phase: RouterPhase | UpstreamPhase | None = None

        def deadline() -> float:
            return phase.idle_deadline if isinstance(phase, RouterPhase) else 0.0

        watched = with_deadline(request_iterator, deadline) if idle_timeout_s else None
        try:
            # Closed as Process ends, even early: its reader task stops now, not at asyncio's finalizer.
            async with contextlib.aclosing(watched) if watched is not None else contextlib.nullcontext():
                async for req in watched or request_iterator:
                    if phase is None and req is not None:
                        first = stream_metadata(context, contract.FIRST_BACKEND_METADATA_KEY)
                        phase = phase_for(runtime, declared, req, route_backend, idle_timeout_s, first)
                        if phase is None:
                            log.error(
                                "ext_proc_stream_refused",
                                reason="no valid phase marker",
                                declared=declared[:32],
                                upstream_attributes=is_upstream_request(req),
                            )
                            body = gateway_error_body(ClientSchema.OPENAI, 500, "internal translator error")
                            yield immediate(500, body)
                            return
                    try:
                        out: ep.ProcessingResponse | list[ep.ProcessingResponse]
                        if req is not None and phase is not None:
                            sending = sending_backend(phase, req)
                            if sending:
                                await await_credentials(phase.runtime, sending, partial(credential_request, phase, req))
                            out = self.handle(phase, req)
                            if _admits_at(phase, req) and isinstance(out, ep.ProcessingResponse):
                                refusal = None if _answered(out) else await self.admit(phase, req, route_budgets, out)
                                if refusal is not None:
                                    yield refusal
                                    return
                                if isinstance(phase, RouterPhase) and not _answered(out):
                                    phase.forwarded = True
                            if (
                                isinstance(phase, RouterPhase)
                                and phase.runtime.rate_limits
                                and isinstance(out, ep.ProcessingResponse)
                            ):
                                await self.route_around_quotas(phase, priorities, out)
                        else:  # None: the backend went silent mid-stream (only with a streamIdleTimeout)
                            assert isinstance(phase, RouterPhase)
                            out = phase.idle_timeout()
                        for one in out if isinstance(out, list) else (out,):
                            yield one
                    except Exception:
                        message = req.WhichOneof("request") if req is not None else "idle_timeout"
                        log.exception("processing_failed", phase=type(phase).__name__, message=message)
                        schema = phase.client_schema if phase is not None else ClientSchema.OPENAI
                        yield immediate(500, gateway_error_body(schema, 500, "internal translator error"))
                        return
        finally:
            # The response ended, or the client went away (Envoy closed the stream): either way the
            # request is charged what it used.
            if isinstance(phase, RouterPhase):
                self.settle(phase)

    async def admit(
        self,
        phase: RouterPhase | UpstreamPhase,
        req: ep.ProcessingRequest,
        route_budgets: list[str],
        out: ep.ProcessingResponse,
    ) -> ep.ProcessingResponse | None:
        """Where _admits_at says. The router phase admits it against its route's budgets (the ids
        the route sent); the per-attempt phase against the quotas of the backend Envoy picked, and
        against the budgets of that backend's rule when no earlier phase admitted the request (the
        router phase cannot when the route was only known after the translator found the model).
        None when admitted (`out` then says so in dynamic metadata); else the refusal in the
        client's schema."""
        if not phase.runtime.rate_limits:
            return None
        headers = phase.headers  # as the phase read them from this message
        now = time.time()
        if isinstance(phase, RouterPhase):
            request = Request(phase.routed_headers, phase.client_ip)
            phase.limit_request = request
            counted = applicable(phase.runtime.budgets(route_budgets), request, "", now)
            route_admitted = bool(route_budgets)
        else:
            backend = phase.runtime.backends.get(backend_name_from_attributes(phase.attrs))
            if backend is None:
                return None
            request = Request(headers, _client_ip(phase.attrs))  # (the attributes the phase read)
            model = backend.model_name_override or headers.get(contract.MODEL_HEADER, "")
            counted = applicable(phase.runtime.budgets(backend.quota_ids), request, model, now)
            ours = phase.metadata.get(contract.METADATA_NAMESPACE) or {}
            route_admitted = bool(backend.rate_limit_ids) and not ours.get(contract.BUDGETS_ADMITTED_KEY)
            if route_admitted:
                counted += applicable(phase.runtime.budgets(backend.rate_limit_ids), request, "", now)
        if not counted and not route_admitted:
            return None
        verdict = await self.budgets.admit(counted)
        if not verdict.admitted:
            status, body = refusal_body(phase.client_schema, verdict)
            headers = (
                verdict.headers
                if isinstance(phase, RouterPhase)
                else {**verdict.headers, contract.REFUSED_HERE_HEADER: "1"}
            )
            refusal = immediate(status, body, details="aigw_rate_limited", extra_headers=headers)
            by = verdict.exceeded.budget.source if verdict.exceeded is not None else "rate limit store unavailable"
            refusal.dynamic_metadata.CopyFrom(
                dynamic_metadata(contract.METADATA_NAMESPACE, {contract.RATE_LIMITED_BY_KEY: by})
            )
            return refusal
        if route_admitted:  # later attempts leave the route's budgets alone
            ours = out.dynamic_metadata.fields[contract.METADATA_NAMESPACE].struct_value  # fields kept, if any
            ours.fields[contract.BUDGETS_ADMITTED_KEY].bool_value = True
        if isinstance(phase, RouterPhase):
            phase.counted = counted
            phase.rate_limit_headers = verdict.headers
            phase.unchecked = verdict.store_down
        return None

    async def route_around_quotas(
        self, phase: RouterPhase, priorities: list[list[str]], out: ep.ProcessingResponse
    ) -> None:
        """On the response that makes Envoy route the request again (a rule whose backends have
        quotas, several priorities): skips the highest priorities whose backends' quotas are all
        spent (the x-aigw-priority-floor header selects the route to the cluster of the rest), so
        the request fails over instead of meeting a per-attempt refusal, which Envoy cannot retry.
        A backend that cannot serve the request's endpoint is no way out: with no other, the
        request meets the spent quota's 429, not that backend's 422. The header is removed
        otherwise, on every such response of a fleet with budgets: a client never picks a
        priority."""
        common = _common(out)
        if common is None or not common.clear_route_cache:
            return
        if not priorities:  # (a request whose route was not known yet included)
            common.header_mutation.remove_headers.append(contract.PRIORITY_FLOOR_HEADER)
            return
        now = time.time()
        levels = []
        for names in priorities:
            level = []
            for name in names:
                backend = phase.runtime.backends.get(name)
                if backend is not None and phase.serves(backend):
                    model = backend.model_name_override or phase.request_model
                    level.append(applicable(phase.runtime.budgets(backend.quota_ids), phase.limit_request, model, now))
            levels.append(level)
        skipped = await self.budgets.first_open(levels, now)
        mutation = common.header_mutation
        if skipped:
            # Names the rule's first remaining backend (not a count): only this rule's floor matches.
            floor = priorities[skipped][0]
            mutation.set_headers.extend(header_mutation({contract.PRIORITY_FLOOR_HEADER: floor}).set_headers)
            phase.first_backend = floor  # where the request goes first now
        else:
            mutation.remove_headers.append(contract.PRIORITY_FLOOR_HEADER)

    def settle(self, phase: RouterPhase) -> None:
        """Charges a request's budgets (the route's, and the quotas of the backend that answered) what
        its response used, in the windows holding now; in the background. The route's budgets are
        those the router phase admitted the request against, else (the per-attempt phase admitted
        it) those of the answering backend's rule."""
        now = time.time()
        if phase.refused_here:  # the per-attempt phase (or Envoy) refused it: its local charges are taken back
            self.budgets.charge(taken_back(admission_charges(phase.local_counted)))
            return
        counted = in_window(phase.counted, now)
        backend = phase.answering_backend
        if backend is not None:
            if not phase.counted and backend.rate_limit_ids:
                counted = applicable(phase.runtime.budgets(backend.rate_limit_ids), phase.limit_request, "", now)
            quotas = phase.runtime.budgets(backend.quota_ids)
            counted += applicable(quotas, phase.limit_request, phase.effective_model, now)
        if counted:
            self.budgets.charge(response_charges(counted, phase.costs_so_far(expression_costs(counted))))


def _client_ip(attrs: dict[str, Any]) -> str:
    """The client's address from the request's attributes ("" when Envoy did not send it)."""
    source = attrs.get(contract.SOURCE_ADDRESS_ATTRIBUTE, "")
    return source_ip(source) if isinstance(source, str) else ""


def _common(out: ep.ProcessingResponse) -> ep.CommonResponse | None:
    """The common part of a request headers or body response (None for other responses)."""
    if out.HasField("request_body"):
        return out.request_body.response
    if out.HasField("request_headers"):
        return out.request_headers.response
    return None


def _admits_at(phase: RouterPhase | UpstreamPhase, req: ep.ProcessingRequest) -> bool:
    """Whether `req` is where the phase admits the request against its budgets: the per-attempt
    phase at its headers (the router phase set x-ai-eg-model before Envoy routed); the router phase
    once the request is read, so that conditions on x-ai-eg-model see the body's model, which the
    gateway routes on, not a value the client sent (a per-model budget was otherwise never counted,
    or counted under whatever model the client named)."""
    kind: str | None = req.WhichOneof("request")
    if isinstance(phase, UpstreamPhase):
        return kind == "request_headers"
    return kind == "request_body" or (kind == "request_headers" and req.request_headers.end_of_stream is True)


def _answered(out: ep.ProcessingResponse) -> bool:
    """The phase answered the request itself (a local reply: nothing to admit)."""
    return bool(out.HasField("immediate_response"))


class TranslatorServer:
    """A translator: ExternalProcessor on a grpc.aio server (bound by bind(), serving after start())."""

    def __init__(self, processor: ExternalProcessor, server: grpc.aio.Server, port: int, address: str = "") -> None:
        self.processor = processor
        self.server = server
        self.port = port
        self.address = address

    async def start(self) -> None:
        await start_whole(self.server)
        log.info("translator_listening", address=bound_address(self.address, self.port), port=self.port)
        await self.processor.budgets.counters.check()

    def update_config(self, config: config_pb2.TranslatorConfig) -> None:
        self.processor.update_config(config)
        _prefetch_tokens([config])

    def update_configs(self, configs: dict[str, config_pb2.TranslatorConfig]) -> None:
        self.processor.update_configs(configs)
        _prefetch_tokens(configs.values())

    def config_of(self, fleet: str) -> config_pb2.TranslatorConfig | None:
        """ExternalProcessor.config_of: what the MCP proxy beside it answers `fleet`'s clients with."""
        return self.processor.config_of(fleet)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stops serving (streams get `grace` seconds to end), then adds the charges still on their way
        to the counters and closes the store."""
        await self.server.stop(grace)
        budgets = self.processor.budgets
        await budgets.drain()
        await budgets.counters.close()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _prefetch_tokens(configs: Iterable[config_pb2.TranslatorConfig]) -> None:
    """Start fetching the bearer tokens (Entra ID, Google) and the AWS credentials (assumed roles, the
    default chain) a configuration's backends need, and keep them fresh while it is the current one."""
    with token_cache.new_configuration():
        token_cache.prefetch(configs, {**aws.PREFETCH, **azure_entra.PREFETCH, **gcp.PREFETCH})


def bind(
    config: Configs, address: str = contract.TRANSLATOR_ADDRESS, budgets: Budgets | None = None
) -> TranslatorServer:
    """The translator bound to `address` ("host:port", port 0 picks a free one, or "unix:PATH"), its
    port known, not serving until start(). `budgets`: where rate limits are counted (default: in
    this process)."""
    processor = ExternalProcessor(config, budgets)
    if isinstance(config, dict):
        _prefetch_tokens(config.values())
    else:
        _prefetch_tokens([config.config if isinstance(config, RuntimeConfig) else config])
    server = grpc.aio.server(options=SERVER_OPTIONS)
    ep_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    auth_grpc.add_AuthorizationServicer_to_server(KeyCheck(processor.runtime_for), server)
    port = server.add_insecure_port(address)
    return TranslatorServer(processor, server, port, address)


async def serve(
    config: Configs, address: str = contract.TRANSLATOR_ADDRESS, budgets: Budgets | None = None
) -> TranslatorServer:
    """Starts the translator on `address` ("host:port", port 0 picks a free one, or "unix:PATH") and
    returns once it listens."""
    server = bind(config, address, budgets)
    try:
        await server.start()
    except asyncio.CancelledError:  # started whole all the same (start_whole): stopped, not left behind
        await server.stop(0)
        raise
    return server
