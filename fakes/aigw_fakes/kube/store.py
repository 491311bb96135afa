"""The emulated API server's storage: objects, one global resourceVersion, the event history and
the open watches (thread-safe: the HTTP server's loop and the test's threads share it).

What it keeps faithful to a real kube-apiserver + etcd:

* every write takes the next global resourceVersion (a string of an int on the object and in
  events); a write that changes nothing is not a write (no new resourceVersion, no event);
* ``metadata.generation`` is 1 on create and grows only when ``spec`` changes (for objects without
  ``spec``: anything but metadata and status);
* kinds with a status subresource: writes to the object ignore ``status``, writes to ``/status``
  change nothing but ``status`` (validated: see validation.py); a new Gateway/GatewayClass gets the
  Gateway API CRDs' default status (Unknown / Pending / "Waiting for controller");
* update needs the current resourceVersion (422 without one for custom resources and Leases, 409
  when stale); patch is applied to the current object (merge patch, JSON patch, strategic merge
  patch on built-in types only, approximated by merge patch: list merge keys are not emulated);
* the history is bounded (``max_history`` events, the oldest compacted first, like etcd's
  compaction) and ``compact()`` drops it all: a watch or a list continuation from an older
  resourceVersion is answered 410 Expired;
* built-in types are decoded as the real server decodes them (builtins.py: Secret stringData,
  Service defaults, Lease MicroTime);
* a paginated list is consistent: every page is served from the state at the first page's
  resourceVersion (rebuilt from the history), as etcd serves it.

Stored objects are never modified in place (every write builds a new dict), so readers may hold
them without the lock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import errors
from .builtins import prepare
from .errors import ApiError
from .patch import PatchError, json_patch, merge_patch
from .resources import ResourceType
from .validation import validate_status

ObjKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"

_PENDING_CONDITION = {
    "lastTransitionTime": "1970-01-01T00:00:00Z",
    "message": "Waiting for controller",
    "reason": "Pending",
    "status": "Unknown",
}
# the status the Gateway API CRD schemas default a new object to
_DEFAULT_STATUS: dict[tuple[str, str], tuple[str, ...]] = {
    ("gateway.networking.k8s.io", "GatewayClass"): ("Accepted",),
    ("gateway.networking.k8s.io", "Gateway"): ("Accepted", "Programmed"),
}
_TOP_LEVEL_META = ("apiVersion", "kind", "metadata", "status")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_status(res: ResourceType) -> dict[str, Any] | None:
    types = _DEFAULT_STATUS.get((res.group, res.kind))
    if not types:
        return None
    return {"conditions": [{**_PENDING_CONDITION, "type": t} for t in types]}


def generation_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether an update bumps metadata.generation: spec changed (objects with no spec: anything
    but apiVersion, kind, metadata and status)."""
    if "spec" in old or "spec" in new:
        return old.get("spec") != new.get("spec")

    def rest(o: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in o.items() if k not in _TOP_LEVEL_META}

    return rest(old) != rest(new)


def obj_key(obj: dict[str, Any]) -> ObjKey:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def rv_of(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def encode_continue(rv: int, last: ObjKey) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(last)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, ObjKey]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        ns, name = raw["start"]
        return int(raw["rv"]), (str(ns), str(name))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion") from exc


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: tuple[str, str]  # (group, plural)
    obj: dict[str, Any]  # the object as stored by this event (for DELETED: its last state, this rv)
    prev: dict[str, Any] | None  # the object before (None for ADDED)


class Watcher:
    """One open watch: events are appended under the store's lock, the HTTP handler drains them."""

    def __init__(self, resource: tuple[str, str], loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        self.resource = resource
        self.pending: deque[Event] = deque()
        self.closed = False
        self._loop = loop
        self._wake = wake

    def notify(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the server's loop is gone: the watch is over anyway
            self.closed = True


@dataclass(frozen=True)
class ListPage:
    items: list[dict[str, Any]]
    resource_version: int
    continue_token: str | None
    remaining: int | None


class Store:
    def __init__(self, resources: Iterable[ResourceType], max_history: int = 10_000) -> None:
        self.resources = {r.key: r for r in resources}
        self.max_history = max_history
        self._lock = threading.RLock()
        self._rv = 0
        self._floor = 0  # events after this resourceVersion are all in the history
        self._history: deque[Event] = deque()
        self._objects: dict[tuple[str, str], dict[ObjKey, dict[str, Any]]] = {k: {} for k in self.resources}
        self._watchers: dict[tuple[str, str], set[Watcher]] = {k: set() for k in self.resources}
        # False while the server stops: a watch begun then is born closed (a client reconnecting in
        # that moment must not keep a stream the stop leaves open, and see events through it).
        self._serving = True

    # ---------------------------------------------------------------------------------- reads

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def get(self, res: ResourceType, ns: str, name: str) -> dict[str, Any]:
        with self._lock:
            obj = self._objects[res.key].get((ns, name))
        if obj is None:
            raise errors.not_found(res, name)
        return obj

    def _state_at(self, res: ResourceType, rv: int) -> dict[ObjKey, dict[str, Any]]:
        """The objects of ``res`` as they were at ``rv`` (the live dict when nothing changed since)."""
        current = self._objects[res.key]
        later = []
        for e in reversed(self._history):
            if e.rv <= rv:
                break
            if e.resource == res.key:
                later.append(e)
        if not later:
            return current
        snap = dict(current)
        for e in later:  # newest first: undo each
            if e.type == "ADDED":
                snap.pop(obj_key(e.obj), None)
            elif e.prev is not None:
                snap[obj_key(e.prev)] = e.prev
        return snap

    def list_page(
        self,
        res: ResourceType,
        ns: str | None,
        matcher: Any = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListPage:
        start: ObjKey | None = None
        with self._lock:
            if continue_token:
                list_rv, start = decode_continue(continue_token)
                if list_rv < self._floor:
                    raise errors.expired_continue()
                state = self._state_at(res, list_rv)
            else:
                list_rv, state = self._rv, self._objects[res.key]
            keys = sorted(k for k in state if (ns is None or k[0] == ns) and (start is None or k > start))
            candidates = [state[k] for k in keys]
        items = [o for o in candidates if matcher(o)] if matcher else candidates
        if limit and len(items) > limit:
            page = items[:limit]
            return ListPage(page, list_rv, encode_continue(list_rv, obj_key(page[-1])), len(items) - limit)
        return ListPage(items, list_rv, None, None)

    # --------------------------------------------------------------------------------- writes

    def _commit(
        self, res: ResourceType, etype: str, obj: dict[str, Any], prev: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store a write under the next resourceVersion (``obj`` is a fresh dict with its own metadata)."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        objects = self._objects[res.key]
        if etype == "DELETED":
            del objects[obj_key(obj)]
        else:
            objects[obj_key(obj)] = obj
        event = Event(self._rv, etype, res.key, obj, prev)
        self._history.append(event)
        while len(self._history) > self.max_history:
            self._floor = self._history.popleft().rv
        for w in self._watchers[res.key]:
            w.pending.append(event)
            w.notify()
        return obj

    @staticmethod
    def _check_identity(res: ResourceType, ns: str, body: dict[str, Any], name: str | None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request is not a JSON object")
        kind = body.get("kind")
        if kind is not None and kind != res.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the resource ({res.kind})")
        api_version = body.get("apiVersion")
        if api_version is not None and api_version not in {res.api_version(v) for v in res.versions}:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match "
                f"the expected API version ({res.api_version()})"
            )
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata is not an object")
        if res.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if name is not None and meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        return meta

    def create(self, res: ResourceType, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = self._check_identity(res, ns, body, None)
        with self._lock:
            name = meta.get("name")
            if not name:
                if not meta.get("generateName"):
                    raise errors.invalid(
                        res,
                        "",
                        [("FieldValueRequired", "metadata.name", "Required value: name or generateName is required")],
                    )
                name = meta["generateName"] + secrets.token_hex(3)[:5]
            if (ns, name) in self._objects[res.key]:
                raise errors.already_exists(res, name)
            new_meta = {
                k: v for k, v in meta.items() if k not in ("resourceVersion", "uid", "generation", "deletionTimestamp")
            }
            new_meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
            if res.namespaced:
                new_meta["namespace"] = ns
            else:
                new_meta.pop("namespace", None)
            new = prepare(res, {**body, "apiVersion": res.api_version(), "kind": res.kind, "metadata": new_meta}, None)
            if res.status_subresource:
                new.pop("status", None)
                if (status := default_status(res)) is not None:
                    new["status"] = status
            return self._commit(res, "ADDED", new, None)

    def update(
        self, res: ResourceType, ns: str, name: str, body: dict[str, Any], *, status: bool, force: bool = False
    ) -> dict[str, Any]:
        """PUT (``status``: PUT /status). ``force`` skips the resourceVersion check (the test's apply)."""
        meta = self._check_identity(res, ns, body, name)
        with self._lock:
            current = self._objects[res.key].get((ns, name))
            if current is None:
                raise errors.not_found(res, name)
            return self._update(res, current, body, meta, status=status, force=force)

    def _update(
        self,
        res: ResourceType,
        current: dict[str, Any],
        body: dict[str, Any],
        meta: dict[str, Any],
        *,
        status: bool,
        force: bool,
    ) -> dict[str, Any]:
        name = current["metadata"]["name"]
        rv = meta.get("resourceVersion")
        if not force:
            if not rv:
                if not res.unconditional_update:
                    raise errors.invalid(
                        res,
                        name,
                        [
                            (
                                "FieldValueInvalid",
                                "metadata.resourceVersion",
                                "Invalid value: 0x0: must be specified for an update",
                            )
                        ],
                    )
            elif rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
        cur_meta = current["metadata"]
        if status:
            new = {k: v for k, v in current.items() if k != "status"}
            if "status" in body:
                new["status"] = body["status"]
            if res.validate_conditions and (causes := validate_status(new.get("status"), res.max_conditions)):
                raise errors.invalid(res, name, causes)
            new["metadata"] = dict(cur_meta)
        else:
            new_meta = {k: v for k, v in meta.items() if k != "deletionTimestamp"}
            for k in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"):
                if k in cur_meta:
                    new_meta[k] = cur_meta[k]
            new = {**body, "apiVersion": current["apiVersion"], "kind": res.kind, "metadata": new_meta}
            new = prepare(res, new, current)
            new_meta = new["metadata"]
            if res.status_subresource:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = current["status"]
            if generation_changed(current, new):
                new_meta["generation"] = int(cur_meta.get("generation", 0)) + 1
        if new == current:
            return current
        return self._commit(res, "MODIFIED", new, current)

    def patch(
        self, res: ResourceType, ns: str, name: str, content_type: str, doc: Any, *, status: bool
    ) -> dict[str, Any]:
        with self._lock:
            current = self._objects[res.key].get((ns, name))
            if current is None:
                raise errors.not_found(res, name)
            try:
                if content_type == MERGE_PATCH or (content_type == STRATEGIC_PATCH and res.built_in):
                    patched = merge_patch(current, doc)
                elif content_type == JSON_PATCH:
                    patched = json_patch(current, doc)
                else:
                    raise errors.unsupported_media_type(content_type)
            except PatchError as exc:
                raise ApiError(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
                ) from exc
            if not isinstance(patched, dict):
                raise errors.bad_request("the patch does not leave an object")
            meta = self._check_identity(res, ns, patched, name)
            if not meta.get("resourceVersion"):
                meta = {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}
            return self._update(res, current, patched, meta, status=status, force=False)

    def delete(
        self, res: ResourceType, ns: str, name: str, preconditions: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            current = self._objects[res.key].get((ns, name))
            if current is None:
                raise errors.not_found(res, name)
            cur_meta = current["metadata"]
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                want = (preconditions or {}).get(field)
                if want and want != cur_meta.get(field):
                    raise errors.conflict(
                        res,
                        name,
                        f"Precondition failed: {label} in precondition: {want}, "
                        f"{label} in object meta: {cur_meta.get(field)}",
                    )
            return self._commit(res, "DELETED", {**current, "metadata": dict(cur_meta)}, current)

    # -------------------------------------------------------------------------------- watches

    def start_watch(
        self, res: ResourceType, since: int | None, loop: asyncio.AbstractEventLoop, wake: asyncio.Event
    ) -> tuple[list[Event], Watcher]:
        """The events to send first (synthetic ADDED for every object when ``since`` is None, else
        the history after ``since``) and the registered watcher for what follows."""
        with self._lock:
            if since is None:
                objects = self._objects[res.key]
                backlog = [Event(self._rv, "ADDED", res.key, objects[k], None) for k in sorted(objects)]
            else:
                if since < self._floor:
                    raise errors.too_old_resource_version(since, self._floor)
                backlog = []
                for e in reversed(self._history):
                    if e.rv <= since:
                        break
                    if e.resource == res.key:
                        backlog.append(e)
                backlog.reverse()
            watcher = Watcher(res.key, loop, wake)
            watcher.closed = not self._serving
            self._watchers[res.key].add(watcher)
            return backlog, watcher

    def stop_watch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers[watcher.resource].discard(watcher)

    def bookmark_rv(self, watcher: Watcher) -> int | None:
        """The resourceVersion a bookmark may carry now (None while events are still pending)."""
        with self._lock:
            return None if watcher.pending else self._rv

    def serve_watches(self, serving: bool) -> None:
        """Whether watches are served: when not (the server stops), every open one ends, and one
        begun meanwhile ends at once."""
        with self._lock:
            self._serving = serving
        if not serving:
            self.drop_watches()

    def drop_watches(self) -> None:
        with self._lock:
            for watchers in self._watchers.values():
                for w in watchers:
                    w.closed = True
                    w.notify()

    def compact(self) -> None:
        with self._lock:
            self._history.clear()
            self._floor = self._rv
