"""A stand-in for Microsoft Entra ID's token endpoint (not Entra): the OAuth 2.0 client-credentials
grant, for tests of Azure OpenAI backends whose policy is AzureCredentials.

    POST /{tenant}/oauth2/v2.0/token
        grant_type=client_credentials&client_id=...&client_secret=...&scope=https://cognitiveservices.azure.com/.default

answers ``{"token_type": "Bearer", "expires_in": N, "ext_expires_in": N, "access_token": "<opaque>"}``
for the one app it knows (``tenant_id``, ``client_id``, ``client_secret``), with a fresh opaque
token each time living ``lifetime`` seconds (settable on the instance). Errors in AAD's shape
(``error``, ``error_description`` starting with the AADSTS code, ``error_codes``, ``timestamp``,
``trace_id``, ``correlation_id``, ``error_uri``):

* unknown tenant → 400 ``invalid_request`` AADSTS90002
* unknown client id → 400 ``unauthorized_client`` AADSTS700016
* wrong secret → 401 ``invalid_client`` AADSTS7000215
* grant_type not client_credentials → 400 ``unsupported_grant_type`` AADSTS70003
* scope not ending in ``/.default`` → 400 ``invalid_scope`` AADSTS1002012

It serves https (azure-identity and MSAL speak nothing else) with a self-signed certificate made at
start (the ``cryptography`` package): ``fake.ca_file`` is its PEM, to trust with
``REQUESTS_CA_BUNDLE`` (azure-identity's transport is requests) or ``connection_verify=``;
``tls=False`` serves plain http. MSAL's tenant discovery is answered too:

    GET /{tenant}/v2.0/.well-known/openid-configuration    (token_endpoint and friends)

**Workload identity** (federated identity credentials): with ``federated=FederatedCredential(verify,
issuer, subject, audience="api://AzureADTokenExchange")`` the app also authenticates with
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<JWT>``
instead of a secret (``OIDCIssuerFake.verify`` and its ``issuer`` make a matching pair). As Entra does,
the assertion's issuer, subject and audience must match the credential, then its signature and time:

* a malformed assertion → 400 ``invalid_request`` AADSTS50027; another assertion type → 400
  ``invalid_request`` AADSTS70002; a secret and an assertion at once → 400 ``invalid_request`` AADSTS700025
* an issuer, subject or audience no record matches → 401 ``invalid_client`` AADSTS700211, AADSTS700213,
  AADSTS700212 (an app without a federated credential: AADSTS700211)
* expired → 401 ``invalid_client`` AADSTS700024; a bad signature → 401 ``invalid_client`` AADSTS700027

``fake.validate(token)`` tells whether a token it issued is still valid (unknown or expired →
False); give the fake (or that method) to ``AzureOpenAIFake(token_validator=...)``. ``fake.issued``
lists the tokens issued, in order. The authority to give a client (``AZURE_AUTHORITY_HOST``,
``ClientSecretCredential(authority=...)``) is ``fake.base_url``, ``https://localhost:<port>``.
"""

from __future__ import annotations

import datetime
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from .common import RAW_BODY, FakeProvider

SCOPE = "https://cognitiveservices.azure.com/.default"
TEST_TENANT_ID = "00000000-0000-0000-0000-00000000a11e"
TEST_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TEST_CLIENT_SECRET = "fake-entra-client-secret~0123456789"


JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True)
class FederatedCredential:
    """An app's federated identity credential: assertions by ``issuer`` for ``subject`` and
    ``audience``, whose signature and expiry ``verify(token, audience)`` checks (raising PyJWT's
    errors: ``OIDCIssuerFake.verify``)."""

    verify: Callable[[str, str], Mapping[str, Any]]
    issuer: str
    subject: str
    audience: str = FEDERATED_AUDIENCE


class EntraFake(FakeProvider):
    provider = "entra"

    def __init__(
        self,
        *,
        tenant_id: str = TEST_TENANT_ID,
        client_id: str = TEST_CLIENT_ID,
        client_secret: str = TEST_CLIENT_SECRET,
        lifetime: float = 3599,
        tls: bool = True,
        federated: FederatedCredential | None = None,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port, tls=tls)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.federated = federated
        self.lifetime = lifetime
        self._tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self.issued: list[str] = []

    # ---- tokens ------------------------------------------------------------------------------
    def validate(self, token: str) -> bool:
        """A token this fake issued that has not expired."""
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and time.time() < expiry

    __call__ = validate

    def _issue(self) -> tuple[str, int]:
        token = "fake-entra-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.time() + self.lifetime
            self.issued.append(token)
        return token, max(1, round(self.lifetime))

    # ---- errors ------------------------------------------------------------------------------
    def aad_error(self, status: int, error: str, code: int, message: str) -> web.Response:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} "
            f"Timestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        }
        return web.json_response(body, status=status)

    def error_response(self, status: int, message: str | None = None, **kw: Any) -> web.Response:
        if status >= 500:
            return self.aad_error(status, "temporarily_unavailable", 90033, message or "A transient error occurred.")
        return self.aad_error(status, "invalid_request", 900144, message or "Injected error (by the fake).")

    def not_found_response(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="Not Found")

    # ---- routes ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_configuration)

    async def _openid_configuration(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        if tenant != self.tenant_id:
            return self.aad_error(
                400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                "tenant ID and are signing into the correct cloud."
            )  # fmt: skip
        base = f"{self.base_url}/{tenant}"
        return web.json_response(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(request[RAW_BODY].decode("utf-8", "replace")).items()}
        tenant = request.match_info["tenant"]
        if tenant != self.tenant_id:
            return self.aad_error(
                400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                "tenant ID and are signing into the correct cloud."
            )  # fmt: skip
        if form.get("grant_type") != "client_credentials":
            return self.aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if form.get("client_id") != self.client_id:
            return self.aad_error(
                400, "unauthorized_client", 700016, f"Application with identifier '{form.get('client_id', '')}' "
                f"was not found in the directory '{tenant}'."
            )  # fmt: skip
        if "client_assertion" in form or "client_assertion_type" in form:
            refused = self._check_assertion(form)
            if refused is not None:
                return refused
        elif form.get("client_secret") != self.client_secret:
            return self.aad_error(
                401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the "
                f"request is the client secret value, not the client secret ID, for a secret added to app "
                f"'{self.client_id}'."
            )  # fmt: skip
        return self._grant(form)

    def _grant(self, form: dict[str, str]) -> web.Response:
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return self.aad_error(
                400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed to the resource identifier."
            )  # fmt: skip
        token, expires_in = self._issue()
        return web.json_response(
            {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": token}
        )

    def _check_assertion(self, form: dict[str, str]) -> web.Response | None:
        """None when the client assertion authenticates the app (see the module docstring)."""
        if "client_secret" in form:
            return self.aad_error(
                400, "invalid_request", 700025, "Client is public so neither 'client_assertion' nor 'client_secret' "
                "should be presented."
            )  # fmt: skip
        if form.get("client_assertion_type") != JWT_BEARER:
            return self.aad_error(
                400, "invalid_request", 70002, "The client_assertion_type must be "
                f"'{JWT_BEARER}'."
            )  # fmt: skip
        assertion = form.get("client_assertion", "")
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self.aad_error(400, "invalid_request", 50027, "JWT token is invalid or is malformed.")
        record = self.federated
        issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        check = "Check your federated identity credential Subject, Audience and Issuer against the presented assertion."
        if record is None or issuer != record.issuer:
            return self.aad_error(
                401, "invalid_client", 700211, "No matching federated identity record found for presented "
                f"assertion issuer '{issuer}'. Please note that the matching is done using a case-sensitive "
                f"comparison. {check}"
            )  # fmt: skip
        if subject != record.subject:
            return self.aad_error(
                401, "invalid_client", 700213, "No matching federated identity record found for presented "
                f"assertion subject '{subject}'. {check}"
            )  # fmt: skip
        if record.audience not in audiences:
            return self.aad_error(
                401, "invalid_client", 700212, "No matching federated identity record found for presented "
                f"assertion audience '{', '.join(str(a) for a in audiences)}'. {check}"
            )  # fmt: skip
        try:
            record.verify(assertion, record.audience)
        except jwt.ExpiredSignatureError:
            return self.aad_error(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")
        except jwt.PyJWTError:
            return self.aad_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
        return None
