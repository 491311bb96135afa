"""Child processes: translator workers bind a port of their own and report it; the control plane
points Envoy at every worker it started."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aigw_xds.control_plane import ControlPlane
from aigw_xds.processes import start_translator_worker
from aigw_xds.xds.build import BuildSettings, translator_addresses
from tests.e2e.harness.processes import accepting

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "basic"


async def test_workers_report_their_ports_and_envoy_is_pointed_at_all_translators():
    settings = BuildSettings(translator_address="127.0.0.1:0")
    plane = ControlPlane(
        EXAMPLE,
        listen="127.0.0.1:0",
        settings=settings,
        translator_listen="127.0.0.1:0",
        watch=False,
        translator_workers=3,
    )
    try:
        await plane.start()
        assert plane.translator is not None
        worker_ports = [worker.port for worker in plane._workers]
        assert len(worker_ports) == 2 and all(worker_ports)
        addresses = translator_addresses(plane.settings.translator_address)
        ports = [a.socket_address.port_value for a in addresses]
        assert ports == [plane.translator.port, *worker_ports]
        assert all(accepting(port) for port in worker_ports)  # serving once start() returned
        processes = [worker.process for worker in plane._workers]
    finally:
        await plane.stop(0)
    assert all(process.poll() is not None for process in processes)


async def test_a_worker_that_gets_no_configuration_is_reported_and_stopped():
    with socket.socket() as nobody:  # a port that serves no xDS: the worker binds but never serves
        nobody.bind(("127.0.0.1", 0))
        worker = await start_translator_worker(nobody.getsockname()[1])
        assert worker.port > 0
        with pytest.raises(RuntimeError, match="did not start"):
            await worker.serving(timeout=1.0)
        await worker.stop()
    assert worker.process.poll() is not None


def test_default_translator_workers_is_half_the_usable_cores(monkeypatch) -> None:
    import os

    from aigw_xds.processes import default_translator_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert default_translator_workers() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert default_translator_workers() == 1


def test_translator_workers_flag_refuses_less_than_one(capsys) -> None:

    from aigw_xds.cli import parser

    assert parser().parse_args(["run", "x", "--translator-workers", "3"]).translator_workers == 3
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--config", "x", "--translator-workers", "0"])
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("listen", "client_ca", "trusted"),
    [
        ("127.0.0.1:18000", None, True),
        ("[::1]:18000", None, True),
        ("unix:/run/aigw.sock", None, True),
        ("0.0.0.0:18000", None, False),
        ("10.0.0.5:18000", None, False),
        ("0.0.0.0:18000", "ca.pem", True),
    ],
)
def test_backend_keys_reach_envoy_only_when_every_xds_client_is_trusted(listen, client_ca, trusted) -> None:
    """Loopback or mTLS: Envoy may get keys as SDS secrets (routes it serves alone); otherwise the
    keys stay in the translator."""
    from aigw_xds.xds.server import TLSFiles

    tls = TLSFiles("cert.pem", "key.pem", client_ca) if client_ca else None
    plane = ControlPlane(EXAMPLE, listen=listen, tls=tls)
    assert plane._envoys_trusted() is trusted


async def test_workers_log_as_their_control_plane_and_stop_without_a_word(capfd):
    """`run` writes console lines: its workers too (they write to the same output), and stopping
    does not make each of them warn that its control plane went away."""
    from aigw_xds.logging_setup import configure

    configure("info", "console")
    plane = ControlPlane(
        EXAMPLE,
        listen="127.0.0.1:0",
        settings=BuildSettings(translator_address="127.0.0.1:0"),
        translator_listen="127.0.0.1:0",
        watch=False,
        translator_workers=3,
    )
    try:
        await plane.start()
        for worker in plane._workers:
            assert worker.process.args[worker.process.args.index("--log-format") + 1] == "console"
    finally:
        await plane.stop(2.0)  # as `run` stops: the workers had time to notice the server going
        configure("info", "json")
    err = capfd.readouterr().err
    assert "xds_stream_failed" not in err and not any(line.startswith("{") for line in err.splitlines()), err


def test_children_start_when_the_control_plane_is_pid_1(tmp_path: Path):
    """In a container aigw-xds is often PID 1 (a pod's main process, `docker run` without an init):
    a check in the child that took a parent of PID 1 for an adoption made every translator worker
    and Envoy kill itself before it started (found by review). `serve` with translator workers, as
    PID 1 of a PID namespace of its own, starts them and they run."""
    import os
    import subprocess
    import sys
    import textwrap

    from tests.e2e.harness.processes import free_port

    if subprocess.run(["unshare", "-pf", "--mount-proc", "true"], capture_output=True).returncode != 0:
        pytest.skip("this host gives no PID namespace (unshare -p needs root)")
    port = free_port()
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from aigw_xds.control_plane import ControlPlane
        from aigw_xds.xds.build import BuildSettings
        assert os.getpid() == 1

        async def main():
            settings = BuildSettings(translator_address="127.0.0.1:0")
            plane = ControlPlane(
                {str(EXAMPLE)!r}, listen="127.0.0.1:{port}", settings=settings,
                translator_listen="127.0.0.1:0", watch=False, translator_workers=2,
            )
            await plane.start()
            print("workers", [w.process.poll() for w in plane._workers], flush=True)
            await plane.stop(0)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    done = subprocess.run(
        ["unshare", "-pf", "--mount-proc", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0 and "workers [None]" in done.stdout, done.stderr[-3000:]
