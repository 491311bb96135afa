"""Run an example from examples/ under `aigw-xds run` against fake providers.

`aigw_fakes.rewrite` (what examples/with_fakes.py runs) rewrites the example (its provider Backends
pointed at loopback fakes, BackendTLSPolicies of those dropped, substituted variables set); here the
fakes run in the test process so a test can inspect what they received and make them fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aigw_fakes import FakeProvider, rewrite
from tests.e2e.harness.control_plane import run_command, stop_run, wait_run_ready
from tests.e2e.harness.processes import free_port, launch

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
    "rate-limits": {"openai"},
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
    process = launch(run_command(str(config), admin_port=free_port()), log, {**os.environ, **rewritten.env})
    try:
        wait_run_ready(process, log)
        yield Running(listen, log, process, config)
    finally:
        stop_run(process, log)


def fake_requests(port: int) -> list[dict]:
    """What an out-of-process fake received (GET /__fake/requests)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__fake/requests", timeout=5) as response:
        return json.loads(response.read())
