"""Microsoft Entra ID bearer tokens for Azure OpenAI backends (a policy's AzureCredentials): the
OAuth 2.0 client-credentials grant of the policy's app (tenant, client id, client secret) for the
scope https://cognitiveservices.azure.com/.default.

One token per (tenant, client id, client secret), cached and shared by every backend with those
credentials. The request path only waits on the token endpoint when it has no valid token at all
(the first request, or after the token expired during an outage); a token nearing its expiry
(5 minutes before, or half its lifetime for short-lived tokens) is refreshed in the background while
the current one is still sent. A token that cannot be had is a CredentialsUnavailable (503 in the
client's schema) with one error log line per outage, never the secret.

The token request is a plain POST {authority}/{tenant}/oauth2/v2.0/token (what azure-identity's
ClientSecretCredential sends) made with urllib: azure-identity requires an https authority and
MSAL's tenant discovery, which a local stand-in endpoint would have to serve too. The authority is
AZURE_AUTHORITY_HOST (the variable azure-identity reads), else https://login.microsoftonline.com; a
plain-http authority is accepted on loopback hosts only (tests' fake token endpoint).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from aigw.translator.v1 import config_pb2

from .errors import GatewayError
from .logs import get_logger

log = get_logger(__name__)

SCOPE = "https://cognitiveservices.azure.com/.default"
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
# Refresh this long before expiry (Envoy AI Gateway's controller rotates 5 minutes before), or at
# half the lifetime of a token that lives shorter than twice that.
REFRESH_BEFORE = 300.0
# After a failed token request, requests without a valid token fail at once for this long instead
# of each waiting on the token endpoint again.
RETRY_AFTER_FAILURE = 2.0
TIMEOUT = 5.0


class CredentialsUnavailable(GatewayError):
    """No Entra ID token could be had for a backend: the request fails with a 503 in the client's
    schema; other backends keep serving."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(503, f"the gateway has no Azure Entra ID token for this backend ({reason})")
        self.backend = backend
        self.reason = reason


class TokenRequestError(Exception):
    """The token endpoint gave no token; the message is safe to log (never the secret)."""


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # clock time
    refresh_at: float  # clock time


Fetch = Callable[[str, str, str], tuple[str, float]]  # (tenant, client id, secret) -> (token, lifetime s)


def authority() -> str:
    """The token endpoint's host URL: AZURE_AUTHORITY_HOST, else Azure's public cloud. A bare host
    ("localhost:8443") means https; http only for a loopback host."""
    value = (os.environ.get(AUTHORITY_ENV) or DEFAULT_AUTHORITY).strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme == "http" and not _loopback(parsed.hostname or ""):
        raise TokenRequestError(f"{AUTHORITY_ENV} must be an https URL (http only for a loopback host)")
    if parsed.scheme not in ("http", "https"):
        raise TokenRequestError(f"{AUTHORITY_ENV} must be an https URL")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_token(tenant: str, client_id: str, secret: str) -> tuple[str, float]:
    """One client-credentials token request: (access token, lifetime in seconds)."""
    url = f"{authority()}/{urllib.parse.quote(tenant, safe='')}/oauth2/v2.0/token"
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": SCOPE}
    ).encode()
    req = urllib.request.Request(
        url, data=form, method="POST", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # scheme checked by authority()
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        raise TokenRequestError(_describe_error(exc.code, exc.read(), secret)) from None
    except (OSError, ValueError) as exc:
        raise TokenRequestError(_scrub(f"token endpoint unreachable: {type(exc).__name__}: {exc}", secret)) from None
    try:
        body = json.loads(payload)
        token, lifetime = body["access_token"], float(body["expires_in"])
    except (ValueError, KeyError, TypeError):
        raise TokenRequestError("token endpoint answered without access_token/expires_in") from None
    if not isinstance(token, str) or not token or lifetime <= 0:
        raise TokenRequestError("token endpoint answered an empty or expired token")
    return token, lifetime


def _describe_error(status: int, payload: bytes, secret: str) -> str:
    """`401 invalid_client AADSTS7000215` from AAD's error JSON (its first code only: descriptions
    carry trace ids and timestamps)."""
    text = f"token endpoint answered {status}"
    try:
        body = json.loads(payload)
    except ValueError:
        return text
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            text += f" {body['error'][:64]}"
        codes = body.get("error_codes")
        if isinstance(codes, list) and codes and isinstance(codes[0], int):
            text += f" AADSTS{codes[0]}"
    return _scrub(text, secret)


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "[REDACTED]") if secret else text


class _Entry:
    """The token of one (tenant, client, secret) and the state of its refresh."""

    __slots__ = ("failed_at", "failing", "fetch_lock", "last_error", "refreshing", "token")

    def __init__(self) -> None:
        self.token: Token | None = None
        self.fetch_lock = threading.Lock()  # one token request at a time
        self.refreshing = False
        self.failing = False  # an outage is under way (logged once)
        self.failed_at = -1e18
        self.last_error = ""


class TokenCache:
    """Thread-safe tokens by (tenant, client id, secret). `fetch`, `clock` and `spawn` (how a
    background refresh runs) are injectable for tests."""

    def __init__(
        self,
        fetch: Fetch = request_token,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._spawn = spawn or _thread
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], _Entry] = {}

    def token(self, backend: str, azure: config_pb2.AzureCredentials) -> str:
        if not azure.tenant_id or not azure.client_id or not azure.client_secret:
            raise CredentialsUnavailable(backend, "the policy has no tenant id, client id or client secret")
        key = (azure.tenant_id, azure.client_id, azure.client_secret)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
        now = self._clock()
        current = entry.token
        if current is not None and now < current.expires_at:
            if now >= current.refresh_at:
                self._refresh_in_background(backend, key, entry)
            return current.value
        # No valid token: this request waits for one (concurrent ones wait for the same request).
        with entry.fetch_lock:
            now = self._clock()
            current = entry.token
            if current is not None and now < current.expires_at:
                return current.value
            if entry.failing and now - entry.failed_at < RETRY_AFTER_FAILURE:
                raise CredentialsUnavailable(backend, entry.last_error)
            return self._renew(backend, key, entry).value

    def _refresh_in_background(self, backend: str, key: tuple[str, str, str], entry: _Entry) -> None:
        with self._lock:
            if entry.refreshing:
                return
            entry.refreshing = True

        def run() -> None:
            try:
                with entry.fetch_lock:
                    current = entry.token
                    if current is None or self._clock() >= current.refresh_at:
                        # Logged; the current token serves until it expires.
                        with contextlib.suppress(CredentialsUnavailable):
                            self._renew(backend, key, entry)
            finally:
                with self._lock:
                    entry.refreshing = False

        self._spawn(run)

    def _renew(self, backend: str, key: tuple[str, str, str], entry: _Entry) -> Token:
        """A new token (fetch_lock held). Logs the first failure of an outage and its end."""
        tenant, client_id, secret = key
        started = self._clock()
        try:
            value, lifetime = self._fetch(tenant, client_id, secret)
        except TokenRequestError as exc:
            reason = _scrub(str(exc), secret)
        except Exception as exc:  # a bug or an unexpected transport error: still one line, no secret
            reason = _scrub(f"token request failed: {type(exc).__name__}", secret)
        else:
            token = Token(value, started + lifetime, started + lifetime - min(REFRESH_BEFORE, lifetime / 2))
            entry.token = token
            if entry.failing:
                entry.failing = False
                log.info("azure_token_recovered", **_names(backend, tenant, client_id))
            return token
        entry.failed_at = self._clock()
        entry.last_error = reason
        if not entry.failing:
            entry.failing = True
            log.error("azure_token_unavailable", **_names(backend, tenant, client_id), reason=reason)
        raise CredentialsUnavailable(backend, reason)


def _names(backend: str, tenant: str, client_id: str) -> dict[str, str]:
    """Log fields naming the backend (when the caller knows it) and the app, never the secret."""
    names = {"backend": backend} if backend else {}
    return {**names, "tenant_id": tenant, "client_id": client_id}


def _thread(run: Callable[[], None]) -> None:
    threading.Thread(target=run, name="azure-entra-refresh", daemon=True).start()


_cache = TokenCache()


def bearer_token(backend: str, azure: config_pb2.AzureCredentials) -> str:
    """The current Entra ID access token for a policy's AzureCredentials (process-wide cache)."""
    return _cache.token(backend, azure)
