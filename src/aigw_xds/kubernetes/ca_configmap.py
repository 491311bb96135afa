"""Publishes the xDS server's CA certificate (public) as the ConfigMap `aigw-xds-ca` (key ca.crt) in
every namespace that holds one of our Gateways, for the Envoys and translator sidecars there to
verify the control plane with (they mount it).

Every replica publishes, idempotently: all replicas serve certificates of the same CA (one Secret),
so they want identical ConfigMaps; each reads the ConfigMap and writes only when it is missing or
differs (a create that loses to another replica, 409, is read again and compared). Not the leader
only: the sidecars of a Gateway in a new namespace cannot start without the CA, and a leader
election in progress (up to the lease duration after a crash) must not delay that; the price is one
GET per replica and namespace when the set of namespaces changes, and every `resync` seconds (which
also repairs a ConfigMap someone deleted or edited). A namespace whose Gateways are gone keeps its
ConfigMap: pods there may still mount it, and it holds nothing secret.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from ..compile import CompileResult
from ..sources.kube_kinds import BY_KIND
from .api import KubeAPI, KubeError
from .tls_secret import LABELS, replaced

log = structlog.get_logger(__name__)

CONFIGMAP_NAME = "aigw-xds-ca"
CA_KEY = "ca.crt"
_CONFIGMAP = BY_KIND["ConfigMap"]
_ATTEMPTS = 5


def gateway_namespaces(result: CompileResult) -> frozenset[str]:
    """The namespaces of our Gateways in a compile result: those that compiled and those that failed
    (their Envoys still connect, and get their last good configuration)."""
    return frozenset(fleet.partition("/")[0] for fleet in (*result.gateways, *result.failed))


def configmap_manifest(namespace: str, ca_pem: str) -> dict[str, Any]:
    metadata = {"name": CONFIGMAP_NAME, "namespace": namespace, "labels": dict(LABELS)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {CA_KEY: ca_pem}}


def publish(api: KubeAPI, namespace: str, ca_pem: str) -> str:
    """Make the namespace's ConfigMap hold `ca_pem`: "created", "updated" or "unchanged". Blocking.
    Raises KubeError when the API refuses (e.g. RBAC, or the namespace is gone)."""
    path = _CONFIGMAP.path(namespace, CONFIGMAP_NAME)
    for _ in range(_ATTEMPTS):
        try:
            current = api.get(path)
        except KubeError as exc:
            if exc.status != 404:
                raise
            try:
                api.request("POST", _CONFIGMAP.path(namespace), body=configmap_manifest(namespace, ca_pem))
            except KubeError as exc:
                if exc.status == 409:  # another replica created it: compare theirs
                    continue
                raise
            return "created"
        if (current.get("data") or {}).get(CA_KEY) == ca_pem:
            return "unchanged"
        try:
            api.request("PUT", path, body=replaced(current, {CA_KEY: ca_pem}))
        except KubeError as exc:
            if exc.status in (404, 409):  # changed or deleted meanwhile: look again
                continue
            raise
        return "updated"
    raise KubeError(409, "Conflict", f"the ConfigMap {namespace}/{CONFIGMAP_NAME} kept changing ({_ATTEMPTS} attempts)")


class CAPublisher:
    """Keeps the ConfigMap current in the namespaces `want` names (see the module docstring)."""

    def __init__(
        self, api: KubeAPI, ca_pem: bytes, *, resync: float = 600.0, retry: float = 2.0, max_retry: float = 60.0
    ) -> None:
        self.api = api
        self.ca_pem = ca_pem.decode()
        self.resync = resync
        self.retry = retry
        self.max_retry = max_retry
        self.writes = 0
        self._wanted: frozenset[str] = frozenset()
        self._current: set[str] = set()  # namespaces known to hold the CA
        self._dirty = asyncio.Event()

    def want(self, namespaces: frozenset[str]) -> None:
        """The namespaces of our Gateways now (after each compile)."""
        if namespaces != self._wanted:
            self._wanted = namespaces
            self._dirty.set()

    def set_ca(self, ca_pem: bytes) -> None:
        """A new CA (the Secret was started over): every ConfigMap is written again."""
        if ca_pem.decode() != self.ca_pem:
            self.ca_pem = ca_pem.decode()
            self._current.clear()
            self._dirty.set()

    @property
    def pending(self) -> frozenset[str]:
        return self._wanted - self._current

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.retry
        last_resync = asyncio.get_running_loop().time()
        while not stop.is_set():
            await _first_of(self._dirty, stop, timeout=delay if self.pending else self.resync)
            if stop.is_set():
                return
            self._dirty.clear()
            now = asyncio.get_running_loop().time()
            if now - last_resync >= self.resync:
                self._current.clear()  # look at every ConfigMap again
                last_resync = now
            failed = False
            for namespace in sorted(self.pending):
                failed |= not await asyncio.to_thread(self._publish, namespace)
            delay = min(delay * 2, self.max_retry) if failed else self.retry

    def _publish(self, namespace: str) -> bool:
        try:
            outcome = publish(self.api, namespace, self.ca_pem)
        except KubeError as exc:
            log.warning("xds_ca_configmap_not_published", namespace=namespace, name=CONFIGMAP_NAME, error=exc.message)
            return False
        self._current.add(namespace)
        if outcome != "unchanged":
            self.writes += 1
            log.info("xds_ca_configmap_published", namespace=namespace, name=CONFIGMAP_NAME, outcome=outcome)
        return True


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    """Return when one of the events is set, or after `timeout` seconds."""
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
