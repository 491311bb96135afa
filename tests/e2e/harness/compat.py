"""Envoy AI Gateway's published examples (shared/compat/envoy-ai-gateway-examples, beside the
checkout, or AIGW_COMPAT_EXAMPLES) run by `aigw-xds run`, unchanged but for their provider Backends
pointed at loopback servers and their listener port (aigw_fakes.rewrite)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aigw_fakes import rewrite

from .control_plane import run_command, stop_run, wait_run_ready
from .processes import free_port, launch

COMPAT = Path(
    os.environ.get("AIGW_COMPAT_EXAMPLES")
    or Path(__file__).resolve().parents[4] / "shared" / "compat" / "envoy-ai-gateway-examples"
)


@contextmanager
def run_compat(files: list[str], workdir: Path, ports: dict[str, int], env: dict[str, str]) -> Iterator[str]:
    """`aigw-xds run` on Envoy AI Gateway example files, unchanged but for the provider Backends
    named in `ports` pointed at loopback servers; yields the gateway's URL."""
    listen = free_port()
    documents = [d for name in files for d in rewrite.load_documents(COMPAT / name)]
    rewritten = rewrite.for_fakes(documents, ports, listener_port=listen, annotate=False)
    assert set(ports) <= set(rewritten.fakes), sorted(rewritten.fakes)
    config = workdir / "compat.yaml"
    config.write_text(rewritten.text())
    log = workdir / "run.log"
    process = launch(run_command(str(config), admin_port=free_port()), log, {**os.environ, **rewritten.env, **env})
    try:
        wait_run_ready(process, log)
        yield f"http://127.0.0.1:{listen}"
    finally:
        stop_run(process, log)
