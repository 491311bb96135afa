"""EnvoyProcess leaves nothing behind: its own temporary directory goes on stop(), and with output
callbacks Envoy's access log and log lines never reach the disk."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from aigw_xds.envoy.process import OWNER_FILE, STDERR_TAIL_LINES, EnvoyProcess, remove_abandoned_workdirs
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


def test_a_directory_whose_owner_died_without_stop_goes_when_the_next_envoy_process_is_made():
    """As after `kill -9` of `run`: its process never reached stop()."""
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from aigw_xds.envoy.process import EnvoyProcess; "
            "print(EnvoyProcess({}, admin_port=1).workdir, flush=True); os._exit(0)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    abandoned = Path(made.stdout.strip())
    assert (abandoned / OWNER_FILE).is_file()
    own = EnvoyProcess(_admin_only(1), admin_port=1)
    try:
        assert not abandoned.exists()
        assert own.workdir is not None and own.workdir.is_dir()  # its own, with a live owner, stays
        assert (own.workdir / OWNER_FILE).read_text() == f"{socket.gethostname()} {os.getpid()}"
    finally:
        own.stop()


def test_only_directories_of_dead_owners_are_removed(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    owners = {
        "aigw-envoy-dead": f"{here} {dead.pid}",
        "aigw-envoy-live": f"{here} {os.getpid()}",
        "aigw-envoy-elsewhere": f"another-{here} {dead.pid}",  # a container sharing /tmp: its pids are its own
        "other-dead": f"{here} {dead.pid}",
    }
    for name, owner in owners.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / OWNER_FILE).write_text(owner)
    (tmp_path / "aigw-envoy-unowned").mkdir()  # no owner file: not known to be abandoned
    assert remove_abandoned_workdirs(tmp_path) == [tmp_path / "aigw-envoy-dead"]
    left = ["aigw-envoy-elsewhere", "aigw-envoy-live", "aigw-envoy-unowned", "other-dead"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left


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
        assert sorted(p.name for p in envoy.workdir.iterdir()) == ["bootstrap.json", OWNER_FILE]
    finally:
        envoy.stop()
    assert not envoy.workdir.exists()
    assert envoy.stderr_text().splitlines() == lines[-STDERR_TAIL_LINES:]
