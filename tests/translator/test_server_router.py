"""The router-level phase driven with ProcessingRequest protos (no Envoy)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.server import ExternalProcessor

from .extproc_helpers import (
    ROUTER_STREAM,
    drive,
    immediate_json,
    metadata,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)
from .streams import events as sse_events

ANTHROPIC = "ns/claude/route/r/rule/0/ref/0"
OPENAI = "ns/gpt/route/r/rule/0/ref/1"


def config(costs: bool = True) -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    cfg.backends.add(
        name=ANTHROPIC,
        service_backend="ns/claude",
        route_name="ns/r",
        schema=config_pb2.Schema(name="Anthropic"),
        model_name_override="claude-x",
    )
    cfg.backends.add(name=OPENAI, service_backend="ns/gpt", route_name="ns/r", schema=config_pb2.Schema(name="OpenAI"))
    if costs:
        cfg.global_costs.add(metadata_key="total", type=config_pb2.LLMRequestCost.TOTAL_TOKEN)
        rc = cfg.route_costs.add(route_name="ns/r")
        rc.costs.add(metadata_key="cel", type=config_pb2.LLMRequestCost.CEL, cel="input_tokens * 2")
        # `backend` is the backendRef's full name, as Envoy AI Gateway's runtime passes it.
        priced = f"backend == '{ANTHROPIC}' && model == 'claude-x' && route_name == 'ns/r' ? 10u : 1u"
        rc.costs.add(metadata_key="priced", type=config_pb2.LLMRequestCost.CEL, cel=priced)
    cfg.models.add(id="gpt", owned_by="openai", created=5)
    cfg.models.add(id="internal", owned_by="me", hosts=["internal.example"])
    return cfg


CHAT = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "gw", "content-type": "application/json"}
MESSAGES = {**CHAT, ":path": "/anthropic/v1/messages"}


async def test_request_sets_model_and_original_path_and_clears_route_cache() -> None:
    hdrs = {**CHAT, ":path": "/v1/chat/completions?x=1", contract.MODEL_HEADER: "spoofed"}
    out = await drive(
        ExternalProcessor(config()), [request_headers(hdrs), request_body({"model": "gpt", "messages": []})]
    )
    assert out[0].WhichOneof("response") == "request_headers"
    common = out[1].request_body.response
    assert common.clear_route_cache
    assert set_headers(common.header_mutation) == {
        contract.MODEL_HEADER: "gpt",
        contract.ROUTE_SCOPE_HEADER: contract.route_scope("gpt"),
        contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions?x=1",
    }
    assert not common.HasField("body_mutation")


async def test_router_phase_leaves_stream_options_to_the_upstream_phase() -> None:
    """Whether a backend takes stream_options is only known per attempt: the router phase never
    rewrites the body (the upstream phase asks every backend that supports it for usage)."""
    body = {"model": "gpt", "messages": [], "stream": True, "stream_options": {"include_obfuscation": False}}
    for costs in (True, False):
        out = await drive(ExternalProcessor(config(costs=costs)), [request_headers(CHAT), request_body(body)])
        assert not out[1].request_body.response.HasField("body_mutation")


@pytest.mark.parametrize(
    ("hdrs", "body", "status", "shape"),
    [
        (CHAT, b"{not json", 400, "openai"),
        (CHAT, b"[1,2]", 400, "openai"),
        (CHAT, b'{"messages":[]}', 400, "openai"),
        (MESSAGES, b"{not json", 400, "anthropic"),
        (
            {**CHAT, ":path": "/v1/audio/transcriptions", "content-type": "multipart/form-data; boundary=b"},
            b"--b--",
            400,
            "openai",
        ),
    ],
)
async def test_malformed_bodies(hdrs: dict, body: bytes, status: int, shape: str) -> None:
    out = await drive(ExternalProcessor(config()), [request_headers(hdrs), request_body(body)])
    code, obj = immediate_json(out[1])
    assert code == status
    if shape == "openai":
        assert obj["error"]["type"] == "invalid_request_error"
    else:
        assert obj["type"] == "error" and obj["error"]["type"] == "invalid_request_error"


async def test_unknown_path_is_404() -> None:
    out = await drive(ExternalProcessor(config()), [request_headers({**CHAT, ":path": "/anthropic/v1/unknown"})])
    code, obj = immediate_json(out[0])
    assert code == 404 and obj["type"] == "error"


async def test_models_listing_is_local_and_host_scoped() -> None:
    get = {":method": "GET", ":path": "/v1/models", ":authority": "gw"}
    out = await drive(ExternalProcessor(config()), [request_headers(get, end_of_stream=True)])
    code, obj = immediate_json(out[0])
    assert code == 200
    assert obj == {"object": "list", "data": [{"id": "gpt", "object": "model", "created": 5, "owned_by": "openai"}]}
    out = await drive(ExternalProcessor(config()), [request_headers({**get, ":authority": "internal.example"}, True)])
    assert [m["id"] for m in immediate_json(out[0])[1]["data"]] == ["gpt", "internal"]
    # An Anthropic SDK without /anthropic in its base URL (its anthropic-version header says so)
    # gets Anthropic's list, which it reads, not OpenAI's (a new user's trial got empty fields).
    anthropic = {**get, "anthropic-version": "2023-06-01"}
    out = await drive(ExternalProcessor(config()), [request_headers(anthropic, end_of_stream=True)])
    listed = immediate_json(out[0])[1]
    assert listed["data"][0]["type"] == "model" and listed["data"][0]["id"] == "gpt" and "has_more" in listed


async def test_a_stream_of_a_fleet_the_translator_does_not_follow_gets_a_503_not_an_empty_list() -> None:
    """A sidecar whose --fleet names another Gateway than its Envoy's (a typo) answered the model
    list with no models, and its requests with an empty configuration (a new user's finding): a
    stream naming a fleet it holds no configuration of now gets a 503 in the client's schema, and
    the log says so once. A stream naming its fleet, or none (the only one followed), is served."""
    import structlog

    processor = ExternalProcessor({"default/gw": config()})
    get = {":method": "GET", ":path": "/v1/models", ":authority": "gw"}
    other = (*ROUTER_STREAM, (contract.FLEET_METADATA_KEY, "default/other"))
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            out = await drive(processor, [request_headers(get, end_of_stream=True)], other)
            code, obj = immediate_json(out[0])
            assert code == 503 and obj["error"]["type"] == "server_error", obj
        anthropic = {**CHAT, ":path": "/anthropic/v1/messages"}
        code, obj = immediate_json((await drive(processor, [request_headers(anthropic)], other))[0])
        assert code == 503 and obj["type"] == "error" and obj["error"]["type"] == "api_error", obj
    said = [e for e in logs if e["event"] == "translator_fleet_missing"]
    assert [(e["fleet"], e["following"], e["log_level"]) for e in said] == [
        ("default/other", ["default/gw"], "warning")
    ]
    own = (*ROUTER_STREAM, (contract.FLEET_METADATA_KEY, "default/gw"))
    for stream in (own, ROUTER_STREAM):
        code, obj = immediate_json((await drive(processor, [request_headers(get, end_of_stream=True)], stream))[0])
        assert code == 200 and [m["id"] for m in obj["data"]] == ["gpt"]


async def test_transcription_model_from_multipart() -> None:
    hdrs = {**CHAT, ":path": "/v1/audio/transcriptions", "content-type": "multipart/form-data; boundary=b"}
    body = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--b--\r\n'
    out = await drive(ExternalProcessor(config()), [request_headers(hdrs), request_body(body)])
    assert set_headers(out[1].request_body.response.header_mutation)[contract.MODEL_HEADER] == "whisper-1"
    assert not out[1].request_body.response.HasField("body_mutation")


async def test_get_passthrough_without_body() -> None:
    hdrs = {":method": "GET", ":path": "/v1/files?limit=2", ":authority": "gw"}
    out = await drive(ExternalProcessor(config()), [request_headers(hdrs, end_of_stream=True)])
    common = out[0].request_headers.response
    assert set_headers(common.header_mutation) == {contract.ORIGINAL_PATH_HEADER: "/v1/files?limit=2"}
    assert common.clear_route_cache


def _anthropic_message() -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "model": "claude-x-2",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    ).encode()


async def test_buffered_response_translated_with_metadata() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": []}),
            response_headers({":status": "200", "content-type": "application/json", "content-length": "99"}, ANTHROPIC),
            response_body(_anthropic_message()),
        ],
    )
    assert not out[2].HasField("mode_override")
    common = out[3].response_body.response
    body = json.loads(common.body_mutation.body)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "hi"
    assert set_headers(common.header_mutation)["content-length"] == str(len(common.body_mutation.body))
    assert metadata(out[3]) == {
        "model": "claude",
        "backend_name": ANTHROPIC,
        "model_name_override": "claude-x",
        "route_name": "ns/r",
        "ai_service_backend_name": "ns/claude",
        "response_model": "claude-x-2",
        "total": 7.0,
        "cel": 6.0,
        "priced": 10.0,
        "gen_ai.usage.input_tokens": 3.0,
        "gen_ai.usage.output_tokens": 4.0,
        "usage_estimated": False,
    }


async def test_streamed_response_mode_override_and_translation() -> None:
    events = [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"claude-x","usage":{"input_tokens":2}}}\n\n',  # noqa: E501
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"yo"}}\n\n',  # noqa: E501
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}\n\n',  # noqa: E501
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ]
    stream = b"".join(events)
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": [], "stream": True}),
            response_headers({":status": "200", "content-type": "text/event-stream", "content-length": "5"}, ANTHROPIC),
            response_body(stream[: len(events[0]) + 10], end_of_stream=False),
            response_body(stream[len(events[0]) + 10 :], end_of_stream=True),
        ],
    )
    headers_resp = out[2]
    assert headers_resp.mode_override.response_body_mode == processing_mode_pb2.ProcessingMode.STREAMED
    assert "content-length" in headers_resp.response_headers.response.header_mutation.remove_headers
    first = out[3].response_body.response.body_mutation.body
    assert b'"role": "assistant"' in first or b'"role":"assistant"' in first  # first chunk goes out at once
    rest = out[4].response_body.response.body_mutation.body
    assert rest.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in first + rest  # client did not ask for include_usage
    md = metadata(out[4])
    assert md["total"] == 7.0 and md["cel"] == 4.0 and md["usage_estimated"] is False
    assert md["token_latency_ttft"] >= 0 and md["token_latency_itl"] >= 0
    # Metering does not wait for the end: the names go out with the headers, and the running usage
    # (message_start's 2 input tokens, 1 event sent so far) with the first chunk, in case the client
    # hangs up before the end.
    assert metadata(headers_resp)["backend_name"] == ANTHROPIC
    running = metadata(out[3])
    assert running["total"] == 3.0 and running["usage_estimated"] is True


@pytest.mark.parametrize(
    ("backend", "sent", "relayed"),
    [
        (ANTHROPIC, (CHAT, {"model": "claude", "stream": True}), False),  # translated to OpenAI's chunks
        (OPENAI, (CHAT, {"model": "gpt", "stream": True}), False),  # re-encoded: the usage chunk dropped
        (OPENAI, (CHAT, {"model": "gpt", "stream": True, "stream_options": {"include_usage": True}}), True),
        (ANTHROPIC, (MESSAGES, {"model": "claude", "max_tokens": 9, "stream": True}), True),
    ],
)
async def test_an_event_too_large_to_hold_is_no_longer_held(
    backend: str, sent: tuple[dict[str, str], dict[str, Any]], relayed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a security review: a backend sending one endless event (no blank line) made the
    translator hold all of it (900 MB for 400 MB sent, each piece copied again). An event is held up
    to sse.MAX_EVENT_BYTES (made small here). Past it, a stream the translator re-encodes ends with
    an error event in the client's schema (after a blank line) and what the backend sends later is
    dropped; a stream relayed as it came goes on as it came (the client has the event's start
    already: an error event would only corrupt it), no longer read. The stand-in backend is this
    test's bytes."""
    from aigw_translator import sse

    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 4096)
    headers, body = sent
    start = b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"' if backend == OPENAI else b'data: {"a":"'
    pieces = [start] + [b"x" * 1000] * 6 + [b'"}\n\n', b'data: {"late": true}\n\n']
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(headers),
            request_body({**body, "messages": []}),
            response_headers({":status": "200", "content-type": "text/event-stream"}, backend),
            *(response_body(piece, end_of_stream=False) for piece in pieces),
            response_body(b"", end_of_stream=True),
        ],
    )
    bodies = [r.response_body.response for r in out[3:]]
    mutated = [b.body_mutation.body if b.HasField("body_mutation") else None for b in bodies]
    if relayed:
        assert all(m is None for m in mutated[:-1]), mutated  # every piece as it came
        return
    error_at = next(i for i, body in enumerate(mutated) if body and b"larger than" in body)
    assert error_at == 5  # the piece that took the event past the limit (its start and 5 x 1000 bytes)
    error = mutated[error_at]
    assert error is not None and error.startswith(b"\n\n")
    [(_, data)] = sse_events(error[2:])
    assert data["error"]["message"].startswith("the backend sent a stream event larger than")
    assert all(not b.body_mutation.body for b in bodies[error_at + 1 :]), mutated[error_at + 1 :]


async def test_error_response_in_client_schema() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": [], "stream": True}),
            response_headers({":status": "529", "content-type": "application/json"}, ANTHROPIC),
            response_body(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'),
        ],
    )
    assert not out[2].HasField("mode_override")  # errors are never streamed
    answer = out[3].response_body.response
    body = json.loads(answer.body_mutation.body)
    assert body == {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}}
    assert "total" not in metadata(out[3])
    # Anthropic's 529 is no status of OpenAI's: its clients get a 503 (which they retry as well).
    statuses = [h.header.raw_value for h in answer.header_mutation.set_headers if h.header.key == ":status"]
    assert statuses == [b"503"]


async def test_an_anthropic_client_keeps_anthropics_overloaded_status() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(MESSAGES),
            request_body({"model": "claude", "max_tokens": 1, "messages": []}),
            response_headers({":status": "529", "content-type": "application/json"}, ANTHROPIC),
            response_body(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'),
        ],
    )
    answer = out[3].response_body.response
    statuses = [h.header.raw_value for h in answer.header_mutation.set_headers if h.header.key == ":status"]
    assert statuses in ([], [b"529"]), statuses
    assert not answer.body_mutation.body or json.loads(answer.body_mutation.body)["error"]["type"] == "overloaded_error"


async def test_envoy_local_reply_without_backend_is_wrapped() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(MESSAGES),
            request_body({"model": "claude", "max_tokens": 1, "messages": []}),
            response_headers({":status": "503", "content-type": "text/plain"}),
            response_body(b"no healthy upstream"),
        ],
    )
    body = json.loads(out[3].response_body.response.body_mutation.body)
    assert body == {"type": "error", "error": {"type": "api_error", "message": "no healthy upstream"}}


async def test_internal_error_becomes_500_in_client_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    from aigw_translator import router_phase

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("secret-should-not-leak")

    monkeypatch.setattr(router_phase, "parse_request", boom)
    out = await drive(ExternalProcessor(config()), [request_headers(MESSAGES), request_body(b"{}")])
    code, obj = immediate_json(out[1])
    assert code == 500 and obj["type"] == "error"
    assert "secret" not in json.dumps(obj)


async def test_gzip_buffered_response_is_decoded_for_translation() -> None:
    import gzip

    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": []}),
            response_headers(
                {":status": "200", "content-type": "application/json", "content-encoding": "gzip"}, ANTHROPIC
            ),
            response_body(gzip.compress(_anthropic_message())),
        ],
    )
    common = out[3].response_body.response
    assert json.loads(common.body_mutation.body)["choices"][0]["message"]["content"] == "hi"
    assert "content-encoding" in common.header_mutation.remove_headers
    assert metadata(out[3])["total"] == 7.0


async def test_gzip_passthrough_keeps_encoded_body_but_reads_usage() -> None:
    import gzip

    body = json.dumps({"model": "gpt", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "gpt", "messages": []}),
            response_headers({":status": "200", "content-encoding": "gzip"}, OPENAI),
            response_body(gzip.compress(body.encode())),
        ],
    )
    assert not out[3].response_body.response.HasField("body_mutation")
    assert metadata(out[3])["total"] == 2.0


async def test_gzip_stream_is_decoded_incrementally() -> None:
    import zlib

    sse = (
        b'data: {"id":"1","model":"gpt","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        b'data: {"id":"1","model":"gpt","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n'  # noqa: E501
        b"data: [DONE]\n\n"
    )
    comp = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    gz = comp.compress(sse) + comp.flush()
    reqs = [
        request_headers(CHAT),
        request_body({"model": "gpt", "messages": [], "stream": True}),
        response_headers({":status": "200", "content-encoding": "gzip"}, OPENAI),
        *[response_body(gz[i : i + 7], end_of_stream=False) for i in range(0, len(gz), 7)],
        response_body(b"", end_of_stream=True),
    ]
    out = await drive(ExternalProcessor(config()), reqs)
    assert "content-encoding" in out[2].response_headers.response.header_mutation.remove_headers
    client = b"".join(r.response_body.response.body_mutation.body for r in out[3:])
    assert client == sse.replace(sse.split(b"\n\n")[1] + b"\n\n", b"")  # forced usage chunk dropped
    assert metadata(out[-1])["total"] == 3.0


async def test_unknown_encoding_passes_through() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": [], "stream": True}),
            response_headers({":status": "200", "content-encoding": "br"}, ANTHROPIC),
            response_body(b"\x8b\x00brotli", end_of_stream=True),
        ],
    )
    assert not out[2].HasField("mode_override")
    assert not out[3].response_body.response.HasField("body_mutation")


async def test_streaming_request_answered_with_json_is_translated_whole_then_streamed() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": [], "stream": True}),
            response_headers({":status": "200", "content-type": "application/json"}, ANTHROPIC),
            response_body(_anthropic_message()),
        ],
    )
    assert not out[2].HasField("mode_override")  # buffered: the whole answer is translated
    body = out[3].response_body.response.body_mutation.body
    chunks = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and body.endswith(b"data: [DONE]\n\n")
    # Its token latencies (left alone before: none): the first token reached the client with the
    # whole answer, and every other one with it.
    fields = out[3].dynamic_metadata.fields[contract.METADATA_NAMESPACE].struct_value.fields
    assert fields[contract.TTFT_KEY].number_value > 0 and fields[contract.ITL_KEY].number_value == 0


async def test_json_endpoint_without_body_is_400() -> None:
    out = await drive(ExternalProcessor(config()), [request_headers(MESSAGES, end_of_stream=True)])
    code, obj = immediate_json(out[0])
    assert code == 400 and obj["type"] == "error"


async def test_backend_key_echoed_in_an_error_is_scrubbed() -> None:
    cfg = config()
    cfg.backends[1].auth.api_key.key = "sk-backend-secret-123"
    out = await drive(
        ExternalProcessor(cfg),
        [
            request_headers(CHAT),
            request_body({"model": "gpt", "messages": []}),
            response_headers({":status": "401", "content-type": "application/json"}, OPENAI),
            response_body(b'{"error":{"message":"Incorrect API key provided: sk-backend-secret-123","type":"x"}}'),
        ],
    )
    body = out[3].response_body.response.body_mutation.body
    assert b"sk-backend-secret-123" not in body
    # Whose credential, before what the provider said (a new user read it as the client's own key).
    assert json.loads(body)["error"]["message"] == (
        "the provider rejected the gateway's credential for this backend (status 401): "
        "Incorrect API key provided: [REDACTED]"
    )


async def test_a_rejected_credential_is_said_whose_and_logged_once_a_minute(monkeypatch) -> None:
    """The client's 401 says the gateway's credential was rejected (the client's own never reaches a
    provider), and the operator gets a warning naming the backend, one a minute. A backend whose
    key is the client's (a credential override) gets the provider's words alone."""
    import structlog

    from aigw_translator import router_phase

    monkeypatch.setattr(router_phase, "_rejections_logged", {})
    cfg = config()
    cfg.backends[1].auth.api_key.key = "sk-gw"
    sent = [request_headers(CHAT), request_body({"model": "gpt", "messages": []})]
    answer = [
        response_headers({":status": "401", "content-type": "application/json"}, OPENAI),
        response_body(b'{"error":{"message":"Incorrect API key provided: sk-****","type":"invalid_request_error"}}'),
    ]
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            out = await drive(ExternalProcessor(cfg), [*sent, *answer])
            message = json.loads(out[3].response_body.response.body_mutation.body)["error"]["message"]
            assert message.startswith("the provider rejected the gateway's credential for this backend (status 401): ")
    assert [(e["event"], e["backend"]) for e in logs if e["log_level"] == "warning"] == [
        ("backend_credential_rejected", OPENAI)
    ]
    cfg.backends[1].auth.credential_override.from_request_headers.header = "x-tenant-key"
    own = [request_headers({**CHAT, "x-tenant-key": "sk-client"}), sent[1]]
    out = await drive(ExternalProcessor(cfg), [*own, *answer])
    assert not out[3].response_body.response.HasField("body_mutation")  # as the provider wrote it


@pytest.mark.parametrize(
    ("client", "backend", "upstream"),
    [
        # An OpenAI client, an OpenAI backend: the body is already the client's shape.
        (CHAT, OPENAI, b'{"error":{"message":"bad key %s","type":"x"}}'),
        # An OpenAI client, an Anthropic backend: the body is converted.
        (CHAT, ANTHROPIC, b'{"type":"error","error":{"type":"x","message":"bad key %s"}}'),
        # Not JSON, the key across the end of the 2,000 characters of message a conversion keeps.
        (CHAT, ANTHROPIC, b"x" * 1990 + b" key %s"),
    ],
)
async def test_backend_key_echoed_escaped_or_cut_is_scrubbed(client, backend, upstream) -> None:
    """A key escaped in a JSON string (which the client's parser turns back into the key) and one a
    conversion would cut in two are scrubbed too: the body is scrubbed before it is converted."""
    key = "sk-backend-secret-123"
    cfg = config()
    cfg.backends[0].auth.anthropic_api_key.key = key
    cfg.backends[1].auth.api_key.key = key
    escaped = "".join(f"\\u{ord(c):04x}" for c in key).encode()
    model = "gpt" if backend == OPENAI else "claude"
    out = await drive(
        ExternalProcessor(cfg),
        [
            request_headers(client),
            request_body({"model": model, "messages": [{"role": "user", "content": "x"}]}),
            response_headers({":status": "401", "content-type": "application/json"}, backend),
            response_body(upstream.replace(b"%s", escaped if upstream.startswith(b"{") else key.encode())),
        ],
    )
    body = out[3].response_body.response.body_mutation.body
    message = json.loads(body)["error"]["message"]
    assert "sk-back" not in message and escaped not in body and "[REDA" in message, message[-40:]


async def test_an_error_in_an_encoding_the_translator_cannot_read_is_not_passed_on() -> None:
    """A security review: a provider (or a CDN before it) ignoring `accept-encoding: identity` sent
    its 401 brotli-encoded, and the key it quoted reached the client, as no search for it could
    read the body. Such an error keeps its status and loses its body, in the client's shape; an
    answer in that encoding still passes as it came (the client decodes it)."""
    cfg = config()
    cfg.backends[1].auth.api_key.key = "sk-backend-secret-123"
    quoted = b'{"error":{"message":"Incorrect API key provided: sk-backend-secret-123"}}'
    sent = [request_headers(CHAT), request_body({"model": "gpt", "messages": []})]
    for status, encoding in (("401", "br"), ("200", "br"), ("401", "gzip")):
        headers = {":status": status, "content-type": "application/json", "content-encoding": encoding}
        upstream = quoted if encoding == "br" else b"not gzip at all"  # one it can name but not decode
        out = await drive(ExternalProcessor(cfg), [*sent, response_headers(headers, OPENAI), response_body(upstream)])
        mutation = out[3].response_body.response
        if status == "200":
            assert not mutation.HasField("body_mutation")
            continue
        error = json.loads(mutation.body_mutation.body)["error"]
        assert error["message"] == f"the backend answered 401 in an encoding the gateway cannot read ({encoding})"
        assert "content-encoding" in mutation.header_mutation.remove_headers


async def test_a_complete_answer_to_a_stream_request_is_sent_as_the_stream_or_left_as_it_came() -> None:
    """A backend that answers a streaming request with one JSON body: a chat completion goes to the
    client as its chunks (text/event-stream, a content-length of its own). Anything else is passed
    on as it came, as before: an answer whose stream the gateway does not make (a Responses object,
    a passthrough path's), SSE sent under another content type. A chat answer that is neither (NDJSON,
    an HTML page) is a 502 in the client's shape: an SDK would read it as an empty stream."""
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    sse = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[]}\n\ndata: [DONE]\n\n'
    for path, content_type, body, streamed in (  # streamed None: refused
        ("/v1/chat/completions", "application/json", json.dumps(answer).encode(), True),
        ("/v1/responses", "application/json", b'{"id":"r1","object":"response","output":[]}', False),
        ("/v1/foo/bar", "application/json", b'{"anything":1}', False),
        ("/v1/chat/completions", "text/plain", sse, False),
        ("/v1/chat/completions", "application/x-ndjson", b'{"a":1}\n{"b":2}\n', None),
        ("/v1/chat/completions", "text/html", b"<html><body>Gateway</body></html>", None),
    ):
        out = await drive(
            ExternalProcessor(config()),
            [
                request_headers({**CHAT, ":path": path}),
                request_body(
                    {"model": "gpt", "stream": True, "input": "x", "messages": [{"role": "user", "content": "x"}]}
                ),
                response_headers({":status": "200", "content-type": content_type}, OPENAI),
                response_body(body),
            ],
        )
        common = out[3].response_body.response
        sent = set_headers(common.header_mutation)
        if streamed:
            assert sent["content-type"] == "text/event-stream" and ":status" not in sent
            assert sent["content-length"] == str(len(common.body_mutation.body))
            assert common.body_mutation.body.endswith(b"data: [DONE]\n\n")
        elif streamed is None:
            assert sent[":status"] == "502" and sent["content-type"] == "application/json", content_type
            error = json.loads(common.body_mutation.body)["error"]
            assert error["message"] == "the backend response could not be translated"
        else:
            assert not common.HasField("body_mutation") and sent == {}, (path, content_type)


# ----------------------------------------------------------------------------- client errors, not 500s


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"model": 5, "messages": []}', "'model' must be a string"),
        (b'{"model": null, "messages": []}', "'model' is required"),
        (b'{"model": "gpt", "messages": [], "stream": "true"}', "'stream' must be a boolean"),
        (b'{"model": "gpt", "messages": [], "stream": 1}', "'stream' must be a boolean"),
        # Deeper than orjson reads (1024 levels); written as text: json.dumps recurses per level.
        (b'{"model": "gpt", "messages": ' + b"[" * 1100 + b"]" * 1100 + b"}", "malformed JSON"),
    ],
)
async def test_bad_request_fields_are_400_with_the_reason(body: bytes, words: str) -> None:
    out = await drive(ExternalProcessor(config()), [request_headers(CHAT), request_body(body)])
    code, obj = immediate_json(out[1])
    assert code == 400 and words in obj["error"]["message"]


async def test_deeply_nested_stream_request_is_not_a_500() -> None:
    # 300 levels: orjson reads it (up to 1024) but cannot write it (up to 254).
    body = {"model": "gpt", "messages": [{"role": "user", "content": _nested(300)}], "stream": True}
    out = await drive(ExternalProcessor(config(costs=True)), [request_headers(CHAT), request_body(body)])
    assert out[1].HasField("request_body")
    assert set_headers(out[1].request_body.response.header_mutation)[contract.MODEL_HEADER] == "gpt"


async def test_passthrough_stream_is_streamed() -> None:
    hdrs = {**CHAT, ":path": "/v1/threads/runs"}
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(hdrs),
            request_body({"model": "gpt", "stream": True}),
            response_headers({":status": "200", "content-type": "text/event-stream"}, OPENAI),
        ],
    )
    assert out[2].HasField("mode_override")
    assert out[2].mode_override.response_body_mode == processing_mode_pb2.ProcessingMode.STREAMED


async def test_untranslatable_success_body_is_not_a_200() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": []}),
            response_headers({":status": "200", "content-type": "text/html"}, ANTHROPIC),
            response_body(b"<html>upstream proxy says hello</html>"),
        ],
    )
    common = out[3].response_body.response
    hdrs = set_headers(common.header_mutation)
    assert hdrs[":status"] == "502"
    assert json.loads(common.body_mutation.body)["error"]["message"] == "the backend response could not be translated"


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/v1/models/gpt", 200, {"id": "gpt", "object": "model", "created": 5, "owned_by": "openai"}),
        ("/v1/models/nope", 404, "model_not_found"),
        ("/anthropic/v1/models/gpt", 200, {"type": "model", "id": "gpt", "display_name": "gpt"}),
        ("/anthropic/v1/models/nope", 404, "not_found_error"),
        # Host-scoped like the list: a model of another host is not found here.
        ("/v1/models/internal", 404, "model_not_found"),
    ],
)
async def test_model_retrieve_is_answered_from_the_routes(path: str, status: int, expected: Any) -> None:
    get = {":method": "GET", ":path": path, ":authority": "gw"}
    out = await drive(ExternalProcessor(config()), [request_headers(get, end_of_stream=True)])
    code, obj = immediate_json(out[0])
    assert code == status
    if status == 200:
        assert {k: obj[k] for k in expected} == expected
    elif path.startswith("/anthropic/"):
        assert obj["type"] == "error" and obj["error"]["type"] == expected
    else:  # OpenAI's own shape for an unknown model
        assert obj["error"]["code"] == expected
        assert obj["error"]["type"] == "invalid_request_error" and obj["error"]["param"] == "model"


async def test_final_usage_equal_to_the_estimate_is_still_marked_final() -> None:
    """The SDK hangs up after message_stop/[DONE], before the end of stream: the last metadata
    written must say the usage is the provider's, even when its figures equal the estimate."""
    # Two events reach the client with the first chunk (role, "yo"): the estimate is 2 output tokens,
    # and the provider then reports exactly 2.
    first = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"claude-x","usage":{"input_tokens":2}}}\n\n'  # noqa: E501
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"yo"}}\n\n'  # noqa: E501
    )
    rest = (
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}\n\n'  # noqa: E501
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(CHAT),
            request_body({"model": "claude", "messages": [], "stream": True}),
            response_headers({":status": "200", "content-type": "text/event-stream"}, ANTHROPIC),
            response_body(first, end_of_stream=False),
            response_body(rest, end_of_stream=False),
        ],
    )
    running = metadata(out[3])
    assert running["usage_estimated"] is True and running["total"] == 4.0
    last = metadata(out[4])
    assert last["usage_estimated"] is False and last["total"] == 4.0


def test_a_fleet_whose_configuration_is_the_same_message_keeps_its_runtime() -> None:
    """A control plane hands its in-process translator every fleet's configuration on every edit of
    any of them: a fleet's RuntimeConfig is built again only when its configuration is another one."""
    processor = ExternalProcessor(config())
    same, edited = config(), config()
    processor.update_configs({"ns/a": same, "ns/b": edited})
    kept, replaced = processor.fleets["ns/a"], processor.fleets["ns/b"]
    again = config()
    again.backends[0].model_name_override = "claude-y"
    processor.update_configs({"ns/a": same, "ns/b": again})
    assert processor.fleets["ns/a"] is kept
    assert processor.fleets["ns/b"] is not replaced and processor.fleets["ns/b"].config is again
    assert processor.fleets["ns/b"].backends[ANTHROPIC].model_name_override == "claude-y"
