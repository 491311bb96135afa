"""The control plane as a subprocess: `aigw-xds serve` (ControlPlaneProcess) and `aigw-xds run`
(run_command, wait_run_ready, stop_run). In-process, with Envoy: gateway.run_gateway()."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from aigw_xds.processes import stop_process

from .processes import Exited, accepting, die_with_parent, json_lines, wait_for


class ControlPlaneProcess:
    def __init__(
        self, config: Path | None, port: int, workdir: Path, extra: tuple[str, ...] = ("--no-translator",)
    ) -> None:
        """config None: the source is in `extra` (e.g. --kubernetes --kubeconfig FILE)."""
        self.config = config
        self.port = port
        self.log = workdir / f"control-plane-{port}.log"
        self.extra = extra
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aigw_xds",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "serve",
                *((str(self.config),) if self.config is not None else ()),
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.extra,
            ],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_parent,
        )
        wait_for(self._listening, timeout=30, what="control plane listening")

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise Exited(f"control plane exited: {self.log.read_text()[-3000:]}")
        return accepting(self.port)

    def events(self) -> list[dict]:
        return json_lines(self.log)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        if hasattr(self, "log_file"):
            self.log_file.close()


def run_command(*args: str, admin_port: int, json_log: bool = False) -> list[str]:
    """`aigw-xds run ARGS --admin-port ADMIN_PORT` (launch it with processes.launch): its console
    lines, as a user sees them; with json_log, `aigw-xds --log-format json run ...`."""
    log_format = ["--log-format", "json"] if json_log else []
    return [sys.executable, "-m", "aigw_xds", *log_format, "run", *args, "--admin-port", str(admin_port)]


def wait_run_ready(process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until `aigw-xds run` said it is ready (its ready line, or with --log-format json its "ready"
    event); an AssertionError with its output if it exited."""

    def ready() -> bool:
        text = log.read_text(errors="replace")
        if process.poll() is not None:
            raise AssertionError(f"aigw-xds run exited with {process.returncode}:\n{text[-3000:]}")
        return "aigw-xds ready:" in text or any(
            isinstance(e, dict) and e.get("event") == "ready" for e in json_lines(log)
        )

    wait_for(ready, timeout=timeout, what="aigw-xds ready")


def stop_run(process: subprocess.Popen, log: Path) -> None:
    """SIGINT, as Ctrl-C; an AssertionError (after a kill) if it does not stop within 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"aigw-xds run did not stop on SIGINT:\n{log.read_text()[-3000:]}") from None
