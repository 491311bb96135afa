"""Microsoft Entra ID bearer tokens for Azure OpenAI backends (a policy's AzureCredentials): the
OAuth 2.0 client-credentials grant of the policy's app (tenant, client id, client secret) for the
scope https://cognitiveservices.azure.com/.default.

One token per (tenant, client id, client secret), cached and shared by every backend with those
credentials. The request path only waits on the token endpoint when it has no valid token at all
(the first request, or after the token expired during an outage); a token nearing its expiry
(5 minutes before, or half its lifetime for short-lived tokens) is refreshed in the background while
the current one is still sent. A token that cannot be had is a CredentialsUnavailable (503 in the
client's schema) with one error log line per outage, never the secret.

The token request is azure-identity's ClientSecretCredential (MSAL: tenant discovery at
{authority}/{tenant}/v2.0/.well-known/openid-configuration, then POST .../oauth2/v2.0/token),
without instance discovery (login.microsoftonline.com is never asked which cloud an authority is).
The authority is AZURE_AUTHORITY_HOST (the variable azure-identity reads), else
https://login.microsoftonline.com; azure-identity only speaks https. The transport is requests':
REQUESTS_CA_BUNDLE names the CAs it trusts (the tests' fake token endpoint's self-signed one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.identity import ClientSecretCredential

from aigw.translator.v1 import config_pb2

from .errors import CredentialsUnavailable, GatewayError
from .logs import get_logger

log = get_logger(__name__)
# azure-identity logs each failed token request (a warning per attempt); this module logs an outage
# once, so only its errors pass.
logging.getLogger("azure.identity").setLevel(logging.ERROR)

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
# What the gateway lacks when no token can be had (the 503's message names it).
TOKEN = "Azure Entra ID token"


class TokenRequestError(Exception):
    """The token endpoint gave no token; the message is safe to log (never the secret)."""


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # clock time
    refresh_at: float  # clock time


Fetch = Callable[[str, str, str], tuple[str, float]]  # (tenant, client id, secret) -> (token, lifetime s)


def authority() -> str:
    """The token endpoint's host URL: AZURE_AUTHORITY_HOST, else Azure's public cloud; a bare host
    ("login.microsoftonline.us") means https."""
    value = (os.environ.get(AUTHORITY_ENV) or DEFAULT_AUTHORITY).strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    if not value.startswith("https://"):
        raise TokenRequestError(f"{AUTHORITY_ENV} must be an https URL")
    return value


_credentials_lock = threading.Lock()
_credentials: dict[tuple[str, str, str, str], ClientSecretCredential] = {}
_AADSTS = re.compile(r"\bAADSTS\d+")


def _credential(tenant: str, client_id: str, secret: str) -> ClientSecretCredential:
    """One azure-identity credential per authority and app (its MSAL app keeps the discovered
    endpoints); short timeouts and one retry, since a request may be waiting on it."""
    key = (authority(), tenant, client_id, secret)
    with _credentials_lock:
        found = _credentials.get(key)
        if found is None:
            found = _credentials[key] = ClientSecretCredential(
                tenant,
                client_id,
                secret,
                authority=key[0],
                disable_instance_discovery=True,
                connection_timeout=TIMEOUT,
                read_timeout=TIMEOUT,
                retry_total=1,
                retry_backoff_factor=0.2,
            )
        return found


def request_token(tenant: str, client_id: str, secret: str) -> tuple[str, float]:
    """One client-credentials token (MSAL may answer a cached one that is still valid for more than
    5 minutes): (access token, remaining lifetime in seconds)."""
    try:
        info = _credential(tenant, client_id, secret).get_token_info(SCOPE)
    except ClientAuthenticationError as exc:
        # "Authentication failed: AADSTS7000215: Invalid client secret provided. Trace ID: ..."
        # (azure-identity wraps transport errors the same way: those have no AADSTS code.)
        text = str(exc.message)
        code = _AADSTS.search(text)
        if code:
            raise TokenRequestError(f"the token endpoint refused the app ({code.group(0)})") from None
        raise TokenRequestError(_scrub(f"token request failed: {text.splitlines()[0][:200]}", secret)) from None
    except (AzureError, ValueError, OSError) as exc:
        raise TokenRequestError(f"token endpoint unreachable: {type(exc).__name__}") from None
    lifetime = info.expires_on - time.time()
    if not info.token or lifetime <= 0:
        raise TokenRequestError("token endpoint answered an empty or expired token")
    return info.token, lifetime


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
            raise CredentialsUnavailable(backend, TOKEN, "the policy has no tenant id, client id or client secret")
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
                raise CredentialsUnavailable(backend, TOKEN, entry.last_error)
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
        raise CredentialsUnavailable(backend, TOKEN, reason)


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


def prefetch(configs: Iterable[config_pb2.TranslatorConfig]) -> None:
    """Fetch the tokens of every AzureCredentials backend in the background, as a configuration
    arrives, so that a first request rarely fetches one on the translator's event loop. A token that
    cannot be had is reported by the cache (one line per outage) and again by the request."""
    for config in configs:
        for backend in config.backends:
            if backend.auth.HasField("azure_credentials"):
                _thread(partial(_prefetch_one, backend.name, backend.auth.azure_credentials))


def _prefetch_one(backend: str, azure: config_pb2.AzureCredentials) -> None:
    with contextlib.suppress(GatewayError):
        bearer_token(backend, azure)
