"""The runnable examples end to end: `aigw-xds run` (control plane, in-process translator, real
Envoy) on the example, its provider Backends pointed at the bundled fakes, driven with the official
openai and anthropic SDKs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import pytest
from openai import OpenAI

from aigw_fakes import AnthropicFake, AzureOpenAIFake, OpenAIFake, rewrite
from tests.e2e.harness.control_plane import ControlPlaneProcess, run_command, stop_run, wait_run_ready
from tests.e2e.harness.envoy import launch_envoy
from tests.e2e.harness.processes import free_port, json_lines, launch, wait_for
from tests.redis_server import RedisServer

from .running import EXAMPLES, ROOT, fake_requests, run_example

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hello there"}]


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="client-key-never-forwarded", max_retries=0)


def test_anthropic_serves_openai_and_anthropic_sdks(tmp_path: Path):
    fake = AnthropicFake(api_key="sk-ant-e2e", name="anthropic")
    with fake, run_example("anthropic", tmp_path, {"anthropic": fake}, {"ANTHROPIC_API_KEY": "sk-ant-e2e"}) as gw:
        client = _client(gw.url)
        reply = client.chat.completions.create(model="claude-3-5-haiku-latest", messages=HI)
        assert reply.model == "claude-3-5-haiku-latest"
        assert reply.choices[0].message.content == "Fake claude-3-5-haiku-latest reply to: hello there"
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        sent = fake.last_request
        assert sent is not None and sent.path == "/v1/messages"
        assert sent.header("x-api-key") == "sk-ant-e2e" and sent.header("anthropic-version")
        assert sent.header("authorization") is None

        chunks = client.chat.completions.create(model="claude-sonnet-4-5", messages=HI, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Fake claude-sonnet-4-5 reply to: hello there"

        claude = anthropic.Anthropic(base_url=f"{gw.url}/anthropic", api_key="client-key", max_retries=0)
        message = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=50, messages=HI)
        assert message.content[0].text == "Fake claude-3-5-haiku-latest reply to: hello there"
        with claude.messages.stream(model="claude-3-5-haiku-latest", max_tokens=50, messages=HI) as stream:
            assert "".join(stream.text_stream) == "Fake claude-3-5-haiku-latest reply to: hello there"
        assert fake.last_request.header("x-api-key") == "sk-ant-e2e"

        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # no rule matches


def test_azure_openai_rewrites_to_deployments_with_the_api_key_header(tmp_path: Path):
    fake = AzureOpenAIFake(api_key="azure-e2e", api_versions=["2025-01-01-preview"], name="azure")
    with (
        fake,
        run_example("azure-openai", tmp_path, {"azure-openai": fake}, {"AZURE_OPENAI_API_KEY": "azure-e2e"}) as gw,
    ):
        client = _client(gw.url)
        reply = client.chat.completions.create(model="gpt-4o", messages=HI)
        assert reply.model == "gpt-4o-2024-08-06" and reply.choices[0].message.content
        sent = fake.last_request
        assert sent.path == "/openai/deployments/gpt-4o/chat/completions"
        assert sent.query == {"api-version": "2025-01-01-preview"}
        assert sent.header("api-key") == "azure-e2e" and sent.header("authorization") is None

        fast = client.chat.completions.create(model="fast", messages=HI)
        assert fast.model == "gpt-4o-mini-2024-07-18"  # modelNameOverride picked the deployment
        assert fake.last_request.path == "/openai/deployments/gpt-4o-mini/chat/completions"


def test_multi_provider_through_with_fakes_script(tmp_path: Path):
    """The script users run: `aigw-xds run` starts the fakes itself (fake-provider annotation)."""
    listen, log = free_port(), tmp_path / "with_fakes.log"
    process = launch(
        [
            *(sys.executable, str(EXAMPLES / "with_fakes.py"), str(EXAMPLES / "multi-provider")),
            *("--port", str(listen), "--admin-port", str(free_port())),
        ],
        log,
        {**os.environ, "OPENAI_API_KEY": "a-real-key-must-not-leak"},
        cwd=ROOT,
    )
    try:
        wait_run_ready(process, log)
        ports = dict(re.findall(r"Backend (\S+) -> fake \S+ provider on http://127\.0\.0\.1:(\d+)", log.read_text()))
        assert set(ports) == {"openai", "anthropic"}
        client = _client(f"http://127.0.0.1:{listen}")
        for model in ("gpt-4o-mini", "o3-mini", "claude-3-5-haiku-latest"):
            reply = client.chat.completions.create(model=model, messages=HI)
            assert reply.choices[0].message.content == f"Fake {model} reply to: hello there"
        to_openai, to_anthropic = fake_requests(int(ports["openai"])), fake_requests(int(ports["anthropic"]))
        assert [r["body"]["model"] for r in to_openai] == ["gpt-4o-mini", "o3-mini"]
        assert [r["body"]["model"] for r in to_anthropic] == ["claude-3-5-haiku-latest"]
        assert {r["headers"]["authorization"] for r in to_openai} == {"Bearer sk-fake-key"}
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="llama-3.1-8b", messages=HI)
    finally:
        process.send_signal(signal.SIGINT)  # with_fakes forwards it to aigw-xds run
        stop_run(process, log)
    assert process.returncode == 0, log.read_text()[-2000:]


def test_with_fakes_follows_edits_of_the_example(tmp_path: Path):
    """The examples' READMEs say to edit the YAML while it runs: with_fakes rewrites its copy on
    every edit of the example (the fakes keep their ports), so the edit is live as with `run`."""
    example = tmp_path / "basic"
    shutil.copytree(EXAMPLES / "basic", example)
    listen, log = free_port(), tmp_path / "with_fakes.log"
    process = launch(
        [
            *(sys.executable, str(EXAMPLES / "with_fakes.py"), str(example)),
            *("--port", str(listen), "--admin-port", str(free_port())),
        ],
        log,
        dict(os.environ),
        cwd=ROOT,
    )
    try:
        wait_run_ready(process, log)
        client = _client(f"http://127.0.0.1:{listen}")
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).choices[0].message.content
        routes = example / "gateway.yaml"
        routes.write_text(routes.read_text().replace("value: gpt-4o-mini", "value: gpt-4o-renamed"))
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = client.chat.completions.create(model="gpt-4o-renamed", messages=HI)
                break
            except openai.NotFoundError:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)
        assert reply.choices[0].message.content == "Fake gpt-4o-renamed reply to: hello there"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        # An error names the example's file and the document's number in it (new users' trials:
        # it named one temporary file the example's files were merged into, and its numbers; then
        # the file's copy in the temporary directory).
        routes.write_text(routes.read_text().replace("backendRefs:", "backendRef:", 1))
        said = f"error: {routes}#3: AIGatewayRoute default/basic spec.rules[0].backendRef"
        wait_for(lambda: said in log.read_text(), timeout=30, what="the edit's error")
        # A file that does not read is said where, as `validate` says it (with_fakes said PyYAML's
        # line, eight lines off), and once it reads again, so.
        good = routes.read_text().replace("backendRef:", "backendRefs:", 1)
        routes.write_text(good.replace("name: basic\n", "name: 'basic\n", 1))
        unclosed = re.compile(
            rf"{re.escape(str(routes))}: invalid YAML at line \d+, column \d+: a quoted string is not closed"
        )
        wait_for(lambda: unclosed.search(log.read_text()) is not None, timeout=30, what="the YAML error")
        routes.write_text(good)
        wait_for(lambda: f"with_fakes: {example} reads again" in log.read_text(), timeout=30, what="the fix")
    finally:
        process.send_signal(signal.SIGINT)
        stop_run(process, log)
    assert process.returncode == 0, log.read_text()[-2000:]


def test_provider_fallback_to_anthropic_when_openai_fails(tmp_path: Path):
    primary = OpenAIFake(api_key="sk-openai-e2e", name="primary")
    fallback = AnthropicFake(api_key="sk-ant-e2e", name="fallback")
    keys = {"OPENAI_API_KEY": "sk-openai-e2e", "ANTHROPIC_API_KEY": "sk-ant-e2e"}
    with (
        primary,
        fallback,
        run_example("provider-fallback", tmp_path, {"openai": primary, "anthropic": fallback}, keys) as gw,
    ):
        client = _client(gw.url)
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).model == "gpt-4o-mini"
        assert len(fallback.requests) == 0

        primary.always_fail(503)
        for _ in range(3):
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
            assert reply.model == "claude-3-5-haiku-latest"
            assert reply.choices[0].message.content == "Fake claude-3-5-haiku-latest reply to: hello there"
        assert len(primary.requests) == 4 and len(fallback.requests) == 3  # each failed once, then fell back
        assert fallback.last_request.header("x-api-key") == "sk-ant-e2e"
        assert fallback.last_request.body["model"] == "claude-3-5-haiku-latest"

        primary.always_fail(None)
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).model == "gpt-4o-mini"


def test_traffic_splitting_sends_some_traffic_to_each_backend(tmp_path: Path):
    main = OpenAIFake(api_key="sk-openai-e2e", name="openai")
    canary = AzureOpenAIFake(api_key="azure-e2e", name="azure")
    keys = {"OPENAI_API_KEY": "sk-openai-e2e", "AZURE_OPENAI_API_KEY": "azure-e2e"}
    with main, canary, run_example("traffic-splitting", tmp_path, {"openai": main, "azure-openai": canary}, keys) as gw:
        client = _client(gw.url)
        models = [client.chat.completions.create(model="gpt-4o-mini", messages=HI).model for _ in range(50)]
        # 80:20 by weight. Which request goes where is the load balancer's business; what is
        # certain is that every request was served and that both backends were used.
        assert len(main.requests) + len(canary.requests) == 50
        assert models.count("gpt-4o-mini") == len(main.requests) > len(canary.requests) > 0
        assert models.count("gpt-4o-mini-2024-07-18") == len(canary.requests)


def test_token_costs_reach_the_access_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Through `aigw-xds serve` (translator in-process) and an Envoy of our own, whose standard
    output (the access log) the test reads."""
    with OpenAIFake(api_key="sk-openai-e2e", name="openai") as fake:
        listen, xds, translator = free_port(), free_port(), free_port()
        rewritten = rewrite.for_fakes(
            rewrite.load_documents(EXAMPLES / "token-costs"),
            {"openai": fake.port},
            listener_port=listen,
            annotate=False,
            keys={"OPENAI_API_KEY": "sk-openai-e2e"},
        )
        (tmp_path / "token-costs.yaml").write_text(rewritten.text())
        for variable, value in rewritten.env.items():  # read by the control plane when it loads the Secret
            monkeypatch.setenv(variable, value)
        plane = ControlPlaneProcess(
            tmp_path / "token-costs.yaml",
            xds,
            tmp_path,
            extra=("--translator-listen", f"127.0.0.1:{translator}", "--translator-address", f"127.0.0.1:{translator}"),
        )
        plane.start()
        envoy = None
        try:
            # EnvoyProcess flushes the access log every 500 ms rather than Envoy's default 10 s.
            envoy = launch_envoy(xds, "default/token-costs", node_id="costs", log_level="warning")
            envoy.wait_ready()
            client = _client(f"http://127.0.0.1:{listen}")
            usage = {}
            for model in ("gpt-4o-mini", "gpt-4o"):
                reply = client.chat.completions.create(model=model, messages=HI)
                assert reply.usage is not None
                usage[model] = reply.usage

            def logged() -> dict[str, dict]:
                entries = {e["gen_ai.request.model"]: e for e in json_lines(envoy.stdout_path) if "weighted_cost" in e}
                return entries if set(entries) == set(usage) else {}

            entries = wait_for(logged, timeout=30, what="access log lines with the costs")
            for model, used in usage.items():
                entry = entries[model]
                assert entry["response_code"] == 200
                assert entry["llm_input_token"] == used.prompt_tokens
                assert entry["llm_output_token"] == used.completion_tokens
                assert entry["llm_total_token"] == used.total_tokens
                factor = 10 if model == "gpt-4o" else 1
                assert entry["weighted_cost"] == (used.prompt_tokens + 4 * used.completion_tokens) * factor
        finally:
            if envoy is not None:
                envoy.stop()
            plane.stop()


def test_autoconfig_run_serves_openai_and_anthropic_from_the_environment(tmp_path: Path):
    """`aigw-xds run` with no PATH: the configuration comes from OPENAI_* and ANTHROPIC_* variables
    (base URLs pointed at fakes). The generated Gateway listens on 1975: on a developer's machine
    where something else holds that port the test is skipped; in CI (CI set) it fails instead."""
    with OpenAIFake(api_key="sk-auto-openai") as oai, AnthropicFake(api_key="sk-auto-ant") as ant:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "AZURE_", "AWS_"))}
        env.update(
            OPENAI_API_KEY="sk-auto-openai",
            OPENAI_BASE_URL=f"http://localhost:{oai.port}/v1",
            ANTHROPIC_API_KEY="sk-auto-ant",
            ANTHROPIC_BASE_URL=f"http://127.0.0.1:{ant.port}",
        )
        log = tmp_path / "run.log"
        process = launch(run_command(admin_port=free_port()), log, env)
        try:
            try:
                wait_run_ready(process, log)
            except (AssertionError, TimeoutError):  # wait_for reports run's exit as a TimeoutError
                if "port 1975 on 127.0.0.1: address already in use" in log.read_text() and not os.environ.get("CI"):
                    pytest.skip("port 1975 is in use by another process")
                raise
            text = log.read_text()
            assert "configuration generated from the environment for Anthropic, OpenAI" in text
            assert "sk-auto" not in text
            client = _client("http://127.0.0.1:1975")
            assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).model == "gpt-4o-mini"
            claude = client.chat.completions.create(model="claude-3-5-haiku-latest", messages=HI)
            assert claude.choices[0].message.content == "Fake claude-3-5-haiku-latest reply to: hello there"
            assert oai.last_request.header("authorization") == "Bearer sk-auto-openai"
            assert ant.last_request.header("x-api-key") == "sk-auto-ant"
        finally:
            stop_run(process, log)
        assert process.returncode == 0


def _readme_client(example: str, url: str) -> str:
    """The first python snippet of examples/<example>/README.md, pointed at `url` instead of :1975."""
    readme = (EXAMPLES / example / "README.md").read_text()
    snippet = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)[0]
    assert "http://localhost:1975" in snippet
    return snippet.replace("http://localhost:1975", url)


def test_rate_limits_tenant_budget_refuses_in_openai_shape_and_another_tenant_passes(tmp_path: Path):
    """examples/rate-limits under `aigw-xds run` (its OpenAI Backend on a fake): the README's snippet
    spends tenant alice's 300 tokens an hour, each answer admitted while her counter is below 300,
    then the next request is a 429 in OpenAI's shape with retry-after and x-ratelimit-*, refused
    before the provider; alice stays refused while bob, another tenant, is served. The QuotaPolicy's
    default bucket for gpt-4o-mini (1,000 tokens a week, every tenant's answers together) then
    refuses more tenants in the same shape, while x-team research (its own bucket) is served."""
    with (
        OpenAIFake(api_key="sk-openai-e2e", name="openai") as fake,
        run_example("rate-limits", tmp_path, {"openai": fake}, {"OPENAI_API_KEY": "sk-openai-e2e"}) as gw,
    ):
        done = subprocess.run(
            [sys.executable, "-c", _readme_client("rate-limits", gw.url)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:] + gw.log_text()[-2000:]
        lines = done.stdout.splitlines()
        answered = re.compile(r"request \d+: (\d+) tokens, remaining \d+$")
        served = [int(m.group(1)) for m in map(answered.match, lines) if m]
        assert len(served) == len(lines) - 2, done.stdout
        assert re.fullmatch(rf"request {len(served) + 1}: 429 rate_limit_exceeded, retry-after \d+", lines[-2])
        assert lines[-1] == "x-ratelimit-limit: 300, 300;w=3600, remaining: 0", done.stdout
        # Admitted while below 300 (charges are added when each answer ends, so a sequential client
        # may pass by one answer it was admitted before the previous charge landed, not more).
        assert sum(served) >= 300 and sum(served[:-2]) < 300, served
        assert len(fake.requests) == len(served)  # the refused request never reached OpenAI
        assert {r.header("x-tenant-id") for r in fake.requests} == {"alice"}
        assert fake.last_request.header("authorization") == "Bearer sk-openai-e2e"

        alice = OpenAI(base_url=f"{gw.url}/v1", api_key="k", max_retries=0, default_headers={"x-tenant-id": "alice"})
        with pytest.raises(openai.RateLimitError) as refused:
            alice.chat.completions.create(model="gpt-4o-mini", messages=HI)
        response = refused.value.response
        assert response.status_code == 429 and len(fake.requests) == len(served)
        assert 0 < int(response.headers["retry-after"]) <= 3600
        assert response.headers["retry-after"] == response.headers["x-ratelimit-reset"]
        assert response.headers["x-ratelimit-remaining"] == "0"
        error = response.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error", error

        bob = OpenAI(base_url=f"{gw.url}/v1", api_key="k", max_retries=0, default_headers={"x-tenant-id": "bob"})
        raw = bob.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        assert raw.parse().choices[0].message.content == "Fake gpt-4o-mini reply to: hello there"
        assert raw.headers["x-ratelimit-remaining"] == "59"  # bob's own counters: one request, no token
        assert fake.last_request.header("x-tenant-id") == "bob"

        # The QuotaPolicy: every gpt-4o-mini answer so far, whoever the tenant, counted in the default
        # bucket (1,000 tokens a week); more tenants spend it, then it refuses all but x-team research.
        used = [*served, raw.parse().usage.total_tokens]  # type: ignore[union-attr]
        quota = None
        for n in range(10):
            headers = {"x-tenant-id": f"t{n}"}
            tenant = OpenAI(base_url=f"{gw.url}/v1", api_key="k", max_retries=0, default_headers=headers)
            try:
                while True:
                    reply = tenant.chat.completions.create(model="gpt-4o-mini", messages=HI)
                    used.append(reply.usage.total_tokens)  # type: ignore[union-attr]
            except openai.RateLimitError as spent:
                if "rate limit exceeded: 1000 per week" in spent.response.text:  # not the tenant's 300
                    quota = spent.response
                    break
        assert quota is not None, "the default bucket never refused"
        error = quota.json()["error"]
        reset = int(quota.headers["retry-after"])
        assert 0 < reset <= 7 * 86400 and error["code"] == "rate_limit_exceeded", quota.text
        assert error["message"].startswith(f"rate limit exceeded: 1000 per week used up; it resets in {reset}s")
        # Its x-ratelimit-* are the quota's, like its retry-after (not the route budget's).
        assert quota.headers["x-ratelimit-limit"] == "1000, 1000;w=604800"
        assert quota.headers["x-ratelimit-reset"] == str(reset)
        assert sum(used) >= 1000 and sum(used[:-2]) < 1000, used  # admitted while below (one answer's lag)
        assert len(fake.requests) == len(used)  # the refused requests never reached OpenAI
        research = OpenAI(
            base_url=f"{gw.url}/v1",
            api_key="k",
            max_retries=0,
            default_headers={"x-tenant-id": "carol", "x-team": "research"},
        )
        assert research.chat.completions.create(model="gpt-4o-mini", messages=HI).choices
        assert len(fake.requests) == len(used) + 1 and fake.last_request.header("x-team") == "research"


def test_rate_limits_counted_in_redis_survive_a_restart(tmp_path: Path, redis_server: RedisServer):
    """The README's Redis line (with_fakes.py and --rate-limit-redis, on free ports and the test's
    redis-server): alice's tokens are counted under aigw:rl:* keys that expire at the end of their
    window, and a restarted gateway on the same Redis goes on from them: her budget spent before the
    restart is a 429 after it, while bob is served."""

    def start(attempt: int) -> tuple[subprocess.Popen, Path, str]:
        listen, log = free_port(), tmp_path / f"with_fakes-{attempt}.log"
        command = [sys.executable, "examples/with_fakes.py", "examples/rate-limits", "--rate-limit-redis"]
        command += [redis_server.url, "--port", str(listen), "--admin-port", str(free_port())]
        process = launch(command, log, dict(os.environ), cwd=ROOT)
        wait_run_ready(process, log)
        return process, log, f"http://127.0.0.1:{listen}/v1"

    def client(url: str, tenant: str) -> OpenAI:
        return OpenAI(base_url=url, api_key="k", max_retries=0, default_headers={"x-tenant-id": tenant})

    process, log, url = start(0)
    try:
        spent = 0
        while spent < 300:
            reply = client(url, "alice").chat.completions.create(model="gpt-4o-mini", messages=HI)
            assert reply.usage is not None
            spent += reply.usage.total_tokens
        store = redis_server.client()

        def counted() -> dict[str, int]:
            keys = sorted(k.decode() for k in store.scan_iter("aigw:rl:*"))
            values = {k: int(store.get(k) or 0) for k in keys}
            route_budget = [k for k, v in values.items() if v == spent and not k.startswith("aigw:rl:quota/")]
            return values if route_budget else {}

        values = wait_for(counted, timeout=10, what=f"a Redis counter holding alice's {spent} tokens")
        # The route's hourly budget (the backend's quotas count the same tokens over days and weeks,
        # under aigw:rl:quota/ keys, once their counters have caught up).
        token_key = next(k for k, v in values.items() if v == spent and not k.startswith("aigw:rl:quota/"))
        assert 0 < store.ttl(token_key) <= 3600
    finally:
        stop_run(process, log)
    assert process.returncode == 0, log.read_text()[-2000:]

    process, log, url = start(1)
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            client(url, "alice").chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert refused.value.response.headers["x-ratelimit-limit"] == "300, 300;w=3600"
        assert client(url, "bob").chat.completions.create(model="gpt-4o-mini", messages=HI).choices
    finally:
        stop_run(process, log)
    assert process.returncode == 0, log.read_text()[-2000:]
