"""A stand-in for an OIDC provider's token service (not a real identity provider): the OAuth 2.0
client-credentials grant of one client, answering RS256-signed JWT access tokens, for tests of
BackendSecurityPolicies whose oidcExchangeToken feeds AWS STS, Entra ID or GCP STS.

    GET  /.well-known/openid-configuration   issuer, token_endpoint, jwks_uri (and friends)
    GET  /.well-known/oauth-authorization-server   the same (RFC 8414)
    GET  /authorize                          400 unsupported_response_type (no user sign-in)
    POST /token                              grant_type=client_credentials[&scope=...][&audience=...]
    GET  /jwks                               the signing key (RSA, kid) as a JSON Web Key Set

The client authenticates as RFC 6749 §2.3.1 says: HTTP Basic with the form-encoded client id and
secret, or ``client_id`` and ``client_secret`` in the form (never both ways at once). Answers:

* ``{"access_token": <JWT>, "token_type": "Bearer", "expires_in": N, "scope": ...}`` with
  ``Cache-Control: no-store``; the JWT's claims are ``iss`` (the issuer, ``fake.issuer``), ``sub``
  (``subject``, default the client id), ``aud`` (the requested ``audience``, else the ``resource``
  an RFC 8707 client names, else the client id),
  ``iat``, ``exp`` (``token_lifetime_s`` later, settable on the instance, rounded up to a whole second:
  never before ``expires_in`` says), ``jti``, ``client_id`` and ``scope`` when scopes were asked;
* errors as RFC 6749 §5.2 JSON (``error``, ``error_description``): an unknown client or wrong secret is
  401 ``invalid_client`` (with ``WWW-Authenticate: Basic`` when the client used Basic), a grant other
  than client_credentials 400 ``unsupported_grant_type``, a request that is not a form or
  authenticates twice or not at all 400 ``invalid_request``; injected statuses (``x-fake-status``,
  ``fail_next``, ``always_fail``) answer ``server_error`` / ``temporarily_unavailable`` shapes.

Other fakes in the same process check a token with ``fake.verify(token, audience)`` (signature, issuer,
expiry, audience; PyJWT's exceptions: ``jwt.ExpiredSignatureError`` for an expired token,
``jwt.InvalidTokenError`` otherwise); out-of-process ones fetch ``/jwks``. ``fake.issued`` lists the
tokens issued, in order; ``fake.token_requests`` counts the successful grants.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import threading
import time
import urllib.parse
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from .common import RAW_BODY, FakeProvider

TEST_CLIENT_ID = "aigw-oidc-client"
TEST_CLIENT_SECRET = "fake-oidc-client-secret-0123456789"
FORM_TYPE = "application/x-www-form-urlencoded"


class OIDCIssuerFake(FakeProvider):
    provider = "oidc"

    def __init__(
        self,
        client_id: str = TEST_CLIENT_ID,
        client_secret: str = TEST_CLIENT_SECRET,
        token_lifetime_s: float = 3600,
        *,
        subject: str | None = None,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s = token_lifetime_s
        self.subject = subject or client_id
        self.kid = "fake-oidc-" + secrets.token_hex(4)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issued: list[str] = []
        self._issued_lock = threading.Lock()

    # ---- identity ----------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def token_endpoint(self) -> str:
        return self.base_url + "/token"

    @property
    def token_requests(self) -> int:
        with self._issued_lock:
            return len(self.issued)

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": self.kid,
                    "n": _b64_uint(numbers.n),
                    "e": _b64_uint(numbers.e),
                }
            ]
        }

    def issue(self, audience: str | None = None, scopes: list[str] | None = None, lifetime: float | None = None) -> str:
        """A signed token as /token answers it (tests may also mint one directly, e.g. expired)."""
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": audience or self.client_id,
            "iat": int(now),
            # Whole seconds (as identity providers write it; PyJWT reads exp as an int), rounded up:
            # the token lives at least as long as the expires_in the client is told.
            "exp": math.ceil(now + (self.token_lifetime_s if lifetime is None else lifetime)),
            "jti": secrets.token_hex(12),
            "client_id": self.client_id,
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        with self._issued_lock:
            self.issued.append(token)
        return token

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a token this fake signed, unexpired, for `audience`; raises
        jwt.ExpiredSignatureError (expired) or another jwt.InvalidTokenError."""
        header = jwt.get_unverified_header(token)
        if header.get("kid") != self.kid:
            raise jwt.InvalidSignatureError("unknown signing key")
        claims: dict[str, Any] = jwt.decode(
            token,
            self._key.public_key(),
            algorithms=["RS256"],
            audience=audience,
            issuer=self.issuer,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
        return claims

    # ---- errors ------------------------------------------------------------------------------
    @staticmethod
    def oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            {"error": error, "error_description": description},
            status=status,
            headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
        )

    def error_response(self, status: int, message: str | None = None, **kw: Any) -> web.Response:
        if status >= 500:
            error = "temporarily_unavailable" if status == 503 else "server_error"
            return self.oauth_error(status, error, message or "Injected error (by the fake).")
        return self.oauth_error(status, "invalid_request", message or "Injected error (by the fake).")

    def not_found_response(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="Not Found")

    # ---- routes ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/openid-configuration", self._configuration)
        app.router.add_get("/.well-known/oauth-authorization-server", self._configuration)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_post("/token", self._token)

    async def _configuration(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                # Required of every issuer's metadata (OIDC Discovery; RFC 8414 for one that has it),
                # though this one grants client credentials only (its /authorize refuses every request).
                "authorization_endpoint": self.base_url + "/authorize",
                "token_endpoint": self.token_endpoint,
                "jwks_uri": self.base_url + "/jwks",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
            }
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        """No user to sign in: the authorization code flow is not offered (shown, not redirected:
        no client has a redirect URI registered here)."""
        return self.oauth_error(400, "unsupported_response_type", "This issuer grants client credentials only.")

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks())

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != FORM_TYPE:
            return self.oauth_error(400, "invalid_request", f"The request body must be {FORM_TYPE}.")
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(request[RAW_BODY].decode("utf-8", "replace")).items()}
        try:
            basic = _basic_credentials(request.headers.get("Authorization", ""))
        except ValueError:
            return self.oauth_error(400, "invalid_request", "Malformed Authorization header.")
        if basic is not None and "client_secret" in form:
            return self.oauth_error(400, "invalid_request", "The client used more than one authentication method.")
        client_id, secret = basic if basic is not None else (form.get("client_id"), form.get("client_secret"))
        if client_id is None:
            return self.oauth_error(400, "invalid_request", "Client authentication is required.")
        if "client_id" in form and form["client_id"] != client_id:
            return self.oauth_error(400, "invalid_request", "client_id does not match the authenticated client.")
        if client_id != self.client_id or secret is None or not secrets.compare_digest(secret, self.client_secret):
            challenge = {"WWW-Authenticate": 'Basic realm="fake-oidc"'} if basic is not None else None
            return self.oauth_error(401, "invalid_client", "Client authentication failed.", challenge)
        grant = form.get("grant_type")
        if grant is None:
            return self.oauth_error(400, "invalid_request", "Missing grant_type.")
        if grant != "client_credentials":
            return self.oauth_error(400, "unsupported_grant_type", f"Grant type {grant!r} is not supported.")
        scopes = form.get("scope", "").split()
        # The audience asked for, else the resource (RFC 8707, as MCP clients name the server), else the client.
        token = self.issue(form.get("audience") or form.get("resource") or None, scopes)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": max(1, int(self.token_lifetime_s)),  # never later than exp
        }
        if scopes:
            body["scope"] = " ".join(scopes)
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(client id, secret) of an HTTP Basic header (each form-decoded), None without one; ValueError
    when malformed."""
    scheme, _, value = header.strip().partition(" ")
    if not header.strip() or scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not base64 of UTF-8") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise ValueError("no ':' between client id and secret")
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
