"""An emulated Kubernetes API server: a test stand-in, NOT a real kube-apiserver (none can run on
these machines). It serves, over plain HTTP on loopback, the REST API a controller uses through the
official ``kubernetes`` client, faithfully enough for list/watch controllers:

* the kinds of the table a test passes in (dicts or tuples: kind, group, version, plural,
  namespaced; this package never imports aigw_xds), at their real paths, namespaced and
  cluster-scoped, listed across all namespaces or in one; aigateway.envoyproxy.io kinds under
  v1beta1 and v1alpha1, BackendTLSPolicy under v1 and v1alpha3 (the same objects, apiVersion
  rewritten per request); coordination.k8s.io/v1 Lease; authentication.k8s.io/v1 TokenReview;
  rbac.authorization.k8s.io/v1 Role, RoleBinding, ClusterRole, ClusterRoleBinding (stored only) and
  authorization.k8s.io/v1 SubjectAccessReview decided by them (kube/rbac.py says what of RBAC is
  emulated; the server's own requests are not authorized by RBAC but by forbid/allow);
* discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>``,
  ``/apis/<group>/<version>`` with ``<plural>/status`` entries);
* one global resourceVersion, uid, creationTimestamp, generation (spec changes only), lists with
  ``limit``/``continue`` (consistent pages; 410 Expired after compaction), label selectors
  (``k=v``, ``k!=v``, ``k``, ``!k``, ``in``, ``notin``) and ``metadata.name``/``metadata.namespace``
  field selectors on list and watch;
* watch (``watch=true``): newline-delimited JSON events, chunked; synthetic ADDED first when no
  resourceVersion (or "0") is given; BOOKMARK every ``bookmark_interval`` seconds when
  ``allowWatchBookmarks=true``; ``timeoutSeconds`` ends the stream cleanly; a resourceVersion older
  than the retained history is answered as a real server does: HTTP 200, one ERROR event whose
  object is a 410 Expired Status ("too old resource version: N (M)"), end of stream;
* create (409 AlreadyExists), replace (resourceVersion required for custom resources and Leases:
  422 without, 409 Conflict when stale), patch (merge patch; JSON patch; strategic merge patch only
  on built-in types, approximated by merge patch, and 415 on custom resources, as a real server
  answers; server-side apply is not emulated: 415), delete (the real NotFound text), the status
  subresource with the CRDs' condition validation (422 naming the field), Gateway/GatewayClass
  default status;
* Bearer-token authentication (401), per-verb RBAC denials for the controller's identity (403 with
  the real message), TokenReview of tokens minted with ``issue_token``.

Not emulated: finalizers and graceful deletion, deletecollection, server-side apply, strategic
merge of lists by merge key, admission webhooks, field validation of specs, protobuf, TLS.

In-process (a background thread with its own event loop, so the synchronous client can be called
from any thread, an asyncio test's included)::

    with KubeAPIServer(kinds).running() as api:
        api.write_kubeconfig(path)          # the controller's identity
        client = api.admin_client()         # kubernetes.client.ApiClient as an admin
        api.apply(obj); api.forbid("list", "", "secrets"); api.compact(); api.drop_watches()
        api.stop(); api.start()             # an outage: same port, same objects

As a process: ``python -m aigw_fakes.kube_apiserver --kinds-json FILE --port 0 --kubeconfig OUT
--admin-token-out FILE`` prints ``listening on http://127.0.0.1:PORT`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .kube import errors, rbac
from .kube.auth import CONTROLLER_NAMESPACE, CONTROLLER_USER, Auth, User
from .kube.errors import ApiError
from .kube.resources import ResourceType, build_resources, discovery_groups, discovery_resources
from .kube.selectors import SelectorError, combine, field_matcher, label_matcher
from .kube.store import Event, Store, Watcher

__all__ = ["CONTROLLER_USER", "KubeAPIServer", "LoggedRequest"]

SERVER_VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0-aigw-emulated",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})
_JSON = "application/json"


@dataclass
class LoggedRequest:
    """One request as the server saw it (``status`` is set once it is answered)."""

    method: str
    path: str
    query: dict[str, str]
    user: str | None
    verb: str | None = None  # get, list, watch, create, update, patch, delete (None: discovery)
    resource: str | None = None  # plural, or <plural>/status
    namespace: str | None = None
    status: int | None = field(default=None)


@dataclass(frozen=True)
class _Target:
    res: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type=_JSON)


def _view(obj: dict[str, Any], res: ResourceType, version: str) -> dict[str, Any]:
    """The stored object as served under ``version``."""
    if version == res.storage_version:
        return obj
    return {**obj, "apiVersion": res.api_version(version)}


def _project(event: Event, namespace: str | None, matcher: Any) -> tuple[str, dict[str, Any]] | None:
    """What one watcher sees of an event: a MODIFIED object that enters its selection is ADDED,
    one that leaves it is DELETED (its previous state at the event's resourceVersion)."""

    def ok(o: dict[str, Any] | None) -> bool:
        return (
            o is not None
            and (namespace is None or o["metadata"].get("namespace") == namespace)
            and (matcher is None or matcher(o))
        )

    if event.type != "MODIFIED" or (namespace is None and matcher is None):
        return (event.type, event.obj) if ok(event.obj) else None
    new_ok, old_ok = ok(event.obj), ok(event.prev)
    if new_ok:
        return ("MODIFIED" if old_ok else "ADDED", event.obj)
    if old_ok and event.prev is not None:
        gone = {**event.prev, "metadata": {**event.prev["metadata"], "resourceVersion": str(event.rv)}}
        return ("DELETED", gone)
    return None


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise errors.bad_request(f"invalid {name}: {raw!r}") from exc


class KubeAPIServer:
    """The emulated API server (see the module docstring: a stand-in, not a real apiserver)."""

    def __init__(
        self,
        kinds: Iterable[Mapping[str, Any] | Iterable[Any]],
        *,
        bookmark_interval: float = 1.0,
        max_history: int = 10_000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.resources = build_resources(kinds)
        self.store = Store(self.resources, max_history=max_history)
        self.auth = Auth()
        self.bookmark_interval = bookmark_interval
        self.host = host
        self.port = port
        self._by_path = {(r.group, v, r.plural): r for r in self.resources for v in r.versions}
        self._log: list[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------------------ identity

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_token(self) -> str:
        return self.auth.admin_token

    @property
    def controller_token(self) -> str:
        return self.auth.controller_token

    def kubeconfig(self, token: str | None = None, namespace: str = CONTROLLER_NAMESPACE) -> dict[str, Any]:
        """A kubeconfig for this server (default: the controller's token)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulated", "cluster": {"server": self.url}}],
            "users": [{"name": "aigw-xds", "user": {"token": token or self.controller_token}}],
            "contexts": [
                {"name": "emulated", "context": {"cluster": "emulated", "user": "aigw-xds", "namespace": namespace}}
            ],
            "current-context": "emulated",
        }

    def write_kubeconfig(self, path: str | os.PathLike[str], token: str | None = None) -> Path:
        """Write the kubeconfig (JSON, which is YAML) readable by its owner only."""
        out = Path(path)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.kubeconfig(token), f, indent=2)
        return out

    def admin_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` authenticated with the admin token."""
        from kubernetes import client

        config = client.Configuration(host=self.url)
        config.api_key = {"BearerToken": self.admin_token}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(config)

    # --------------------------------------------------------------------- control (tests)

    def resource(self, kind_or_plural: str) -> ResourceType:
        """A served resource by kind, plural or ``plural.group``."""
        for r in self.resources:
            if kind_or_plural in (r.kind, r.plural, r.qualified):
                return r
        raise KeyError(kind_or_plural)

    def _resource_of(self, obj: Mapping[str, Any]) -> ResourceType:
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        for r in self.resources:
            if r.kind == obj.get("kind") and r.group == group and r.stored:
                return r
        raise KeyError(f"{obj.get('apiVersion')} {obj.get('kind')} is not served")

    @staticmethod
    def _ns(res: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if res.namespaced else ""

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace ``obj`` as an admin (no resourceVersion needed; status is ignored for
        kinds with the status subresource, as on the real API: see ``set_status``)."""
        res = self._resource_of(obj)
        body = copy.deepcopy(dict(obj))
        meta = body.setdefault("metadata", {})
        ns = self._ns(res, meta.get("namespace"))
        meta.pop("resourceVersion", None)
        try:
            stored = self.store.update(res, ns, meta["name"], body, status=False, force=True)
        except ApiError as exc:
            if exc.code != 404:
                raise
            stored = self.store.create(res, ns, body)
        return copy.deepcopy(stored)

    def set_status(self, kind: str, namespace: str | None, name: str, status: Any) -> dict[str, Any]:
        """Write ``status`` through the status subresource as an admin (validated like the API)."""
        res = self.resource(kind)
        return copy.deepcopy(
            self.store.update(res, self._ns(res, namespace), name, {"status": status}, status=True, force=True)
        )

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        res = self.resource(kind)
        try:
            return copy.deepcopy(self.store.get(res, self._ns(res, namespace), name))
        except ApiError:
            return None

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res = self.resource(kind)
        return copy.deepcopy(self.store.list_page(res, namespace if res.namespaced else None).items)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        res = self.resource(kind)
        self.store.delete(res, self._ns(res, namespace), name)

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def compact(self) -> None:
        """Drop the whole history: watches and list continuations from older versions get 410."""
        self.store.compact()

    def drop_watches(self) -> None:
        """End every open watch stream (as an API server restart does)."""
        self.store.drop_watches()

    def forbid(self, verb: str, group: str, resource: str) -> None:
        """Deny the controller ``verb`` (or ``*``) on ``resource`` (plural or ``plural/status``)."""
        self.auth.forbid(verb, group, resource)

    def allow(self, verb: str, group: str, resource: str) -> None:
        self.auth.allow(verb, group, resource)

    def issue_token(self, namespace: str, service_account: str, audiences: Iterable[str] = ("aigw-xds",)) -> str:
        return self.auth.issue_token(namespace, service_account, audiences)

    def revoke_token(self, token: str) -> None:
        self.auth.revoke_token(token)

    @property
    def request_log(self) -> list[LoggedRequest]:
        with self._log_lock:
            return list(self._log)

    def clear_request_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    # ------------------------------------------------------------------------------ running

    async def start_async(self) -> None:
        """Bind and serve on the running loop (``self.port`` is the bound port afterwards)."""
        self.store.serve_watches(True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop_async(self) -> None:
        self.store.serve_watches(False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> KubeAPIServer:
        """Serve from a background thread with its own loop (again on the same port after stop())."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        thread = threading.Thread(target=run, name="kube-apiserver", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the emulated API server did not start within 10 s")
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving (every watch ends); the objects stay for start()."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self.store.serve_watches(False)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = None
        self._loop = None

    @contextlib.contextmanager
    def running(self) -> Iterator[KubeAPIServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # --------------------------------------------------------------------------------- HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        user = self.auth.authenticate(request.headers.get("Authorization"))
        entry = LoggedRequest(request.method, request.path, dict(request.query), user.name if user else None)
        with self._log_lock:
            self._log.append(entry)
        path = request.path.rstrip("/") or "/"
        try:
            if path in _PUBLIC_PATHS:
                resp: web.StreamResponse = _json(SERVER_VERSION) if path == "/version" else web.Response(text="ok")
            elif user is None:
                raise errors.unauthorized()
            else:
                resp = await self._route(request, user, entry)
        except ApiError as exc:
            resp = _json(exc.status, exc.code)
        entry.status = resp.status
        return resp

    def _discovery(self, parts: list[str]) -> web.Response | None:
        if parts == ["api"]:
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            )
        if parts == ["apis"]:
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": discovery_groups(self.resources)})
        if len(parts) == 2 and parts[0] == "apis":
            for g in discovery_groups(self.resources):
                if g["name"] == parts[1]:
                    return _json({"kind": "APIGroup", "apiVersion": "v1", **g})
            raise errors.route_not_found()
        if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            resources = discovery_resources(self.resources, group, version)
            if not resources:
                raise errors.route_not_found()
            return _json(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": resources,
                }
            )
        return None

    def _target(self, parts: list[str]) -> _Target:
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.route_not_found()
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise errors.route_not_found()
        res = self._by_path.get((group, version, rest[0]))
        if res is None or (namespace is not None and not res.namespaced):
            raise errors.route_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and (sub != "status" or not res.status_subresource):
            raise errors.route_not_found()
        if name is not None and res.namespaced and namespace is None:
            raise errors.route_not_found()
        return _Target(res, version, namespace, name, sub)

    @staticmethod
    def _verb(method: str, t: _Target, query: Mapping[str, str]) -> str:
        named = t.name is not None
        verbs = {
            ("GET", False): "watch" if query.get("watch") in ("true", "1") else "list",
            ("GET", True): "get",
            ("POST", False): "create",
            ("PUT", True): "update",
            ("PATCH", True): "patch",
            ("DELETE", True): "delete",
        }
        verb = verbs.get((method, named))
        if verb is None or (t.subresource and verb not in ("get", "update", "patch")) or verb not in t.res.verbs:
            raise errors.method_not_allowed(method)
        if t.res.namespaced and verb == "create" and t.namespace is None:
            raise errors.route_not_found()
        return verb

    async def _route(self, request: web.Request, user: User, entry: LoggedRequest) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            raise errors.route_not_found()
        discovered = self._discovery(parts)
        if discovered is not None:
            return discovered
        t = self._target(parts)
        query = request.query
        verb = self._verb(request.method, t, query)
        resource = f"{t.res.plural}/{t.subresource}" if t.subresource else t.res.plural
        entry.verb, entry.resource, entry.namespace = verb, resource, t.namespace
        if not self.auth.allowed(user, verb, t.res.group, resource):
            raise errors.forbidden(user.name, verb, t.res, t.subresource, t.namespace, t.name)
        if verb == "watch":
            return await self._watch(request, t)
        if verb == "list":
            return self._list(t, query)
        ns = t.namespace or ""
        if verb == "get":
            return _json(_view(self.store.get(t.res, ns, t.name or ""), t.res, t.version))
        body = await self._body(request)
        if verb == "create":
            if t.res.plural == "subjectaccessreviews":
                return self._access_review(body)
            if not t.res.stored:
                return self._token_review(body)
            return _json(_view(self.store.create(t.res, ns, body), t.res, t.version), 201)
        name = t.name or ""
        if verb == "update":
            return _json(
                _view(self.store.update(t.res, ns, name, body, status=t.subresource == "status"), t.res, t.version)
            )
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            patched = self.store.patch(t.res, ns, name, content_type, body, status=t.subresource == "status")
            return _json(_view(patched, t.res, t.version))
        preconditions = body.get("preconditions") if isinstance(body, dict) else None
        deleted = self.store.delete(t.res, ns, name, preconditions)
        if t.res.delete_returns_object:
            return _json(_view(deleted, t.res, t.version))
        details = {"name": name, "kind": t.res.plural, "uid": deleted["metadata"]["uid"]}
        if t.res.group:
            details["group"] = t.res.group
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise errors.bad_request(f"the body of the request is not valid JSON: {exc}") from exc

    def _token_review(self, body: Any) -> web.Response:
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict) or not spec.get("token"):
            res = self.resource("tokenreviews")
            raise errors.invalid(res, "", [("FieldValueRequired", "spec.token", "Required value")])
        return _json(
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": self.auth.review(spec),
            },
            201,
        )

    def _access_review(self, body: Any) -> web.Response:
        spec = body.get("spec") if isinstance(body, dict) else None
        problems = rbac.review_problems(spec)
        if problems:
            raise errors.invalid(self.resource("subjectaccessreviews"), "", problems)
        assert isinstance(spec, dict)
        status = rbac.decide(spec, self.objects)
        return _json(
            {
                "kind": "SubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            201,
        )

    @staticmethod
    def _matcher(query: Mapping[str, str]) -> Any:
        try:
            return combine(label_matcher(query.get("labelSelector")), field_matcher(query.get("fieldSelector")))
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc

    def _list(self, t: _Target, query: Mapping[str, str]) -> web.Response:
        page = self.store.list_page(
            t.res, t.namespace, self._matcher(query), _int_param(query, "limit"), query.get("continue")
        )
        meta: dict[str, Any] = {"resourceVersion": str(page.resource_version)}
        if page.continue_token:
            meta["continue"] = page.continue_token
            if "labelSelector" not in query and "fieldSelector" not in query and page.remaining is not None:
                meta["remainingItemCount"] = page.remaining
        return _json(
            {
                "kind": f"{t.res.kind}List",
                "apiVersion": t.res.api_version(t.version),
                "metadata": meta,
                "items": [_view(o, t.res, t.version) for o in page.items],
            }
        )

    async def _watch(self, request: web.Request, t: _Target) -> web.StreamResponse:
        query = request.query
        matcher = self._matcher(query)
        rv = query.get("resourceVersion")
        since = None if rv in (None, "", "0") else _int_param(query, "resourceVersion")
        timeout = _int_param(query, "timeoutSeconds")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        resp = web.StreamResponse(status=200, headers={"Content-Type": _JSON, "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        try:
            backlog, watcher = self.store.start_watch(t.res, since, loop, wake)
        except ApiError as exc:  # too old: 200 and one ERROR event, as a real server answers
            await resp.prepare(request)
            await resp.write(_dumps({"type": "ERROR", "object": exc.status}) + b"\n")
            await resp.write_eof()
            return resp
        try:
            await resp.prepare(request)
            await self._send(resp, backlog, t, matcher)
            deadline = loop.time() + timeout if timeout else None
            next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
            while not watcher.closed:
                if request.transport is None or request.transport.is_closing():
                    break  # the client hung up
                wake_at = min((x for x in (deadline, next_bookmark) if x is not None), default=loop.time() + 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.0, min(wake_at, loop.time() + 1.0) - loop.time()))
                wake.clear()
                await self._send(resp, self._drain(watcher), t, matcher)
                now = loop.time()
                if deadline is not None and now >= deadline:
                    break
                if next_bookmark is not None and now >= next_bookmark:
                    bookmark_rv = self.store.bookmark_rv(watcher)
                    if bookmark_rv is not None:
                        await self._bookmark(resp, t, bookmark_rv)
                        next_bookmark = now + self.bookmark_interval
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.stop_watch(watcher)
        return resp

    @staticmethod
    def _drain(watcher: Watcher) -> list[Event]:
        out = []
        while watcher.pending:
            out.append(watcher.pending.popleft())
        return out

    @staticmethod
    async def _send(resp: web.StreamResponse, events: list[Event], t: _Target, matcher: Any) -> None:
        lines = []
        for e in events:
            seen = _project(e, t.namespace, matcher)
            if seen is not None:
                lines.append(_dumps({"type": seen[0], "object": _view(seen[1], t.res, t.version)}) + b"\n")
        if lines:
            await resp.write(b"".join(lines))

    @staticmethod
    async def _bookmark(resp: web.StreamResponse, t: _Target, rv: int) -> None:
        obj = {"kind": t.res.kind, "apiVersion": t.res.api_version(t.version), "metadata": {"resourceVersion": str(rv)}}
        await resp.write(_dumps({"type": "BOOKMARK", "object": obj}) + b"\n")


# ------------------------------------------------------------------------------------ process


async def _serve(server: KubeAPIServer, args: argparse.Namespace) -> None:
    await server.start_async()
    if args.kubeconfig:
        server.write_kubeconfig(args.kubeconfig)
    if args.admin_token_out:
        fd = os.open(args.admin_token_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server.admin_token)
    print(f"listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop_async()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigw_fakes.kube_apiserver", description=__doc__.split("\n")[0])
    parser.add_argument("--kinds-json", required=True, help="JSON list of {kind, group, version, plural, namespaced}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", help="write a kubeconfig with the controller's token here")
    parser.add_argument("--admin-token-out", help="write the admin token to this file")
    parser.add_argument("--bookmark-interval", type=float, default=1.0, help="seconds (real servers: ~60)")
    parser.add_argument("--max-history", type=int, default=10_000)
    args = parser.parse_args(argv)
    kinds = json.loads(Path(args.kinds_json).read_text())
    server = KubeAPIServer(
        kinds, bookmark_interval=args.bookmark_interval, max_history=args.max_history, host=args.host, port=args.port
    )
    asyncio.run(_serve(server, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
