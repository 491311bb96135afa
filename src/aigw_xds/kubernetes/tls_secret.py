"""The xDS server's TLS from a Secret of the API server, created when missing (serve --kubernetes
--tls-secret NAMESPACE/NAME).

At start every replica reads the Secret. When it does not exist, the replica creates a CA and a
serving certificate (serving_certs.py) and creates the Secret; when another replica created it
first (409 AlreadyExists), it reads that one, so all replicas serve the same certificate. A Secret
we created (label app.kubernetes.io/managed-by=aigw-xds) is renewed at start when its serving
certificate has less than 30 days left: reissued from the same CA and written back with its
resourceVersion (a replica that loses the race, 409 Conflict, reads the winner's). A Secret someone
else manages (cert-manager...) is served as it is and never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..sources.kube_kinds import BY_KIND
from .api import KubeAPI, KubeError
from .serving_certs import (
    CertificateError,
    ServingTLS,
    ca_renewal_reason,
    from_secret_data,
    new_authority,
    reissue,
    renewal_reason,
)

log = structlog.get_logger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "aigw-xds"
_SECRET = BY_KIND["Secret"]
_ATTEMPTS = 5


@dataclass(frozen=True)
class Decision:
    """What to do with the Secret as read: serve `tls`; `write` it back when it was (re)issued."""

    tls: ServingTLS
    write: bool
    reason: str | None = None


def managed(secret: dict[str, Any]) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY) == MANAGER)


def decide(secret: dict[str, Any], now: datetime.datetime, dns_names: tuple[str, ...]) -> Decision:
    """Serve the Secret's certificates as they are, reissue the serving certificate from its CA, or
    (ours, and unusable or its CA ending) start over with a new CA. Raises CertificateError for an
    unusable Secret that is not ours."""
    try:
        tls = from_secret_data(secret.get("data"))
    except CertificateError as exc:
        if not managed(secret):
            raise
        return Decision(new_authority(now, dns_names), True, f"the Secret is unusable: {exc}")
    if not managed(secret):
        return Decision(tls, False, renewal_reason(tls, now, dns_names))
    reason = ca_renewal_reason(tls, now)
    if reason is not None:
        return Decision(new_authority(now, dns_names), True, reason)
    reason = renewal_reason(tls, now, dns_names)
    if reason is not None:
        assert tls.ca_key is not None  # ca_renewal_reason checked it
        return Decision(reissue(tls.ca, tls.ca_key, now, dns_names), True, reason)
    return Decision(tls, False)


LABELS = {MANAGED_BY: MANAGER, "app.kubernetes.io/part-of": "aigw-xds"}


def secret_manifest(namespace: str, name: str, tls: ServingTLS) -> dict[str, Any]:
    """A new Secret holding `tls`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
        "type": "kubernetes.io/tls",
        "data": tls.secret_data(),
    }


def replaced(current: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    """`current` (as read: its resourceVersion guards the update) with `data` instead of its own and
    our labels; what others added to it (labels, annotations, owners) is kept."""
    body = copy.deepcopy(current)
    body.pop("stringData", None)
    body["data"] = data
    metadata = body.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    metadata["labels"] = {**(metadata.get("labels") or {}), **LABELS}
    return body


def ca_fingerprint(ca_pem: bytes) -> str:
    """SHA-256 of the CA certificate (DER), as `openssl x509 -fingerprint -sha256` prints it."""
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def ensure_serving_tls(
    api: KubeAPI,
    namespace: str,
    name: str,
    dns_names: tuple[str, ...],
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> ServingTLS:
    """The certificates to serve, from the Secret NAMESPACE/NAME (created or renewed as the module
    says). Blocking (call it in a thread). Raises KubeError (the API refused: e.g. RBAC) or
    CertificateError (a Secret that is not ours cannot be used); neither names key material."""
    where = f"{namespace}/{name}"
    for _ in range(_ATTEMPTS):
        now = clock()
        try:
            secret = api.get(_SECRET.path(namespace, name))
        except KubeError as exc:
            if exc.status != 404:
                raise
            tls = new_authority(now, dns_names)
            try:
                api.request("POST", _SECRET.path(namespace), body=secret_manifest(namespace, name, tls))
            except KubeError as exc:
                if exc.status == 409:  # another replica created it first: serve theirs
                    log.info("xds_tls_secret_created_by_another_replica", secret=where)
                    continue
                raise
            _log_serving("xds_tls_secret_created", where, tls, "the Secret did not exist")
            return tls
        try:
            decision = decide(secret, now, dns_names)
        except CertificateError as exc:
            raise CertificateError(f"the TLS Secret {where} (not managed by aigw-xds) cannot be used: {exc}") from None
        if not decision.write:
            if decision.reason is not None:
                log.warning(
                    "xds_tls_secret_not_renewed",
                    secret=where,
                    reason=decision.reason,
                    why=f"not managed by aigw-xds (no label {MANAGED_BY}={MANAGER}): served as it is",
                )
            _log_serving("xds_tls_secret_read", where, decision.tls, None)
            return decision.tls
        body = replaced(secret, decision.tls.secret_data())
        try:
            api.request("PUT", _SECRET.path(namespace, name), body=body)
        except KubeError as exc:
            if exc.status in (404, 409):  # another replica renewed (or someone deleted) it: read again
                log.info("xds_tls_secret_changed_meanwhile", secret=where)
                continue
            raise
        _log_serving("xds_tls_secret_renewed", where, decision.tls, decision.reason)
        return decision.tls
    raise KubeError(409, "Conflict", f"the TLS Secret {where} kept changing while being read ({_ATTEMPTS} attempts)")


async def keep_current(
    api: KubeAPI,
    namespace: str,
    name: str,
    dns_names: tuple[str, ...],
    serving: ServingTLS,
    on_change: Callable[[ServingTLS], None],
    stop: asyncio.Event,
    every: float = 60.0,
    renew_every: float = 12 * 3600.0,
) -> None:
    """While serving: every `every` seconds a look at the Secret's resourceVersion, and when it
    changed (another replica's renewal, a Secret deleted and made again, a rotation of a Secret
    someone else manages), or every `renew_every` seconds (a replica running for months renews),
    ensure_serving_tls again, and on_change with certificates that differ from those served. A
    failure is a warning and waits for the next round (the certificate served stays valid for
    weeks)."""
    where = f"{namespace}/{name}"
    try:  # the version served from (a change before this look is caught at the first full check)
        seen: str | None = await asyncio.to_thread(_resource_version, api, namespace, name)
    except KubeError:
        seen = None  # unknown: the first round checks in full
    checked = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            version = await asyncio.to_thread(_resource_version, api, namespace, name)
            if version == seen and time.monotonic() - checked < renew_every:
                continue
            latest = await asyncio.to_thread(ensure_serving_tls, api, namespace, name, dns_names)
            seen, checked = await asyncio.to_thread(_resource_version, api, namespace, name), time.monotonic()
        except (KubeError, CertificateError) as exc:
            log.warning("xds_tls_secret_unchecked", secret=where, error=str(exc))
            continue
        if latest != serving:
            serving = latest
            on_change(latest)
            log.info("xds_tls_certificate_replaced", secret=where, not_after=latest.not_after.isoformat())


def _resource_version(api: KubeAPI, namespace: str, name: str) -> str:
    """The Secret's resourceVersion ("" while it does not exist)."""
    try:
        secret = api.get(_SECRET.path(namespace, name))
    except KubeError as exc:
        if exc.status == 404:
            return ""
        raise
    return str((secret.get("metadata") or {}).get("resourceVersion", ""))


def _log_serving(event: str, where: str, tls: ServingTLS, reason: str | None) -> None:
    log.info(
        event,
        secret=where,
        reason=reason,
        dns_names=list(tls.dns_names),
        not_after=tls.not_after.isoformat(),
        ca_sha256=ca_fingerprint(tls.ca),
    )
