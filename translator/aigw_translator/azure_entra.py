"""Microsoft Entra ID bearer tokens for Azure OpenAI backends (a policy's AzureCredentials): the
OAuth 2.0 client-credentials grant of the policy's app (tenant, client id, and either its client
secret or, for workload identity, an OIDC token of the policy's oidcExchangeToken as the client
assertion) for the scope https://cognitiveservices.azure.com/.default.

Workload identity (azure-identity's ClientAssertionCredential): the assertion is oidc.token(...) for
the policy's OIDC settings, with the audience Entra's federated credentials expect by default
(api://AzureADTokenExchange) when the policy names none; Entra checks the token's issuer, subject and
audience against the app's federated identity credential.

One token per (tenant, client id, client secret or OIDC settings), cached (token_cache) and shared by
every backend with those credentials. The request path only waits on the token endpoint when it has
no valid token at all (the first request, or after the token expired during an outage); a token
nearing its expiry (5 minutes before, or half its lifetime for short-lived tokens) is refreshed in the
background while the current one is still sent. A token that cannot be had is a CredentialsUnavailable (503 in the
client's schema) with one error log line per outage, never the secret.

The token request is azure-identity's ClientSecretCredential or ClientAssertionCredential, a new
one per request (see _OPTIONS) (MSAL: tenant discovery at
{authority}/{tenant}/v2.0/.well-known/openid-configuration, then POST .../oauth2/v2.0/token),
without instance discovery (login.microsoftonline.com is never asked which cloud an authority is).
The authority is AZURE_AUTHORITY_HOST (the variable azure-identity reads), else
https://login.microsoftonline.com; azure-identity only speaks https. The transport is requests':
REQUESTS_CA_BUNDLE names the CAs it trusts (the tests' fake token endpoint's self-signed one).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.identity import ClientAssertionCredential, ClientSecretCredential

from aigw.translator.v1 import config_pb2

from . import oidc, token_cache
from .errors import CredentialsUnavailable
from .logs import get_logger

log = get_logger(__name__)
# azure-identity logs each failed token request (a warning per attempt); this module logs an outage
# once, so only its errors pass.
logging.getLogger("azure.identity").setLevel(logging.ERROR)

SCOPE = "https://cognitiveservices.azure.com/.default"
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
# Refresh this long before expiry (Envoy AI Gateway's controller rotates 5 minutes before), or at
# half the lifetime of a token that lives shorter than twice that (token_cache does the refreshing).
REFRESH_BEFORE = token_cache.REFRESH_BEFORE
# After a failed token request, requests without a valid token fail at once for this long instead
# of each waiting on the token endpoint again.
RETRY_AFTER_FAILURE = token_cache.RETRY_AFTER_FAILURE
TIMEOUT = 5.0
# What the gateway lacks when no token can be had (the 503's message names it).
TOKEN = "Azure Entra ID token"


class TokenRequestError(token_cache.FetchError):
    """The token endpoint gave no token; the message is safe to log (never the secret)."""


Fetch = Callable[[str, str, str], tuple[str, float]]  # (tenant, client id, secret) -> (token, lifetime s)
# (tenant, client id, assertion) -> (token, lifetime s); `assertion()` gives a current client assertion.
AssertionFetch = Callable[[str, str, Callable[[], str]], tuple[str, float]]
# The audience of Entra's federated identity credentials unless one is configured.
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


def authority() -> str:
    """The token endpoint's host URL: AZURE_AUTHORITY_HOST, else Azure's public cloud; a bare host
    ("login.microsoftonline.us") means https."""
    value = (os.environ.get(AUTHORITY_ENV) or DEFAULT_AUTHORITY).strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    if not value.startswith("https://"):
        raise TokenRequestError(f"{AUTHORITY_ENV} must be an https URL")
    return value


# Options of every azure-identity credential here: no instance discovery (login.microsoftonline.com
# is never asked which cloud an authority is), short timeouts and one retry (a request may wait).
_OPTIONS: dict[str, Any] = {
    "disable_instance_discovery": True,
    "connection_timeout": TIMEOUT,
    "read_timeout": TIMEOUT,
    "retry_total": 1,
    "retry_backoff_factor": 0.2,
}
_AADSTS = re.compile(r"\bAADSTS\d+")

# A credential is made for each token request. The token cache (TokenCache below) is the only cache:
# azure-identity's own answers a token it holds until that token expires whenever it was asked in
# the last 30 seconds, so a refresh before expiry would get the same token back (and a short-lived
# token would be sent until its very last moment). The price is MSAL's tenant discovery (one GET)
# per token, once per token lifetime.


def request_token(tenant: str, client_id: str, secret: str) -> tuple[str, float]:
    """One client-credentials token, freshly requested: (access token, remaining lifetime in seconds)."""
    credential = ClientSecretCredential(tenant, client_id, secret, authority=authority(), **_OPTIONS)
    return _get_token(credential, secret)


def request_token_with_assertion(tenant: str, client_id: str, assertion: Callable[[], str]) -> tuple[str, float]:
    """One client-credentials token for a client assertion (workload identity): the assertion is
    asked for first, so that a missing one is reported as such (not as the token endpoint's fault)."""
    assertion()
    credential = ClientAssertionCredential(tenant, client_id, assertion, authority=authority(), **_OPTIONS)
    return _get_token(credential, "")


def _get_token(credential: ClientSecretCredential | ClientAssertionCredential, secret: str) -> tuple[str, float]:
    try:
        info = credential.get_token_info(SCOPE)
    except TokenRequestError:
        raise
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
    return token_cache.scrub(text, (secret,))


class TokenCache:
    """Thread-safe tokens by (tenant, client id, secret), on token_cache's refresh machinery.
    `fetch`, `clock`, `spawn` (how a background refresh runs) and `schedule` (how it is timed) are
    injectable for tests; a cache given a `spawn` is only refreshed by requests unless it is also
    given a `schedule`."""

    def __init__(
        self,
        fetch: Fetch = request_token,
        clock: Callable[[], float] = time.monotonic,
        spawn: token_cache.Spawn | None = None,
        schedule: token_cache.Schedule | None = None,
        fetch_with_assertion: AssertionFetch = request_token_with_assertion,
    ) -> None:
        self._fetch = fetch
        self._fetch_with_assertion = fetch_with_assertion
        self._cache: token_cache.TokenCache[tuple[str, ...], str] = token_cache.TokenCache(
            credential=TOKEN,
            event="azure_token",
            refresh_before=REFRESH_BEFORE,
            short_lifetime_fraction=0.5,
            retry_after_failure=RETRY_AFTER_FAILURE,
            clock=clock,
            spawn=spawn,
            schedule=schedule if schedule is not None or spawn is not None else token_cache.timer,
        )

    def forget(self) -> None:
        """Drop every token and stop refreshing them (tests)."""
        self._cache.forget()

    def token(self, backend: str, azure: config_pb2.AzureCredentials) -> str:
        if azure.HasField("oidc") and not azure.client_secret:
            return self._token_with_assertion(backend, azure)
        if not azure.tenant_id or not azure.client_id or not azure.client_secret:
            raise CredentialsUnavailable(backend, TOKEN, "the policy has no tenant id, client id or client secret")
        key = (azure.tenant_id, azure.client_id, azure.client_secret)
        return self._cache.get(
            backend,
            key,
            partial(self._fetch, *key),
            names={"policy": azure.policy, "tenant_id": azure.tenant_id, "client_id": azure.client_id},
            secrets=(azure.client_secret,),
        )

    def _token_with_assertion(self, backend: str, azure: config_pb2.AzureCredentials) -> str:
        if not azure.tenant_id or not azure.client_id:
            raise CredentialsUnavailable(backend, TOKEN, "the policy has no tenant id or client id")
        settings = federated_oidc(azure.oidc)
        key = (azure.tenant_id, azure.client_id, "", *oidc.cache_key(settings))
        return self._cache.get(
            backend,
            key,
            partial(self._fetch_with_assertion, azure.tenant_id, azure.client_id, _Assertion(backend, settings)),
            names={
                "policy": azure.policy,
                "tenant_id": azure.tenant_id,
                "client_id": azure.client_id,
                "issuer": settings.issuer,
            },
            secrets=(settings.client_secret,),
        )


def federated_oidc(settings: config_pb2.OIDCToken) -> config_pb2.OIDCToken:
    """The policy's OIDC settings, with Entra's default federated audience when they name none."""
    if settings.audience:
        return settings
    copy = config_pb2.OIDCToken()
    copy.CopyFrom(settings)
    copy.audience = FEDERATED_AUDIENCE
    return copy


class _Assertion:
    """The client assertion of a workload identity: the current OIDC token (oidc's cache)."""

    __slots__ = ("backend", "settings")

    def __init__(self, backend: str, settings: config_pb2.OIDCToken) -> None:
        self.backend, self.settings = backend, settings

    def __call__(self) -> str:
        try:
            return oidc.token(self.backend, self.settings)
        except CredentialsUnavailable as exc:
            raise TokenRequestError(f"no OIDC token for the client assertion ({exc.reason})") from None


_cache = TokenCache()


def bearer_token(backend: str, azure: config_pb2.AzureCredentials) -> str:
    """The current Entra ID access token for a policy's AzureCredentials (process-wide cache)."""
    return _cache.token(backend, azure)


# What token_cache.prefetch does for Azure as a configuration arrives: fetch the tokens of every
# AzureCredentials backend in the background, so that a first request rarely waits for one. A token
# that cannot be had is reported by the cache (one line per outage) and again by the request.
PREFETCH: dict[str, token_cache.Prefetch] = {"azure_credentials": (bearer_token, None)}
