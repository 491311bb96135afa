"""`aigw-xds run`: the control plane, the translator and a local Envoy in one command, with the
configuration watched for edits. For a developer's laptop.

Backends annotated `aigw-xds.dev/fake-provider: openai|anthropic|azure` on a loopback IP endpoint
are served by the bundled fake providers (aigw_fakes.annotated, the `fakes` extra), so examples run
without a provider account.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from aigw_translator.arguments import listen_problem

from .compile.attachment import SERVED_PROTOCOLS
from .console import Console, mcp_changes_text, row_changes
from .control_plane import ControlPlane, NoGatewayCompiled
from .controller import log_diagnostics
from .diagnostics import Diagnostic, error
from .envoy.bootstrap import bootstrap
from .envoy.process import DRAIN_TIME_S, EnvoyProcess
from .resources import ResourceSet
from .sources.files import FileSource
from .stop_signals import StopSignals
from .xds.build import BuildSettings

if TYPE_CHECKING:
    from aigw_fakes.annotated import RunningFakes
    from aigw_translator.budgets import BudgetOptions

    from .compile.ir import GatewayIR

log = structlog.get_logger(__name__)


class RunError(RuntimeError):
    """A problem the user can fix; its message is printed as one line."""


# In a checkout: the script that runs a configuration against the bundled fake providers.
WITH_FAKES = Path("examples/with_fakes.py")


def _no_gateway_compiled(errors: list[str], config: Path) -> RunError:
    """Run's first compile failed; where a provider key's variable is missing and the checkout has
    examples/with_fakes.py, how to try the configuration without an account (a new user's trial met
    the rate-limits example's OPENAI_API_KEY)."""
    message = "no Gateway compiled" + (":\n  " + "\n  ".join(errors) if errors else "")
    unset = any("environment variable" in e and ("is not set" in e or "is empty" in e) for e in errors)
    if unset and WITH_FAKES.is_file():
        python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
        message += (
            f"\n  (without an account: {python} {WITH_FAKES} {config} runs it against the bundled fake providers)"
        )
    return RunError(message)


@dataclass
class RunOptions:
    config: Path
    gateway: str | None = None
    admin_port: int = 9901
    xds_port: int = 0
    envoy_log_level: str = "warning"
    # Where the Gateway's listeners bind: loopback unless asked (--listen-address 0.0.0.0), since
    # anyone who reaches the listener spends the providers' keys.
    listen_address: str = "127.0.0.1"
    # Translator processes, the control plane's own included.
    translator_workers: int = 1
    console: Console = field(default_factory=Console)  # what run tells its user, and in which format
    # Where rate limits and quotas are counted (None: in the control plane's translator).
    budgets: BudgetOptions | None = None


def _start_fakes(resources: ResourceSet) -> RunningFakes:
    """The fake providers the configuration's Backends ask for, started (imported here: the fakes
    are an extra, and a configuration without the annotation needs none of it)."""
    from aigw_fakes.annotated import start_annotated

    return start_annotated(resources)


def _fakes_following(fakes: RunningFakes, resources: ResourceSet, console: Console) -> RunningFakes:
    """The fakes an edit asks for: the running ones when it asks for the same, else those it asks
    for started anew (a fake's port or key edited, one added or removed), said on the console. An
    edit whose fakes cannot be made keeps the running ones; one whose fakes cannot start (a port
    taken) is said, and no fake runs until an edit fixes it."""
    from aigw_fakes.annotated import FakesError, RunningFakes

    try:
        if fakes.serves(resources):
            return fakes
    except FakesError as exc:
        console.error(f"{exc} (the fake providers stay as they were)")
        return fakes
    fakes.stop()
    try:
        started = _start_fakes(resources)
    except FakesError as exc:
        console.error(f"{exc} (no fake provider runs until an edit fixes it)")
        return RunningFakes()
    where = ", ".join(
        f"{s.provider} on {_shown(s.host)}:{s.port}" + (f" (pods {' '.join(s.pods)})" if s.pods else "")
        for s in started.specs
    )
    if where:
        console.say("fakes_started", f"aigw-xds: fake providers started again as edited: {where}", fakes=where)
    else:
        console.say("fakes_stopped", "aigw-xds: fake providers stopped: the configuration asks for none now")
    return started


def _shown(address: str) -> str:
    """An address as it reads before a port: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def _port_problem(address: str, port: int) -> str | None:
    """Why Envoy could not listen on port `port` of `address`, as a test bind tells (None: it can)."""
    return listen_problem(f"{_shown(address)}:{port}")


def _check_port_free(address: str, port: int, what: str) -> None:
    problem = _port_problem(address, port)
    if problem:
        raise RunError(f"port {port} on {_shown(address)}: {problem}; it is {what}")


def _refuse_flag_ports(gateway: GatewayIR, ports: dict[str, int]) -> None:
    """A port given by a flag that is also a listener's: the one bound first (xDS) or by Envoy's admin
    would take the listener's place, which would then fail to bind (said as "in use" by whatever
    holds it, or not at all: Envoy's admin answered the clients)."""
    for flag, port in ports.items():
        if port and port in {listener.port for listener in gateway.listeners}:
            raise RunError(f"{flag} {port} is also the port of a listener of Gateway {gateway.fleet}: choose another")


@dataclass
class LocalListeners:
    """The admission of `run` (controller.Admission): its Envoy is on this machine, so a listener
    moved to a port something else holds is refused before it is published. Published, Envoy would
    drop the listener it serves (a listener is named after its port: a new port is a new listener)
    and fail to bind the new one, serving nothing; refused, the last good configuration keeps
    serving and the error names the file, the field and the port. Only the fleet Envoy serves is
    looked at (`fleet`, set once it is chosen). A port the bind test finds taken is Envoy's own when
    Envoy's process holds its listening socket (an Envoy that refused a move, a port taken
    meanwhile, keeps the listeners before: every edit after such a refusal was refused as "in use");
    until Envoy runs, the served listeners' ports are taken for its."""

    address: str
    fleet: str | None = None
    # The ports the running fake providers hold (run keeps it current).
    fake_ports: set[int] = field(default_factory=set)
    envoy_pid: int | None = None  # run's Envoy, once started
    # Envoy's admin port: Envoy's process holds it, but no listener may take it (a new-user trial
    # moved the Gateway there: published, Envoy refused the listener and the console said it listened).
    admin_port: int = 0

    def _envoys(self, port: int, served: GatewayIR | None) -> bool:
        if port == self.admin_port:
            return False
        if self.envoy_pid is not None:
            return listening_in(self.envoy_pid, port)
        return served is not None and port in {listener.port for listener in served.listeners}

    def __call__(self, gateway: GatewayIR, served: GatewayIR | None, resources: ResourceSet) -> tuple[Diagnostic, ...]:
        if gateway.fleet != self.fleet:
            return ()
        loaded = resources.get("Gateway", gateway.key.namespace, gateway.key.name)
        if loaded is None:  # it compiled, so it is there
            return ()
        declared = [(i, d) for i, d in enumerate(loaded.resource.spec.listeners) if d.protocol in SERVED_PROTOCOLS]
        # (Not served yet: run is starting, and stops on it.)
        advice = "the configuration served before keeps serving: " if served is not None else ""
        advice += "free the port or choose another" + (", and save again" if served is not None else "")
        errors = []
        for listener in gateway.listeners:
            problem = _port_problem(self.address, listener.port)
            if problem and not self._envoys(listener.port, served):
                index = next(i for i, d in declared if d.port == listener.port)
                errors.append(
                    error(
                        f"port {listener.port} on {_shown(self.address)}: {problem} ({advice})",
                        loaded.origin,
                        gateway.key,
                        f"spec.listeners[{index}].port",
                    )
                )
        errors.extend(self._fake_problems(gateway, resources, advice))
        return tuple(errors)

    def _fake_problems(self, gateway: GatewayIR, resources: ResourceSet, advice: str) -> list[Diagnostic]:
        """A fake provider moved to a port something else holds, or to a listener's: refused too.
        Published, the fakes (started after it) could not start, and every fake backend failed."""
        try:
            from aigw_fakes.annotated import FakesError, fake_providers
        except ImportError:  # without the fakes extra, run says it when the configuration asks for fakes
            return []
        try:
            specs = fake_providers(resources)
        except FakesError:  # said by the fakes themselves
            return []
        listener_ports = {listener.port for listener in gateway.listeners}
        errors = []
        for spec in specs:
            if spec.key is None or (spec.port in self.fake_ports and spec.port not in listener_ports):
                continue
            if spec.port in listener_ports:
                problem: str | None = f"it is also the port of a listener of Gateway {gateway.fleet}"
            else:
                problem = _port_problem(spec.host, spec.port)
            loaded = resources.get("Backend", spec.key.namespace, spec.key.name)
            if problem and loaded is not None:
                message = (
                    f"the fake {spec.provider} provider cannot listen on {_shown(spec.host)}:{spec.port}: {problem}"
                )
                errors.append(
                    error(f"{message} ({advice})", loaded.origin, spec.key, f"spec.endpoints[{spec.endpoint}].ip.port")
                )
        return errors


def listening_in(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (Linux's /proc: its socket
    descriptors against the listening sockets of /proc/net/tcp and tcp6; False where unreadable)."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    links = []
    for fd in descriptors:
        with contextlib.suppress(OSError):  # closed since it was listed (the listing's own, for one)
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    inodes = {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl, local address:port (hex), remote, state (0A: LISTEN), ..., inode
            listening = len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
            if listening and fields[9] in inodes:
                return True
    return False


async def run(options: RunOptions) -> int:
    signals = StopSignals(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: its terminal closed
    console = options.console
    console.say(
        "starting",
        f"aigw-xds: starting the control plane and the translator for {options.config} ...",
        config=str(options.config),
    )
    settings = BuildSettings(
        translator_address="127.0.0.1:0",
        mcp_address="127.0.0.1:0",
        listener_address=options.listen_address,
        shared_counters=bool(options.budgets and options.budgets.shared),
    )
    listeners = LocalListeners(options.listen_address, admin_port=options.admin_port)
    plane = ControlPlane(
        options.config,
        listen=f"127.0.0.1:{options.xds_port}",
        settings=settings,
        translator_listen="127.0.0.1:0",
        mcp_listen="127.0.0.1:0",
        translator_workers=options.translator_workers,
        budgets=options.budgets,
        require_gateway=True,
        admission=listeners,
        envoy_drain_s=DRAIN_TIME_S,
    )
    fakes: RunningFakes | None = None
    envoy: EnvoyProcess | None = None
    try:
        # The fakes first: they bind the ports the configuration names, before the control plane
        # and the translator take ports the kernel picks (which could otherwise be one of those).
        resources = FileSource(options.config).load()
        readable = not any(d.is_error for d in resources.diagnostics)  # else: a Gateway may be in what did not read
        if readable and not any(key.kind == "Gateway" for key in (*resources.items, *resources.bad_keys)):
            raise RunError(
                f"no Gateway in {options.config}: run serves the Gateways it reads (kind: Gateway, "
                "gateway.networking.k8s.io/v1, with its GatewayClass; examples/quickstart has one)"
            )
        fakes = _start_fakes(resources)
        listeners.fake_ports = {spec.port for spec in fakes.specs}
        try:
            await plane.start()
        except NoGatewayCompiled as exc:  # said here, not as a control plane "waiting for Gateways"
            if console.json:  # each a diagnostic event too, with its file and field
                log_diagnostics(exc.diagnostics)
            raise _no_gateway_compiled(exc.errors, options.config) from None
        gateways = plane.compiled()
        if not gateways:
            raise _no_gateway_compiled([str(d) for d in plane.errors()], options.config)
        fleet = options.gateway or sorted(gateways)[0]
        if fleet not in gateways:
            present = (*plane.resources.items, *plane.resources.bad_keys) if plane.resources is not None else ()
            there = any(key.kind == "Gateway" and key.ref == fleet for key in present)
            why = "did not compile" if there else f"is not in {options.config}"
            raise RunError(f"gateway {fleet} {why} (compiled: {', '.join(sorted(gateways))})")
        if len(gateways) > 1 and options.gateway is None:
            console.say(
                "gateway_chosen",
                f"aigw-xds: several Gateways compiled; running {fleet} (choose with --gateway)",
                fleet=fleet,
                compiled=sorted(gateways),
            )
        gateway = gateways[fleet]
        listeners.fleet = fleet
        if options.listen_address in ("127.0.0.1", "0.0.0.0", "::"):  # where Envoy's admin and xDS listen too
            _refuse_flag_ports(gateway, {"--admin-port": options.admin_port, "--xds-port": options.xds_port})
        assert plane.resources is not None  # loaded by start
        taken = listeners(gateway, None, plane.resources)  # the file, Gateway and field, as an edit's
        if taken:
            raise RunError(str(taken[0]).removeprefix("error: "))
        _check_port_free("127.0.0.1", options.admin_port, "Envoy's admin port (change it with --admin-port)")
        console.say("starting_envoy", f"aigw-xds: starting Envoy for {fleet} ...", fleet=fleet)
        envoy = EnvoyProcess(
            bootstrap(
                xds_host="127.0.0.1",
                xds_port=plane.port,
                fleet=fleet,
                node_id=f"aigw-run-{fleet}",
                # Delta: an edit sends Envoy what changed, where state-of-the-world resends every
                # cluster (an edit of 10,000 routes served in 0.56 s instead of 0.83-0.94 s, p50).
                delta=True,
                admin_port=options.admin_port,
            ),
            admin_port=options.admin_port,
            log_level=options.envoy_log_level,
            on_stdout=console.access,
            on_stderr=partial(console.envoy, shown_from=options.envoy_log_level),
        )
        envoy.start()
        listeners.envoy_pid = envoy.process.pid if envoy.process is not None else None
        await asyncio.get_running_loop().run_in_executor(None, envoy.wait_ready)
        host = "localhost" if options.listen_address in ("127.0.0.1", "0.0.0.0", "::") else options.listen_address
        host = f"[{host}]" if ":" in host else host

        def urls(gateway: GatewayIR) -> list[str]:
            return [f"{'https' if lst.tls else 'http'}://{host}:{lst.port}" for lst in gateway.listeners]

        console.ready(
            urls(gateway),
            fleet=fleet,
            admin=f"http://127.0.0.1:{options.admin_port}",
            xds=f"127.0.0.1:{plane.port}",
            config=str(options.config),
        )
        console.models(gateway)
        if not ipaddress.ip_address(options.listen_address).is_loopback:  # reachable from elsewhere
            where = f"--listen-address {options.listen_address}"
            console.say(
                "open_to_the_network",
                f"aigw-xds: the listeners take connections from the network ({where}): whoever reaches them "
                "spends the providers' keys",
                listen_address=options.listen_address,
            )
        shown_for: GatewayIR | None = gateway
        listening = urls(gateway)

        def show_changes(followed: ResourceSet | None, kept: set[str]) -> None:
            """After each reload: the fake providers it asks for (an edit of a Backend's annotation
            alone publishes nothing), the rows of the model table it changed (a model renamed,
            added, sent elsewhere), and the listeners when they moved (a port edited): the console
            is where a developer looks."""
            nonlocal shown_for, listening, fakes
            # (An edit not served, its fleet kept as it was, leaves them as they serve it.)
            if fakes is not None and followed is not None and fleet not in kept:
                fakes = _fakes_following(fakes, followed, console)
                listeners.fake_ports = {spec.port for spec in fakes.specs}
            now = plane.compiled().get(fleet)
            if now is shown_for:
                return
            if now is None:  # its files deleted, or its document: nothing is served
                if plane.cache.get(fleet) is None:
                    shown_for, listening = None, []
                    gone = f"Gateway {fleet} is no longer in {options.config}: nothing is served until it is back"
                    console.say("gateway_gone", f"aigw-xds: {gone}", fleet=fleet)
                return
            moved = urls(now)
            if moved != listening:  # a port edited, or the Gateway back
                listening = moved
                console.say("listening", f"aigw-xds listening: {', '.join(listening)}", listeners=listening)
            if shown_for is None:  # back: what it serves, as at the start
                console.models(now)
            else:
                removed, added = row_changes(shown_for, now)
                if removed or added:
                    console.models_changed(fleet, removed, added)
                if mcp_changed := mcp_changes_text(shown_for, now):
                    console.mcp_changed(fleet, mcp_changed)
            shown_for = now

        def after_reload() -> None:  # on the loop's next turn: its errors are not the reload's
            # (What this reload applied and kept: another may come before that turn.)
            asyncio.get_running_loop().call_soon(show_changes, plane.resources, plane.kept())

        plane.on_applied = after_reload
        left_out = [str(e) for e in plane.errors()]
        if left_out:  # what they name is not served: said beside the table it explains
            console.say(
                "serving_with_errors",
                f"aigw-xds: {len(left_out)} error(s) above: what they name is left out, and the rest served "
                "without it, until they are fixed "
                f"(watching {options.config})",
                errors=left_out,
            )
        signals.started()
        process = envoy.process
        assert process is not None  # started above
        envoy_exit = asyncio.get_running_loop().run_in_executor(None, process.wait)
        waiting: list[asyncio.Future[Any]] = [asyncio.ensure_future(signals.requested.wait()), envoy_exit]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if envoy_exit in done:
            raise RunError(f"Envoy exited with status {process.returncode}:\n{envoy.stderr_text()[-3000:]}")
        console.say("shutting_down", "aigw-xds: shutting down")
        return 0
    except asyncio.CancelledError:
        if not signals.cut_start_short():
            raise
        console.say("shutting_down", "aigw-xds: shutting down (asked to stop while starting)")
        return 0
    except RuntimeError as exc:
        if isinstance(exc, RunError):
            raise
        raise RunError(str(exc)) from exc
    finally:
        if envoy is not None:
            console.stopping()  # also when interrupted before ready: its shutdown warnings are no problem
            envoy.stop()
        if fakes is not None:
            fakes.stop()
        await plane.stop()
