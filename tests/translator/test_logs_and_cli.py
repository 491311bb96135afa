from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from google.protobuf import json_format

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator import costs, router_phase, server, upstream_phase
from aigw_translator.config import load_config, parse_config
from aigw_translator.logs import REDACTED, redact_headers
from aigw_translator.server import ExternalProcessor, serve
from aigw_translator.translators import base
from tests.e2e.harness.processes import free_port

from .extproc_helpers import ROUTER_STREAM, drive, request_body, request_headers, upstream_attributes


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("x-api-key", True),
        ("api-key", True),
        ("x-aigw-api-key", True),
        ("X-AIGW-Whatever", True),
        ("aws-secret-access-key", True),
        ("content-type", False),
        (":path", False),
    ],
)
def test_redaction(name: str, secret: bool) -> None:
    assert (redact_headers({name: "v"})[name] == REDACTED) is secret


def _config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    b = cfg.backends.add(name="b", schema=config_pb2.Schema(name="Anthropic"))
    b.auth.anthropic_api_key.key = "sk-configured-secret"
    return cfg


async def test_secrets_never_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    hdrs = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        "authorization": "Bearer client-secret",
        "x-aigw-api-key": "override-secret",
        contract.MODEL_HEADER: "m",
        contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions",
    }
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    # Independent of how the process configured structlog (levels, cached loggers): every module
    # logger is replaced by one that captures everything down to debug.
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    for module in (router_phase, upstream_phase, server, costs, base):
        monkeypatch.setattr(module, "log", logger)
    processor = ExternalProcessor(_config())
    await drive(processor, [request_headers(hdrs), request_body(body)])
    await drive(processor, [request_headers(hdrs, attributes=upstream_attributes("b")), request_body(body)])
    logs = capture.entries
    text = json.dumps(logs, default=str)
    assert any(entry["event"] == "upstream_attempt" for entry in logs)
    for secret in ("client-secret", "override-secret", "sk-configured-secret"):
        assert secret not in text


def test_config_json_and_binary(tmp_path: Path) -> None:
    cfg = _config()
    (tmp_path / "c.json").write_text(json_format.MessageToJson(cfg))
    (tmp_path / "c.pb").write_bytes(cfg.SerializeToString())
    assert load_config(tmp_path / "c.json") == cfg
    assert load_config(tmp_path / "c.pb") == cfg
    assert parse_config(b"  " + json_format.MessageToJson(cfg).encode()) == cfg


async def test_serve_and_update_config() -> None:
    server = await serve(_config(), "127.0.0.1:0")
    try:
        assert server.port > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = ep_grpc.ExternalProcessorStub(channel)
            call = stub.Process(
                iter([request_headers({":method": "GET", ":path": "/v1/models"}, True)]), metadata=ROUTER_STREAM
            )
            responses = [r async for r in call]
            assert responses[0].immediate_response.status.code == 200
        new = _config()
        new.models.add(id="added")
        server.update_config(new)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = ep_grpc.ExternalProcessorStub(channel)
            call = stub.Process(
                iter([request_headers({":method": "GET", ":path": "/v1/models"}, True)]), metadata=ROUTER_STREAM
            )
            responses = [r async for r in call]
            body = json.loads(responses[0].immediate_response.body)
            assert [m["id"] for m in body["data"]] == ["added"]
    finally:
        await server.stop(0)


async def test_module_entry_point(tmp_path: Path) -> None:
    cfg = _config()
    cfg.models.add(id="from-file")
    path = tmp_path / "config.json"
    path.write_text(json_format.MessageToJson(cfg))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aigw_translator", "--config", str(path), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=60)
            stub = ep_grpc.ExternalProcessorStub(channel)
            call = stub.Process(
                iter([request_headers({":method": "GET", ":path": "/v1/models"}, True)]), metadata=ROUTER_STREAM
            )
            responses = [r async for r in call]
            body = json.loads(responses[0].immediate_response.body)
            assert [m["id"] for m in body["data"]] == ["from-file"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert b"sk-configured-secret" not in out


async def test_port_in_use_fails_loudly() -> None:
    first = await serve(_config(), "127.0.0.1:0")
    try:
        with pytest.raises(RuntimeError):
            await serve(_config(), f"127.0.0.1:{first.port}")
    finally:
        await first.stop(0)


@pytest.mark.parametrize(("given", "followed"), [("quickstart", "default/quickstart"), ("team-a/gw", "team-a/gw")])
def test_a_bare_fleet_name_is_in_namespace_default_as_for_nodes(monkeypatch, given: str, followed: str) -> None:
    """`translator --fleet quickstart` follows default/quickstart, as a node whose cluster is
    "quickstart" belongs to it (it subscribed to "quickstart", which no control plane serves)."""
    from aigw_translator import __main__ as translator_main

    seen: list[str] = []

    async def run(args) -> None:
        seen.append(args.fleet)

    monkeypatch.setattr(translator_main, "_run", run)
    argv = ["--xds", f"127.0.0.1:{free_port()}", "--fleet", given, "--listen", f"127.0.0.1:{free_port()}"]
    assert translator_main.main(argv) == 0
    assert seen == [followed]
