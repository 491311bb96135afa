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

``fake.validate(token)`` tells whether a token it issued is still valid (unknown or expired →
False); give the fake (or that method) to ``AzureOpenAIFake(token_validator=...)``. ``fake.issued``
lists the tokens issued, in order. The authority to give a client is ``fake.base_url``.
"""

from __future__ import annotations

import datetime
import secrets
import time
import urllib.parse
import uuid
from typing import Any

from aiohttp import web

from .common import RAW_BODY, FakeProvider

SCOPE = "https://cognitiveservices.azure.com/.default"
TEST_TENANT_ID = "00000000-0000-0000-0000-00000000a11e"
TEST_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TEST_CLIENT_SECRET = "fake-entra-client-secret~0123456789"


class EntraFake(FakeProvider):
    provider = "entra"

    def __init__(
        self,
        *,
        tenant_id: str = TEST_TENANT_ID,
        client_id: str = TEST_CLIENT_ID,
        client_secret: str = TEST_CLIENT_SECRET,
        lifetime: float = 3599,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
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
        if form.get("client_secret") != self.client_secret:
            return self.aad_error(
                401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the "
                f"request is the client secret value, not the client secret ID, for a secret added to app "
                f"'{self.client_id}'."
            )  # fmt: skip
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
