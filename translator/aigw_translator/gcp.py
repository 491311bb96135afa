"""Google Cloud access tokens for Vertex AI backends (a policy's GCPCredentials), with google-auth,
scope https://www.googleapis.com/auth/cloud-platform:

* a service-account key (the policy's Secret `service_account.json`): google-auth's
  service_account.Credentials, a JWT-bearer grant at the key's own `token_uri` (so a test key naming
  a local token endpoint needs nothing else);
* workload identity federation: an OIDC token of the policy's oidcExchangeToken (oidc.token)
  exchanged at Google's Security Token Service for a federated token of the pool provider
  (audience //iam.googleapis.com/projects/<project>/locations/global/workloadIdentityPools/<pool>/
  providers/<provider>, subject token type urn:ietf:params:oauth:token-type:jwt), then, when the
  policy names a service account, that account's token from the IAM Credentials API's
  generateAccessToken (<sa>@<projectName>.iam.gserviceaccount.com: the project ID, where the
  audience takes the project number);
* neither: application default credentials (google.auth.default: GOOGLE_APPLICATION_CREDENTIALS, the
  gcloud user credentials, the metadata server), looked for again until found.

A credential's quota project (an ADC file's `quota_project_id`, or GOOGLE_CLOUD_QUOTA_PROJECT) is
sent as x-goog-user-project (`quota_project`), as Google's own client libraries send it: Vertex AI
refuses a user's token without one.

Two variables point the federation at other endpoints (private ones, tests); google-auth reads
none for this:

    AIGW_GCP_STS_URL               the STS token URL (default https://sts.googleapis.com/v1/token)
    AIGW_GCP_IAM_CREDENTIALS_URL   the IAM Credentials API's base URL
                                   (default https://iamcredentials.googleapis.com)

Tokens are cached per credential in a token_cache.TokenCache: google-auth's refresh is blocking
HTTP, so it runs in a background thread 5 minutes before a token expires (or at half a short
lifetime), and a request only waits for it when no valid token exists; `prefetch` fetches the
tokens of a configuration as it arrives. A token that cannot be had is one error log line per
outage (`gcp_token_unavailable`, naming the backend, never the key or a token) and a
CredentialsUnavailable (503 in the client's schema) for that backend only.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import threading
from functools import partial
from typing import Any

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
from google.auth import credentials as ga_credentials
from google.auth import identity_pool
from google.oauth2 import service_account

from aigw.translator.v1 import config_pb2
from aigw_contract.gcp_key import service_account_info

from . import oidc, token_cache
from .errors import GatewayError

# google-auth warns on each ADC lookup that finds no metadata server; this module logs an outage once.
logging.getLogger("google.auth._default").setLevel(logging.ERROR)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
STS_URL_ENV = "AIGW_GCP_STS_URL"
DEFAULT_STS_URL = "https://sts.googleapis.com/v1/token"
IAM_CREDENTIALS_URL_ENV = "AIGW_GCP_IAM_CREDENTIALS_URL"
DEFAULT_IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
SUBJECT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
# Seconds a token request may take (google-auth's own default is 120).
TIMEOUT = 5.0
# What the gateway lacks when no token can be had (a 503's message names it).
TOKEN = "GCP access token"
# The header naming the project a request's quota and billing go to (a user credential's).
QUOTA_PROJECT_HEADER = "x-goog-user-project"


class GCPError(token_cache.FetchError):
    """No access token; the message is safe to log (never a key or a token)."""


def pool_audience(wif: config_pb2.WorkloadIdentityFederation) -> str:
    return (
        f"//iam.googleapis.com/projects/{wif.project_id}/locations/global/workloadIdentityPools/{wif.pool}"
        f"/providers/{wif.provider}"
    )


def impersonation_url(gcp: config_pb2.GCPCredentials) -> str | None:
    """The generateAccessToken URL of the service account to impersonate, if the policy names one.

    A service account's email names its project by project ID (the policy's projectName), never by
    the project number the pool audience takes (workloadIdentityFederationConfig.projectID)."""
    wif = gcp.workload_identity_federation
    if not wif.service_account:
        return None
    base = (os.environ.get(IAM_CREDENTIALS_URL_ENV) or DEFAULT_IAM_CREDENTIALS_URL).rstrip("/")
    email = f"{wif.service_account}@{gcp.project_name.strip()}.iam.gserviceaccount.com"
    return f"{base}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"


class _Request(google.auth.transport.requests.Request):
    """google-auth's requests transport with a short timeout (a request may be waiting on it)."""

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:  # fmt: skip
        return super().__call__(url, method, body, headers, timeout=min(timeout or TIMEOUT, TIMEOUT), **kwargs)  # type: ignore[no-untyped-call]


class _OIDCSubjectToken(identity_pool.SubjectTokenSupplier):
    """The subject token of the federation: the policy's OIDC token (cached by oidc)."""

    def __init__(self, backend: str, token: config_pb2.OIDCToken) -> None:
        self._backend = backend
        self._oidc = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        try:
            return oidc.token(self._backend, self._oidc)
        except GatewayError as exc:
            raise GCPError(f"no OIDC token to exchange ({exc.message})") from None


_lock = threading.Lock()
# Key -> its google-auth credential (it holds the token and, for federation, its steps) and the
# transport its refreshes use (one requests session each; the cache runs one refresh per key at a time).
_credentials: dict[tuple[str, ...], tuple[ga_credentials.Credentials, _Request]] = {}


def _key(gcp: config_pb2.GCPCredentials) -> tuple[str, ...]:
    """What identifies one credential (a digest of the key, never the key itself)."""
    if gcp.service_account_json:
        return ("service_account", hashlib.sha256(gcp.service_account_json.encode()).hexdigest())
    if gcp.HasField("workload_identity_federation"):
        wif = gcp.workload_identity_federation
        oidc_digest = hashlib.sha256(wif.oidc.SerializeToString(deterministic=True)).hexdigest()
        sts = os.environ.get(STS_URL_ENV) or DEFAULT_STS_URL
        return ("wif", pool_audience(wif), impersonation_url(gcp) or "", oidc_digest, sts)
    return ("adc",)


def _new_credentials(backend: str, gcp: config_pb2.GCPCredentials) -> ga_credentials.Credentials:
    if gcp.service_account_json:
        try:
            info = service_account_info(gcp.service_account_json)
        except ValueError as exc:
            raise GCPError(str(exc)) from None
        try:
            found: ga_credentials.Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
            return found
        except (ValueError, KeyError, TypeError) as exc:
            raise GCPError(
                f"the service-account key is not usable: unreadable private key ({type(exc).__name__})"
            ) from None
    if gcp.HasField("workload_identity_federation"):
        wif = gcp.workload_identity_federation
        return identity_pool.Credentials(  # type: ignore[no-untyped-call]
            audience=pool_audience(wif),
            subject_token_type=SUBJECT_TOKEN_TYPE,
            token_url=os.environ.get(STS_URL_ENV) or DEFAULT_STS_URL,
            subject_token_supplier=_OIDCSubjectToken(backend, wif.oidc),
            service_account_impersonation_url=impersonation_url(gcp),
            scopes=[SCOPE],
        )
    try:
        found, _project = google.auth.default(scopes=[SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as exc:
        # "File /path was not found.", "Your default credentials were not found. To set up ...": the
        # first sentence, which names a path at most.
        first = str(exc.args[0]).split(". ")[0][:200] if exc.args else ""
        raise GCPError(f"no application default credentials ({first})") from None
    return found


def _credentials_for(
    backend: str, gcp: config_pb2.GCPCredentials, key: tuple[str, ...]
) -> tuple[ga_credentials.Credentials, _Request]:
    """The google-auth credential of a key and its transport, made on first use."""
    with _lock:
        found = _credentials.get(key)
    if found is None:
        made = (_new_credentials(backend, gcp), _Request())
        with _lock:
            found = _credentials.setdefault(key, made)
    return found


def request_token(backend: str, gcp: config_pb2.GCPCredentials, key: tuple[str, ...]) -> tuple[str, float]:
    """A fresh access token and its remaining lifetime in seconds (blocking HTTP)."""
    creds, transport = _credentials_for(backend, gcp, key)
    try:
        creds.refresh(transport)  # type: ignore[no-untyped-call]
    except GCPError:
        raise
    except google.auth.exceptions.GoogleAuthError as exc:
        raise GCPError(_reason(exc)) from None
    except GatewayError as exc:
        raise GCPError(exc.message) from None
    token = creds.token
    if not token:
        raise GCPError("the token endpoint answered no token")
    expiry = creds.expiry
    if expiry is None:
        return token, 3600.0
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return token, (expiry - now).total_seconds()


def _reason(exc: Exception) -> str:
    """A google-auth error as one short line: the endpoint's error code and description (e.g.
    "invalid_grant: Invalid JWT Signature."), or the transport error's type; never a key or a token."""
    if isinstance(exc, google.auth.exceptions.TransportError):
        cause = exc.__cause__ or exc.__context__
        return f"token endpoint unreachable: {type(cause or exc).__name__}"
    first = str(exc.args[0]) if exc.args else type(exc).__name__
    return f"token request refused: {first.splitlines()[0][:200]}"


def _names(gcp: config_pb2.GCPCredentials) -> dict[str, str]:
    """Log fields naming the credential and its BackendSecurityPolicy, never a secret."""
    return {"policy": gcp.policy, **_credential_names(gcp)} if gcp.policy else _credential_names(gcp)


def _credential_names(gcp: config_pb2.GCPCredentials) -> dict[str, str]:
    if gcp.service_account_json:
        with contextlib.suppress(ValueError, AttributeError):
            email = json.loads(gcp.service_account_json).get("client_email")
            if isinstance(email, str):
                return {"credential": "service_account", "client_email": email}
        return {"credential": "service_account"}
    if gcp.HasField("workload_identity_federation"):
        wif = gcp.workload_identity_federation
        names = {"credential": "workload_identity_federation", "audience": pool_audience(wif)}
        return {**names, "service_account": wif.service_account} if wif.service_account else names
    return {"credential": "application_default"}


def _drop_credentials(key: tuple[str, ...]) -> None:
    """The cache forgot `key` (unused, or a configuration no longer has it): its credential goes too."""
    with _lock:
        _credentials.pop(key, None)


_cache: token_cache.TokenCache[tuple[str, ...], str] = token_cache.TokenCache(
    credential=TOKEN, event="gcp_token", on_forget=_drop_credentials
)


def bearer_token(backend: str, gcp: config_pb2.GCPCredentials) -> str:
    """The current access token of a policy's GCPCredentials (process-wide cache)."""
    key = _key(gcp)
    secrets = (gcp.service_account_json, gcp.workload_identity_federation.oidc.client_secret)
    return _cache.get(backend, key, partial(request_token, backend, gcp, key), names=_names(gcp), secrets=secrets)


def quota_project(gcp: config_pb2.GCPCredentials) -> str:
    """The quota project of the credential bearer_token last gave a token for ("" for none)."""
    with _lock:
        found = _credentials.get(_key(gcp))
    project = getattr(found[0], "quota_project_id", None) if found is not None else None
    return project if isinstance(project, str) else ""


def reset() -> None:
    """Forget every token and credential (tests)."""
    _cache.forget()
    with _lock:
        _credentials.clear()


# What token_cache.prefetch does for Google as a configuration arrives: fetch the tokens of every
# GCPCredentials backend in the background, so that a first request rarely waits for one.
PREFETCH: dict[str, token_cache.Prefetch] = {"gcp_credentials": (bearer_token, None)}
