"""examples/mcp as its README runs it: `aigw-xds run examples/mcp` (a real Envoy, the translator's
MCP proxy, and the bundled fake MCP server on both Backends, the stand-in for real MCP servers) and
the README's client, the official MCP SDK, as written but for the ports; then what the README
promises: the hidden tool refused, the keys where they belong, the route not chosen by a client's
header, a live edit of the tool selector."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness.processes import free_port, interrupt, launch, wait_for
from tests.unit.test_compat import EXAMPLES as COMPAT_EXAMPLES

from .running import EXAMPLES

ACCEPT = "application/json, text/event-stream"


def _post(url: str, message: dict, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    """One JSON-RPC message POSTed as an MCP client sends it: status, headers (lower case), answer."""
    data = json.dumps(message).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"content-type": "application/json", "accept": ACCEPT, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read().decode()
            status, got = response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        body, status, got = error.read().decode(), error.code, {k.lower(): v for k, v in error.headers.items()}
    if got.get("content-type", "").startswith("text/event-stream"):
        body = next(line[5:] for line in body.splitlines() if line.startswith("data:") and '"id"' in line)
    return status, got, json.loads(body) if body.strip() else {}


def _session(url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """A session opened by hand (initialize, then initialized): the headers that carry it."""
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    status, got, answer = _post(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}, headers)
    assert status == 200 and "result" in answer, (status, answer)
    session = {**(headers or {}), "mcp-session-id": got["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    assert _post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)[0] == 202
    return session


def _tools(url: str, session: dict[str, str]) -> list[str]:
    status, _, answer = _post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)
    assert status == 200, answer
    return [tool["name"] for tool in answer["result"]["tools"]]


def _recorded(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__fake/requests", timeout=5) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class McpExample:
    """An MCP example under `aigw-xds run`: its Gateway's port, its fake MCP servers' (the Backends
    `notes` and `math`), its configuration (a copy on those ports) and run's output."""

    listener: int
    notes: int
    math: int
    config: Path
    log: Path


@contextmanager
def mcp_example_running(example: Path, workdir: Path) -> Iterator[McpExample]:
    """`aigw-xds run` on the example's YAML, its ports (1975, 19090, 19091) made free ones, until
    ready; Ctrl-C after, and a clean exit checked."""
    listener, notes, math = free_port(), free_port(), free_port()
    text = example.read_text().replace("port: 1975", f"port: {listener}")
    config = workdir / example.name
    config.write_text(text.replace("port: 19090", f"port: {notes}").replace("port: 19091", f"port: {math}"))
    log = workdir / "run.log"
    command = [sys.executable, "-m", "aigw_xds", "run", str(config), "--admin-port", str(free_port())]
    process = launch(command, log, {"PATH": "/usr/bin:/bin"}, terminal=True)
    try:
        wait_for(lambda: "aigw-xds ready:" in log.read_text(), timeout=90, what="the ready line")
        yield McpExample(listener, notes, math, config, log)
    finally:
        interrupt(process)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]


def test_mcp_example_serves_the_mcp_sdk_as_its_readme_says(tmp_path: Path):
    with mcp_example_running(EXAMPLES / "mcp" / "mcp.yaml", tmp_path) as run:
        listener, notes, math, config, log = run.listener, run.notes, run.math, run.config, run.log
        url = f"http://127.0.0.1:{listener}/mcp"
        assert "  MCP /mcp (default/tools): notes, math" in log.read_text()

        readme = (EXAMPLES / "mcp" / "README.md").read_text()
        [client] = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
        code = client.replace("localhost:1975", f"127.0.0.1:{listener}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:] + log.read_text()[-3000:]
        tools, added, echoed = done.stdout.splitlines()
        assert tools == str(["notes__echo", "notes__add", "notes__slow_count", "notes__whoami", "math__add"])
        assert (added, echoed) == ("5", "hello")

        # A client's own key and a header naming another route change nothing: Envoy names the
        # route, and the MCP servers get only the gateway's key for them.
        spoof = {"authorization": "Bearer client-own-key", "x-aigw-mcp-route": "default/other"}
        session = _session(url, spoof)
        assert _tools(url, session)[-1] == "math__add"
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "math__echo", "arguments": {}}}
        status, _, refused = _post(url, call, session)
        assert status == 200 and refused["error"]["code"] == -32602, refused
        notes_seen = [r["headers"].get("authorization") for r in _recorded(notes) if r["method"] == "POST"]
        math_seen = [r["headers"].get("authorization") for r in _recorded(math) if r["method"] == "POST"]
        assert notes_seen and set(notes_seen) == {"Bearer mcp-local-demo-key"}
        assert math_seen and set(math_seen) == {None}
        assert all("echo" not in json.dumps(r["body"]) for r in _recorded(math)), "the hidden tool reached math"

        # run's access lines say what each MCP request was (Envoy's access log, from the proxy's headers).
        wanted = {"mcp.method.name=tools/call", "mcp.tool.name=add", "mcp.provider.name=math"}
        wait_for(
            lambda: any(wanted <= set(line.split()) for line in log.read_text().splitlines()),
            timeout=10,
            what="the access line of math__add",
        )
        assert "mcp.method.name=initialize" in log.read_text()
        # (Envoy moved the proxy's headers into metadata: the client does not get them.)
        _, answered, _ = _post(url, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, session)
        assert not [h for h in answered if h.startswith("x-aigw-mcp")], answered

        # The README's live edit: another tool of math shown, in the next list.
        config.write_text(config.read_text().replace("- add", "- add\n          - echo"))
        wait_for(lambda: "math__echo" in _tools(url, _session(url)), timeout=30, what="math__echo listed")
        changed = (
            "aigw-xds: the MCP routes changed:\n  - MCP /mcp (default/tools): notes, math [include add]\n"
            "  + MCP /mcp (default/tools): notes, math [include add echo]\n"
        )
        wait_for(lambda: changed in log.read_text(), timeout=10, what="the console's MCP change")
    assert "mcp-local-demo-key" not in log.read_text()


def test_bench_mcp_runs():
    """hack/bench_mcp.py (its figures are in docs/performance.md) runs and every request succeeds
    through the gateway and directly; its timings are not checked."""
    done = subprocess.run(
        [sys.executable, "hack/bench_mcp.py", "--requests", "20", "--concurrency", "2"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| tools/")]
    assert len(rows) == 6 and all(line.endswith("| 0 |") for line in rows), done.stdout


@pytest.mark.parametrize(
    ("example", "tools"),
    [
        (EXAMPLES / "mcp", ["notes__echo", "notes__add", "notes__slow_count", "notes__whoami", "math__add"]),
        # GitHub's and Kiwi's MCP servers over TLS, a GitHub token from the environment; GitHub's
        # toolSelector leaves it no tool of the fake's.
        (COMPAT_EXAMPLES / "mcp_mcp_example.yaml", ["kiwi__echo", "kiwi__add", "kiwi__slow_count", "kiwi__whoami"]),
    ],
    ids=["examples/mcp", "envoy-ai-gateway/mcp_example"],
)
def test_with_fakes_runs_the_mcp_examples(example: Path, tools: list[str], tmp_path: Path):
    """examples/with_fakes.py, as the README has it: the bundled fake MCP server stands in for every
    MCP server, at its path, with a dummy key where the environment would give one."""
    listener, log = free_port(), tmp_path / "with_fakes.log"
    command = [sys.executable, "examples/with_fakes.py", str(example), "--port", str(listener)]
    env = {"PATH": "/usr/bin:/bin"}  # no key in the environment: with_fakes sets dummy ones
    process = launch([*command, "--admin-port", str(free_port())], log, env, cwd=EXAMPLES.parent, terminal=True)
    url = f"http://127.0.0.1:{listener}/mcp"
    try:
        wait_for(lambda: "aigw-xds ready:" in log.read_text(), timeout=90, what="the ready line")
        session = _session(url)
        assert _tools(url, session) == tools
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": tools[-1], "arguments": {}}}
        status, _, answer = _post(url, call, session)
        assert status == 200 and "result" in answer, answer
    finally:
        interrupt(process)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]
