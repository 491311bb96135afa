"""OIDC tokens of a BackendSecurityPolicy's oidcExchangeToken (config OIDCToken): the access token of
an OAuth 2.0 client-credentials grant at the policy's OIDC provider, which the AWS (STS
AssumeRoleWithWebIdentity), Azure (client assertion) and GCP (workload identity federation)
credential modules exchange for the provider's own credentials.

The token request (RFC 6749 §4.4) is a form POST to the token endpoint: ``grant_type`` (the policy's,
else ``client_credentials``), ``scope`` (the scopes, space-joined) and ``audience`` when the policy
names one; the client authenticates with HTTP Basic (client id and secret form-encoded first, as
§2.3.1 prefers), or sends only ``client_id`` when it has no secret. The endpoint is the policy's
tokenEndpoint, else the ``token_endpoint`` of ``<issuer>/.well-known/openid-configuration``
(discovered once per issuer). Endpoints must be https, or http on a loopback address (tests, local
sidecars); ``REQUESTS_CA_BUNDLE`` names the CAs trusted.

Tokens are cached per (issuer, endpoint, client, secret, scopes, audience, grant type) in a
token_cache.TokenCache: refreshed in the background 5 minutes before they expire, or at 80% of a
shorter lifetime; one error log line per outage (``oidc_token_unavailable``, naming the backend, the
issuer and the client id, never the token or the secret); CredentialsUnavailable (503 in the
client's schema) when no token can be had.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from functools import partial
from typing import Any

import jwt
import requests

from aigw.translator.v1 import config_pb2

from . import token_cache
from .arguments import loopback
from .logs import get_logger

log = get_logger(__name__)

CLIENT_CREDENTIALS = "client_credentials"
DISCOVERY_PATH = "/.well-known/openid-configuration"
TIMEOUT = 5.0
# What the gateway lacks when no token can be had (a 503's message names it).
TOKEN = "OIDC token"
# The lifetime assumed for a token whose answer has no expires_in and that is not a JWT with exp.
DEFAULT_LIFETIME = 300.0


class OIDCError(token_cache.FetchError):
    """No token from the OIDC provider; the message is safe to log (never a secret or a token)."""


def check_url(url: str, what: str) -> str:
    """`url` if it is https, or http to a loopback host; else OIDCError."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return url
    if parsed.scheme == "http" and parsed.hostname and loopback(parsed.hostname):
        return url
    raise OIDCError(f"the {what} must be an https URL (http only on loopback): {url[:200]!r}")


_discovered_lock = threading.Lock()
_discovered: dict[str, str] = {}  # issuer -> token endpoint


def token_endpoint(oidc: config_pb2.OIDCToken) -> str:
    """The policy's token endpoint, else the one its issuer's discovery document names (asked once
    per issuer while it answers)."""
    if oidc.token_endpoint:
        return check_url(oidc.token_endpoint, "OIDC token endpoint")
    if not oidc.issuer:
        raise OIDCError("the policy names neither an OIDC issuer nor a token endpoint")
    issuer = oidc.issuer.rstrip("/")
    with _discovered_lock:
        found = _discovered.get(issuer)
    if found is not None:
        return found
    url = check_url(issuer + DISCOVERY_PATH, "OIDC issuer")
    try:
        answer = requests.get(url, timeout=TIMEOUT, headers={"accept": "application/json"})
    except requests.RequestException as exc:
        raise OIDCError(f"OIDC discovery at {url} unreachable: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise OIDCError(f"OIDC discovery at {url} answered {answer.status_code}")
    document = _json(answer)
    endpoint = document.get("token_endpoint") if isinstance(document, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        raise OIDCError(f"OIDC discovery at {url} names no token_endpoint")
    endpoint = check_url(endpoint, "discovered OIDC token endpoint")
    with _discovered_lock:
        _discovered[issuer] = endpoint
    return endpoint


def _json(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def request_token(oidc: config_pb2.OIDCToken) -> tuple[str, float]:
    """One token from the provider (blocking): (access token, lifetime in seconds)."""
    endpoint = token_endpoint(oidc)
    form = {"grant_type": oidc.grant_type or CLIENT_CREDENTIALS}
    if oidc.scopes:
        form["scope"] = " ".join(oidc.scopes)
    if oidc.audience:
        form["audience"] = oidc.audience
    auth: tuple[str, str] | None = None
    if oidc.client_secret:
        quote = partial(urllib.parse.quote_plus, safe="")
        auth = (quote(oidc.client_id), quote(oidc.client_secret))
    else:
        form["client_id"] = oidc.client_id
    try:
        answer = requests.post(endpoint, data=form, auth=auth, timeout=TIMEOUT, headers={"accept": "application/json"})
    except requests.RequestException as exc:
        raise OIDCError(f"OIDC token endpoint {endpoint} unreachable: {type(exc).__name__}") from None
    body = _json(answer)
    if answer.status_code != 200:
        raise OIDCError(f"OIDC token endpoint {endpoint} answered {answer.status_code}{_oauth_error(body)}")
    value = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise OIDCError(f"OIDC token endpoint {endpoint} answered no access_token")
    return value, _lifetime(body, value)


def _oauth_error(body: Any) -> str:
    """` <error>: <description>` of an RFC 6749 §5.2 error answer (cut short), else ``."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ""
    description = body.get("error_description")
    text = f" {body['error'][:100]}"
    return text + (f": {description[:200]}" if isinstance(description, str) and description else "")


def _lifetime(body: dict[str, Any], value: str) -> float:
    """expires_in, else the seconds left until the token's own exp claim (a JWT), else a default."""
    expires_in = body.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        return float(expires_in)
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        return float(expires_in)
    try:
        claims = jwt.decode(value, options={"verify_signature": False})
    except jwt.PyJWTError:
        return DEFAULT_LIFETIME
    exp = claims.get("exp")
    return float(exp) - time.time() if isinstance(exp, int | float) else DEFAULT_LIFETIME


def cache_key(oidc: config_pb2.OIDCToken) -> tuple[str, ...]:
    """What makes two policies' tokens the same (also part of the keys of what is exchanged for one)."""
    return (
        oidc.issuer.rstrip("/"),
        oidc.token_endpoint,
        oidc.client_id,
        oidc.client_secret,
        " ".join(oidc.scopes),
        oidc.audience,
        oidc.grant_type or CLIENT_CREDENTIALS,
    )


_cache: token_cache.TokenCache[tuple[str, ...], str] = token_cache.TokenCache(
    credential=TOKEN, event="oidc_token", short_lifetime_fraction=0.2
)


def token(backend: str, oidc: config_pb2.OIDCToken) -> str:
    """The current OIDC access token for a policy's OIDCToken (process-wide cache; fetched on this
    thread only when there is no valid one). Raises CredentialsUnavailable naming `backend`."""
    return _cache.get(
        backend,
        cache_key(oidc),
        partial(request_token, oidc),
        names={"issuer": oidc.issuer or oidc.token_endpoint, "client_id": oidc.client_id},
        secrets=(oidc.client_secret,),
    )


def reset() -> None:
    """Forget every token and discovered endpoint (tests)."""
    _cache.forget()
    with _discovered_lock:
        _discovered.clear()
