"""A stand-in for Google's token services (not Google): the OAuth 2.0 token endpoint of service
accounts, the Security Token Service of workload identity federation, and the IAM Credentials
API's generateAccessToken, in one aiohttp server on loopback, for tests of GCP backends.

    POST /token
        grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>
        grant_type=refresh_token&client_id=...&client_secret=...&refresh_token=...
    POST /v1/token                                     (STS, RFC 8693 token exchange)
        grant_type=urn:ietf:params:oauth:grant-type:token-exchange&audience=//iam.googleapis.com/...
        &subject_token=<OIDC JWT>&subject_token_type=urn:ietf:params:oauth:token-type:jwt
        &requested_token_type=urn:ietf:params:oauth:token-type:access_token&scope=...
    POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken
        Authorization: Bearer <STS token>   {"scope": [...], "lifetime": "3600s"}

**JWT-bearer grant** (what google-auth's ``service_account.Credentials`` sends to the key's
``token_uri``): the assertion must be RS256-signed by a registered key (``add_service_account(key)``
or ``make_key()``; looked up by the ``kid`` header = ``private_key_id``, else by ``iss``), with
``iss`` = the key's ``client_email``, ``aud`` = this endpoint's URL (Google's token URI is accepted
too), ``scope`` present, ``iat``/``exp`` not in the future beyond 5 minutes of skew and ``exp`` at
most an hour after ``iat``. Google's answers otherwise: 400 ``{"error": "invalid_grant",
"error_description": "Invalid JWT Signature."}`` (or ``"Invalid JWT: Token must be a short-lived
token (60 minutes) and in a reasonable timeframe..."``, ``"Invalid grant: account not found"``),
``unsupported_grant_type``, ``invalid_scope``.

**Refresh-token grant** (what google-auth's ``oauth2.credentials.Credentials`` sends for the
``authorized_user`` application default credentials ``gcloud auth application-default login``
writes): the client and refresh token must be one ``add_user()`` registered; 400 ``{"error":
"invalid_grant", "error_description": "Bad Request"}`` for another refresh token and 401
``invalid_client`` for another client, as Google answers. Tokens issued this way are a user's:
``fake.user_token(token)`` tells (Google APIs such as Vertex AI then want a quota project).

**STS** checks the audience against the providers registered with ``add_workload_provider``
(400 ``invalid_target`` for an unknown one), the token types, and the subject token: an RS256 JWT
verified with the provider's issuer's JWKS (fetched from ``jwks_uri``), ``iss`` = the issuer,
``aud`` one of the provider's allowed audiences (by default ``https:`` + the provider name, as
GCP's default), not expired; 400 ``invalid_grant`` otherwise. Answers
``{"access_token", "issued_token_type", "token_type": "Bearer", "expires_in"}``.

**generateAccessToken** wants a bearer token this fake issued and still valid (401
``UNAUTHENTICATED`` in Google's JSON error shape otherwise) and a service account allowed with
``allow_impersonation(email)`` (403 ``PERMISSION_DENIED`` "Permission
'iam.serviceAccounts.getAccessToken' denied..." otherwise); answers ``{"accessToken",
"expireTime"}`` (RFC 3339, whole seconds). A service account's email names its project by project
ID (``<name>@<project-id>.iam.gserviceaccount.com``), which never is all digits: an email naming a
project number is no account, 404 ``NOT_FOUND`` "Not found; Gaia id not found for email ..." as
Google answers (and ``allow_impersonation`` refuses one).

Every token is opaque (``ya29.fake-...``) and lives ``lifetime`` seconds (settable, so rotation can
be tested with short-lived tokens); ``fake.validate(token)`` (also ``fake(token)``) tells whether a
token this fake issued is still valid: give it to ``VertexFake(token_validator=...)``.
``fake.issued`` lists (kind, principal) of every token issued, in order (never the token).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import secrets
import time
import urllib.parse
from typing import Any

import jwt
from aiohttp import web

from .common import RAW_BODY, FakeProvider
from .service_account_key import make_service_account_key, public_key_pem

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
SKEW = 300
_IMPERSONATE = re.compile(r"^/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken$")
# A service-account email whose project part is a project number (project IDs start with a letter).
_NUMBERED_PROJECT = re.compile(r"^[^@]+@[0-9]+\.iam\.gserviceaccount\.com$")


def provider_audience(project_number: str, pool: str, provider: str) -> str:
    """The audience STS wants for a workload identity pool provider."""
    return (
        f"//iam.googleapis.com/projects/{project_number}/locations/global/workloadIdentityPools/{pool}/providers/"
        f"{provider}"
    )


class GoogleAuthFake(FakeProvider):
    provider = "google-auth"

    def __init__(
        self, *, lifetime: float = 3599, name: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.lifetime = lifetime
        self._keys: dict[str, tuple[str, bytes]] = {}  # private_key_id -> (client_email, public PEM)
        self._providers: dict[str, dict[str, Any]] = {}  # audience -> issuer, jwks_uri, allowed audiences
        self._impersonable: set[str] = set()
        self._tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self._users: dict[str, tuple[str, str, str]] = {}  # refresh token -> (client id, secret, email)
        self._user_tokens: set[str] = set()
        self.issued: list[tuple[str, str]] = []

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def sts_url(self) -> str:
        return f"{self.base_url}/v1/token"

    @property
    def iam_credentials_url(self) -> str:
        """The base URL of the IAM Credentials API stand-in (what AIGW_GCP_IAM_CREDENTIALS_URL takes)."""
        return self.base_url

    # ---- registration ------------------------------------------------------------------------
    def add_service_account(self, key: dict[str, Any]) -> None:
        """Accept JWT-bearer grants signed by this service-account key (its public part is kept)."""
        with self._lock:
            self._keys[str(key["private_key_id"])] = (str(key["client_email"]), public_key_pem(key))

    def make_key(self, *, project_id: str = "aigw-test-project", account: str = "aigw-test") -> dict[str, Any]:
        """A new test service-account key whose token_uri is this fake (started), registered."""
        key = make_service_account_key(self.token_uri, project_id=project_id, account=account)
        self.add_service_account(key)
        return key

    def add_user(self, *, email: str = "dev@example.com", quota_project: str | None = None) -> dict[str, Any]:
        """The ``authorized_user`` application default credentials (the JSON ``gcloud auth
        application-default login`` writes) of a new user this fake grants refresh tokens for."""
        refresh_token = "1//fake-" + secrets.token_urlsafe(24)
        client_id, client_secret = "764086051850-fake.apps.googleusercontent.com", "d-FL95Q" + secrets.token_hex(8)
        with self._lock:
            self._users[refresh_token] = (client_id, client_secret, email)
        info = {
            "type": "authorized_user",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
            "account": "",
            "universe_domain": "googleapis.com",
        }
        if quota_project is not None:
            info["quota_project_id"] = quota_project
        return info

    def user_token(self, token: str) -> bool:
        """Whether `token` was issued to a user (a refresh-token grant), not a service account."""
        with self._lock:
            return token in self._user_tokens

    def add_workload_provider(
        self, audience: str, *, issuer: str, jwks_uri: str, allowed_audiences: list[str] | None = None
    ) -> None:
        """A workload identity pool provider: STS exchanges tokens of `issuer` for `audience`."""
        allowed = allowed_audiences if allowed_audiences is not None else ["https:" + audience]
        with self._lock:
            self._providers[audience] = {"issuer": issuer, "jwks": jwt.PyJWKClient(jwks_uri), "allowed": allowed}

    def allow_impersonation(self, email: str) -> None:
        """Let any federated principal impersonate the service account `email`."""
        if _NUMBERED_PROJECT.match(email):
            raise ValueError(f"{email} names a project number; a service account's email names the project ID")
        with self._lock:
            self._impersonable.add(email)

    # ---- tokens ------------------------------------------------------------------------------
    def validate(self, token: str) -> bool:
        """A token this fake issued that has not expired."""
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and time.time() < expiry

    __call__ = validate

    def _issue(self, kind: str, principal: str, lifetime: float | None = None) -> tuple[str, float]:
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        life = min(self.lifetime, lifetime) if lifetime is not None else self.lifetime
        expiry = time.time() + life
        with self._lock:
            self._tokens[token] = expiry
            self.issued.append((kind, principal))
            if kind == "user":
                self._user_tokens.add(token)
        return token, expiry

    # ---- errors ------------------------------------------------------------------------------
    @staticmethod
    def oauth_error(status: int, error: str, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description}, status=status)

    @staticmethod
    def google_error(status: int, message: str, status_name: str) -> web.Response:
        return web.json_response({"error": {"code": status, "message": message, "status": status_name}}, status=status)

    def error_response(self, status: int, message: str | None = None, **kw: Any) -> web.Response:
        if status >= 500:
            return self.oauth_error(status, "internal_failure", message or "Injected error (by the fake).")
        return self.oauth_error(status, "invalid_request", message or "Injected error (by the fake).")

    def not_found_response(self, request: web.Request) -> web.Response:
        return self.google_error(404, "Method not found.", "NOT_FOUND")

    # ---- routes ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._jwt_grant)
        app.router.add_post("/v1/token", self._sts)
        app.router.add_post("/v1/projects/-/serviceAccounts/{name}", self._generate_access_token)

    @staticmethod
    def _form(request: web.Request) -> dict[str, str]:
        pairs = urllib.parse.parse_qs(request[RAW_BODY].decode("utf-8", "replace"))
        return {k: v[-1] for k, v in pairs.items()}

    async def _jwt_grant(self, request: web.Request) -> web.Response:
        form = self._form(request)
        if form.get("grant_type") == "refresh_token":
            return self._refresh_grant(form)
        if form.get("grant_type") != JWT_BEARER:
            return self.oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT: the assertion is not a JWT.")
        with self._lock:
            found = self._keys.get(str(header.get("kid", "")))
            if found is None:
                found = next((k for k in self._keys.values() if k[0] == unverified.get("iss")), None)
        if found is None:
            return self.oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        email, public = found
        try:
            claims = jwt.decode(
                assertion,
                public,
                algorithms=["RS256"],
                audience=[self.token_uri, GOOGLE_TOKEN_URI],
                options={"require": ["iss", "aud", "iat", "exp"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidAudienceError:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        except jwt.PyJWTError:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims["iss"] != email:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        iat, exp = float(claims["iat"]), float(claims["exp"])
        if iat > now + SKEW or exp < now - SKEW or exp - iat > 3600:
            return self.oauth_error(
                400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim."
            )  # fmt: skip
        if not str(claims.get("scope", "")).strip():
            return self.oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token, expiry = self._issue("service_account", email)
        return web.json_response(
            {"access_token": token, "expires_in": max(1, round(expiry - time.time())), "token_type": "Bearer"}
        )

    def _refresh_grant(self, form: dict[str, str]) -> web.Response:
        with self._lock:
            user = self._users.get(form.get("refresh_token", ""))
        if user is None:
            return self.oauth_error(400, "invalid_grant", "Bad Request")
        client_id, client_secret, email = user
        if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
            return self.oauth_error(401, "invalid_client", "Unauthorized")
        token, expiry = self._issue("user", email)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": max(1, round(expiry - time.time())),
                "scope": form.get("scope") or "https://www.googleapis.com/auth/cloud-platform openid",
                "token_type": "Bearer",
            }
        )

    async def _sts(self, request: web.Request) -> web.Response:
        form = self._form(request)
        if form.get("grant_type") != TOKEN_EXCHANGE:
            return self.oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        audience = form.get("audience", "")
        with self._lock:
            provider = self._providers.get(audience)
        if provider is None:
            return self.oauth_error(
                400, "invalid_target", 'The target service indicated by the "audience" parameters is invalid. This '
                "might either be because the pool or provider is disabled or deleted or because it doesn't exist."
            )  # fmt: skip
        if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            return self.oauth_error(400, "invalid_request", "Invalid value for requested_token_type.")
        if form.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
            return self.oauth_error(400, "invalid_request", "Invalid value for subject_token_type.")
        subject = form.get("subject_token", "")
        try:
            claims = await asyncio.to_thread(self._verify_subject, provider, subject)
        except jwt.InvalidAudienceError:
            return self.oauth_error(
                400, "invalid_grant", "The audience in ID Token does not match the expected audience."
            )
        except jwt.ExpiredSignatureError:
            return self.oauth_error(400, "invalid_grant", "ID Token has expired.")
        except jwt.InvalidIssuerError:
            return self.oauth_error(400, "invalid_grant", "The issuer in ID Token does not match the provider's.")
        except (jwt.PyJWTError, OSError):
            return self.oauth_error(400, "invalid_grant", "Invalid ID Token: the signature cannot be verified.")
        token, expiry = self._issue("sts", f"principal://{audience[2:]}/subject/{claims.get('sub', '')}")
        return web.json_response(
            {
                "access_token": token,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": max(1, round(expiry - time.time())),
            }
        )

    @staticmethod
    def _verify_subject(provider: dict[str, Any], subject: str) -> dict[str, Any]:
        key = provider["jwks"].get_signing_key_from_jwt(subject)
        claims: dict[str, Any] = jwt.decode(
            subject,
            key.key,
            algorithms=["RS256"],
            audience=provider["allowed"],
            issuer=provider["issuer"],
            options={"require": ["iss", "aud", "exp", "sub"]},
        )
        return claims

    async def _generate_access_token(self, request: web.Request) -> web.Response:
        match = _IMPERSONATE.match(request.path)
        if match is None:
            return self.not_found_response(request)
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.validate(bearer.strip()):
            return self.google_error(
                401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential.", "UNAUTHENTICATED"
            )  # fmt: skip
        email = urllib.parse.unquote(match.group(1))
        try:
            body = json.loads(request[RAW_BODY] or b"{}")
        except ValueError:
            return self.google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        if not isinstance(body, dict) or not body.get("scope"):
            return self.google_error(400, "Scope required.", "INVALID_ARGUMENT")
        if _NUMBERED_PROJECT.match(email):
            return self.google_error(404, f"Not found; Gaia id not found for email {email}", "NOT_FOUND")
        with self._lock:
            allowed = email in self._impersonable
        if not allowed:
            return self.google_error(
                403, "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
                "PERMISSION_DENIED"
            )  # fmt: skip
        requested = str(body.get("lifetime") or "3600s").rstrip("s")
        try:
            lifetime = float(requested)
        except ValueError:
            return self.google_error(400, "Invalid value at 'lifetime'.", "INVALID_ARGUMENT")
        if not 0 < lifetime <= 43200:
            return self.google_error(400, "The lifetime is out of range.", "INVALID_ARGUMENT")
        token, expiry = self._issue("impersonated", email, lifetime)
        expire_time = datetime.datetime.fromtimestamp(int(expiry), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"accessToken": token, "expireTime": expire_time})
