"""Every command line the READMEs show is run by a test.

`documented_commands()` reads every shell code block of README.md and examples/*/README.md;
RUN_BY names, for each command line, the tests that run it (as written, or on free ports with fake
keys and the bundled fake providers where the documented one needs a provider account or fixed
ports). A command line added to a README without a test here fails
`test_every_documented_command_is_run_by_a_test`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

import aigw_contract as contract
from aigw_fakes import rewrite
from aigw_fakes.service_account_key import make_service_account_key
from aigw_xds.cli import main
from aigw_xds.envoy.process import envoy_binary
from tests.e2e.harness.processes import accepting, free_port, interrupt, launch, wait_for

from .running import EXAMPLES, ROOT

DOCS = [ROOT / "README.md", ROOT / "docs/translator-sidecar.md", *sorted(EXAMPLES.glob("*/README.md"))]
SIDECAR = "tests/e2e/test_translator_sidecar.py"
THIS = "tests/examples/test_documented_commands.py"
E2E = "tests/examples/test_examples_e2e.py"
OAUTH_EXAMPLE = "tests/examples/test_mcp_oauth_example.py::test_mcp_oauth_example_does_what_its_readme_says"

# command line -> the tests that run it ("path::function").
RUN_BY: dict[str, list[str]] = {
    # docs/translator-sidecar.md: the same command lines on loopback ports with test certificates
    # (the Service name aigw-xds.aigw-system.svc resolves only in a cluster).
    "aigw-xds serve ./gateways/ --listen 0.0.0.0:18000 --tls-cert server.crt --tls-key server.key "
    '--tls-client-ca ca.crt --translator-listen "" --authorize serviceaccount:team-a/ops=team-b/gw': [
        f"{SIDECAR}::test_mtls_sidecars_get_only_the_fleets_of_their_service_account_and_grants"
    ],
    "aigw-xds translator --xds aigw-xds.aigw-system.svc:18000 --fleet team-a/gw --xds-ca ca.crt --xds-cert tls.crt "
    "--xds-key tls.key --listen 127.0.0.1:1063": [
        f"{SIDECAR}::test_mtls_sidecars_get_only_the_fleets_of_their_service_account_and_grants"
    ],
    "aigw-xds translator --xds aigw-xds.aigw-system.svc:18000 --fleet team-a/gw --xds-ca ca.crt "
    "--xds-token-file /var/run/secrets/aigw-xds/token --listen 127.0.0.1:1063": [
        f"{SIDECAR}::test_token_authenticated_sidecars_get_only_their_namespace",
        "tests/e2e/test_kubernetes_tls.py::test_replicas_provision_one_certificate_publish_its_ca_and_serve_sidecars_over_tls",
    ],
    # make test is what CI runs (.ci/run): the linters and this very suite, tests/unit included.
    "make run": [
        f"{THIS}::test_make_targets_expand_to_the_documented_commands",
        "tests/e2e/test_run.py::test_run_quickstart_serves_the_openai_sdk_reloads_and_shuts_down_cleanly",
    ],
    "make test": [f"{THIS}::test_make_targets_expand_to_the_documented_commands"],
    "curl -s http://localhost:1975/v1/chat/completions -H 'content-type: application/json' -d "
    '\'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}\'': [
        f"{THIS}::test_serve_without_an_account_as_documented"
    ],
    ".venv/bin/python -m pytest tests/unit -q": [f"{THIS}::test_make_targets_expand_to_the_documented_commands"],
    ".venv/bin/aigw-xds run examples/mcp": [
        "tests/examples/test_mcp_example.py::test_mcp_example_serves_the_mcp_sdk_as_its_readme_says"
    ],
    ".venv/bin/aigw-xds run examples/mcp-oauth": [OAUTH_EXAMPLE],
    ".venv/bin/aigw-xds run examples/inference-pool": [
        "tests/examples/test_inference_pool_example.py::"
        "test_inference_pool_example_serves_the_openai_sdk_as_its_readme_says"
    ],
    "curl -i http://localhost:1975/mcp -H 'content-type: application/json' -d "
    '\'{"jsonrpc":"2.0","id":1,"method":"ping"}\'': [OAUTH_EXAMPLE],
    "curl http://localhost:1975/.well-known/oauth-protected-resource/mcp": [OAUTH_EXAMPLE],
    ".venv/bin/python examples/mcp-oauth/client.py examples/mcp-oauth/reader.jwt": [OAUTH_EXAMPLE],
    ".venv/bin/python examples/mcp-oauth/client.py examples/mcp-oauth/analyst.jwt": [OAUTH_EXAMPLE],
    ".venv/bin/python examples/with_fakes.py examples/mcp": [
        "tests/examples/test_mcp_example.py::test_with_fakes_runs_the_mcp_examples"
    ],
    ".venv/bin/aigw-xds run examples/quickstart": [
        "tests/e2e/test_run.py::test_run_quickstart_serves_the_openai_sdk_reloads_and_shuts_down_cleanly"
    ],
    "OPENAI_API_KEY=sk-... .venv/bin/aigw-xds run examples/basic": [f"{THIS}::test_documented_runs_serve"],
    "OPENAI_API_KEY=sk-... ANTHROPIC_API_KEY=sk-ant-... .venv/bin/aigw-xds run": [
        f"{E2E}::test_autoconfig_run_serves_openai_and_anthropic_from_the_environment"
    ],
    ".venv/bin/aigw-xds run examples/quickstart --listen-address 0.0.0.0": [f"{THIS}::test_documented_runs_serve"],
    "aigw-xds translator --xds CONTROL_PLANE:18000 --fleet NS/NAME --listen 127.0.0.1:1063": [
        "tests/unit/test_cli.py::test_translator_sidecar_commands_from_the_readme"
    ],
    "aigw-xds translate PATH --gateway NS/NAME --translator-config-out translator.pb": [
        "tests/unit/test_cli.py::test_translator_sidecar_commands_from_the_readme"
    ],
    "aigw-xds translator --config translator.pb --listen 127.0.0.1:1063": [
        "tests/unit/test_cli.py::test_translator_sidecar_commands_from_the_readme"
    ],
    ".venv/bin/aigw-xds proxy-status --server 127.0.0.1:PORT": [f"{THIS}::test_documented_runs_serve"],
    "aigw-xds --log-format json run ...": [
        "tests/unit/test_cli.py::test_run_logs_in_console_format_even_when_its_output_is_not_a_terminal"
    ],
    "aigw-xds run --print-config": [
        "tests/examples/test_autoconfig.py::test_print_config_prints_the_yaml_and_never_a_key"
    ],
    ".venv/bin/aigw-xds run --print-config": [
        "tests/examples/test_autoconfig.py::test_print_config_prints_the_yaml_and_never_a_key"
    ],
    ".venv/bin/aigw-xds serve ./gateways/ --listen 0.0.0.0:18000": [
        "tests/unit/test_cli.py::test_translator_sidecar_commands_from_the_readme"
    ],
    ".venv/bin/aigw-xds bootstrap --server cp.internal:18000 --gateway default/basic > envoy.yaml": [
        f"{THIS}::test_bootstrap_for_cp_internal_is_accepted_by_envoy"
    ],
    ".venv/bin/envoy -c envoy.yaml": [f"{THIS}::test_bootstrap_for_cp_internal_is_accepted_by_envoy"],
    **{
        command: [f"{THIS}::test_serve_without_an_account_as_documented"]
        for command in (
            ".venv/bin/python -m aigw_fakes --provider openai --port 19080 --api-key sk-local-demo-key",
            ".venv/bin/python -m aigw_fakes --provider openai --port 19081 --no-auth",
            ".venv/bin/aigw-xds serve examples/quickstart --listen 127.0.0.1:18000",
            ".venv/bin/aigw-xds bootstrap --gateway default/quickstart > envoy.yaml",
            ".venv/bin/envoy -c envoy.yaml --file-flush-interval-msec 500",
        )
    },
    ".venv/bin/python hack/bench_compile.py": [f"{THIS}::test_bench_compile_runs"],
    "ANTHROPIC_API_KEY=sk-ant-... .venv/bin/aigw-xds run examples/anthropic": [
        f"{E2E}::test_anthropic_serves_openai_and_anthropic_sdks"
    ],
    "AZURE_OPENAI_API_KEY=... .venv/bin/aigw-xds run examples/azure-openai": [
        f"{E2E}::test_azure_openai_rewrites_to_deployments_with_the_api_key_header"
    ],
    "OPENAI_API_KEY=sk-... ANTHROPIC_API_KEY=sk-ant-... .venv/bin/aigw-xds run examples/multi-provider": [
        f"{E2E}::test_multi_provider_through_with_fakes_script"
    ],
    "OPENAI_API_KEY=sk-... ANTHROPIC_API_KEY=sk-ant-... .venv/bin/aigw-xds run examples/provider-fallback": [
        f"{E2E}::test_provider_fallback_to_anthropic_when_openai_fails"
    ],
    "OPENAI_API_KEY=sk-... .venv/bin/aigw-xds run examples/token-costs": [f"{THIS}::test_documented_runs_serve"],
    "OPENAI_API_KEY=sk-... .venv/bin/aigw-xds run examples/rate-limits": [
        f"{E2E}::test_rate_limits_tenant_budget_refuses_in_openai_shape_and_another_tenant_passes"
    ],
    ".venv/bin/python examples/with_fakes.py examples/rate-limits --rate-limit-redis redis://127.0.0.1:6379/0": [
        f"{E2E}::test_rate_limits_counted_in_redis_survive_a_restart"
    ],
    "OPENAI_API_KEY=sk-... AZURE_OPENAI_API_KEY=... .venv/bin/aigw-xds run examples/traffic-splitting": [
        f"{E2E}::test_traffic_splitting_sends_some_traffic_to_each_backend"
    ],
    "AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... .venv/bin/aigw-xds run examples/bedrock": [
        f"{THIS}::test_documented_runs_serve"
    ],
    ".venv/bin/aigw-xds validate examples/bedrock": [f"{THIS}::test_validate_examples_as_documented"],
    'export GCP_SERVICE_ACCOUNT_JSON="$(cat my-service-account.json)"': [
        f"{THIS}::test_vertex_example_serves_its_client"
    ],
    ".venv/bin/aigw-xds run examples/vertex": [f"{THIS}::test_vertex_example_serves_its_client"],
    ".venv/bin/python examples/with_fakes.py examples/vertex": [f"{THIS}::test_vertex_example_serves_its_client"],
    ".venv/bin/python examples/with_fakes.py examples/basic": [f"{E2E}::test_with_fakes_follows_edits_of_the_example"],
    ".venv/bin/aigw-xds validate examples/vertex": [f"{THIS}::test_validate_examples_as_documented"],
    "curl -X POST http://127.0.0.1:PORT/__fake/fail -d '{\"always\": 503}'": [f"{THIS}::test_documented_runs_serve"],
    "COHERE_API_KEY=... .venv/bin/aigw-xds run examples/cohere": [f"{THIS}::test_cohere_example_serves_its_client"],
    ".venv/bin/python examples/with_fakes.py examples/cohere": [f"{THIS}::test_cohere_example_serves_its_client"],
    **{
        f".venv/bin/python examples/with_fakes.py examples/{name}": [
            f"{E2E}::test_multi_provider_through_with_fakes_script"
            if name == "multi-provider"
            else f"{THIS}::test_documented_runs_serve"
        ]
        for name in (
            "anthropic",
            "azure-openai",
            "bedrock",
            "multi-provider",
            "provider-fallback",
            "rate-limits",
            "token-costs",
            "traffic-splitting",
        )
    },
}


def documented_commands() -> dict[str, str]:
    """Every command line of the READMEs' shell code blocks (comments dropped), and every inline
    `aigw-xds ...` / `.venv/bin/...` span written as a whole command line (not a synopsis with
    [options], (a | b) or <placeholders>, nor a bare command name) -> its README."""
    out: dict[str, str] = {}
    for doc in DOCS:
        text = doc.read_text()
        for block in re.finditer(r"^```(sh|bash|shell)\n(.*?)^```", text, re.S | re.M):
            for line in block.group(2).splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()
                if command and not command.startswith("#"):
                    out.setdefault(command, str(doc.relative_to(ROOT)))
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for span in re.finditer(r"`((?:aigw-xds|\.venv/bin/)[^`\n]*)`", prose):
            command = span.group(1)
            if len(command.split()) >= 3 and not any(c in command for c in "[(|<"):
                out.setdefault(command, str(doc.relative_to(ROOT)))
    return out


def test_every_documented_command_is_run_by_a_test():
    documented = documented_commands()
    untested = {c: doc for c, doc in documented.items() if c not in RUN_BY}
    assert not untested, f"documented command lines no test runs (add a test and list it in RUN_BY): {untested}"
    stale = sorted(set(RUN_BY) - set(documented))
    assert not stale, f"RUN_BY lists command lines no README shows any more: {stale}"
    for command, tests in RUN_BY.items():
        for test in tests:
            path, _, function = test.partition("::")
            source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
            assert re.search(rf"^(async )?def {function}\(", source, re.M), f"{command!r}: no test {test}"


def inline_commands() -> dict[str, str]:
    """Every `aigw-xds SUBCOMMAND --flag ...` written inline (in backticks, outside code blocks) in
    README.md, docs/*.md and the examples' READMEs, as one line: a fragment a reader copies too.
    Usage syntax ([...], |, ...) is left out, and so is docs/performance.md, whose fragments name
    the flags a measurement ran with (`serve --no-translator`), not commands to copy."""
    out: dict[str, str] = {}
    docs = [d for d in sorted((ROOT / "docs").glob("*.md")) if d.name != "performance.md"]
    for doc in [ROOT / "README.md", *docs, *sorted(EXAMPLES.glob("*/README.md"))]:
        prose = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.M | re.S)
        for span in re.findall(r"`([^`]+)`", prose):
            command = " ".join(span.split())
            if re.match(r"(\.venv/bin/)?aigw-xds [a-z-]+ .*--", command) and not re.search(r"[\[|…]|\.\.\.", command):
                out.setdefault(command, str(doc.relative_to(ROOT)))
    return out


def test_every_inline_command_fragment_parses():
    """From a platform team's trial: `aigw-xds bootstrap --xds-ca FILE --xds-token-file ...`, as two
    docs wrote it, lacked the --gateway it requires and exited 2. Each inline fragment is parsed as
    the command line would be (placeholders such as NS/NAME or FILE are values like any other)."""
    from aigw_xds.cli import parser

    fragments = inline_commands()
    assert any(c.startswith("aigw-xds bootstrap --gateway") for c in fragments), fragments
    # `translator` hands its arguments to the translator's own command line: its flags are checked
    # against its --help.
    translator_help = subprocess.run(
        [sys.executable, "-m", "aigw_translator", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for command, doc in fragments.items():
        argv = shlex.split(command)[1:]
        if argv[0] == "translator":
            options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", translator_help))
            unknown = [a for a in argv if a.startswith("--") and a.split("=")[0] not in options]
            assert not unknown, f"{doc}: `{command}`: translator has no {unknown}"
            continue
        try:
            parser().parse_args(argv)
        except SystemExit as exited:
            raise AssertionError(f"{doc}: `{command}` does not parse (exit {exited.code})") from None


def test_make_targets_expand_to_the_documented_commands():
    """`make run` is `aigw-xds run examples/quickstart` (run by tests/e2e/test_run.py) after the
    install; `make test` is the linters plus this suite, which includes tests/unit."""
    run = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert ".venv/bin/aigw-xds run examples/quickstart" in run.stdout.splitlines()
    other = ["make", "-n", "run", "EXAMPLE=examples/basic"]  # README: another example the same way
    run = subprocess.run(other, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ".venv/bin/aigw-xds run examples/basic" in run.stdout.splitlines(), run.stdout
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stderr
    assert ".venv/bin/python -m pytest -q -p no:cacheprovider" in test.stdout.splitlines()
    assert ".venv/bin/ruff check ." in test.stdout.splitlines()
    assert ".venv/bin/mypy" in test.stdout.splitlines()


@pytest.mark.parametrize("example", ["bedrock", "vertex"])
def test_validate_examples_as_documented(example: str, monkeypatch: pytest.MonkeyPatch, capsys):
    """As documented, with no provider variable set: unset keys are warnings, not errors."""
    for variable in ("GCP_SERVICE_ACCOUNT_JSON", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(ROOT)
    assert main(["validate", f"examples/{example}"]) == 0
    assert f"1 Gateway compiled: default/{example}; 0 errors" in capsys.readouterr().out


def test_bootstrap_for_cp_internal_is_accepted_by_envoy(tmp_path: Path, capsys):
    assert main(["bootstrap", "--server", "cp.internal:18000", "--gateway", "default/basic"]) == 0
    (tmp_path / "envoy.yaml").write_text(capsys.readouterr().out)
    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.yaml"), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr[-2000:]


def _block_after(doc: Path, lead: str) -> list[str]:
    """The command lines of the first shell block after the paragraph that starts with `lead`."""
    text = doc.read_text()
    block = re.search(r"^```sh\n(.*?)^```", text[text.index(lead) :], re.S | re.M)
    assert block is not None, lead
    return block.group(1).splitlines()


def test_serve_without_an_account_as_documented(tmp_path: Path):
    """README's account-free `serve`: its five command lines as written (the fixed ports are the
    quickstart's, and serve's 18000 and Envoy's admin 9901 are their defaults), each its own
    process as in its own terminal, but envoy.yaml in a temporary directory; then the README's
    openai snippet of Five minutes through that Envoy, its access line, and proxy-status."""
    lines = _block_after(ROOT / "README.md", "To try it with no account")
    assert len(lines) == 5, lines
    ports = (19080, 19081, 18000, 1975, 9901)  # the quickstart's, serve's, Envoy's listener and admin
    assert not [p for p in ports if accepting(p)], "a port of the documented commands is taken"
    bin_dir = str(Path(sys.executable).parent) + "/"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")} | {"PYTHONUNBUFFERED": "1"}
    started: list[subprocess.Popen] = []
    logs = [tmp_path / f"{i}.log" for i in range(len(lines))]
    try:
        for line, log in zip(lines, logs, strict=True):
            argv = line.replace(".venv/bin/", bin_dir).replace("envoy.yaml", str(tmp_path / "envoy.yaml")).split()
            if ">" in argv:  # the bootstrap: stdout to the file
                done = subprocess.run(argv[: argv.index(">")], capture_output=True, text=True, timeout=60, cwd=ROOT)
                assert done.returncode == 0, done.stderr
                Path(argv[-1]).write_text(done.stdout)
                continue
            started.append(launch(argv, log, env, cwd=ROOT))
            port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 18000 if "serve" in argv else 1975
            wait_for(lambda p=port: accepting(p), timeout=60, what=f"{line}: port {port}: {log.read_text()[-2000:]}")
        # Each of them is what listens (not another process of this machine on a documented port).
        assert [p.poll() for p in started] == [None] * 4, [log.read_text()[-1000:] for log in logs]
        snippet = re.search(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
        assert snippet is not None and 'base_url="http://localhost:1975/v1"' in snippet.group(1)
        client = subprocess.run([sys.executable, "-c", snippet.group(1)], capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr[-2000:] + logs[2].read_text()[-2000:]
        printed = client.stdout.splitlines()
        assert printed[0].startswith("Fake gpt-4o-mini reply"), printed
        assert printed[-1] == "['gpt-4o-mini', 'llama-3.1-8b']", printed
        [curl] = _block_after(ROOT / "README.md", "Or with curl")
        answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=60)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["choices"][0]["message"]["content"].startswith("Fake gpt-4o-mini reply")
        wait_for(lambda: '"path":"/v1/chat/completions"' in logs[-1].read_text().replace(" ", ""), timeout=30)
        status = subprocess.run(
            [sys.executable, "-m", "aigw_xds", "proxy-status"], capture_output=True, text=True, timeout=30
        )
        assert re.search(r"^default/quickstart\s+default/quickstart\s.*SYNCED", status.stdout, re.M), status.stdout
    finally:
        codes = []
        for process in started:  # Ctrl-C in each terminal
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            codes.append(process.wait(timeout=30))
    assert codes == [0] * 4, [log.read_text()[-1000:] for log in logs if log.exists()]
    assert "sk-local-demo-key" not in "".join(log.read_text() for log in logs if log.exists())


def test_bench_compile_runs():
    """The benchmark as documented, on a small input (the default sizes take minutes)."""
    result = subprocess.run(
        [sys.executable, "hack/bench_compile.py", "--routes", "10", "--backends", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\| 10 \| 5 \| ", result.stdout, re.M), result.stdout


def test_bench_fleet_runs():
    """The fleet load driver (docs/performance.md) on a small fleet: every phase settles (exit 0),
    the edit reaches every node with one resource each, and a restart resends nothing to delta nodes."""
    result = subprocess.run(
        [sys.executable, "hack/bench_fleet.py", "--routes", "10", "--backends", "4", "--clients", "6", "--edits", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    edit = re.search(r"^\| edit 1 \|.*$", result.stdout, re.M)
    restart = re.search(r"^\| restart \|.*$", result.stdout, re.M)
    assert edit and restart, result.stdout
    edit_cells = [c.strip() for c in edit.group(0).strip("|").split("|")]
    restart_cells = [c.strip() for c in restart.group(0).strip("|").split("|")]
    assert edit_cells[7:9] == ["1", "1"], edit_cells  # resources per delta / SotW node
    assert restart_cells[7] == "0", restart_cells  # a delta node that reconnects is resent nothing
    assert "RSS per connected node" in result.stdout


def test_bench_fleet_runs_with_route_scopes():
    """The same with the translator and every listener's routes in scopes: the nodes follow the
    scopes (SRDS) to their route configurations, and an edit of one route's model sends each node,
    delta or SotW, the route configurations of the scopes it left and joined (one or two of 128)."""
    command = [sys.executable, "hack/bench_fleet.py", "--routes", "10", "--backends", "4", "--clients", "6"]
    command += ["--edits", "1", "--translator", "--route-scopes-from", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = {
        cells[0]: cells
        for line in result.stdout.splitlines()
        if line.startswith("| ") and len(cells := [c.strip() for c in line.strip("|").split("|")]) > 8
    }
    scopes = contract.ROUTE_SCOPES
    assert int(rows["connect (cold)"][7]) > 2 * scopes, rows["connect (cold)"]  # the scopes and their routes
    edited = {contract.route_scope("model-5"), contract.route_scope("model-5-edited")}
    assert rows["edit 1"][7:9] == [str(len(edited))] * 2, rows["edit 1"]
    assert rows["restart"][7] == "0", rows["restart"]


@dataclass
class _Started:
    name: str
    port: int
    log: Path
    process: subprocess.Popen
    model: str | None  # a model to ask for; None: the example is not served end to end yet
    admin: int = 0  # Envoy's admin port, when the test chose it
    # Starts it again on other free ports (a free port can be taken by another process of this
    # machine between its pick and its bind).
    relaunch: Callable[[], _Started] | None = None


def _start_scripted(tmp_path: Path, base_env: dict[str, str], name: str, model: str, attempt: int = 0) -> _Started:
    port, log = free_port(), tmp_path / f"{name}-{attempt}.log"
    command = [sys.executable, "examples/with_fakes.py", f"examples/{name}", "--port", str(port)]
    process = launch([*command, "--admin-port", str(free_port())], log, base_env, cwd=ROOT, terminal=True)
    return _Started(
        name, port, log, process, model, relaunch=lambda: _start_scripted(tmp_path, base_env, name, model, attempt + 1)
    )


def _start_run(
    tmp_path: Path,
    base_env: dict[str, str],
    name: str,
    run: tuple[dict[str, str], bool, str | None],
    attempt: int = 0,
) -> _Started:
    env, fakes, model = run
    port, log = free_port(), tmp_path / f"run-{name}-{attempt}.log"
    # Without the fakes' annotation when `fakes` is false (bedrock's fake runs in the with_fakes line):
    # they start, but no request is sent to them.
    rewritten = rewrite.for_fakes(rewrite.load_documents(EXAMPLES / name), listener_port=port, annotate=fakes, keys=env)
    config = tmp_path / f"{name}-{attempt}.yaml"
    config.write_text(rewritten.text())
    admin = free_port()
    command = [sys.executable, "-m", "aigw_xds", "run", str(config), "--admin-port", str(admin)]
    if name == "basic":  # README: how to open run's listener to the network
        command += ["--listen-address", "0.0.0.0"]
    process = launch(command, log, {**base_env, **env, **rewritten.env}, terminal=True)
    return _Started(
        name, port, log, process, model, admin, lambda: _start_run(tmp_path, base_env, name, run, attempt + 1)
    )


def _start_all(tmp_path: Path) -> list[_Started]:
    """Every documented `run` / `with_fakes.py` command line not run elsewhere, all at once (they
    start in parallel), each on free ports."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "AZURE_", "AWS_"))}
    scripted = {
        "anthropic": "claude-3-5-haiku-latest",
        "bedrock": "us.amazon.nova-micro-v1:0",
        "azure-openai": "gpt-4o",
        "provider-fallback": "gpt-4o-mini",
        "rate-limits": "gpt-4o-mini",
        "token-costs": "gpt-4o-mini",
        "traffic-splitting": "gpt-4o-mini",
    }
    started = [_start_scripted(tmp_path, base_env, name, model) for name, model in scripted.items()]
    # `aigw-xds run` itself, with made-up credentials: basic against a fake OpenAI it starts itself.
    runs: dict[str, tuple[dict[str, str], bool, str | None]] = {
        "basic": ({"OPENAI_API_KEY": "sk-doc-test"}, True, "gpt-4o-mini"),
        "bedrock": ({"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret"}, False, None),
    }
    started += [_start_run(tmp_path, base_env, name, run) for name, run in runs.items()]
    return started


def _port_taken(s: _Started) -> bool:
    """It exited because a port it was given is in use (a fake provider's, or one run checks)."""
    if s.process.poll() is None:
        return False
    text = s.log.read_text(errors="replace")
    return "address already in use" in text.lower()


def _ready(started: list[_Started]) -> None:
    """Waits for every ready line. One whose port another process took between its pick and its
    bind is started again on fresh ports (in place in `started`, so the caller stops it)."""
    for index, s in enumerate(started):
        for _ in range(3):

            def ready(s: _Started = s) -> bool:
                if _port_taken(s):
                    return True
                if s.process.poll() is not None:
                    raise AssertionError(f"{s.name} exited with {s.process.returncode}:\n{s.log.read_text()[-3000:]}")
                return "aigw-xds ready:" in s.log.read_text(errors="replace")

            wait_for(ready, timeout=90, what=f"{s.name}: aigw-xds ready line")
            if not _port_taken(s) or s.relaunch is None:
                break
            s = started[index] = s.relaunch()


def _stop(started: list[_Started]) -> dict[str, int]:
    """Stops every process still running the documented way (Ctrl-C in its terminal: SIGINT to its
    process group); their exit codes by name and index. What they print while stopping is theirs
    alone: Envoy, started by them, must not have caught the signal itself (and said so)."""
    for s in started:
        if s.process.poll() is None:
            interrupt(s.process)
    codes = {s.name + str(i): s.process.wait(timeout=30) for i, s in enumerate(started)}
    for s in started:
        printed = s.log.read_text(errors="replace")
        assert "caught SIGINT" not in printed and "stream closed" not in printed, (s.name, printed[-2000:])
    return codes


def test_documented_runs_serve(tmp_path: Path):
    started = _start_all(tmp_path)
    try:
        _ready(started)
        for s in started:
            if s.model is None:
                continue
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="client-key", max_retries=0)
            reply = client.chat.completions.create(model=s.model, messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content, s.name
        basic = next(s for s in started if s.name == "basic")
        with urllib.request.urlopen(f"http://127.0.0.1:{basic.admin}/listeners", timeout=5) as response:
            assert f"::0.0.0.0:{basic.port}" in response.read().decode()  # --listen-address 0.0.0.0
        assert "the listeners take connections from the network (--listen-address 0.0.0.0)" in basic.log.read_text()
        # README: proxy-status against run, with --server the xDS address of run's ready line
        xds = re.search(r"xDS (127\.0\.0\.1:\d+);", basic.log.read_text())
        assert xds is not None, basic.log.read_text()
        status = subprocess.run(
            [sys.executable, "-m", "aigw_xds", "proxy-status", "--server", xds.group(1)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert re.search(r"^aigw-run-default/basic\s+default/basic\s", status.stdout, re.M), status.stdout
        # provider-fallback's README: make the fake OpenAI fail (its curl line), Anthropic answers.
        fallback = next(s for s in started if s.name == "provider-fallback")
        port = re.search(
            r"Backend openai -> fake openai provider on http://127\.0\.0\.1:(\d+)", fallback.log.read_text()
        )
        assert port is not None, fallback.log.read_text()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port.group(1)}/__fake/fail", data=b'{"always": 503}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{fallback.port}/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert reply.model.startswith("claude"), reply.model
    finally:
        codes = _stop(started)
    logs = {s.name: s.log.read_text()[-1500:] for i, s in enumerate(started) if codes[s.name + str(i)]}
    assert set(codes.values()) == {0}, logs


def test_cohere_example_serves_its_client(tmp_path: Path):
    """examples/cohere's two command lines (with_fakes.py, and `aigw-xds run` with a key, here against
    the fake it starts itself), each serving every client snippet of the README (the cohere SDK's
    ClientV2, then plain HTTP) as written but for its port: rerank, chat, the chat stream with its
    text and usage, embed."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("COHERE_")}
    started = [
        _start_scripted(tmp_path, base_env, "cohere", "rerank-english-v3.0"),
        _start_run(tmp_path, base_env, "cohere", ({"COHERE_API_KEY": "co-doc-test"}, True, None)),
    ]
    readme = (EXAMPLES / "cohere" / "README.md").read_text()
    clients = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
    assert len(clients) == 2 and "cohere.ClientV2(" in clients[0], "the SDK first, then plain HTTP"
    reply = "Fake command-a-03-2025 reply to: hello"
    try:
        _ready(started)
        for s, client in ((s, client) for s in started for client in clients):
            code = client.replace("localhost:1975", f"127.0.0.1:{s.port}")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr[-2000:]
            lines = done.stdout.splitlines()
            assert lines[:2] == ["rerank: [1, 0]", f"chat: {reply}"], done.stdout
            assert lines[2] == reply and re.fullmatch(r"stream usage: [1-9]\d* in, [1-9]\d* out", lines[3]), done.stdout
            assert lines[4:] == ["embed: 8 dimensions"], done.stdout
    finally:
        codes = _stop(started)
    assert set(codes.values()) == {0}, codes


def test_vertex_example_serves_its_client(tmp_path: Path):
    """examples/vertex's command lines (with_fakes.py, and `aigw-xds run` with a service-account key
    exported, here a test key whose token endpoint is the fake Google one `run` starts with the fake
    Vertex), each serving the README's client code as written but for its port: Gemini chat, a
    streamed tool call with usage, Gemini and text-embedding embeddings, Claude through the
    Anthropic SDK."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "GOOGLE_"))}
    key = make_service_account_key(f"http://127.0.0.1:{free_port()}/token")
    started = [
        _start_scripted(tmp_path, base_env, "vertex", "gemini-2.0-flash"),
        _start_run(tmp_path, base_env, "vertex", ({"GCP_SERVICE_ACCOUNT_JSON": json.dumps(key)}, True, None)),
    ]
    readme = (EXAMPLES / "vertex" / "README.md").read_text()
    client = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)[0]
    try:
        _ready(started)
        for s in started:
            code = client.replace("localhost:1975", f"127.0.0.1:{s.port}")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr[-2000:] + s.log.read_text()[-3000:]
            assert "chat: Fake gemini-2.0-flash reply to: hello" in done.stdout, done.stdout
            assert 'tool call: get_weather {"city":"example city"}' in done.stdout, done.stdout
            assert re.search(r"^stream usage: \d+ \d+$", done.stdout, re.M), done.stdout
            assert "embedding: gemini-embedding-001 3072 dimensions" in done.stdout, done.stdout
            # The README promises text-embedding models too (a new user found them unrouted: a 404).
            assert "embedding: text-embedding-005 768 dimensions" in done.stdout, done.stdout
            assert "claude: Fake claude-3-5-haiku@20241022 reply to: hi" in done.stdout, done.stdout
            assert "private_key" not in s.log.read_text()
    finally:
        codes = _stop(started)
    assert set(codes.values()) == {0}, codes
