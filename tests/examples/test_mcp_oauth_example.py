"""examples/mcp-oauth as its README runs it: `aigw-xds run examples/mcp-oauth` (a real Envoy checking
the demo tokens, the translator's MCP proxy applying the authorization rules, the bundled fake MCP
server on both Backends, the stand-in for real MCP servers), the README's curl lines and its
client.py (the official MCP SDK) with both demo tokens, on free ports; then what the README
promises: the claim header at the servers, never the token."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from .running import EXAMPLES
from .test_mcp_example import mcp_example_running

EXAMPLE = EXAMPLES / "mcp-oauth"


def _readme_commands() -> list[str]:
    readme = (EXAMPLE / "README.md").read_text()
    return [line for block in re.findall(r"^```sh\n(.*?)^```", readme, re.S | re.M) for line in block.splitlines()]


def _recorded(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__fake/requests", timeout=5) as response:
        return json.loads(response.read())


def test_mcp_oauth_example_does_what_its_readme_says(tmp_path: Path):
    # (The route's resource and audience stay http://localhost:1975/mcp: the demo tokens' audience.)
    with mcp_example_running(EXAMPLE / "mcp-oauth.yaml", tmp_path) as run:
        listener, notes, math, log = run.listener, run.notes, run.math, run.log
        ready = "  MCP /mcp (default/tools): notes, math; clients: OAuth token, 2 authorization rules, else deny"
        assert ready in log.read_text()

        first, second, *clients = [c for c in _readme_commands() if "aigw-xds run" not in c]
        assert first.startswith("curl -i http://localhost:1975/mcp") and second.startswith(
            "curl http://localhost:1975/"
        )
        challenged = subprocess.run(
            first.replace("localhost:1975", f"127.0.0.1:{listener}"), shell=True, capture_output=True, text=True
        )
        head = challenged.stdout.lower()
        assert "401 unauthorized" in head.splitlines()[0]
        metadata_url = "http://localhost:1975/.well-known/oauth-protected-resource/mcp"
        assert f'www-authenticate: bearer resource_metadata="{metadata_url}", scope="notes math"' in head
        metadata = subprocess.run(
            second.replace("localhost:1975", f"127.0.0.1:{listener}"), shell=True, capture_output=True, text=True
        )
        document = json.loads(metadata.stdout)
        assert document["resource"] == "http://localhost:1975/mcp"
        assert document["authorization_servers"] == ["https://auth.example.com"]

        outputs = []
        for line in clients:
            args = line.split()
            assert args[0] == ".venv/bin/python" and args[1] == "examples/mcp-oauth/client.py"
            done = subprocess.run(
                [sys.executable, args[1], args[2], f"http://127.0.0.1:{listener}/mcp"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=EXAMPLES.parent,
            )
            assert done.returncode == 0, done.stderr[-3000:] + log.read_text()[-3000:]
            outputs.append(done.stdout.splitlines())
        reader, analyst = outputs
        assert reader == [
            str(["notes__echo", "notes__whoami"]),
            "hello",
            "refused: access denied: tool math__add needs the scopes math",
        ]
        assert analyst == [str(["notes__echo", "notes__whoami", "math__add"]), "hello", "5"]

        posts = [r for port in (notes, math) for r in _recorded(port) if r["method"] == "POST"]
        assert posts and {r["headers"].get("x-user") for r in posts} == {"reader", "analyst"}
        assert all(r["headers"].get("authorization") is None for r in posts)
        assert not [r for r in _recorded(math) if "add" in json.dumps(r["body"]) and r["headers"]["x-user"] == "reader"]
