"""aigw_fakes.annotated, the one entry point `aigw-xds run` calls: which Backends ask for a fake,
the key each fake checks, the fakes started and stopped, and a one-line error without the extra."""

from __future__ import annotations

import ast
import http.client
import subprocess
import sys
from pathlib import Path

import pytest

import aigw_fakes
from aigw_fakes import rewrite
from aigw_fakes.annotated import FakesError, fake_providers, start_annotated
from aigw_xds.resources import ResourceSet
from aigw_xds.sources.files import FileSource
from tests.examples.running import EXAMPLES, ROOT

QUICKSTART = EXAMPLES / "quickstart"


def _load(path: Path) -> ResourceSet:
    return FileSource(path).load()


def test_quickstart_asks_for_two_openai_fakes_with_the_key_the_gateway_sends():
    specs = fake_providers(_load(QUICKSTART))
    assert [(s.provider, s.host, s.port, s.api_key) for s in specs] == [
        ("openai", "127.0.0.1", 19080, "sk-local-demo-key"),  # its BackendSecurityPolicy's Secret
        ("openai", "127.0.0.1", 19081, ""),  # no policy: the fake accepts any key
    ]
    assert specs[0].backend.endswith("Backend default/local-a")


def _quickstart_with(tmp_path: Path, old: str, new: str) -> ResourceSet:
    text = (QUICKSTART / "quickstart.yaml").read_text()
    assert old in text
    (tmp_path / "quickstart.yaml").write_text(text.replace(old, new, 1))
    return _load(tmp_path)


def test_a_fake_needs_a_loopback_endpoint(tmp_path: Path):
    resources = _quickstart_with(tmp_path, "address: 127.0.0.1", "address: 10.0.0.1")
    with pytest.raises(FakesError, match=r"Backend default/local-a: a fake provider needs a loopback ip endpoint"):
        start_annotated(resources)


def test_an_unknown_fake_provider_is_named(tmp_path: Path):
    resources = _quickstart_with(tmp_path, "fake-provider: openai", "fake-provider: nonesuch")
    expected = r"unknown fake provider 'nonesuch' \(one of: openai, anthropic, azure, bedrock, cohere"
    with pytest.raises(FakesError, match=expected):
        start_annotated(resources)


def test_no_annotation_starts_nothing():
    running = start_annotated(_load(EXAMPLES / "bedrock"))
    assert running.fakes == []
    running.stop()


def _status(port: int, key: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
        return conn.getresponse().status
    finally:
        conn.close()


def _example_for_fakes(example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> rewrite.Rewritten:
    """An example rewritten for the fakes, written to `tmp_path` with its variables set."""
    rewritten = rewrite.for_fakes(rewrite.load_documents(EXAMPLES / example))
    for variable, value in rewritten.env.items():
        monkeypatch.setenv(variable, value)
    (tmp_path / f"{example}.yaml").write_text(rewritten.text())
    return rewritten


def test_started_fakes_check_the_key_and_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rewritten = _example_for_fakes("multi-provider", tmp_path, monkeypatch)
    running = start_annotated(_load(tmp_path))
    try:
        assert sorted(type(f).__name__ for f in running.fakes) == ["AnthropicFake", "OpenAIFake"]
        [openai_port] = [port for provider, port in rewritten.fakes.values() if provider == "openai"]
        assert _status(openai_port, rewrite.DUMMY_KEY) == 200
        assert _status(openai_port, "sk-wrong") == 401
    finally:
        running.stop()
    with pytest.raises(OSError):
        _status(openai_port, rewrite.DUMMY_KEY)


def test_a_fake_vertex_takes_the_tokens_of_the_token_endpoint_its_policys_key_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import json

    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    rewritten = _example_for_fakes("vertex", tmp_path, monkeypatch)
    running = start_annotated(_load(tmp_path))
    try:
        assert sorted(type(f).__name__ for f in running.fakes) == ["GoogleAuthFake", "VertexFake"]
        key = json.loads(rewritten.env["GCP_SERVICE_ACCOUNT_JSON"])
        creds = service_account.Credentials.from_service_account_info(
            key, scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        creds.refresh(Request())  # at the key's token_uri: the fake token endpoint started there
        [(_, port)] = rewritten.fakes.values()
        path = "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
        body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        for token, expected in ((creds.token, 200), ("ya29.other", 401)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {token}"})
                assert conn.getresponse().status == expected
            finally:
                conn.close()
    finally:
        running.stop()


def test_a_fake_vertex_without_a_loopback_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rewritten = rewrite.for_fakes(rewrite.load_documents(EXAMPLES / "vertex"))
    monkeypatch.setenv("GCP_SERVICE_ACCOUNT_JSON", '{"type": "service_account", "token_uri": "https://x/token"}')
    (tmp_path / "vertex.yaml").write_text(rewritten.text())
    with pytest.raises(FakesError, match="needs its GCPCredentials policy to hold a service-account key"):
        start_annotated(_load(tmp_path))


def test_a_busy_port_is_named(tmp_path: Path):
    """The Backend, its file and field, the port and what to do (a new user read an errno echo)."""
    with aigw_fakes.OpenAIFake() as holder:
        resources = _quickstart_with(tmp_path, "port: 19080", f"port: {holder.port}")
        with pytest.raises(FakesError) as raised:
            start_annotated(resources)
    file = next(tmp_path.glob("*.yaml"))
    assert str(raised.value) == (
        f"{file}#5: Backend default/local-a spec.endpoints[0].ip.port: cannot start the fake openai provider on "
        f"127.0.0.1:{holder.port}: address already in use (stop what listens there, or choose another port)"
    )


# A sitecustomize-free way to make aiohttp unimportable: a None entry in sys.modules.
NO_AIOHTTP = "import sys; sys.modules['aiohttp'] = None\n"


def _without_aiohttp(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_AIOHTTP + code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_without_the_extra_a_config_asking_for_fakes_gets_one_line_naming_the_extra():
    done = _without_aiohttp(
        "from pathlib import Path\n"
        "from aigw_xds.sources.files import FileSource\n"
        "from aigw_fakes.annotated import FakesError, start_annotated\n"
        "assert start_annotated(FileSource(Path('examples/bedrock')).load()).fakes == []\n"
        "try:\n"
        "    start_annotated(FileSource(Path('examples/quickstart')).load())\n"
        "except FakesError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.endswith(
        "Backend default/local-a asks for the fake openai provider (aigw-xds.dev/fake-provider), "
        "which needs the fakes extra (aiohttp is missing): pip install 'aigw-xds[fakes]'"
    )


def test_the_rewriter_and_the_package_load_without_aiohttp():
    done = _without_aiohttp("import aigw_fakes, aigw_fakes.rewrite, aigw_fakes.annotated; aigw_fakes.OpenAIFake")
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr  # only the servers need it
    assert _without_aiohttp("import aigw_fakes, aigw_fakes.rewrite, aigw_fakes.annotated").returncode == 0


def _imports(path: Path) -> set[str]:
    """The top-level modules a file imports, outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_fakes_share_no_code_with_what_they_check():
    """An oracle never shares code with what it checks: no aigw_translator (nor aigw_contract, nor
    the control plane except for type names) in the fakes, whose SSE and multipart code is their own."""
    files = sorted((ROOT / "fakes" / "aigw_fakes").glob("*.py"))
    assert files
    for path in files:
        assert not _imports(path) & {"aigw_translator", "aigw_contract", "aigw_xds"}, path
