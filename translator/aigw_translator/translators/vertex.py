"""What the two GCP Vertex AI schemas (GCPVertexAI: Gemini, GCPAnthropic: Claude) share: the
request path, and Google's error body.

Path: `/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{method}`,
project and region from the backend's GCPCredentials (project_name, region). Region "global" has
the same path (its host, aiplatform.googleapis.com, is the Backend's concern). Each value is
percent-encoded as one path segment; '@' stays as it is (Claude model versions such as
`claude-3-5-haiku@20241022` are sent so, as Anthropic's Vertex SDK sends them), ':' is escaped so a
model id can never be read as the method.

Errors: Vertex answers with Google's JSON error `{"error": {"code": 429, "message": "...",
"status": "RESOURCE_EXHAUSTED"}}` (sometimes wrapped in a one-element array). It becomes the
client's error shape with the same HTTP status; the OpenAI `code` is Google's status name.
"""

from __future__ import annotations

from typing import Any

from aigw.translator.v1 import config_pb2

from ..errors import GatewayError, anthropic_error, openai_error, openai_error_type, to_anthropic_error, to_openai_error
from .base import load_json, path_segment

GOOGLE = "google"
ANTHROPIC = "anthropic"


def _segment(value: str) -> str:
    return path_segment(value, safe="@")


def vertex_path(backend: config_pb2.Backend, publisher: str, model: str, method: str) -> str:
    """The Vertex AI path of `method` on `model` of `publisher` (no query)."""
    gcp = backend.auth.gcp_credentials if backend.auth.HasField("gcp_credentials") else None
    project = gcp.project_name.strip() if gcp is not None else ""
    region = gcp.region.strip() if gcp is not None else ""
    if not project or not region:
        missing = " and ".join(name for name, v in (("projectName", project), ("region", region)) if not v)
        raise GatewayError(
            500,
            f"backend {backend.name!r} of schema {backend.schema.name} has no GCPCredentials {missing}: "
            "the gateway cannot build the Vertex AI path (configuration error)",
        )
    if not model:
        raise GatewayError(400, f"a model is required for {backend.schema.name} backends")
    return (
        f"/v1/projects/{_segment(project)}/locations/{_segment(region)}"
        f"/publishers/{publisher}/models/{_segment(model)}:{method}"
    )


def google_error(body: bytes) -> tuple[str, str | None] | None:
    """(message, status name) of a Google JSON error body; None for any other body."""
    obj: Any = load_json(body)
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict) or obj.get("type") == "error" or "type" in err:
        return None  # not Google's shape (OpenAI and Anthropic errors carry a `type`)
    message = err.get("message")
    if not isinstance(message, str) or not message:
        return None
    status = err.get("status")
    return message, status if isinstance(status, str) and status else None


def vertex_openai_error(status: int, body: bytes) -> bytes:
    """A Vertex error body as an OpenAI error (the HTTP status is kept by the caller)."""
    google = google_error(body)
    if google is None:
        return to_openai_error(status, body)
    message, code = google
    return openai_error(status, message, openai_error_type(status), code=code)


def vertex_anthropic_error(status: int, body: bytes) -> bytes:
    """A Vertex error body as an Anthropic error (Claude's own Anthropic-shaped errors pass)."""
    google = google_error(body)
    if google is None:
        return to_anthropic_error(status, body)
    return anthropic_error(status, google[0])
