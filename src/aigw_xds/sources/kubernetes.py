"""The Kubernetes source: every kind we read, listed and then watched through the API server, kept
in memory and read into the same resource set as the file source.

One thread per kind (and per namespace with --watch-namespaces) runs the list/watch loop that
client-go's reflector runs: list, then watch from the list's resourceVersion with bookmarks; on a
broken watch, watch again from the last resourceVersion seen; on 410 Gone, list again and replace
what the list no longer holds (nothing Envoy serves is dropped in between: the last good objects
stay until the new list is complete); on errors, back off (1 s doubling to 30 s) and keep
everything. A kind the RBAC forbids, or one whose CRD is not installed, is one log line naming
what is missing and is retried every minute.

Secrets and ConfigMaps: the cluster holds many that are none of our business. Only those some
resource references (a BackendSecurityPolicy's secretRef, a listener's certificateRefs, a
BackendTLSPolicy's caCertificateRefs...) are kept; the others are remembered by name only, and
fetched when a reference to them appears.

Gateways are ours when their GatewayClass's controllerName is ours: others (Envoy Gateway's, in
the same cluster) are left out of the resource set, so they are neither compiled nor given status.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog

from ..api.decode import Decoded, decode_document
from ..api.kinds import SERVICE_NAME_LABEL
from ..diagnostics import API_SERVER, Origin
from ..keys import ResourceKey
from ..kubernetes.api import KubeAPI, KubeError
from ..resources import ResourceSet, build_resource_set
from . import reload
from .kube_kinds import BY_KIND, DEFAULT_CONTROLLER_NAME, WATCHED, KubeKind

log = structlog.get_logger(__name__)
# How long a load waits for the objects a new reference names to be fetched (settled_load).
FETCH_WAIT_S = 10.0

# Fields that name a Secret, ConfigMap or Service, and the kind they name when the reference does not say.
REFERENCE_FIELDS = {
    "backendRef": "Backend",  # an AIServiceBackend's: a Service when its kind says so
    "secretRef": "Secret",
    "clientSecret": "Secret",
    "clientSecretRef": "Secret",
    "certificateRefs": "Secret",
    "caCertificateRefs": "ConfigMap",
    "credentialRefs": "Secret",  # an MCPRoute's (or SecurityPolicy's) apiKeyAuth: its clients' keys
    "users": "Secret",  # a SecurityPolicy's basicAuth: its users' htpasswd
    "valueRef": "ConfigMap",  # an MCPRoute's localJWKS: its issuer's keys
    "endpointPickerRef": "Service",  # an InferencePool's endpoint picker
}
# A kind's own reference fields, and its own default kinds: a ClientTrafficPolicy's client CAs and
# revocation lists are Secrets unless said (Envoy Gateway's; a BackendTLSPolicy's CAs, ConfigMaps);
# an MCPRoute's backends and its external authorization service's are Services unless said (Gateway
# API's default, as Envoy AI Gateway and Envoy Gateway read them).
KIND_REFERENCE_FIELDS = {
    "ClientTrafficPolicy": {"caCertificateRefs": "Secret", "refs": "Secret"},
    "MCPRoute": {"backendRefs": "Service", "backendRef": "Service"},
}

_METADATA_KEPT = ("name", "namespace", "labels", "annotations", "creationTimestamp", "generation", "uid")


@dataclass(frozen=True)
class Stored:
    """One object as last seen: what compile reads (`content`: no status, no server bookkeeping),
    and what the status writer compares against (generation, status)."""

    content: bytes  # JSON; b"" for a Secret, ConfigMap, Service or EndpointSlice nobody references
    resource_version: str
    generation: int
    status: Mapping[str, Any]
    api_version: str
    owner: str = ""  # an EndpointSlice's Service (its kubernetes.io/service-name label)


def owner_of(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) or "")


def stored_of(obj: dict[str, Any], keep: bool = True) -> Stored:
    meta = obj.get("metadata") or {}
    content = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    content["metadata"] = {k: meta[k] for k in _METADATA_KEPT if k in meta}
    return Stored(
        orjson.dumps(content, option=orjson.OPT_SORT_KEYS) if keep else b"",
        str(meta.get("resourceVersion") or ""),
        int(meta.get("generation") or 0),
        obj.get("status") or {},
        str(obj.get("apiVersion") or ""),
        owner_of(obj),
    )


def references(obj: Mapping[str, Any], namespace: str) -> set[tuple[str, str, str]]:
    """The (kind, namespace, name) of every Secret, ConfigMap and Service the object's spec references."""
    found: set[tuple[str, str, str]] = set()
    fields = {**REFERENCE_FIELDS, **KIND_REFERENCE_FIELDS.get(str(obj.get("kind")), {})}

    def add(ref: Any, default_kind: str) -> None:
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            kind = ref.get("kind") or default_kind
            if kind in _BY_NAME:
                found.add((kind, str(ref.get("namespace") or namespace), ref["name"]))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                default_kind = fields.get(key)
                if default_kind is not None:
                    for ref in value if isinstance(value, list) else [value]:
                        add(ref, default_kind)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(obj.get("spec"))
    return found


class _Reflector:
    """The list/watch loop of one kind (in one namespace, or all), run in its own thread."""

    def __init__(self, source: KubernetesSource, kind: KubeKind, namespace: str | None) -> None:
        self.source = source
        self.kind = kind
        self.namespace = namespace
        self.synced = threading.Event()
        self.resource_version = ""
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind.plural}", daemon=True)
        self._problem = ""  # what was last logged, so an outage is one line, not one per retry

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.close()

    def _run(self) -> None:
        backoff = 1.0
        while not self.source.stopping.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._watch()
                backoff = 1.0
            except KubeError as exc:
                if self.source.stopping.is_set():
                    return  # the watch cut by our own shutdown: no outage to report
                if exc.status == 410:
                    self.resource_version = ""  # too old: list again
                    continue
                if exc.status in (401, 403, 404):
                    self._report(exc)
                    self.synced.set()  # nothing to wait for: serve what the other kinds give
                    self.source.stopping.wait(60.0)
                    continue
                self._report(exc)
                self.source.stopping.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(backoff * 2, 30.0)
            except Exception:  # a bug of ours or an answer we did not expect: never a dead reflector
                if self.source.stopping.is_set():
                    return
                log.exception("kubernetes_watch_failed", kind=self.kind.kind)
                self.resource_version = ""  # start over with a list
                self.source.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _report(self, exc: KubeError) -> None:
        if exc.message == self._problem:
            return
        self._problem = exc.message
        where = self.namespace or "all namespaces"
        if exc.status == 403:
            log.error("kubernetes_permission_missing", kind=self.kind.kind, namespace=where, error=exc.message)
        elif exc.status == 404:
            log.warning(
                "kubernetes_kind_not_served",
                kind=self.kind.kind,
                api_version=self.kind.api_version,
                hint="is its CRD installed?",
            )
        else:
            self.source.unreachable(self.kind.kind, exc.message)

    def _recovered(self) -> None:
        if self._problem:
            self._problem = ""
            self.source.reachable(self.kind.kind)

    def _list(self) -> None:
        api = self.source.api
        items: dict[tuple[str, str], dict[str, Any]] = {}
        query: list[tuple[str, str]] = [("limit", "500")]
        while True:
            page = api.get(self.kind.path(self.namespace), query)
            for obj in page.get("items") or []:
                meta = obj.get("metadata") or {}
                obj.setdefault("apiVersion", self.kind.api_version)
                obj.setdefault("kind", self.kind.kind)
                items[(str(meta.get("namespace") or ""), str(meta.get("name")))] = obj
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
            query = [("limit", "500"), ("continue", str(token))]
        self.resource_version = str((page.get("metadata") or {}).get("resourceVersion") or "")
        self.source.replace(self.kind, self.namespace, items)
        self._recovered()
        self.synced.set()

    def _watch(self) -> None:
        timeout = random.randint(300, 600)  # client-go's reflector: 5 to 10 minutes
        query = [
            ("resourceVersion", self.resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        self._stream = self.source.api.watch(self.kind.path(self.namespace), query, read_timeout=timeout + 60)
        self._recovered()
        try:
            for event in self._stream:
                if self.source.stopping.is_set():
                    return
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise KubeError(int(obj.get("code") or 0), str(obj.get("reason") or ""), str(obj.get("message")))
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    obj.setdefault("apiVersion", self.kind.api_version)
                    obj.setdefault("kind", self.kind.kind)
                    self.source.apply_event(self.kind, kind, obj)
                if version:
                    self.resource_version = str(version)
        finally:
            self._stream = None


class KubernetesSource:
    """Reads resources from the Kubernetes API; `start()` lists everything, `watch()` follows."""

    def __init__(
        self,
        api: KubeAPI,
        *,
        namespaces: Iterable[str] = (),
        controller_name: str = DEFAULT_CONTROLLER_NAME,
    ) -> None:
        self.api = api
        self.namespaces = tuple(namespaces)
        self.controller_name = controller_name
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._objects: dict[ResourceKey, Stored] = {}
        self._referenced: frozenset[tuple[str, str, str]] = frozenset()
        self._decoded: dict[ResourceKey, tuple[bytes, Decoded]] = {}
        self._references_of: dict[ResourceKey, tuple[bytes, set[tuple[str, str, str]]]] = {}
        self._fetching: set[asyncio.Future[bool]] = set()
        self._last: ResourceSet | None = None  # where a new version is invalid, the one there stays
        self._reflectors: list[_Reflector] = []
        self._unreachable: set[str] = set()  # kinds whose reflector cannot reach the API server
        self._foreign_classes: set[str] = set()  # GatewayClasses of other controllers (said once)
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def description(self) -> str:
        scope = ",".join(self.namespaces) if self.namespaces else "all namespaces"
        return f"the Kubernetes API at {self.api.server} ({scope})"

    # -- the threads' side ------------------------------------------------------------------

    def _key(self, kind: KubeKind, obj: Mapping[str, Any]) -> ResourceKey:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "") if kind.namespaced else ""
        return ResourceKey(kind.kind, namespace or "default", str(meta.get("name")))

    def replace(self, kind: KubeKind, namespace: str | None, items: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        """A complete list of a kind (in a namespace): objects it no longer holds were deleted."""
        fresh = {self._key(kind, obj): obj for obj in items.values()}
        with self._lock:
            changed = False
            for key in [
                k for k in self._objects if k.kind == kind.kind and (namespace is None or k.namespace == namespace)
            ]:
                if key not in fresh:
                    changed |= bool(self._objects.pop(key).content)
            for key, obj in fresh.items():
                changed |= self._store(kind, key, obj)
        if changed:
            self._notify()

    def apply_event(self, kind: KubeKind, event: str, obj: dict[str, Any]) -> None:
        key = self._key(kind, obj)
        with self._lock:
            if event == "DELETED":
                gone = self._objects.pop(key, None)
                changed = gone is not None and bool(gone.content)  # an object never kept changes nothing
            else:
                changed = self._store(kind, key, obj)
        if changed:
            self._notify()

    def record_status(self, key: ResourceKey, status: Mapping[str, Any]) -> None:
        """The status just written (so the next round does not write it again before the watch
        reports it); what compile reads is left as it is: a newer edit may have arrived already."""
        with self._lock:
            stored = self._objects.get(key)
            if stored is not None:
                self._objects[key] = replace(stored, status=status)

    def _store(self, kind: KubeKind, key: ResourceKey, obj: dict[str, Any]) -> bool:
        """Keep obj (lock held); True when what compile reads changed (not for status-only writes)."""
        new = stored_of(obj, keep=_wanted(key, owner_of(obj), self._referenced))
        old = self._objects.get(key)
        self._objects[key] = new
        if old is None:
            return bool(new.content)  # a Secret nobody references appearing changes nothing compiled
        return old.content != new.content

    def unreachable(self, kind: str, error: str) -> None:
        """A reflector lost the API server: one line per outage, not one per kind."""
        with self._lock:
            first = not self._unreachable
            self._unreachable.add(kind)
        if first:
            log.warning("kubernetes_unreachable", server=self.api.server, error=error, keeping="the last objects seen")

    def reachable(self, kind: str) -> None:
        with self._lock:
            was = kind in self._unreachable
            self._unreachable.discard(kind)
            last = was and not self._unreachable
        if last:
            log.info("kubernetes_reconnected", server=self.api.server)

    def _notify(self) -> None:
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None and not loop.is_closed():
            loop.call_soon_threadsafe(changed.set)

    # -- the event loop's side --------------------------------------------------------------

    async def start(self) -> None:
        """List every kind (the referencing kinds first, so that the Secrets and ConfigMaps they
        name are kept from the first list on) and start watching. Returns once every kind has been
        listed once, or found forbidden or not served."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        first = [k for k in WATCHED if not k.referenced_only]
        await self._start_reflectors(first)
        self._referenced = self._references()
        await self._start_reflectors([k for k in WATCHED if k.referenced_only])
        self._changed.clear()  # what the first lists brought, the caller's load() reads

    async def _start_reflectors(self, kinds: list[KubeKind]) -> None:
        started = []
        for kind in kinds:
            for namespace in (self.namespaces or (None,)) if kind.namespaced else (None,):
                reflector = _Reflector(self, kind, namespace)
                reflector.start()
                started.append(reflector)
        self._reflectors.extend(started)
        waited = 0.0
        while not all(r.synced.is_set() for r in started):
            await asyncio.sleep(0.05)
            waited += 0.05
            if waited >= 10.0:
                waiting = sorted({r.kind.kind for r in started if not r.synced.is_set()})
                log.warning("kubernetes_waiting_for_first_list", kinds=waiting, server=self.api.server)
                waited = 0.0

    def stop(self) -> None:
        self.stopping.set()
        for reflector in self._reflectors:
            reflector.stop()

    def _references(self) -> frozenset[tuple[str, str, str]]:
        with self._lock:
            objects = [(k, s.content) for k, s in self._objects.items() if s.content and k.kind not in _HELD]
        found: set[tuple[str, str, str]] = set()
        cache: dict[ResourceKey, tuple[bytes, set[tuple[str, str, str]]]] = {}
        for key, content in objects:
            cached = self._references_of.get(key)
            refs = cached[1] if cached is not None and cached[0] == content else None
            if refs is None:
                refs = references(orjson.loads(content), key.namespace)
            cache[key] = (content, refs)
            found |= refs
        self._references_of = cache
        return frozenset(found)

    def load(self) -> ResourceSet:
        """The resource set of the objects seen so far."""
        referenced = self._references()
        with self._lock:
            if referenced != self._referenced:
                self._referenced = referenced
                for key, stored in list(self._objects.items()):
                    if stored.content and not _wanted(key, stored.owner, referenced):
                        # No longer referenced: forget its data.
                        self._objects[key] = Stored(
                            b"", stored.resource_version, 0, {}, stored.api_version, stored.owner
                        )
        self._fetch_missing()
        with self._lock:
            objects = dict(self._objects)
        ours = _ours(objects, self.controller_name)
        foreign = {k.name for k in objects if k.kind == "GatewayClass" and k not in ours}
        for name in sorted(foreign - self._foreign_classes):
            log.info(
                "gatewayclass_not_ours",
                gatewayclass=name,
                serving=self.controller_name,
                hint="its Gateways are left to their controller",
            )
        self._foreign_classes = foreign
        decoded = [self._decode(key, stored) for key, stored in sorted(ours.items()) if stored.content]
        foreign_gateways = {key for key in objects if key.kind == "Gateway"} - ours.keys()
        decoded = [d for d in decoded if not _foreign_route(d, foreign_gateways)]
        # No last good versions: a replica started later has none (compile/excluding.py).
        resources = self._last = build_resource_set(decoded, (), (), self._last, keep_last_good=False)
        return resources

    def _decode(self, key: ResourceKey, stored: Stored) -> Decoded:
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == stored.content:
            return cached[1]
        kind = BY_KIND[key.kind]
        group = f".{kind.group}" if kind.group else ""
        where = f"{kind.plural}{group}/{key.name}" if not kind.namespaced else f"{kind.plural}{group}/{key.ref}"
        decoded = decode_document(orjson.loads(stored.content), Origin(f"{API_SERVER}{where}"))
        self._decoded[key] = (stored.content, decoded)
        return decoded

    def _fetch_missing(self) -> None:
        """Fetch the referenced objects whose data was not kept (one fetch at a time; when it ends,
        whatever is still missing, e.g. referenced meanwhile, is fetched next)."""
        if self._fetching or self._loop is None:
            return
        with self._lock:
            missing = {
                key
                for key, stored in self._objects.items()
                if not stored.content and _wanted(key, stored.owner, self._referenced)
            }
        if missing:
            fetch = asyncio.ensure_future(asyncio.to_thread(self._fetch_referenced, missing))
            self._fetching.add(fetch)
            fetch.add_done_callback(self._fetched)

    def _fetched(self, fetch: asyncio.Future[bool]) -> None:
        self._fetching.discard(fetch)
        if not fetch.cancelled() and fetch.exception() is None and fetch.result():
            self._fetch_missing()  # it all went through: anything referenced meanwhile is next

    def _fetch_referenced(self, wanted: set[ResourceKey]) -> bool:
        """GET the objects a new reference names (their data was not kept); False when one could
        not be read now (it is tried again a few seconds later)."""
        failed = False
        for key in sorted(wanted):
            kind = BY_KIND[key.kind]
            try:
                obj = self.api.get(kind.path(key.namespace, key.name))
            except KubeError as exc:
                if exc.status == 404:  # deleted meanwhile: its DELETED event may not be here yet
                    with self._lock:
                        self._objects.pop(key, None)
                else:
                    log.warning("kubernetes_read_failed", kind=key.kind, name=key.ref, error=exc.message)
                    failed = True
                continue
            obj.setdefault("apiVersion", kind.api_version)
            obj.setdefault("kind", kind.kind)
            with self._lock:
                current = self._objects.get(key)
                # A watch event may have brought it meanwhile (newer than this answer): keep that.
                if current is None or current.content or not _wanted(key, owner_of(obj), self._referenced):
                    continue
                self._objects[key] = stored_of(obj)
            self._notify()
        if failed and not self.stopping.is_set():
            retry = threading.Timer(5.0, self._notify)  # the next load() schedules the fetch again
            retry.daemon = True
            retry.start()
        return not failed

    def held(self, kind: str) -> list[tuple[ResourceKey, Stored]]:
        """Every object of a kind as last seen, ours or not (the status writer: Gateways it served)."""
        with self._lock:
            return [(key, stored) for key, stored in self._objects.items() if key.kind == kind]

    def status_of(self, key: ResourceKey) -> Stored | None:
        """The object as last seen (for the status writer: its generation and current status)."""
        with self._lock:
            return self._objects.get(key)

    async def watch(
        self,
        on_change: Callable[[ResourceSet], Awaitable[None]],
        *,
        debounce_ms: int = 50,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Call on_change with a fresh resource set after changes (debounced: a burst of events,
        e.g. a relist or `kubectl apply -f dir`, is one recompile)."""
        assert self._changed is not None, "start() first"
        while stop is None or not stop.is_set():
            await self._changed.wait()
            await asyncio.sleep(debounce_ms / 1000)
            self._changed.clear()
            await reload(self._load_logged, on_change)

    async def settled_load(self, within_s: float = FETCH_WAIT_S) -> ResourceSet:
        """load(), once the objects its references name but whose data was not kept (a Secret or
        Service known by name only) are fetched, for at most `within_s`: a set built before would
        compile the reference to an object that exists as not found, and Envoys would be sent the
        configuration without that backend for the moment the fetch takes. A fetch that fails
        leaves the set as it is (it is tried again a few seconds later)."""
        deadline = time.monotonic() + within_s
        resources = self.load()
        while self._fetching and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._fetching), timeout=left)
            await asyncio.sleep(0)  # the fetch's done callback, which may start the next one
            resources = self.load()
        return resources

    async def _load_logged(self) -> ResourceSet:  # on the event loop: load() schedules fetches there
        started = time.perf_counter()
        resources = await self.settled_load()
        log.info(
            "kubernetes_changes_read", resources=len(resources.items), ms=round((time.perf_counter() - started) * 1000)
        )
        return resources


# Kinds kept only when referenced: by name (Secret, ConfigMap, Service), or through their Service.
_HELD = frozenset(k.kind for k in WATCHED if k.referenced_only)
_BY_NAME = _HELD - {"EndpointSlice"}  # an EndpointSlice is held through its Service


def _wanted(key: ResourceKey, owner: str, referenced: frozenset[tuple[str, str, str]]) -> bool:
    """Whether an object's data is kept: every object of the kinds we serve; a Secret, ConfigMap or
    Service when referenced; an EndpointSlice (`owner`: its Service) when its Service is."""
    if key.kind not in _HELD:
        return True
    if key.kind == "EndpointSlice":
        return ("Service", key.namespace, owner) in referenced
    return (key.kind, key.namespace, key.name) in referenced


def _ours(objects: Mapping[ResourceKey, Stored], controller_name: str) -> dict[ResourceKey, Stored]:
    """The objects without the GatewayClasses of other controllers and the Gateways of those
    classes (read from the raw objects, so that an invalid one of another controller is not ours
    to report either)."""

    def spec(stored: Stored) -> Mapping[str, Any]:
        value = orjson.loads(stored.content).get("spec")
        return value if isinstance(value, dict) else {}

    classes = {
        key.name
        for key, stored in objects.items()
        if key.kind == "GatewayClass" and stored.content and spec(stored).get("controllerName") == controller_name
    }
    return {
        key: stored
        for key, stored in objects.items()
        if (key.kind != "GatewayClass" or key.name in classes)
        and (key.kind != "Gateway" or not stored.content or spec(stored).get("gatewayClassName") in classes)
    }


def _foreign_route(decoded: Decoded, foreign: AbstractSet[ResourceKey]) -> bool:
    """An AIGatewayRoute whose every parent is another controller's Gateway (`foreign`): its own to
    report (compiled here it was only a warning at every compile that it attaches to no Gateway).
    Its parents as validated, or as its document names them when it did not validate."""
    key = decoded.key
    if not foreign or key is None or key.kind != "AIGatewayRoute":
        return False
    if decoded.loaded is not None:
        parents = decoded.loaded.resource.spec.parentRefs
        keys = {ResourceKey("Gateway", p.namespace or key.namespace, p.name) for p in parents}
    else:
        keys = {target for target in decoded.targets if target.kind == "Gateway"}
    return bool(keys) and keys <= foreign
