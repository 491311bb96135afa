"""EnvoyProcess leaves nothing behind: its own temporary directory goes on stop(), and with output
callbacks Envoy's access log and log lines never reach the disk."""

from __future__ import annotations

import threading
from pathlib import Path

from aigw_xds.envoy.process import STDERR_TAIL_LINES, EnvoyProcess
from tests.e2e.harness.processes import free_port


def _admin_only(port: int) -> dict:
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}


def test_stop_removes_the_temporary_directory_it_made_and_keeps_a_given_one(tmp_path: Path):
    own = EnvoyProcess(_admin_only(1), admin_port=1)
    assert own.workdir is not None and own.workdir.is_dir() and own.workdir.name.startswith("aigw-envoy-")
    own.stop()
    assert not own.workdir.exists()
    given = EnvoyProcess(_admin_only(1), admin_port=1, workdir=tmp_path)
    (tmp_path / "keep").write_text("x")
    given.stop()
    assert (tmp_path / "keep").exists()


def test_output_callbacks_keep_envoys_output_off_the_disk():
    port = free_port()
    lines: list[str] = []
    got = threading.Event()

    def on_stderr(line: str) -> None:
        lines.append(line)
        got.set()

    envoy = EnvoyProcess(_admin_only(port), admin_port=port, log_level="info", on_stdout=print, on_stderr=on_stderr)
    envoy.start()
    try:
        envoy.wait_ready()
        assert got.wait(10), "Envoy's log lines reach the callback"
        assert envoy.workdir is not None
        assert sorted(p.name for p in envoy.workdir.iterdir()) == ["bootstrap.json"]
    finally:
        envoy.stop()
    assert not envoy.workdir.exists()
    assert envoy.stderr_text().splitlines() == lines[-STDERR_TAIL_LINES:]
