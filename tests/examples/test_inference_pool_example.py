"""examples/inference-pool as its README runs it: `aigw-xds run examples/inference-pool` (a real
Envoy, the translator, the bundled stand-in endpoint picker and three fake model servers as the
pool's pods) and the README's client, the official OpenAI SDK, as written but for the ports."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness.processes import free_port, interrupt, launch, wait_for

from .running import EXAMPLES

EXAMPLE = EXAMPLES / "inference-pool"


def test_inference_pool_example_serves_the_openai_sdk_as_its_readme_says(tmp_path: Path) -> None:
    listener, picker = free_port(), free_port()
    pods = {port: free_port() for port in (18001, 18002, 18003)}
    text = (EXAMPLE / "pool.yaml").read_text().replace("port: 1975", f"port: {listener}")
    text = text.replace("port: 19092", f"port: {picker}")
    for documented, port in pods.items():
        text = text.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{port}")
    config = tmp_path / "pool.yaml"
    config.write_text(text)
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "aigw_xds", "run", str(config), "--admin-port", str(free_port())]
    process = launch(command, log, {"PATH": "/usr/bin:/bin"}, terminal=True)
    try:
        wait_for(lambda: "aigw-xds ready:" in log.read_text(), timeout=90, what="the ready line")
        assert "meta-llama/Llama-3.1-8B-Instruct  vllm-llama3-8b-instruct (0:1)" in log.read_text()
        readme = (EXAMPLE / "README.md").read_text()
        [client] = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
        code = client.replace("localhost:1975", f"127.0.0.1:{listener}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:] + log.read_text()[-3000:]
        answered = [line.split(" ", 1) for line in done.stdout.splitlines()]
        # The stand-in picks in turn: each pod once, in order, each answering the prompt.
        assert [pod for pod, _ in answered] == [f"pod-127.0.0.1:{port}" for port in pods.values()], done.stdout
        assert all("reply to: hello" in reply for _, reply in answered), done.stdout
        wanted = "backend=vllm-llama3-8b-instruct"
        wait_for(lambda: log.read_text().count(wanted) >= 3, timeout=10, what="three access lines naming the pool")
        assert "gen_ai.usage.input_tokens=7 gen_ai.usage.output_tokens=18" in log.read_text()
        # A request the translator refuses before any pod is asked names no backend.
        refused = urllib.request.Request(
            f"http://127.0.0.1:{listener}/v1/chat/completions",
            data=b"not json",
            headers={"content-type": "application/json", "x-ai-eg-model": "meta-llama/Llama-3.1-8B-Instruct"},
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(refused, timeout=10)
        assert caught.value.code == 400
        wait_for(lambda: "400 model=- backend=- " in log.read_text(), timeout=10, what="the refusal's access line")

        # A pod taken out of the pool while it runs: the stand-ins start again, said on the console,
        # and the picker picks among the two left.
        first, second, third = (f"127.0.0.1:{port}" for port in pods.values())
        config.write_text(config.read_text().replace(f"{first},{second},{third}", f"{second},{third}"))
        said = f"fake providers started again as edited: endpoint-picker on 127.0.0.1:{picker} (pods {second} {third})"
        wait_for(lambda: said in log.read_text(), timeout=30, what="the fakes started again")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:] + log.read_text()[-3000:]
        assert {line.split(" ", 1)[0] for line in done.stdout.splitlines()} == {f"pod-{second}", f"pod-{third}"}
    finally:
        interrupt(process)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]
