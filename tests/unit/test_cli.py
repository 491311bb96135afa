"""The command line: validate, translate and bootstrap as a user runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aigw_xds.cli import main
from aigw_xds.envoy.process import envoy_binary
from tests.resource_text import api_key, backend, gateway, route


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "gw.yaml").write_text(
        gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-secret-1")
    )
    return tmp_path


def test_validate_ok_and_status(config: Path, capsys):
    assert main(["validate", "--config", str(config), "--status"]) == 0
    out = capsys.readouterr().out
    assert "1 gateway(s) compiled: default/gw; 0 error(s)" in out
    assert "status: AIGatewayRoute default/r: Accepted=True" in out


def test_validate_reports_precise_errors_and_exits_1(config: Path, capsys):
    (config / "gw.yaml").write_text(
        (config / "gw.yaml").read_text().replace("{name: b, priority", "{name: nope, priority")
    )
    assert main(["validate", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "gw.yaml#3: AIGatewayRoute default/r spec.rules[0].backendRefs[0].name: AIServiceBackend default/nope" in err


def test_translate_prints_envoy_resources_without_secrets(config: Path, capsys):
    assert main(["translate", "--config", str(config), "--gateway", "default/gw", "-o", "json"]) == 0
    text = capsys.readouterr().out
    resources = json.loads(text)["default/gw"]
    assert [c["name"] for c in resources["CDS"]] == ["aigw-translator", "default/r/rule/0"]
    assert "sk-secret-1" not in text


def test_bootstrap_is_accepted_by_envoy(tmp_path: Path, capsys):
    for delta in (False, True):
        args = ["bootstrap", "--server", "127.0.0.1:18000", "--gateway", "default/gw", "-o", "json"]
        assert main([*args, "--delta"] if delta else args) == 0
        path = tmp_path / f"bootstrap-{delta}.json"
        path.write_text(capsys.readouterr().out)
        checked = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stderr[-2000:]
        assert json.loads(path.read_text())["dynamic_resources"]["ads_config"]["api_type"] == (
            "DELTA_GRPC" if delta else "GRPC"
        )


def test_serve_reports_a_port_in_use_and_exits_1(config: Path, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--config", str(config), "--listen", f"127.0.0.1:{port}", "--translator-listen", ""])
    assert code == 1
    assert (
        f"aigw-xds: error: the xDS server cannot listen on 127.0.0.1:{port} (address in use?)"
        in capsys.readouterr().err
    )
