"""Run an example from examples/ under `aigw-xds run` against fake providers.

`aigw_fakes.rewrite` (what examples/with_fakes.py runs) rewrites the example (its provider Backends
pointed at loopback fakes, BackendTLSPolicies of those dropped, substituted variables set); here the
fakes run in the test process so a test can inspect what they received and make them fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aigw_fakes import FakeProvider, rewrite
from tests.e2e.harness import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


# Example -> the Backends of it that rewrite.for_fakes points at a fake.
RUNNABLE = {
    "anthropic": {"anthropic"},
    "azure-openai": {"azure-openai"},
    "multi-provider": {"openai", "anthropic"},
    "provider-fallback": {"openai", "anthropic"},
    "traffic-splitting": {"openai", "azure-openai"},
    "token-costs": {"openai"},
}


def example_dirs() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


@dataclass
class Running:
    port: int
    log: Path
    process: subprocess.Popen
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def launch(args: list[str], log: Path, env: Mapping[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """A command whose output (stdout and stderr) goes to log, unbuffered."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )


def _wait_ready(process: subprocess.Popen, log: Path) -> None:
    def ready() -> bool:
        text = log.read_text(errors="replace")
        if process.poll() is not None:
            raise AssertionError(f"aigw-xds run exited with {process.returncode}:\n{text[-3000:]}")
        return "aigw-xds ready:" in text

    wait_for(ready, timeout=60, what="aigw-xds ready line")


def _stop(process: subprocess.Popen, log: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"aigw-xds run did not stop on SIGINT:\n{log.read_text()[-3000:]}") from None


@contextmanager
def run_example(
    example: str, workdir: Path, fakes: Mapping[str, FakeProvider], keys: Mapping[str, str]
) -> Iterator[Running]:
    """`aigw-xds run` on examples/<example>, its Backends named in `fakes` pointed at those fakes,
    the substituted variables set from `keys`, the listener on a free port."""
    listen = free_port()
    rewritten = rewrite.for_fakes(
        rewrite.load_documents(EXAMPLES / example),
        {name: fake.port for name, fake in fakes.items()},
        listener_port=listen,
        annotate=False,
        keys=keys,
    )
    assert set(rewritten.fakes) == set(fakes), f"provider Backends of {example}: {sorted(rewritten.fakes)}"
    assert set(rewritten.env) == set(keys), f"substituted variables of {example}: {sorted(rewritten.env)}"
    config = workdir / f"{example}.yaml"
    config.write_text(rewritten.text())
    log = workdir / "run.log"
    process = launch(
        [
            sys.executable,
            "-m",
            "aigw_xds",
            "--log-format",
            "json",
            "run",
            str(config),
            "--admin-port",
            str(free_port()),
        ],
        log,
        {**os.environ, **rewritten.env},
    )
    try:
        _wait_ready(process, log)
        yield Running(listen, log, process, config)
    finally:
        _stop(process, log)


def fake_requests(port: int) -> list[dict]:
    """What an out-of-process fake received (GET /__fake/requests)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__fake/requests", timeout=5) as response:
        return json.loads(response.read())
