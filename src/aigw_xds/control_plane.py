"""The serving control plane: source (files, or the Kubernetes API) -> controller -> snapshot cache ->
gRPC (ADS + CSDS), with the translator (in this process, and its worker processes) kept current. In
Kubernetes mode it also writes status (when it leads: a Lease elects one replica) and answers
health probes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from aigw_translator.arguments import bound_address, listen_problem
from aigw_translator.grpc_start import start_whole
from aigw_translator.health import HealthServer

from .compile.ir import GatewayIR
from .controller import Admission, ApplyReport, Controller, log_diagnostics
from .diagnostics import Diagnostic, first_few
from .envoy.process import ENVOY_DEFAULT_DRAIN_TIME_S
from .issuer_metadata import IssuerDiscovery
from .memory import MemoryTrimmer
from .processes import TranslatorWorker, start_translator_worker
from .resources import ResourceSet
from .sources.files import FileSource
from .xds.authz import Authorizer
from .xds.build import MCP_WITHOUT_TRANSLATOR, BuildSettings, mcp_routes_left_out
from .xds.cache import ANY_FLEET, SnapshotCache
from .xds.server import GRPC_SERVER_OPTIONS, Registry, ReloadableTLS, TLSFiles, TLSMaterial, add_services, bind

if TYPE_CHECKING:
    from aigw_translator.budgets import BudgetOptions
    from aigw_translator.mcp import McpProxy
    from aigw_translator.server import TranslatorServer

    from .kubernetes.api import KubeAPI
    from .kubernetes.ca_configmap import CAPublisher
    from .kubernetes.leader import LeaderElector
    from .kubernetes.status_writer import StatusWriter
    from .sources.kubernetes import KubernetesSource

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class KubernetesOptions:
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    controller_name: str = ""
    lease_namespace: str = "aigw-system"
    lease_name: str = "aigw-xds"
    lease_timings: tuple[float, float, float] = (15.0, 10.0, 2.0)  # duration, renew deadline, retry period
    # Serve xDS with the certificate of this Secret (namespace, name), created when missing
    # (kubernetes/tls_secret.py); None: the given TLSFiles, or plaintext.
    tls_secret: tuple[str, str] | None = None
    tls_service: tuple[str, str] = ("aigw-system", "aigw-xds")  # the Service the certificate names
    tls_client_ca: str | None = None  # require client certificates signed by this CA (gRPC has no optional ones)
    # Seconds between looks at the Secret while serving: a renewal, or another replica's new Secret
    # (one deleted and made again), is served within a minute, so replicas do not stay on two CAs.
    tls_recheck: float = 60.0


# How long the first load waits for the metadata of the OAuth issuers its MCPRoutes need.
ISSUERS_FIRST_WAIT_S = 5.0
RELEASE_CHECK_S = 1.0  # how often, at least, held route scopes are looked at (scope_hold.py)

# The servers a control plane listens with, as its errors name them (CannotListen.what).
XDS_SERVER, TRANSLATOR, HEALTH_ENDPOINT = "the xDS server", "the translator", "the health endpoint"
MCP_PROXY = "the MCP proxy"


class CannotListen(OSError):
    """One of the control plane's servers (`what`) cannot listen on `address`: the cause as far as
    a test bind tells (`problem`, asked when not given)."""

    def __init__(self, what: str, address: str, problem: str | None = None) -> None:
        self.what, self.address = what, address
        super().__init__(
            f"{what} cannot listen on {address}: {problem or listen_problem(address) or 'binding it failed'}"
        )


class NoGatewayCompiled(ValueError):
    """The first load compiled no Gateway, for the errors it names (`diagnostics`; `errors`: one
    line each). They were not logged: whoever catches it says them."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        self.errors = [str(d) for d in diagnostics]
        super().__init__("no Gateway compiled: " + "; ".join(e.removeprefix("error: ") for e in self.errors))


class ControlPlane:
    """Serves xDS for the resources under `config`; with `translator_listen`, also runs the
    translator in this process and keeps its per-fleet configuration current."""

    def __init__(
        self,
        config: str | Path | None = None,
        *,
        kubernetes: KubernetesOptions | None = None,
        health_listen: str | None = None,
        listen: str = "0.0.0.0:18000",
        settings: BuildSettings | None = None,
        tls: TLSFiles | TLSMaterial | ReloadableTLS | None = None,
        watch: bool = True,
        translator_listen: str | None = None,
        mcp_listen: str | None = None,
        translator_workers: int = 1,
        require_gateway: bool = False,
        budgets: BudgetOptions | None = None,
        authorizer: Authorizer | None = None,
        admission: Admission | None = None,
        envoy_drain_s: float = ENVOY_DEFAULT_DRAIN_TIME_S,
        withhold_incomplete: bool = False,
    ) -> None:
        self.source: FileSource | KubernetesSource | None = FileSource(config) if config is not None else None
        self.kubernetes = kubernetes
        self.health = HealthServer(health_listen, lambda: self._server_started, self.metrics) if health_listen else None
        self._reads = self._errors = 0  # readings of the configuration applied, errors of the last one
        self._apply_seconds = 0.0
        self._server_started = False
        self.status_writer: StatusWriter | None = None
        self.ca_publisher: CAPublisher | None = None  # Kubernetes mode with a TLS Secret
        self._api: KubeAPI | None = None
        self._seal_secret: bytes | None = None  # shared by the replicas (from the TLS Secret), else random
        self.leader: LeaderElector | None = None
        self._tasks: list[asyncio.Task] = []
        self.cache = SnapshotCache()
        self.registry = Registry()
        # As given; start() completes the translator address (the ports the translators got).
        self.settings = settings or BuildSettings()
        self._controller: Controller | None = None  # built by start(), with the final settings
        self.admission = admission  # what this host adds to "compiled" before a Gateway is served
        # Called after each reading of the configuration is applied, whether or not it published (run:
        # the console's model table and the fake providers follow the edit).
        self.on_applied: Callable[[], None] | None = None
        # How long the Envoys drain a listener they replaced: its route scopes are held that long.
        self.envoy_drain_s = envoy_drain_s
        self.listen = listen
        self.tls = tls
        self._file_tls: ReloadableTLS | None = None  # what --tls-cert/--tls-key serve, read again on SIGHUP
        self.watch = watch
        self.translator_listen = translator_listen
        # With the in-process translator: where its MCP proxy listens (None: no MCP proxy here).
        self.mcp_listen = mcp_listen
        self.mcp_proxy: McpProxy | None = None
        self.mcp_port = 0
        self.translator_workers = translator_workers
        # Where the translators count rate limits and quotas (memory: this process's translator alone).
        self.budgets = budgets
        # Which fleets each xDS peer may receive (translator configuration, Envoy credentials).
        self.authorizer = authorizer or Authorizer()
        # serve: a first load with errors that compiles no Gateway is fatal (start raises ValueError);
        # an error-free one without a Gateway serves and waits for one.
        self.require_gateway = require_gateway
        self.withhold_incomplete = withhold_incomplete  # Controller.withhold_incomplete
        self.translator: TranslatorServer | None = None
        self._workers: list[TranslatorWorker] = []
        self.port = 0
        self.resources: ResourceSet | None = None  # as last read (at start, then each edit)
        self._server: grpc.aio.Server | None = None
        self._watcher: asyncio.Task | None = None
        self._stop = asyncio.Event()
        # Bursts (a fleet connecting, a push to all of it) give their memory back once over.
        self._trimmer = MemoryTrimmer(forget=self.cache.forget_answers)
        self.registry.watchers.append(self._trimmer.poke)
        # The metadata of the OAuth issuers MCPRoutes name without jwks (their jwks_uri).
        self._issuers = IssuerDiscovery(self._issuer_learnt)
        self._first_applied = False

    def compiled(self) -> dict[str, GatewayIR]:
        """Each served fleet's Gateway as last compiled cleanly (empty before start())."""
        return dict(self._controller.last_good) if self._controller is not None else {}

    def kept(self) -> set[str]:
        """The fleets the latest apply held at their last good configuration (its edit not served)."""
        return set(self._controller.kept) if self._controller is not None else set()

    def errors(self) -> list[Diagnostic]:
        """The errors of the latest compile."""
        result = self._controller.last_result if self._controller is not None else None
        return list(result.errors) if result is not None else []

    def _apply(self, resources: ResourceSet, quiet: bool = False) -> ApplyReport:
        """Compile and publish; the in-process translator follows what is served. `quiet`: the
        diagnostics are not logged (Controller.apply)."""
        assert self._controller is not None
        started = time.monotonic()
        report = self._controller.apply(resources, self._issuers.known, quiet)
        self._reads += 1
        self._errors = sum(d.is_error for d in report.diagnostics)
        self._apply_seconds = time.monotonic() - started
        self._trimmer.poke()
        if self.status_writer is not None and self._controller.last_result is not None:
            self.status_writer.compiled(self._controller.last_result, resources)
        if self.ca_publisher is not None and self._controller.last_result is not None:
            from .kubernetes.ca_configmap import gateway_namespaces

            self.ca_publisher.want(gateway_namespaces(self._controller.last_result))
        if self.translator is not None:
            gateways = self._controller.last_good
            self.translator.update_configs({fleet: ir.translator for fleet, ir in gateways.items()})
        for fleet, gateway in self._controller.last_good.items():
            if left_out := mcp_routes_left_out(gateway, self.settings):
                log.warning("mcp_routes_not_served", fleet=fleet, routes=left_out, reason=MCP_WITHOUT_TRANSLATOR)
        return report

    async def start(self) -> None:
        """In order: the health endpoint, the in-process translator, the xDS server's port, the
        translator workers (they bind ports of their own and follow that port), the first load (in
        Kubernetes mode: the first list of every kind), then serving."""
        if self.health is not None:
            _check_listen(HEALTH_ENDPOINT, self.health.listen)
            await self.health.start()
        if self.translator_listen and self.settings.translator_enabled:
            from aigw_translator.server import bind as bind_translator

            _check_listen(TRANSLATOR, self.translator_listen)
            try:
                budgets = self.budgets.budgets() if self.budgets else None
                self.translator = bind_translator({}, self.translator_listen, budgets)
            except RuntimeError as exc:
                raise CannotListen(TRANSLATOR, self.translator_listen) from exc
            await self.translator.start()  # held before it starts: stop() stops it, even if cut short
            if self.mcp_listen:
                await self._start_mcp_proxy(self.translator, self.mcp_listen)
        if self.kubernetes is not None and self.kubernetes.tls_secret is not None and self.tls is None:
            await self._kubernetes_tls(self.kubernetes, self.kubernetes.tls_secret)
        _check_listen(XDS_SERVER, self.listen)
        self._server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
        add_services(self._server, self.cache, self.registry, self.authorizer)
        served = self.tls
        if isinstance(served, TLSFiles):  # read again on SIGHUP (a renewed certificate)
            served = self._file_tls = ReloadableTLS(served.read())
        try:
            self.port = bind(self._server, self.listen, served)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise CannotListen(XDS_SERVER, self.listen)
        if self.translator is not None:
            for _ in range(self.translator_workers - 1):
                self._workers.append(await start_translator_worker(self.port, self.budgets))
        self.settings = self._final_settings()
        self._controller = Controller(
            self.cache,
            self.settings,
            self._seal_secret,
            self.admission,
            envoy_drain_s=self.envoy_drain_s,
            exclude_invalid=self.kubernetes is not None,
            withhold_incomplete=self.withhold_incomplete,
        )
        if self.kubernetes is not None:
            await self._start_kubernetes(self.kubernetes)
        assert self.source is not None
        if self.kubernetes is not None:  # its first set once the referenced objects are fetched
            from .sources.kubernetes import KubernetesSource

            assert isinstance(self.source, KubernetesSource)
            self.resources = await self.source.settled_load()
        else:
            self.resources = self.source.load()
        # An MCPRoute whose issuer's jwks_uri is fetched is served from the start if it answers soon.
        self._issuers.want(self.resources)
        await self._issuers.answered(ISSUERS_FIRST_WAIT_S)
        # Where a first load that compiles no Gateway stops the start, the error it raises says the
        # diagnostics (once, not also in the log lines before it).
        report = self._apply(self.resources, quiet=self.require_gateway)
        self._first_applied = True
        errors = [d for d in report.diagnostics if d.is_error]
        # serve's Envoys outlive it (withhold_incomplete); run's own Envoy starts with it, or not at all.
        withheld = self.cache.withheld_fleets() if self.withhold_incomplete else []
        if not self._controller.last_good and errors and self.require_gateway and not withheld:
            # (A Gateway that is there but broken is withheld, its Envoys keep what they serve, until
            # it is fixed: exiting would only restart into the same file, over and over.)
            raise NoGatewayCompiled(errors)
        if self.require_gateway:
            log_diagnostics(report.diagnostics)
        log.info("configuration_loaded", fleets=self.cache.fleets(), kept=report.kept, errors=len(errors))
        if not self._controller.last_good:
            waiting = "waiting for Gateways" if self.watch else "serving none (--no-watch: edits are not read)"
            if withheld:
                fixed = "fixed" if self.watch else "fixed and SIGHUP read them (--no-watch)"
                which = ", ".join(f for f in withheld if f != ANY_FLEET) or "every fleet"
                waiting = f"withholding {which} until the errors are {fixed}"
            log.warning("no_gateway_compiled", config=self.source.description, status=waiting)
        await start_whole(self._server)
        self._server_started = True
        self._run_in_background(
            {"memory_trim": self._trimmer.run(self._stop), "release_held_scopes": self._release_held_scopes()}
        )
        address = bound_address(self.listen, self.port)
        log.info("xds_server_listening", address=address, port=self.port, tls=self.tls is not None)
        for worker in self._workers:
            await worker.serving()
        if self.watch:
            self._watcher = asyncio.create_task(self.source.watch(self._on_change, stop=self._stop))
            self._watcher.add_done_callback(_log_failure)

    async def _start_kubernetes(self, options: KubernetesOptions) -> None:
        """The Kubernetes source (listed once before returning), the leader election and the status
        writer it enables."""
        from aigw_contract import TRANSLATORS_FLEET

        from .kubernetes.ack_reports import AckReports
        from .kubernetes.api import KubeAPI, connect
        from .kubernetes.leader import LeaderElector
        from .kubernetes.status_writer import StatusWriter
        from .sources.kubernetes import KubernetesSource
        from .xds.acks import FleetSync, fleet_sync
        from .xds.authz import kubernetes_access_review, kubernetes_review

        api = self._api or KubeAPI(connect(options.kubeconfig))
        self._api = api
        # Translators authenticate with ServiceAccount tokens, reviewed by the API server.
        self.authorizer.review = kubernetes_review(api.client)
        # ...and receive a Gateway's credentials only if RBAC lets them get its Secrets (authz.py).
        self.authorizer.access_review = kubernetes_access_review(api.client)
        self.authorizer.secrets_of = self._secrets_of
        source = KubernetesSource(api, namespaces=options.namespaces, controller_name=options.controller_name)
        self.source = source
        log.info("kubernetes_listing", server=api.server, namespaces=list(options.namespaces) or "all")
        await source.start()
        lease, renew, retry = options.lease_timings
        self.leader = LeaderElector(
            api,
            options.lease_namespace,
            options.lease_name,
            lease_duration=lease,
            renew_deadline=renew,
            retry_period=retry,
        )
        leader = self.leader

        def own(fleet: str) -> FleetSync:
            return fleet_sync(self.cache.get(fleet), self.registry.nodes_of(fleet), self.registry.refused(fleet))

        def views() -> dict[str, FleetSync]:
            return {fleet: own(fleet) for fleet in self.cache.fleets() if fleet != TRANSLATORS_FLEET}

        reports = AckReports(api, options.lease_namespace, leader.identity, views)
        writer = StatusWriter(api, source, own, lambda: leader.is_leader, reports=reports)
        self.status_writer = writer
        self.registry.watchers += [writer.poke, reports.poke]

        async def lead() -> None:
            await leader.run(self._stop)

        async def on_leadership() -> None:
            led = False
            while not self._stop.is_set():
                if leader.is_leader and not led:
                    writer.poke()  # a new leader writes what the previous one may have left unwritten
                led = leader.is_leader
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), leader.retry_period)

        async def wake_on_stop() -> None:
            """The writer and the reporter wait for changes: on stop they end at once (the report
            deleted), not after their next timeout."""
            await self._stop.wait()
            writer.poke()
            reports.poke()

        jobs = {
            "leader_election": lead(),
            "ack_reports": reports.run(self._stop),
            "status_writer": writer.run(self._stop),
            "leadership": on_leadership(),
            "wake_on_stop": wake_on_stop(),
        }
        self._run_in_background(jobs)

    async def _kubernetes_tls(self, options: KubernetesOptions, secret: tuple[str, str]) -> None:
        """The xDS server's certificate from the Secret (created, or renewed, when needed; checked
        again every 12 hours, a renewed one served to new connections), and the publisher of its CA
        to the namespaces of our Gateways."""
        from pathlib import Path

        from .kubernetes.api import KubeAPI, KubeError, connect
        from .kubernetes.ca_configmap import CAPublisher
        from .kubernetes.serving_certs import ServingTLS, service_dns_names
        from .kubernetes.tls_secret import ensure_serving_tls, keep_current

        self._api = self._api or KubeAPI(connect(options.kubeconfig))
        service_namespace, service = options.tls_service
        names = service_dns_names(service, service_namespace)
        delay = 1.0
        while True:  # an API server not up yet is waited for (a crash loop would not help)
            try:
                serving = await asyncio.to_thread(ensure_serving_tls, self._api, *secret, names)
                break
            except KubeError as exc:
                if exc.status != 0:
                    raise RuntimeError(f"the TLS Secret {secret[0]}/{secret[1]}: {exc.message}") from None
                if delay == 1.0:
                    log.warning("kubernetes_unreachable", server=self._api.server, error=exc.message, waiting="TLS")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        # Every replica reads this Secret: the seal key of fleets without credentials of their own
        # derives from it, so that replicas serve translators identical configurations.
        self._seal_secret = hashlib.sha256(b"aigw-xds seal\0" + (serving.ca_key or serving.key)).digest()
        client_ca = Path(options.tls_client_ca).read_bytes() if options.tls_client_ca else None
        tls = ReloadableTLS(TLSMaterial(serving.cert, serving.key, client_ca))
        publisher = CAPublisher(self._api, serving.ca)
        self.tls, self.ca_publisher = tls, publisher

        def renewed(latest: ServingTLS) -> None:
            publisher.set_ca(latest.ca)  # the same CA unless the Secret was started over
            tls.replace(TLSMaterial(latest.cert, latest.key, client_ca))

        jobs = {
            "ca_publisher": publisher.run(self._stop),
            "tls_renewal": keep_current(
                self._api, *secret, names, serving, renewed, self._stop, every=options.tls_recheck
            ),
        }
        self._run_in_background(jobs)

    def _secrets_of(self, fleet: str) -> frozenset[tuple[str, str]]:
        """The Secrets (namespace, name) the served configuration of `fleet` was built from."""
        gateway = self._controller.last_good.get(fleet) if self._controller is not None else None
        closure = gateway.closure if gateway is not None else frozenset()
        return frozenset((key.namespace, key.name) for key in closure if key.kind == "Secret")

    async def _release_held_scopes(self) -> None:
        """Publishes each fleet without the route scopes it held while Envoy drained, once they are due
        (scope_hold.py): looks at least once a second."""
        controller = self._controller
        assert controller is not None
        while not self._stop.is_set():
            due = controller.next_release()
            wait = RELEASE_CHECK_S if due is None else min(RELEASE_CHECK_S, max(0.0, due - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
            if controller.release_held():
                self._trimmer.poke()

    async def _start_mcp_proxy(self, translator: TranslatorServer, listen: str) -> None:
        """The in-process translator's MCP proxy, answering for the fleets it follows."""
        from aigw_translator.mcp import McpProxy

        _check_listen(MCP_PROXY, listen)
        self.mcp_proxy = McpProxy(translator.config_of)
        try:
            self.mcp_port = await self.mcp_proxy.start(listen)
        except OSError as exc:
            raise CannotListen(MCP_PROXY, listen) from exc

    def _run_in_background(self, jobs: dict[str, Coroutine[Any, Any, None]]) -> None:
        """Tasks that live as long as the control plane (stop() ends them); a failure is logged."""
        for name, job in jobs.items():
            task = asyncio.create_task(job, name=name)
            task.add_done_callback(_log_failure)
            self._tasks.append(task)

    def _final_settings(self) -> BuildSettings:
        """The build settings with the translator address Envoy needs: the in-process translator's
        port where the address asks for "a free port" (port 0), then every worker's address."""
        settings = replace(self.settings, envoy_credentials=self._envoys_trusted())
        if self.translator is None:
            return settings
        host, _, port = settings.translator_address.rpartition(":")
        if port == "0":
            settings = replace(settings, translator_address=f"{host}:{self.translator.port}")
        if self._workers:
            extra = ",".join(f"127.0.0.1:{worker.port}" for worker in self._workers)
            settings = replace(settings, translator_address=f"{settings.translator_address},{extra}")
        host, _, port = settings.mcp_address.rpartition(":")
        if port == "0" and self.mcp_proxy is not None:
            settings = replace(settings, mcp_address=f"{host}:{self.mcp_port}")
        return settings

    def _envoys_trusted(self) -> bool:
        """Whether every xDS client is one the backends' keys may go to (as SDS secrets, for the
        routes Envoy serves alone): the server listens on loopback only, or requires client
        certificates (mTLS). The same rule as for the translator configuration."""
        # In Kubernetes mode (TLSMaterial) keys stay with the translators, which the control plane
        # authorizes per identity; Envoys get no backend keys as SDS secrets there.
        if isinstance(self.tls, TLSFiles) and self.tls.client_ca:
            return True
        host = self.listen.rpartition(":")[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1") or host.startswith("unix") or self.listen.startswith("unix:")

    async def read_again(self) -> None:
        """The configuration read again now, as after an edit (SIGHUP: with --no-watch, or an edit on
        a file system whose changes are not seen); in Kubernetes mode the watch is always current."""
        if self._controller is None:
            return  # still starting: the first read is under way
        if isinstance(self.source, FileSource):
            log.info("configuration_read_requested", signal="SIGHUP")
            self._reload_tls_files()
            await self.source.read_again(self._on_change)
        else:
            log.info("sighup_ignored", reason="in Kubernetes mode the resources are watched, never read again")

    def _reload_tls_files(self) -> None:
        """--tls-cert/--tls-key (and --tls-client-ca) read again: new connections get what they
        hold now; files that do not make a usable pair leave the served ones in use."""
        if self._file_tls is None or not isinstance(self.tls, TLSFiles):
            return
        try:
            material = self.tls.read()
        except ValueError as exc:
            log.error("tls_files_unusable", error=str(exc), keeping="the certificate served so far")
            return
        if material != self._file_tls.material:
            self._file_tls.replace(material)
            log.info("tls_files_reloaded", cert=self.tls.cert)

    def metrics(self) -> str:
        """GET /metrics (metrics.py)."""
        from .memory import rss_kb
        from .metrics import State, render, samples
        from .xds.acks import fleet_sync

        fleets = set(self.cache.fleets()) | {info.fleet for info in self.registry.streams.values()}
        views = {
            fleet: fleet_sync(self.cache.get(fleet), self.registry.nodes_of(fleet), self.registry.refused(fleet))
            for fleet in fleets
        }
        modes = Counter(info.mode for info in self.registry.streams.values())
        state = State(
            views, [f for f in self.cache.withheld_fleets() if f != ANY_FLEET], modes, self.registry.nacks,
            self.cache.publishes,
            self._reads, self._errors, self._apply_seconds, rss_kb() * 1024,
        )  # fmt: skip
        return render(samples(state))

    async def _issuer_learnt(self) -> None:
        """An issuer's metadata answered (or failed) anew: compiled again with it."""
        if self._first_applied and self.resources is not None:
            self._applied(self.resources)

    async def _on_change(self, resources: ResourceSet) -> None:
        """An edit: applied once the OAuth issuers a new MCPRoute needs answered (for at most
        ISSUERS_FIRST_WAIT_S; only those not asked yet are waited for), so that a route edited to
        take its keys from its issuer is not left out for the moment that takes."""
        self.resources = resources
        self._issuers.want(resources)
        await self._issuers.answered(ISSUERS_FIRST_WAIT_S)
        self._applied(self.resources)

    def _applied(self, resources: ResourceSet) -> None:
        report = self._apply(resources)
        log.info("configuration_applied", published=report.published, kept=report.kept, removed=report.removed)
        if self.on_applied is not None:
            self.on_applied()
        for fleet in report.removed:
            for key in [key for key in self.registry.nacks if key[0] == fleet]:
                del self.registry.nacks[key]  # its counters go with it (metrics)
            self.cache.publishes.pop(fleet, None)
            nodes = sorted({node for node, _ in self.registry.nodes_of(fleet)})
            if nodes:  # a file moved away by mistake takes their listeners: said where it shows
                log.warning(
                    "fleet_removed_while_connected",
                    fleet=fleet,
                    nodes=first_few(nodes),
                    consequence="its Gateway is gone from the configuration: these Envoys now have no listeners",
                    source=self.source.description if self.source is not None else None,
                )

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.cancel()
        pending = [t for t in self._tasks if not t.done()]
        if pending:  # they end at once on stop: the Lease released, this replica's ACK report deleted
            await asyncio.wait(pending, timeout=5.0)
        for task in self._tasks:
            task.cancel()
        source = self.source
        if source is not None and hasattr(source, "stop"):
            source.stop()
        await self._issuers.stop()
        if self.health is not None:
            await self.health.stop()
        # The workers first: they follow this server, and would each say it went away.
        await asyncio.gather(*(worker.stop() for worker in self._workers))
        if self._server is not None:
            await self._server.stop(grace)
        if self.mcp_proxy is not None:
            await self.mcp_proxy.stop()
        if self.translator is not None:
            await self.translator.stop(grace)


def _log_failure(task: asyncio.Task) -> None:
    """A background task that died of a bug: said in the log, not lost with the task."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background_task_failed", task=task.get_name(), exc_info=task.exception())


def _check_listen(what: str, address: str) -> None:
    """CannotListen naming the cause when a test bind shows that `address` cannot be listened on
    (before gRPC tries, which would log its own line and tell no cause)."""
    problem = listen_problem(address)
    if problem:
        raise CannotListen(what, address, problem)
