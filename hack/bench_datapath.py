#!/usr/bin/env python3
"""Benchmark the data path: bare Envoy, the gateway (passthrough, translated, translated with tools,
streaming) and LiteLLM's proxy doing the same OpenAI -> Anthropic translation, all against the same
fast fake upstream (hack/fast_upstream.py) on this machine.

Rows (--rows, comma-separated; default all):
  bare         Envoy routing on a header the client sends, no translator (aigw-xds serve --no-translator)
  passthrough  OpenAI client -> OpenAI backend with an API key (aigw-xds serve + Envoy)
  text         OpenAI chat client -> Anthropic backend, plain text
  tools        the same with `tools`, an assistant `tool_calls` message and a `role: tool` result
  stream       streamed rows (bare, passthrough, translated) and time to first token (first SSE data)
  litellm      LiteLLM's proxy for `text` and `tools` (and its streaming TTFT if `stream` is chosen),
               installed on demand into a separate venv (--litellm-venv); never a project dependency

Load is wrk (Debian: apt-get install wrk) with a Lua script POSTing a ~1 KB chat request, at
concurrency 1 and 32. CPU is summed over every process of each tree from /proc/<pid>/stat (gateway:
Envoy + control plane + translator workers; LiteLLM: its proxy tree; upstream separately) and
divided by the requests completed. The gateway is driven only through its public CLI (aigw-xds
serve, aigw-xds bootstrap) and YAML resources.

With --token-limit the gateway runs under a token budget (a BackendTrafficPolicy on the Gateway:
total tokens per hour per x-tenant-id, so large that it never refuses; wrk sends x-tenant-id): every
gateway request is admitted against it and charged its tokens, so its rules are no longer NATIVE.
Add --redis to count in a redis-server the script starts (its CPU is counted in the proxy's). Run
the same rows without and with it to see what a limit costs.

With --client-check keys, jwt or jwt-rules the gateway runs under a SecurityPolicy on the Gateway:
apiKeyAuth (Envoy asks the translator for every request: a gRPC hop, NATIVE rules included), jwt
(Envoy's jwt_authn, a local key set; the token signed here, RS256), or jwt with authorization rules
(Envoy's RBAC: a deny on a claim, then an allow on a scope). wrk sends the key, or the token, as its
bearer credential. Run the same rows without and with it to see what a client check costs.

Usage:
  .venv/bin/python hack/bench_datapath.py [--duration 5] [--warmup 1] [--rows bare,text,...]
                                          [--translator-workers N] [--skip-litellm] [--litellm-venv DIR]
                                          [--token-limit [--redis]] [--route-scopes-from RULES]
                                          [--client-check keys|jwt|jwt-rules]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROWS = ("bare", "passthrough", "text", "tools", "stream", "litellm")
CONCURRENCY = (1, 32)
OPENAI_MODEL = "gpt-4o-mini"  # the models hack/fast_upstream.py answers with
ANTHROPIC_MODEL = "claude-sonnet-4-20250514"
MODEL_HEADER = "x-ai-eg-model"
TENANT_HEADER = "x-tenant-id"
MASTER_KEY = "sk-bench-master"
REQUEST_BYTES = 1024
LITELLM_VENV = Path("/tmp/aigw-bench-litellm-venv")
# httptools: uvicorn's C HTTP parser (part of uvicorn[standard]); LiteLLM is faster with it.
LITELLM_PACKAGES = ("litellm[proxy]", "opentelemetry-sdk", "httptools")


# ---------------------------------------------------------------- processes and CPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ChildProcessError(f"process {process.pid} exited with {process.returncode} (port {port})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening after {timeout:.0f} s")


def _stat(pid: int) -> list[str]:
    # Fields after the command name: state is [0], ppid [1], utime [11], stime [12], cutime [13], cstime [14].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(root: int) -> list[int]:
    """root and all its descendants, from the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: list[int]) -> float:
    """CPU (user + system) of every live process under roots, plus what their reaped children used."""
    total = 0
    for root in roots:
        for pid in tree(root):
            with contextlib.suppress(OSError):
                fields = _stat(pid)
                total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def settle(roots: list[int], timeout: float = 10) -> None:
    """Wait until the tree is idle, so work left over from the last load (e.g. cancelled requests) is not counted."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(roots)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(roots)
        if now - last < 0.02:
            return
        last = now


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group we created, then SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.is_file() else shutil.which("envoy") or "envoy"


# ---------------------------------------------------------------- request bodies


def _padded(body: dict, pad: list) -> str:
    """body as JSON, with pad[0][pad[1]] (a user message's content) filled to make REQUEST_BYTES."""
    message, key = pad
    message[key] = ""
    message[key] = "x" * max(0, REQUEST_BYTES - len(json.dumps(body)))
    return json.dumps(body)


def text_request(model: str, stream: bool) -> str:
    user = {"role": "user", "content": ""}
    body: dict = {"model": model, "messages": [{"role": "system", "content": "Be brief."}, user], "max_tokens": 64}
    if stream:
        body["stream"] = True
    return _padded(body, [user, "content"])


def tools_request(model: str, stream: bool) -> str:
    user = {"role": "user", "content": ""}
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [
        {"role": "system", "content": "Use the tools."},
        user,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "clear"}'},
        {"role": "user", "content": "And in Lyon?"},
    ]
    body: dict = {"model": model, "messages": messages, "tools": [weather], "max_tokens": 64}
    if stream:
        body["stream"] = True
    return _padded(body, [user, "content"])


@dataclass(frozen=True)
class Scenario:
    row: str  # which --rows entry produced it
    label: str
    target: str  # "bare", "gateway" or "litellm"
    body: str
    stream: bool
    tools: bool = False
    header_model: str | None = None  # bare Envoy: the client sends the routing header itself

    def headers(self) -> dict[str, str]:
        credential = CLIENT_CREDENTIAL.get(self.target, MASTER_KEY)
        headers = {"content-type": "application/json", "authorization": f"Bearer {credential}"}
        headers[TENANT_HEADER] = "bench-tenant"  # what --token-limit's budget counts by (else ignored)
        if self.header_model:
            headers[MODEL_HEADER] = self.header_model
        return headers


def scenarios(rows: set[str]) -> list[Scenario]:
    """Everything to load with wrk; the streamed variants of bare, passthrough and text come with row stream."""

    def wanted(row: str, stream: bool) -> bool:
        return "stream" in rows if stream else row in rows

    text, tools = text_request, tools_request
    out = []
    for stream in (False, True):
        if wanted("bare", stream):
            body = text(OPENAI_MODEL, stream)
            out.append(Scenario("bare", "bare Envoy", "bare", body, stream, header_model=OPENAI_MODEL))
        if wanted("passthrough", stream):
            out.append(Scenario("passthrough", "OpenAI -> OpenAI", "gateway", text(OPENAI_MODEL, stream), stream))
        if wanted("text", stream):
            out.append(Scenario("text", "OpenAI -> Anthropic", "gateway", text(ANTHROPIC_MODEL, stream), stream))
        if wanted("tools", stream) and not stream:
            body = tools(ANTHROPIC_MODEL, stream)
            out.append(Scenario("tools", "OpenAI -> Anthropic, tools", "gateway", body, stream, tools=True))
    if "litellm" in rows:
        label = "LiteLLM OpenAI -> Anthropic"
        out.append(Scenario("text", label, "litellm", text(ANTHROPIC_MODEL, False), False))
        out.append(Scenario("tools", label + ", tools", "litellm", tools(ANTHROPIC_MODEL, False), False, tools=True))
        if "stream" in rows:
            out.append(Scenario("text", label, "litellm", text(ANTHROPIC_MODEL, True), True))
    return out


# ---------------------------------------------------------------- targets


# The token count --token-limit charges: a fleet-wide cost (Envoy writes it itself on NATIVE rules; a
# route's own llmRequestCosts would take its rules off NATIVE).
GATEWAY_CONFIG_YAML = """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: GatewayConfig
metadata: {name: bench}
spec:
  globalLLMRequestCosts: [{metadataKey: llm_total_token, type: TotalToken}]
"""
# --token-limit: the budget every gateway request is admitted against and charged (never used up).
TOKEN_LIMIT_YAML = f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: bench-token-limit}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: bench}}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{{headers: [{{name: {TENANT_HEADER}, type: Distinct}}]}}]
          limit: {{requests: 1000000000000000, unit: Hour}}
          cost:
            request: {{from: Number, number: 0}}
            response: {{from: Metadata, metadata: {{namespace: io.envoy.ai_gateway, key: llm_total_token}}}}
"""


# --client-check: what the gateway's clients send as their bearer credential (by target), and the
# SecurityPolicy asking for it.
CLIENT_CREDENTIAL: dict[str, str] = {}


def client_check_yaml(kind: str) -> str:
    """The SecurityPolicy of --client-check `kind` on the Gateway; sets the credential wrk sends."""
    if kind == "keys":
        CLIENT_CREDENTIAL["gateway"] = "gw-bench-client-key"
        check = """  apiKeyAuth:
    credentialRefs: [{name: bench-clients}]
    extractFrom: [{headers: [authorization]}]
---
apiVersion: v1
kind: Secret
metadata: {name: bench-clients}
stringData: {bench: gw-bench-client-key}"""
    else:
        import base64

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = key.public_key().public_numbers()

        def b64(value: int) -> str:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "n": b64(numbers.n), "e": "AQAB"}]})
        claims = {"iss": "https://bench.example", "aud": "bench", "sub": "wrk", "exp": int(time.time()) + 86400}
        claims["scope"] = "openid models.read"
        CLIENT_CREDENTIAL["gateway"] = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
        check = f"""  jwt:
    providers:
      - name: bench
        issuer: https://bench.example
        audiences: [bench]
        localJWKS: {{type: Inline, inline: '{jwks}'}}"""
        if kind == "jwt-rules":  # and authorization: a deny rule on a claim, then an allow on a scope
            check += """
  authorization:
    defaultAction: Deny
    rules:
      - {name: banned, action: Deny, principal: {jwt: {provider: bench, claims: [{name: sub, values: [mallory]}]}}}
      - {name: readers, action: Allow, principal: {jwt: {provider: bench, scopes: [models.read]}}}"""
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: bench-clients}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: bench}}]
{check}
"""


def gateway_yaml(listen: int, upstream: int, token_limit: bool = False, client_check: str = "") -> str:
    def backend(name: str, schema: str, auth: str) -> str:
        key_field = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey"}[auth]
        return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: {schema}}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {upstream}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: {auth}
  {key_field}: {{secretRef: {{name: {name}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData: {{apiKey: sk-bench-{name}}}
"""

    return (
        f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, annotations: {{aigateway.envoyproxy.io/gateway-config: bench}}}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, protocol: HTTP, port: {listen}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: bench}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: {MODEL_HEADER}, value: {OPENAI_MODEL}}}]}}]
      backendRefs: [{{name: openai}}]
    - matches: [{{headers: [{{type: Exact, name: {MODEL_HEADER}, value: {ANTHROPIC_MODEL}}}]}}]
      backendRefs: [{{name: anthropic}}]
"""
        + backend("openai", "OpenAI", "APIKey")
        + backend("anthropic", "Anthropic", "AnthropicAPIKey")
        + GATEWAY_CONFIG_YAML
        + (TOKEN_LIMIT_YAML if token_limit else "")
        + (client_check_yaml(client_check) if client_check else "")
    )


def litellm_yaml(upstream: int) -> str:
    # Settings from LiteLLM's production and benchmark docs: no database, no spend or error logs,
    # no callbacks, no retries, no verbose logging.
    return f"""
model_list:
  - model_name: {ANTHROPIC_MODEL}
    litellm_params:
      model: anthropic/{ANTHROPIC_MODEL}
      api_base: http://127.0.0.1:{upstream}
      api_key: sk-bench-anthropic
litellm_settings:
  callbacks: []
  success_callback: []
  failure_callback: []
  num_retries: 0
  request_timeout: 30
  set_verbose: false
  turn_off_message_logging: true
general_settings:
  master_key: {MASTER_KEY}
  disable_spend_logs: true
  disable_error_logs: true
"""


@dataclass
class Target:
    name: str
    port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    version: str = ""

    def roots(self, *names: str) -> list[int]:
        return [p.pid for n, p in self.processes.items() if not names or n in names]

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            stop(process)


def start_upstream(workdir: Path) -> Target:
    port = free_port()
    process = start([sys.executable, str(ROOT / "hack" / "fast_upstream.py"), str(port)], workdir / "upstream.log")
    wait_port(port, process=process)
    return Target("upstream", port, {"upstream": process})


def start_gateway(
    workdir: Path,
    upstream: int,
    translator: bool,
    workers: int | None = None,
    token_limit: bool = False,
    redis: bool = False,
    route_scopes_from: int | None = None,
    client_check: str = "",
) -> Target:
    """aigw-xds serve (with or without the translator) and an Envoy (--concurrency 1) bootstrapped by
    the CLI; `token_limit`: under a budget (counted in a redis-server of its own with `redis`)."""
    name = "gateway" if translator else "bare"
    config = workdir / f"{name}-config"
    config.mkdir()
    listen, xds, admin = free_port(), free_port(), free_port()
    checked = client_check if translator else ""
    (config / "bench.yaml").write_text(gateway_yaml(listen, upstream, token_limit and translator, checked))
    cli = [sys.executable, "-m", "aigw_xds"]
    serve = [*cli, "--log-level", "error", "serve", "--config", str(config)]
    serve += ["--listen", f"127.0.0.1:{xds}", "--no-watch"]
    if translator:
        port = free_port()
        serve += ["--translator-listen", f"127.0.0.1:{port}", "--translator-address", f"127.0.0.1:{port}"]
        if workers:
            serve += ["--translator-workers", str(workers)]
        if route_scopes_from is not None:
            serve += ["--route-scopes-from", str(route_scopes_from)]
    else:
        serve += ["--no-translator", "--translator-listen", ""]
    target = Target(name, listen)
    try:
        if redis and token_limit and translator:
            redis_port = free_port()
            redis_args = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
            target.processes["redis"] = start([*redis_args, "--appendonly", "no"], workdir / f"{name}-redis.log")
            wait_port(redis_port, process=target.processes["redis"])
            serve += ["--rate-limit-redis", f"redis://127.0.0.1:{redis_port}/0"]
        target.processes["control plane"] = start(serve, workdir / f"{name}-serve.log")
        wait_port(xds, process=target.processes["control plane"])
        bootstrap = workdir / f"{name}-bootstrap.json"
        where = ["--server", f"127.0.0.1:{xds}", "--gateway", "default/bench", "--node-id", name]
        printed = subprocess.run(
            [*cli, "bootstrap", *where, "--admin-port", str(admin), "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        bootstrap.write_text(printed.stdout)
        envoy = [envoy_binary(), "-c", str(bootstrap), "--use-dynamic-base-id", "--concurrency", "1", "-l", "error"]
        target.processes["envoy"] = start(envoy, workdir / f"{name}-envoy.log")
        wait_port(listen, process=target.processes["envoy"])
    except BaseException:
        target.stop()
        raise
    return target


def litellm_python(venv: Path) -> Path | None:
    """The venv's python with litellm installed, creating it on demand; None (and a message) if that fails."""
    python, litellm = venv / "bin" / "python", venv / "bin" / "litellm"
    if litellm.exists():
        return python
    log = Path(tempfile.gettempdir()) / "aigw-bench-litellm-install.log"
    print(f"installing {' '.join(LITELLM_PACKAGES)} into {venv} (log: {log}) ...", file=sys.stderr, flush=True)
    steps = (["python3", "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", *LITELLM_PACKAGES])
    with log.open("wb") as out:
        ok = all(subprocess.run(step, stdout=out, stderr=out).returncode == 0 for step in steps)
    if ok and litellm.exists():
        return python
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    print(f"LiteLLM could not be installed, its rows are skipped: {' / '.join(tail)}", file=sys.stderr)
    return None


def start_litellm(workdir: Path, upstream: int, venv: Path) -> Target | None:
    """LiteLLM's proxy, one uvicorn worker, no database, on the config of litellm_yaml()."""
    python = litellm_python(venv)
    if python is None:
        return None
    config = workdir / "litellm.yaml"
    config.write_text(litellm_yaml(upstream))
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    env.pop("DATABASE_URL", None)
    args = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    process = start([*args, "--num_workers", "1"], workdir / "litellm.log", env)
    target = Target("litellm", port, {"litellm": process})
    try:
        wait_port(port, timeout=180, process=process)
    except BaseException:
        target.stop()
        raise
    version = [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
    target.version = subprocess.run(version, capture_output=True, text=True).stdout.strip()
    return target


# ---------------------------------------------------------------- checks and load


def post(port: int, scenario: Scenario) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", scenario.body, scenario.headers())
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check(port: int, scenario: Scenario, timeout: float = 30) -> str:
    """One request that must answer 200 with what the scenario expects; retried while config settles."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = post(port, scenario)
            problem = _answer_problem(status, body, scenario)
        except OSError as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            return "ok"
        if time.monotonic() > deadline:
            return problem
        time.sleep(0.5)


def _answer_problem(status: int, body: bytes, scenario: Scenario) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    if scenario.stream:
        return None if b"chat.completion.chunk" in body else f"no OpenAI SSE chunks: {body[:200]!r}"
    try:
        choice = json.loads(body)["choices"][0]
    except (ValueError, KeyError, IndexError):
        return f"not a chat completion: {body[:200]!r}"
    if scenario.tools and not choice["message"].get("tool_calls"):
        return f"no tool_calls in the answer: {body[:300]!r}"
    return None


def lua_script(path: Path, scenario: Scenario) -> None:
    lines = ['wrk.method = "POST"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in scenario.headers().items()]
    lines.append(f"wrk.body = [==[{scenario.body}]==]")
    path.write_text("\n".join(lines) + "\n")


def parse_ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if match is None:
        raise ValueError(f"unexpected wrk latency {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _find(pattern: str, out: str) -> str:
    match = re.search(pattern, out, re.M)
    if match is None:
        raise ValueError(f"no {pattern!r} in wrk's output: {out!r}")
    return match.group(1)


def wrk(port: int, script: Path, connections: int, seconds: float) -> str:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@dataclass
class Load:
    rps: float
    p50: float
    p99: float
    requests: int
    non2xx: int
    socket_errors: int
    cpu: dict[str, float]  # CPU seconds per request, by process tree


def run_load(port: int, script: Path, connections: int, args: argparse.Namespace, trees: dict[str, list[int]]) -> Load:
    if args.warmup > 0:
        wrk(port, script, connections, args.warmup)
    settle(trees["proxy"])
    before = {name: cpu_seconds(roots) for name, roots in trees.items()}
    out = wrk(port, script, connections, args.duration)
    used = {name: cpu_seconds(roots) - before[name] for name, roots in trees.items()}
    requests = int(_find(r"(\d+) requests in", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Load(
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        p50=parse_ms(_find(r"^\s+50%\s+(\S+)", out)),
        p99=parse_ms(_find(r"^\s+99%\s+(\S+)", out)),
        requests=requests,
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        cpu={name: seconds / max(requests, 1) for name, seconds in used.items()},
    )


@dataclass
class FirstToken:
    p50: float
    p99: float
    total_p50: float
    requests: int
    non200: int


def time_to_first_token(port: int, scenario: Scenario, seconds: float, warmup: float) -> FirstToken:
    """Sequential streamed requests on one keep-alive connection: time from sending to the first SSE data byte."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    first, total, non200 = [], [], 0
    begin = time.monotonic()
    while time.monotonic() - begin < warmup + seconds:
        sent = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", scenario.body, scenario.headers())
        response = conn.getresponse()
        seen = b""
        while b"data:" not in seen:
            chunk = response.read1(65536)
            if not chunk:
                break
            seen += chunk
        got_first = time.perf_counter()
        response.read()
        done = time.perf_counter()
        if time.monotonic() - begin < warmup:
            continue
        if response.status != 200 or b"data:" not in seen:
            non200 += 1
        first.append((got_first - sent) * 1000)
        total.append((done - sent) * 1000)
    conn.close()
    return FirstToken(
        p50=statistics.median(first),
        p99=statistics.quantiles(first, n=100)[98] if len(first) > 1 else first[0],
        total_p50=statistics.median(total),
        requests=len(first),
        non200=non200,
    )


# ---------------------------------------------------------------- report


def machine_line() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    try:
        envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout
    except OSError:
        envoy = ""
    version = re.search(r"version: \S+?/([\d.]+[^/\s]*)", envoy)
    envoy_version = version.group(1) if version else "unknown"
    return (
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{model.group(1).strip() if model else platform.processor()}, {platform.machine()}; "
        f"Python {platform.python_version()}; Envoy {envoy_version} (--concurrency 1); "
        f"wrk, the gateway or LiteLLM, and the upstream share these CPUs"
    )


NOTE = (
    "proxy CPU: every process of the proxy's tree (bare Envoy and gateway: Envoy + aigw-xds serve and its "
    "translator workers; LiteLLM: its process tree), from /proc/<pid>/stat, per request wrk completed; "
    "each path answered one checked request first (200, a chat completion; tools: tool_calls in it)."
)
LOAD_COLUMNS = (
    "path",
    "stream",
    "conc.",
    "req/s",
    "p50 ms",
    "p99 ms",
    "non-2xx",
    "sock. err.",
    "proxy CPU ms/req",
    "of it Envoy",
    "req / proxy CPU-s",
    "upstream CPU ms/req",
)


def load_row(scenario: Scenario, connections: int, r: Load) -> str:
    proxy = r.cpu["proxy"]
    envoy = f"{r.cpu['envoy'] * 1000:.3f}" if "envoy" in r.cpu else "-"
    cells = (
        scenario.label,
        "yes" if scenario.stream else "no",
        str(connections),
        f"{r.rps:.0f}",
        f"{r.p50:.2f}",
        f"{r.p99:.2f}",
        str(r.non2xx),
        str(r.socket_errors),
        f"{proxy * 1000:.3f}",
        envoy,
        f"{1 / proxy:.0f}" if proxy > 0 else "-",
        f"{r.cpu['upstream'] * 1000:.3f}",
    )
    return "| " + " | ".join(cells) + " |"


def table_header(columns: tuple[str, ...]) -> str:
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def ratio_lines(loads: dict[tuple[str, str, bool, int], Load], ttft: dict[str, FirstToken]) -> list[str]:
    def get(target: str, row: str, stream: bool, connections: int) -> Load | None:
        return loads.get((target, row, stream, connections))

    lines = ["| goal | measured | target | met |", "|---|---|---|---|"]

    def add(goal: str, value: str | None, target: str, met: bool | None, missing: str) -> None:
        if value is None:
            lines.append(f"| {goal} | n/a ({missing}) | {target} | - |")
        else:
            lines.append(f"| {goal} | {value} | {target} | {'yes' if met else 'no'} |")

    bare, passthrough = get("bare", "bare", False, 32), get("gateway", "passthrough", False, 32)
    share = passthrough.rps / bare.rps if bare and passthrough else None
    add(
        "passthrough req/s vs bare Envoy, c=32",
        f"{share:.0%}" if share is not None else None,
        ">= 90 %",
        share is not None and share >= 0.9,
        "needs rows bare, passthrough",
    )
    for connections in CONCURRENCY:
        ours, theirs = get("gateway", "tools", False, connections), get("litellm", "tools", False, connections)
        factor = theirs.cpu["proxy"] / ours.cpu["proxy"] if ours and theirs and ours.cpu["proxy"] > 0 else None
        add(
            f"tools: requests per CPU-second, whole gateway vs LiteLLM, c={connections}",
            f"{factor:.1f}x" if factor is not None else None,
            ">= 15x",
            factor is not None and factor >= 15,
            "needs rows tools, litellm",
        )
    bare1, text1 = get("bare", "bare", False, 1), get("gateway", "text", False, 1)
    added = text1.p50 - bare1.p50 if bare1 and text1 else None
    add(
        "added p50 over bare Envoy, translated plain text, c=1",
        f"+{added:.2f} ms" if added is not None else None,
        "<= +0.6 ms",
        added is not None and added <= 0.6,
        "needs rows bare, text",
    )
    first = (
        ttft["OpenAI -> Anthropic"].p50 - ttft["bare Envoy"].p50
        if {"OpenAI -> Anthropic", "bare Envoy"} <= ttft.keys()
        else None
    )
    add(
        "added time to first token, streaming, translated (p50)",
        f"+{first:.2f} ms" if first is not None else None,
        "<= +1 ms",
        first is not None and first <= 1.0,
        "needs row stream",
    )
    return lines


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per row (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each row (default 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--translator-workers", type=int, help="passed to aigw-xds serve (default: serve's)")
    parser.add_argument("--skip-litellm", action="store_true", help="same as leaving litellm out of --rows")
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV, help=f"default {LITELLM_VENV}")
    parser.add_argument("--token-limit", action="store_true", help="the gateway under a token budget (see above)")
    parser.add_argument("--redis", action="store_true", help="with --token-limit: count in a redis-server")
    parser.add_argument(
        "--route-scopes-from",
        type=int,
        help="passed to aigw-xds serve: 0 puts the gateway's routes in scopes (a Lua filter on every request)",
    )
    parser.add_argument(
        "--client-check",
        choices=("keys", "jwt", "jwt-rules"),
        default="",
        help="the gateway under a SecurityPolicy (see above)",
    )
    args = parser.parse_args()
    if args.redis and not args.token_limit:
        parser.error("--redis needs --token-limit")
    if args.redis and shutil.which("redis-server") is None:
        parser.error("--redis needs redis-server on PATH (Debian: apt-get install -y redis-server)")
    args.rows = {r.strip() for r in args.rows.split(",") if r.strip()}
    unknown = args.rows - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))} (choose from {', '.join(ROWS)})")
    if args.skip_litellm:
        args.rows.discard("litellm")
    return args


def start_target(kind: str, workdir: Path, upstream: Target, args: argparse.Namespace) -> Target | None:
    if kind == "litellm":
        return start_litellm(workdir, upstream.port, args.litellm_venv)
    return start_gateway(
        workdir,
        upstream.port,
        translator=kind == "gateway",
        workers=args.translator_workers,
        token_limit=args.token_limit,
        redis=args.redis,
        route_scopes_from=args.route_scopes_from,
        client_check=args.client_check,
    )


def bench_target(
    target: Target, todo: list[Scenario], upstream: Target, workdir: Path, args: argparse.Namespace, results: dict
) -> None:
    trees = {"proxy": target.roots(), "upstream": upstream.roots()}
    if "envoy" in target.processes:
        trees["envoy"] = target.roots("envoy")
    for scenario in todo:
        problem = check(target.port, scenario)
        if problem != "ok":
            print(f"| {scenario.label} | {'yes' if scenario.stream else 'no'} | check failed: {problem} |", flush=True)
            print(log_tails(workdir, target.name), file=sys.stderr)
            continue
        script = workdir / f"{target.name}-{scenario.row}-{scenario.stream}.lua"
        lua_script(script, scenario)
        for connections in CONCURRENCY:
            try:
                load = run_load(target.port, script, connections, args, trees)
            except (ValueError, subprocess.CalledProcessError) as error:
                print(f"| {scenario.label} | {'yes' if scenario.stream else 'no'} | {connections} | wrk: {error} |")
                continue
            results["load"][(target.name, scenario.row, scenario.stream, connections)] = load
            print(load_row(scenario, connections, load), flush=True)
        if scenario.stream:
            results["ttft"][scenario.label] = time_to_first_token(target.port, scenario, args.duration, args.warmup)


def log_tails(workdir: Path, kind: str, lines: int = 5) -> str:
    tails = []
    for log in sorted(workdir.glob(f"{kind}*.log")):
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
        tails.append(f"--- {log.name}:\n" + "\n".join(tail))
    return "\n".join(tails)


def print_ttft(ttft: dict[str, FirstToken]) -> None:
    if not ttft:
        return
    print("\nTime to first token (first SSE data byte), streamed, concurrency 1, one keep-alive connection:\n")
    print(
        table_header(
            (
                "path",
                "requests",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "full answer p50 ms",
                "added p50 vs bare Envoy",
                "non-200",
            )
        )
    )
    bare = ttft.get("bare Envoy")
    for label, t in ttft.items():
        added = f"+{t.p50 - bare.p50:.2f}" if bare and label != "bare Envoy" else "-"
        print(f"| {label} | {t.requests} | {t.p50:.2f} | {t.p99:.2f} | {t.total_p50:.2f} | {added} | {t.non200} |")


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed and is not on PATH: sudo apt-get install -y wrk (Debian/Ubuntu)")
    todo = scenarios(args.rows)
    results: dict = {"load": {}, "ttft": {}, "notes": [NOTE]}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aigw-bench-datapath-") as tmp:
        workdir = Path(tmp)
        print(machine_line())
        print(f"{args.duration:g} s per row after {args.warmup:g} s warm-up; wrk -t1; ~{REQUEST_BYTES} B requests")
        if args.token_limit:
            where = "a redis-server (its CPU counted in the proxy's)" if args.redis else "the translator's memory"
            print(f"gateway rows under a token budget counted in {where}")
        if args.client_check:
            kinds = {"keys": "apiKeyAuth", "jwt": "jwt", "jwt-rules": "jwt and authorization"}
            print(f"gateway rows under a SecurityPolicy: {kinds[args.client_check]}")
        print()
        print(table_header(LOAD_COLUMNS), flush=True)
        upstream = start_upstream(workdir)
        try:
            for kind in ("bare", "gateway", "litellm"):
                mine = [s for s in todo if s.target == kind]
                if not mine:
                    continue
                try:
                    target = start_target(kind, workdir, upstream, args)
                except (TimeoutError, OSError, subprocess.CalledProcessError) as error:
                    print(f"| {kind} | - | could not start: {error} |", flush=True)
                    print(log_tails(workdir, kind), file=sys.stderr)
                    continue
                if target is None:
                    print(f"| {kind} | - | LiteLLM unavailable, rows skipped |", flush=True)
                    continue
                if target.version:
                    results["notes"].append(
                        f"LiteLLM {target.version}: one uvicorn worker, no database, spend and error logs off, no "
                        "callbacks, no retries, LITELLM_LOCAL_MODEL_COST_MAP=True, LITELLM_LOG=ERROR."
                    )
                try:
                    bench_target(target, mine, upstream, workdir, args, results)
                finally:
                    target.stop()
        finally:
            upstream.stop()
        print_ttft(results["ttft"])
        print("\nGoals:\n")
        print("\n".join(ratio_lines(results["load"], results["ttft"])))
        print("\n" + "\n".join(f"- {note}" for note in results["notes"]))
        print(f"\n(total run time {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
