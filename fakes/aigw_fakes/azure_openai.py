"""A stand-in for Azure OpenAI (not Azure): an aiohttp server on loopback for tests and demos.

Classic, dated-version API::

    POST /openai/deployments/{deployment}/chat/completions?api-version=2024-10-21
    POST /openai/deployments/{deployment}/completions?api-version=...
    POST /openai/deployments/{deployment}/embeddings?api-version=...

and the v1 API (``/openai/v1/chat/completions``, ``/embeddings``, ``/responses``, ``/models``), where
the body ``model`` is the deployment name. Request validation and answers are the OpenAI fake's
(``aigw_fakes.openai``); what this fake adds and checks:

* ``api-version`` query parameter is required on the classic API: missing → 404
  ``{"error":{"code":"404","message":"Resource not found"}}``; not a ``YYYY-MM-DD[-preview]`` value
  (or not in ``api_versions=`` when given) → 400 ``{"error":{"code":"BadRequest","message":"API
  version not supported"}}``.
* Auth: the ``api-key`` header must equal the configured key; ``Authorization: Bearer <token>`` is
  accepted when the fake was given ``token=`` (one fixed token) or ``token_validator=`` (a callable
  telling whether a token is valid, e.g. an ``aigw_fakes.EntraFake``, which issues expiring tokens:
  an unknown or expired one is a 401 ``Unauthorized. Access token is missing, invalid...``); on the v1
  API ``Bearer <api key>`` is accepted too (as the stock OpenAI client sends it). Otherwise 401
  ``{"error":{"code":"401","message":"Access denied due to invalid subscription key..."}}``.
* api-versions before 2024-09-01 (e.g. GA 2024-06-01) reject ``stream_options``,
  ``max_completion_tokens`` and ``parallel_tool_calls`` with 400 ``Unrecognized request argument
  supplied: <name>``.
* ``POST /openai/responses?api-version=...`` (the body's ``model`` a deployment) from
  2025-03-01-preview on; an older version → 404 ``Resource not found``.
* Unknown deployment → 404 ``DeploymentNotFound``.
* The deployment selects the model: responses carry the deployment's model name.
* Azure response quirks: ``prompt_filter_results`` on completions, ``content_filter_results`` on
  choices, and in streams a first chunk with empty ``choices`` and ``prompt_filter_results``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .common import FORM, SSEWriter, random_id
from .openai import FakeAPIError, OpenAIFake

_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

# Request arguments classic api-versions before 2024-09-01(-preview) do not know (they answer 400
# "Unrecognized request argument supplied"): stream_options came with 2024-09-01-preview, as did
# max_completion_tokens (with the o1 models).
MODERN_SINCE = "2024-09-01"
# The first api-version of the Responses API on the classic API (/openai/responses).
RESPONSES_SINCE = "2025-03-01"
_OLD_ARGUMENTS = frozenset({"stream_options", "max_completion_tokens", "parallel_tool_calls"})

_SAFE = {"filtered": False, "severity": "safe"}


def content_filter_results() -> dict[str, Any]:
    return {"hate": dict(_SAFE), "self_harm": dict(_SAFE), "sexual": dict(_SAFE), "violence": dict(_SAFE)}


def prompt_filter_results() -> list[dict[str, Any]]:
    return [{"prompt_index": 0, "content_filter_results": content_filter_results()}]


_AZURE_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Bad request (injected by the fake)."),
    401: ("401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
          "a valid key for an active subscription and use a correct regional API endpoint for your resource."),
    403: ("403", "Forbidden (injected by the fake)."),
    404: ("404", "Resource not found"),
    408: ("Timeout", "The operation was timeout."),
    429: ("429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 "
          "have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second."),
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again "
          "later."),
}  # fmt: skip


class AzureOpenAIFake(OpenAIFake):
    """Fake Azure OpenAI resource. ``deployments`` maps deployment name → model name.

    ``fake.base_url`` is the resource endpoint (give it to ``AzureOpenAI(azure_endpoint=...)``);
    ``fake.url`` is the v1 base URL (``.../openai/v1``) for the stock OpenAI client.
    """

    provider = "azure-openai"

    def __init__(
        self,
        *,
        api_key: str | None = "azure-test-key",
        token: str | None = None,
        token_validator: Callable[[str], bool] | None = None,
        deployments: dict[str, str] | None = None,
        api_versions: list[str] | tuple[str, ...] | None = None,
        name: str | None = None,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        reply: Any = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            api_key=api_key,
            prefix="/openai/v1",
            obfuscation=False,
            name=name,
            cached_tokens=cached_tokens,
            reasoning_tokens=reasoning_tokens,
            reply=reply,
            host=host,
            port=port,
        )
        self.token = token
        self.token_validator = token_validator
        self.deployments = dict(
            deployments
            if deployments is not None
            else {
                "gpt-4o": "gpt-4o-2024-08-06",
                "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
                "text-embedding-3-small": "text-embedding-3-small",
            }
        )
        self.api_versions = set(api_versions) if api_versions is not None else None
        self.check_models = False
        self.models = list(self.deployments)

    # ---- errors / auth -----------------------------------------------------------------------
    def azure_error(self, status: int, code: str | None = None, message: str | None = None) -> web.Response:
        dcode, dmsg = _AZURE_DEFAULTS.get(status, (str(status), f"Injected error {status}."))
        body = {"error": {"code": code or dcode, "message": message or dmsg}}
        return web.json_response(
            body, status=status, headers={"apim-request-id": random_id("", 32), "x-request-id": random_id("", 32)}
        )

    def error_response(
        self,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        if message is None:
            return self.azure_error(status)
        return super().error_response(status, message, type=type, param=param, code=code)

    def not_found_response(self, request: web.Request) -> web.Response:
        return self.azure_error(404)

    def check_auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("api-key")
        if key is not None and self.api_key is not None and key == self.api_key:
            return None
        auth = request.headers.get("Authorization", "")
        scheme, _, tok = auth.partition(" ")
        if scheme.lower() == "bearer" and tok:
            if self.token is not None and tok == self.token:
                return None
            if self.token_validator is not None and self.token_validator(tok):
                return None
            v1 = request.path.startswith("/openai/v1/")
            if v1 and self.api_key is not None and tok == self.api_key:
                return None
            if key is None:
                return self.azure_error(
                    401,
                    "401",
                    "Unauthorized. Access token is missing, invalid, audience is incorrect "
                    "(https://cognitiveservices.azure.com), or have expired.",
                )
        if self.api_key is None and self.token is None and self.token_validator is None:
            return None
        return self.azure_error(401)

    # ---- routing -----------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)  # the v1 API under /openai/v1
        r = app.router
        r.add_post("/openai/responses", self._classic_responses)
        base = "/openai/deployments/{deployment}"
        r.add_post(base + "/chat/completions", self._classic(self.chat_completions))
        r.add_post(base + "/completions", self._classic(self.completions))
        r.add_post(base + "/embeddings", self._classic(self.embeddings))
        # The image and audio operations read the deployment's model (dall-e-3, whisper-1...).
        r.add_post(base + "/images/generations", self._classic(self.images, underlying=True))
        r.add_post(base + "/audio/speech", self._classic(self.speech, underlying=True))
        for operation, form_handler in (
            ("/audio/transcriptions", self.transcriptions),
            ("/audio/translations", self.translations),
            ("/images/edits", self.image_edits),
            ("/images/variations", self.image_variations),
        ):
            r.add_post(base + operation, self._classic(form_handler, underlying=True, form=True))

    def _classic(self, fn: Any, *, underlying: bool = False, form: bool = False) -> Any:
        """A classic deployment route: api-version required, the deployment choosing the model (the
        deployment's name, or with `underlying` the model deployed); `form`: a multipart operation."""

        async def handler(request: web.Request) -> web.StreamResponse:
            version = request.query.get("api-version")
            if version is None:
                return self.azure_error(404)
            if not _VERSION_RE.match(version) or (self.api_versions is not None and version not in self.api_versions):
                return self.azure_error(400, "BadRequest", "API version not supported")
            denied = self.check_auth(request)
            if denied is not None:
                return denied
            dep = request.match_info["deployment"]
            if dep not in self.deployments:
                return self._deployment_not_found()
            model = self.deployments[dep] if underlying else dep
            try:
                if form:
                    fields = request.get(FORM)
                    if fields is not None:
                        fields["model"] = model  # the deployment selects the model; a form's is ignored
                    return await fn(request)
                body = dict(self._json_body(request))
                old = _OLD_ARGUMENTS & body.keys() if version[:10] < MODERN_SINCE else set()
                if old:
                    raise FakeAPIError(400, f"Unrecognized request argument supplied: {sorted(old)[0]}")
                body["model"] = model  # the deployment selects the model; a body model is ignored
                return await fn(request, body)
            except FakeAPIError as e:
                return self._api_error(e)

        return handler

    async def _classic_responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API on the classic API: the body's model names the deployment; served from
        api-version 2025-03-01-preview on (before, the route is not there: 404)."""
        version = request.query.get("api-version")
        if version is None or not _VERSION_RE.match(version) or version[:10] < RESPONSES_SINCE:
            return self.azure_error(404)
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        try:
            return await self.responses(request, dict(self._json_body(request)))
        except FakeAPIError as e:
            return self._api_error(e)

    def _deployment_not_found(self) -> web.Response:
        return self.azure_error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the "
            "last 5 minutes, please wait a moment and try again.",
        )

    def _check_model(self, body: dict[str, Any]) -> None:
        super()._check_model(body)
        if body["model"] not in self.deployments:
            raise FakeAPIError(
                404,
                "The API deployment for this resource does not exist. If you created the deployment within "
                "the last 5 minutes, please wait a moment and try again.",
                type="invalid_request_error",
                code="DeploymentNotFound",
            )

    def response_model(self, request: web.Request, body: dict[str, Any]) -> str:
        dep = request.match_info.get("deployment") or body.get("model", "")
        return self.deployments.get(dep, dep)

    def underlying_model(self, body: dict[str, Any]) -> str:
        return self.deployments.get(body["model"], body["model"])

    # ---- Azure quirks ------------------------------------------------------------------------
    def decorate_choice(self, choice: dict[str, Any]) -> None:
        choice["content_filter_results"] = content_filter_results()

    def decorate_stream_choice(self, choice: dict[str, Any]) -> None:
        if choice["delta"].get("content"):
            choice["content_filter_results"] = content_filter_results()
        elif choice["finish_reason"] is not None or "role" in choice["delta"]:
            choice["content_filter_results"] = {}

    def decorate_completion(self, resp: dict[str, Any]) -> None:
        resp["prompt_filter_results"] = prompt_filter_results()
        resp.pop("service_tier", None)

    async def stream_preamble(self, sse: SSEWriter, env: dict[str, Any]) -> None:
        await sse.send(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": prompt_filter_results(),
            }
        )

    def chat_envelope(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": random_id("chatcmpl-", 29),
            "created": int(time.time()),
            "model": self.response_model(request, body),
            "system_fingerprint": "fp_fakeazure",
        }
